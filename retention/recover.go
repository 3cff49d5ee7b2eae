package retention

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// maintenancePage is how many rows one maintenance read takes; it loops
// until a page comes back short.
const maintenancePage = 1000

// recover takes over, into runID, every unfinished batch of an earlier run
// that nobody is selecting any more: its subjects are still claimed (or it
// never got marked done, if its worker died after the commit). A batch with
// no job that will work it (discarded after its last attempt, or its
// process killed) gets a new job; one whose job is still queued keeps it.
// Either way it now belongs to this run, so that sweep --wait waits for it.
// A batch whose lock is held is being worked and is left where it is. The
// earlier runs are then closed: done or failed, by what is left in them, or
// failed outright when they died while selecting.
func (s *Sweeper) recover(ctx context.Context, runID int64, queue BatchQueue) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.QueryTimeout)
	defer cancel()
	// Unfinished batches, a page at a time.
	type orphan struct {
		id, run, job int64
	}
	var orphans []orphan
	for last := int64(0); ; {
		rows, err := s.Pool.Query(ctx, `
			SELECT b.id, b.run_id, coalesce(b.job_id, 0) FROM lethe.batch b
			WHERE b.run_id <> $1 AND b.state <> $2 AND b.id > $3
			  AND (b.state = $4 OR EXISTS (SELECT 1 FROM lethe.work_item w WHERE w.batch_id = b.id))
			ORDER BY b.id LIMIT $5`, runID, BatchDone, last, BatchQueued, maintenancePage)
		if err != nil {
			return 0, fmt.Errorf("error finding unfinished batches: %w", err)
		}
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (orphan, error) {
			var o orphan
			return o, r.Scan(&o.id, &o.run, &o.job)
		})
		if err != nil {
			return 0, fmt.Errorf("error finding unfinished batches: %w", err)
		}
		orphans = append(orphans, page...)
		if len(page) < maintenancePage {
			break
		}
		last = page[len(page)-1].id
	}
	jobIDs := make([]int64, 0, len(orphans))
	for _, o := range orphans {
		if o.job != 0 {
			jobIDs = append(jobIDs, o.job)
		}
	}
	queued, err := s.Jobs.Queued(ctx, jobIDs)
	if err != nil {
		return 0, fmt.Errorf("error finding unfinished batches: %w", err)
	}
	n := 0
	runs := map[int64]bool{}
	for _, o := range orphans {
		if s.selecting(ctx, o.run) {
			continue // its sweep is still claiming; it will wait for it
		}
		ok, err := s.requeue(ctx, runID, o.id, !queued[o.job], queue)
		if err != nil {
			return n, fmt.Errorf("error taking over batch %d: %w", o.id, err)
		}
		if ok {
			n++
			runs[o.run] = true
			s.Logger.Warn("took over an unfinished batch of an earlier run", "run_id", runID, "batch_id", o.id, "from_run_id", o.run, "new_job", !queued[o.job])
		}
	}
	// Close the earlier runs that nobody will close: those whose batches
	// moved here, and those that died while selecting.
	// At most a page of them per sweep: the next sweep closes the rest.
	type openRun struct {
		id    int64
		state string
	}
	open, err := Collect(ctx, s.Pool, "finding unfinished runs", `SELECT id, state FROM lethe.run WHERE id <> $1 AND state IN ($2, $3) ORDER BY id LIMIT $4`,
		func(r pgx.CollectableRow) (openRun, error) {
			var o openRun
			return o, r.Scan(&o.id, &o.state)
		}, runID, RunSelecting, RunWorking, maintenancePage)
	if err != nil {
		return n, err
	}
	for _, o := range open {
		switch {
		case o.state == RunSelecting && !s.selecting(ctx, o.id):
			if _, err := s.Pool.Exec(ctx, `UPDATE lethe.run SET state = $3, finished_at = now(),
				error = $2 WHERE id = $1 AND state = $4`, o.id, fmt.Sprintf("interrupted while claiming; run %d took over its batches", runID), RunFailed, RunSelecting); err != nil {
				return n, fmt.Errorf("error closing run %d: %w", o.id, err)
			}
		case o.state == RunWorking && runs[o.id]:
			if _, err := FinishRun(ctx, s.Pool, o.id); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// selecting reports whether runID's sweep is still claiming: it holds the
// run's lock for as long as it does.
func (s *Sweeper) selecting(ctx context.Context, runID int64) bool {
	var free bool
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, runLockKey(runID)).Scan(&free)
	})
	return err != nil || !free
}

func (s *Sweeper) requeue(ctx context.Context, runID, batchID int64, newJob bool, queue BatchQueue) (bool, error) {
	tx, err := s.Pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	var free bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, batchLockKey(batchID)).Scan(&free); err != nil {
		return false, err
	}
	if !free {
		return false, nil
	}
	if newJob {
		jobID, err := queue.EnqueueBatch(ctx, tx, batchID)
		if err != nil {
			return false, err
		}
		if _, err := tx.Exec(ctx, `UPDATE lethe.batch SET job_id = $2 WHERE id = $1`, batchID, jobID); err != nil {
			return false, err
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE lethe.batch SET run_id = $2, state = $3, finished_at = NULL WHERE id = $1`,
		batchID, runID, BatchQueued); err != nil {
		return false, err
	}
	return true, tx.Commit(ctx)
}

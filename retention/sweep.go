package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/internal/audit"
)

// Sweeper finds due subjects and claims them in batches.
type Sweeper struct {
	pool   *pgxpool.Pool
	plan   *Plan
	logger *slog.Logger
	// Now returns the current time; tests move it.
	Now func() time.Time
	// QueryTimeout bounds each statement of the sweep.
	QueryTimeout time.Duration
	// BatchSize is how many subjects one batch claims.
	BatchSize int
}

// NewSweeper returns a Sweeper for plan.
func NewSweeper(pool *pgxpool.Pool, plan *Plan, batchSize int, logger *slog.Logger) *Sweeper {
	return &Sweeper{pool: pool, plan: plan, logger: logger, Now: time.Now, QueryTimeout: 5 * time.Minute, BatchSize: batchSize}
}

// Run triggers.
const (
	TriggerSchedule = "schedule"
	TriggerCLI      = "cli"
)

// StartRun records a new run, or returns the run already recorded for jobID
// when a sweep job is retried. jobID 0 means no job (the CLI).
func (s *Sweeper) StartRun(ctx context.Context, trigger string, jobID int64) (int64, error) {
	var id int64
	var job any
	if jobID != 0 {
		job = jobID
	}
	err := s.pool.QueryRow(ctx, `
		INSERT INTO lethe.run (trigger, job_id) VALUES ($1, $2)
		ON CONFLICT (job_id) DO UPDATE SET state = 'selecting'
		RETURNING id`, trigger, job).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("error starting run: %w", err)
	}
	return id, nil
}

// SweepResult says what a sweep claimed.
type SweepResult struct {
	RunID int64
	// Recovered is how many batches of earlier runs were found unfinished
	// with no live job, and queued again in this run.
	Recovered int
	// Batches is how many new batches were queued.
	Batches int
	// Claimed is the number of subjects claimed, by policy.
	Claimed map[string]int
}

// Sweep claims every due subject, policy by policy, in batches of
// BatchSize, and enqueues a job per batch in the claim's transaction. It
// first requeues the unfinished batches of earlier runs whose job is gone
// (a crash, or retries used up). Concurrent sweeps claim each subject once:
// rows another sweep has locked are skipped, and a subject already claimed
// is not claimed again.
func (s *Sweeper) Sweep(ctx context.Context, runID int64, queue Queue) (*SweepResult, error) {
	return s.SweepAtMost(ctx, runID, queue, 0)
}

// SweepAtMost is Sweep claiming at most limit due subjects over all
// policies, in policy order (0: no limit), for a bounded first run over a
// large backlog. Subjects erased on request that came back are always
// claimed, and unfinished work of earlier runs is always taken over.
func (s *Sweeper) SweepAtMost(ctx context.Context, runID int64, queue Queue, limit int) (*SweepResult, error) {
	if limit < 0 {
		return nil, fmt.Errorf("error sweeping: limit %d is negative", limit)
	}
	res := &SweepResult{RunID: runID, Claimed: map[string]int{}}
	// Hold the run's lock while claiming, so that a later sweep can tell
	// this run is alive.
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("error acquiring connection: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, runLockKey(runID)); err != nil {
		return res, fmt.Errorf("error locking run: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, runLockKey(runID)) //nolint:errcheck // released with the session anyway
	n, err := s.recover(ctx, runID, queue)
	if err != nil {
		return res, s.failRun(ctx, runID, err)
	}
	res.Recovered = n
	batches, claimed, err := s.claimSuppressed(ctx, runID, queue)
	res.Batches += batches
	res.Claimed[PolicySuppressed] = claimed
	if err != nil {
		return res, s.failRun(ctx, runID, err)
	}
	if claimed > 0 {
		s.logger.Warn("subjects erased on request are back in the hot tables; erasing them again", "run_id", runID, "subjects", claimed)
	}
	now := s.Now()
	total := 0
	for _, pp := range s.plan.Policies {
		left := 0
		if limit > 0 {
			if left = limit - total; left <= 0 {
				res.Claimed[pp.Name] = 0
				continue
			}
		}
		batches, claimed, err := s.claimPolicy(ctx, runID, pp, pp.Cutoff(now), queue, left)
		total += claimed
		res.Batches += batches
		res.Claimed[pp.Name] = claimed
		if err != nil {
			return res, s.failRun(ctx, runID, err)
		}
		s.logger.Info("claimed due subjects", "run_id", runID, "policy", pp.Name, "subjects", claimed, "batches", batches)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE lethe.run SET state = 'working', selected_at = now(), recovered = $2 WHERE id = $1`, runID, res.Recovered); err != nil {
		return res, fmt.Errorf("error recording run: %w", err)
	}
	if _, err := FinishRun(ctx, s.pool, runID); err != nil {
		return res, err
	}
	return res, nil
}

func (s *Sweeper) failRun(ctx context.Context, runID int64, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, _ = s.pool.Exec(ctx, `UPDATE lethe.run SET state = 'failed', finished_at = now(), error = $2 WHERE id = $1`, runID, cause.Error())
	return cause
}

// claimPolicy claims the policy's due subjects, at most limit of them
// unless limit is 0.
func (s *Sweeper) claimPolicy(ctx context.Context, runID int64, pp *PolicyPlan, cutoff time.Time, queue Queue, limit int) (batches, claimed int, err error) {
	var lastClock, lastKey string
	first := true
	action := ActionArchive
	if !pp.Archive() {
		action = ActionDelete
	}
	for {
		size := s.BatchSize
		if limit > 0 {
			if size = min(size, limit-claimed); size <= 0 {
				return batches, claimed, nil
			}
		}
		n, got, clock, key, err := s.claimPage(ctx, runID, pp, action, cutoff, first, lastClock, lastKey, size, queue)
		if err != nil {
			return batches, claimed, fmt.Errorf("error claiming subjects of policy %s: %w", pp.Name, err)
		}
		if n > 0 {
			batches++
			claimed += n
		}
		if got < size {
			return batches, claimed, nil
		}
		first, lastClock, lastKey = false, clock, key
	}
}

// claimPage claims one page of due subjects, after (lastClock, lastKey)
// unless first. It returns how many it claimed, how many rows it saw, and
// the position of the last one.
func (s *Sweeper) claimPage(ctx context.Context, runID int64, pp *PolicyPlan, action string, cutoff time.Time, first bool, lastClock, lastKey string, size int, queue Queue) (claimed, seen int, clock, key string, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.QueryTimeout)
	defer cancel()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, 0, "", "", err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op

	var rows pgx.Rows
	if first {
		rows, err = tx.Query(ctx, s.plan.sql.claimFirst[pp.Name], cutoff, size)
	} else {
		rows, err = tx.Query(ctx, s.plan.sql.claimNext[pp.Name], cutoff, lastClock, lastKey, size)
	}
	if err != nil {
		return 0, 0, "", "", err
	}
	var keys, hmacs []string
	for rows.Next() {
		if err := rows.Scan(&key, &clock); err != nil {
			return 0, 0, "", "", err
		}
		keys = append(keys, key)
		hmacs = append(hmacs, s.plan.hasher.HMAC(key))
	}
	if err := rows.Err(); err != nil {
		return 0, 0, "", "", err
	}
	if len(keys) == 0 {
		return 0, 0, "", "", nil
	}
	seen = len(keys)
	if action == ActionDelete {
		// A then: delete policy skips held subjects; they are not claimed.
		held, err := heldAmong(ctx, tx, hmacs)
		if err != nil {
			return 0, 0, "", "", err
		}
		keys, hmacs = withoutHeld(keys, hmacs, held)
	}
	n, err := claimInto(ctx, tx, runID, pp.Name, action, keys, hmacs, queue)
	if err != nil {
		return 0, 0, "", "", err
	}
	if n == 0 {
		return 0, seen, clock, key, nil
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, 0, "", "", err
	}
	return n, seen, clock, key, nil
}

func withoutHeld(keys, hmacs []string, held map[string]bool) ([]string, []string) {
	if len(held) == 0 {
		return keys, hmacs
	}
	var k2, h2 []string
	for i, h := range hmacs {
		if !held[h] {
			k2, h2 = append(k2, keys[i]), append(h2, h)
		}
	}
	return k2, h2
}

// claimInto records, in tx, a batch of the subjects not already claimed and
// queues its job. It returns how many it claimed; with none it records
// nothing.
func claimInto(ctx context.Context, tx pgx.Tx, runID int64, policy, action string, keys, hmacs []string, queue Queue) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer sp.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	var batchID int64
	if err := sp.QueryRow(ctx, `INSERT INTO lethe.batch (run_id, policy, action, subjects) VALUES ($1, $2, $3, 0) RETURNING id`,
		runID, policy, action).Scan(&batchID); err != nil {
		return 0, err
	}
	tag, err := sp.Exec(ctx, `
		INSERT INTO lethe.work_item (subject_hmac, subject_key, batch_id, policy)
		SELECT h, k, $3, $4 FROM unnest($1::text[], $2::text[]) AS u (h, k)
		ON CONFLICT (subject_hmac) DO NOTHING`, hmacs, keys, batchID, policy)
	if err != nil {
		return 0, err
	}
	n := int(tag.RowsAffected())
	if n == 0 {
		// Every subject is already claimed by an unfinished batch; leave
		// them to it.
		return 0, nil
	}
	jobID, err := queue.EnqueueBatch(ctx, sp, batchID)
	if err != nil {
		return 0, fmt.Errorf("error enqueueing batch: %w", err)
	}
	if _, err := sp.Exec(ctx, `UPDATE lethe.batch SET subjects = $2, job_id = $3 WHERE id = $1`, batchID, n, jobID); err != nil {
		return 0, err
	}
	return n, sp.Commit(ctx)
}

// claimSuppressed finds subjects that a deletion request erased and that
// are back in the hot tables (a restore from backup, a re-sync), and claims
// them for erasure. Held ones are left alone.
func (s *Sweeper) claimSuppressed(ctx context.Context, runID int64, queue Queue) (batches, claimed int, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.QueryTimeout)
	defer cancel()
	var any bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lethe.suppression)`).Scan(&any); err != nil {
		return 0, 0, fmt.Errorf("error reading suppressions: %w", err)
	}
	if !any {
		return 0, 0, nil
	}
	rows, err := s.pool.Query(ctx, s.plan.sql.suppressed, s.plan.hmacp.args()...)
	if err != nil {
		return 0, 0, fmt.Errorf("error finding erased subjects in the hot tables: %w", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, 0, fmt.Errorf("error finding erased subjects in the hot tables: %w", err)
	}
	for start := 0; start < len(keys); start += s.BatchSize {
		page := keys[start:min(start+s.BatchSize, len(keys))]
		hmacs := make([]string, len(page))
		for i, k := range page {
			hmacs[i] = s.plan.hasher.HMAC(k)
		}
		n, err := func() (int, error) {
			tx, err := s.pool.Begin(ctx)
			if err != nil {
				return 0, err
			}
			defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
			held, err := heldAmong(ctx, tx, hmacs)
			if err != nil {
				return 0, err
			}
			k, h := withoutHeld(page, hmacs, held)
			n, err := claimInto(ctx, tx, runID, PolicySuppressed, ActionErase, k, h, queue)
			if err != nil {
				return 0, err
			}
			return n, tx.Commit(ctx)
		}()
		if err != nil {
			return batches, claimed, fmt.Errorf("error claiming erased subjects: %w", err)
		}
		if n > 0 {
			batches++
			claimed += n
		}
	}
	return batches, claimed, nil
}

// PolicySuppressed is the policy name of erase batches.
const PolicySuppressed = "suppressed"

// recover takes over, into runID, every unfinished batch of an earlier run
// that nobody is selecting any more: its subjects are still claimed (or it
// never got marked done, if its worker died after the commit). A batch with
// no job that will work it (discarded after its last attempt, or its
// process killed) gets a new job; one whose job is still queued keeps it.
// Either way it now belongs to this run, so that sweep --wait waits for it.
// A batch whose lock is held is being worked and is left where it is. The
// earlier runs are then closed: done or failed, by what is left in them, or
// failed outright when they died while selecting.
func (s *Sweeper) recover(ctx context.Context, runID int64, queue Queue) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.QueryTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `
		SELECT b.id, b.run_id,
		       EXISTS (SELECT 1 FROM lethe.river_job j
		               WHERE j.id = b.job_id AND j.state IN ('available', 'pending', 'retryable', 'scheduled')) AS queued
		FROM lethe.batch b JOIN lethe.run r ON r.id = b.run_id
		WHERE b.run_id <> $1 AND b.state <> 'done'
		  AND (b.state = 'queued' OR EXISTS (SELECT 1 FROM lethe.work_item w WHERE w.batch_id = b.id))
		ORDER BY b.id`, runID)
	if err != nil {
		return 0, fmt.Errorf("error finding unfinished batches: %w", err)
	}
	type orphan struct {
		id, run int64
		queued  bool
	}
	orphans, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (orphan, error) {
		var o orphan
		return o, r.Scan(&o.id, &o.run, &o.queued)
	})
	if err != nil {
		return 0, fmt.Errorf("error finding unfinished batches: %w", err)
	}
	n := 0
	runs := map[int64]bool{}
	for _, o := range orphans {
		if s.selecting(ctx, o.run) {
			continue // its sweep is still claiming; it will wait for it
		}
		ok, err := s.requeue(ctx, runID, o.id, !o.queued, queue)
		if err != nil {
			return n, fmt.Errorf("error taking over batch %d: %w", o.id, err)
		}
		if ok {
			n++
			runs[o.run] = true
			s.logger.Warn("took over an unfinished batch of an earlier run", "run_id", runID, "batch_id", o.id, "from_run_id", o.run, "new_job", !o.queued)
		}
	}
	// Close the earlier runs that nobody will close: those whose batches
	// moved here, and those that died while selecting.
	rows, err = s.pool.Query(ctx, `SELECT id, state FROM lethe.run WHERE id <> $1 AND state IN ('selecting', 'working') ORDER BY id`, runID)
	if err != nil {
		return n, fmt.Errorf("error finding unfinished runs: %w", err)
	}
	type openRun struct {
		id    int64
		state string
	}
	open, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (openRun, error) {
		var o openRun
		return o, r.Scan(&o.id, &o.state)
	})
	if err != nil {
		return n, fmt.Errorf("error finding unfinished runs: %w", err)
	}
	for _, o := range open {
		switch {
		case o.state == "selecting" && !s.selecting(ctx, o.id):
			if _, err := s.pool.Exec(ctx, `UPDATE lethe.run SET state = 'failed', finished_at = now(),
				error = $2 WHERE id = $1 AND state = 'selecting'`, o.id, fmt.Sprintf("interrupted while claiming; run %d took over its batches", runID)); err != nil {
				return n, fmt.Errorf("error closing run %d: %w", o.id, err)
			}
		case o.state == "working" && runs[o.id]:
			if _, err := FinishRun(ctx, s.pool, o.id); err != nil {
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
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, runLockKey(runID)).Scan(&free)
	})
	return err != nil || !free
}

func (s *Sweeper) requeue(ctx context.Context, runID, batchID int64, newJob bool, queue Queue) (bool, error) {
	tx, err := s.pool.Begin(ctx)
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
	if _, err := tx.Exec(ctx, `UPDATE lethe.batch SET run_id = $2, state = 'queued', finished_at = NULL WHERE id = $1`,
		batchID, runID); err != nil {
		return false, err
	}
	return true, tx.Commit(ctx)
}

// runLockKey is the advisory lock a sweep holds while it claims.
func runLockKey(runID int64) int64 { return 0x4c52<<48 | runID }

// batchLockKey is the advisory lock that whoever works a batch holds.
func batchLockKey(batchID int64) int64 { return 0x4c45<<48 | batchID }

// FinishRun marks runID done (or failed, if any batch failed) once its
// sweep has finished claiming and no batch of it is still queued, and audits
// it. Every batch calls it after it settles, so the last one closes the run.
// It reports whether this call closed it.
func FinishRun(ctx context.Context, db beginner, runID int64) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tx, err := db.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("error finishing run: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	var state string
	err = tx.QueryRow(ctx, `
		UPDATE lethe.run r SET finished_at = now(),
			state = CASE WHEN EXISTS (SELECT 1 FROM lethe.batch b WHERE b.run_id = r.id AND b.state = 'failed')
			             THEN 'failed' ELSE 'done' END
		WHERE r.id = $1 AND r.state = 'working'
		  AND NOT EXISTS (SELECT 1 FROM lethe.batch b WHERE b.run_id = r.id AND b.state = 'queued')
		RETURNING r.state`, runID).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("error finishing run: %w", err)
	}
	sum, err := runSummary(ctx, tx, runID)
	if err != nil {
		return false, err
	}
	sum.State = state
	if err := audit.Append(ctx, tx, audit.Entry{Kind: audit.KindRun, Actor: "lethe", Detail: sum}); err != nil {
		return false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("error finishing run: %w", err)
	}
	return true, nil
}

// RunTotals are a run's counts, for summaries and the audit log.
type RunTotals struct {
	RunID     int64                   `json:"run_id"`
	State     string                  `json:"state"`
	Batches   int                     `json:"batches"`
	Queued    int                     `json:"batches_queued"`
	Failed    int                     `json:"batches_failed"`
	Subjects  int                     `json:"subjects"`
	Archived  int                     `json:"archived"`
	Destroyed int                     `json:"destroyed"`
	Skipped   int                     `json:"skipped"`
	Rows      int64                   `json:"rows"`
	Bytes     int64                   `json:"bytes"`
	Policies  map[string]*PolicyTotal `json:"policies"`
}

// PolicyTotal are one policy's counts in a run.
type PolicyTotal struct {
	Subjects  int   `json:"subjects"`
	Archived  int   `json:"archived"`
	Destroyed int   `json:"destroyed"`
	Skipped   int   `json:"skipped"`
	Bytes     int64 `json:"bytes"`
}

// beginner is a pool or a connection.
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

type queryRower interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func runSummary(ctx context.Context, db queryRower, runID int64) (*RunTotals, error) {
	rows, err := db.Query(ctx, `
		SELECT policy, state, subjects, archived, destroyed, skipped, rows_moved, bytes
		FROM lethe.batch WHERE run_id = $1`, runID)
	if err != nil {
		return nil, fmt.Errorf("error summing run: %w", err)
	}
	defer rows.Close()
	t := &RunTotals{RunID: runID, Policies: map[string]*PolicyTotal{}}
	for rows.Next() {
		var policy, state string
		var subjects, archived, destroyed, skipped int
		var nrows, bytes int64
		if err := rows.Scan(&policy, &state, &subjects, &archived, &destroyed, &skipped, &nrows, &bytes); err != nil {
			return nil, fmt.Errorf("error summing run: %w", err)
		}
		t.Batches++
		switch state {
		case "queued":
			t.Queued++
		case "failed":
			t.Failed++
		}
		t.Subjects += subjects
		t.Archived += archived
		t.Destroyed += destroyed
		t.Skipped += skipped
		t.Rows += nrows
		t.Bytes += bytes
		p := t.Policies[policy]
		if p == nil {
			p = &PolicyTotal{}
			t.Policies[policy] = p
		}
		p.Subjects += subjects
		p.Archived += archived
		p.Destroyed += destroyed
		p.Skipped += skipped
		p.Bytes += bytes
	}
	return t, rows.Err()
}

// Totals returns a run's counts so far.
func Totals(ctx context.Context, pool *pgxpool.Pool, runID int64) (*RunTotals, error) {
	t, err := runSummary(ctx, pool, runID)
	if err != nil {
		return nil, err
	}
	if err := pool.QueryRow(ctx, `SELECT state FROM lethe.run WHERE id = $1`, runID).Scan(&t.State); err != nil {
		return nil, fmt.Errorf("error reading run %d: %w", runID, err)
	}
	return t, nil
}

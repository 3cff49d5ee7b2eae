package retention

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Sweeper finds due subjects and claims them in batches.
type Sweeper struct {
	SweeperConfig
}

// NewSweeper returns a Sweeper, or an error naming the setting at fault.
func NewSweeper(cfg SweeperConfig) (*Sweeper, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Sweeper{SweeperConfig: cfg}, nil
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
	err := s.Pool.QueryRow(ctx, `
		INSERT INTO lethe.run (trigger, job_id, state) VALUES ($1, $2, $3)
		ON CONFLICT (job_id) DO UPDATE SET state = $3
		RETURNING id`, trigger, job, RunSelecting).Scan(&id)
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
	// RunClosed is set when the run ended with the sweep: nothing was
	// queued.
	RunClosed bool
}

// Sweep claims every due subject, policy by policy, in batches of
// BatchSize, and enqueues a job per batch in the claim's transaction. It
// first requeues the unfinished batches of earlier runs whose job is gone
// (a crash, or retries used up). Concurrent sweeps claim each subject once:
// rows another sweep has locked are skipped, and a subject already claimed
// is not claimed again.
func (s *Sweeper) Sweep(ctx context.Context, runID int64, queue BatchQueue) (*SweepResult, error) {
	return s.SweepAtMost(ctx, runID, queue, 0)
}

// SweepAtMost is Sweep claiming at most limit due subjects over all
// policies, in policy order (0: no limit), for a bounded first run over a
// large backlog. Subjects erased on request that came back are always
// claimed, and unfinished work of earlier runs is always taken over.
func (s *Sweeper) SweepAtMost(ctx context.Context, runID int64, queue BatchQueue, limit int) (*SweepResult, error) {
	if limit < 0 {
		return nil, fmt.Errorf("error sweeping: limit %d is negative", limit)
	}
	res := &SweepResult{RunID: runID, Claimed: map[string]int{}}
	// Hold the run's lock while claiming, so that a later sweep can tell
	// this run is alive.
	conn, err := s.Pool.Acquire(ctx)
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
		s.Logger.Warn("subjects erased on request are back in the hot tables; erasing them again", "run_id", runID, "subjects", claimed)
	}
	now := s.Now()
	total := 0
	// Archive and delete policies first: a subject due for both leaves the
	// hot tables whole, and minimise policies find what stays.
	policies := slices.Clone(s.Plan.Policies)
	slices.SortStableFunc(policies, func(a, b *PolicyPlan) int { return cmp.Compare(boolInt(a.Minimizes()), boolInt(b.Minimizes())) })
	for _, pp := range policies {
		left := 0
		if limit > 0 {
			if left = limit - total; left <= 0 {
				res.Claimed[pp.Name] = 0
				continue
			}
		}
		claim := s.claimPolicy
		if pp.Minimizes() {
			claim = s.claimMinimize
		}
		batches, claimed, err := claim(ctx, runID, pp, pp.Cutoff(now), queue, left)
		total += claimed
		res.Batches += batches
		res.Claimed[pp.Name] = claimed
		if err != nil {
			return res, s.failRun(ctx, runID, err)
		}
		s.Logger.Info("claimed due subjects", "run_id", runID, "policy", pp.Name, "subjects", claimed, "batches", batches)
	}
	if _, err := s.Pool.Exec(ctx, `UPDATE lethe.run SET state = $3, selected_at = now(), recovered = $2 WHERE id = $1`, runID, res.Recovered, RunWorking); err != nil {
		return res, fmt.Errorf("error recording run: %w", err)
	}
	if res.RunClosed, err = FinishRun(ctx, s.Pool, runID); err != nil {
		return res, err
	}
	return res, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (s *Sweeper) failRun(ctx context.Context, runID int64, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, _ = s.Pool.Exec(ctx, `UPDATE lethe.run SET state = $3, finished_at = now(), error = $2 WHERE id = $1`, runID, cause.Error(), RunFailed)
	return cause
}

// claimPolicy claims the policy's due subjects, at most limit of them
// unless limit is 0.
func (s *Sweeper) claimPolicy(ctx context.Context, runID int64, pp *PolicyPlan, cutoff time.Time, queue BatchQueue, limit int) (batches, claimed int, err error) {
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
func (s *Sweeper) claimPage(ctx context.Context, runID int64, pp *PolicyPlan, action string, cutoff time.Time, first bool, lastClock, lastKey string, size int, queue BatchQueue) (claimed, seen int, clock, key string, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.QueryTimeout)
	defer cancel()
	tx, err := s.Pool.Begin(ctx)
	if err != nil {
		return 0, 0, "", "", err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op

	var rows pgx.Rows
	if first {
		rows, err = tx.Query(ctx, pp.Kind.sql.claimFirst[pp.Name], cutoff, size)
	} else {
		rows, err = tx.Query(ctx, pp.Kind.sql.claimNext[pp.Name], cutoff, lastClock, lastKey, size)
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
		hmacs = append(hmacs, pp.Kind.HMAC(key))
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
		held, err := s.Holds.HeldAmong(ctx, tx, hmacs)
		if err != nil {
			return 0, 0, "", "", err
		}
		keys, hmacs = withoutHeld(keys, hmacs, held)
	}
	n, err := claimInto(ctx, tx, runID, pp.Name, pp.Kind.Name, action, keys, hmacs, queue)
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
func claimInto(ctx context.Context, tx pgx.Tx, runID int64, policy, kind, action string, keys, hmacs []string, queue BatchQueue) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer sp.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	var batchID int64
	if err := sp.QueryRow(ctx, `INSERT INTO lethe.batch (run_id, policy, kind, action, subjects) VALUES ($1, $2, $3, $4, 0) RETURNING id`,
		runID, policy, kind, action).Scan(&batchID); err != nil {
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
// are back in the hot tables (a restore from backup, a re-sync), of every
// kind, and claims them for erasure. Held ones are left alone.
func (s *Sweeper) claimSuppressed(ctx context.Context, runID int64, queue BatchQueue) (batches, claimed int, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.QueryTimeout)
	defer cancel()
	var any bool
	if err := s.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lethe.suppression)`).Scan(&any); err != nil {
		return 0, 0, fmt.Errorf("error reading suppressions: %w", err)
	}
	if !any {
		return 0, 0, nil
	}
	for _, k := range s.Plan.Kinds {
		var last *string
		for {
			rows, err := s.Pool.Query(ctx, k.sql.suppressed, append(k.hmacp.args(), last, s.BatchSize)...)
			if err != nil {
				return batches, claimed, fmt.Errorf("error finding erased subjects in the hot tables: %w", err)
			}
			page, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return batches, claimed, fmt.Errorf("error finding erased subjects in the hot tables: %w", err)
			}
			if len(page) == 0 {
				break
			}
			n, err := s.claimErase(ctx, runID, k, page, queue)
			if err != nil {
				return batches, claimed, fmt.Errorf("error claiming erased subjects: %w", err)
			}
			if n > 0 {
				batches++
				claimed += n
			}
			if len(page) < s.BatchSize {
				break
			}
			last = &page[len(page)-1]
		}
	}
	return batches, claimed, nil
}

// claimErase claims, for erasure, those of keys (of kind k) that no hold
// covers.
func (s *Sweeper) claimErase(ctx context.Context, runID int64, k *Kind, keys []string, queue BatchQueue) (int, error) {
	hmacs := make([]string, len(keys))
	for i, key := range keys {
		hmacs[i] = k.HMAC(key)
	}
	tx, err := s.Pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	held, err := s.Holds.HeldAmong(ctx, tx, hmacs)
	if err != nil {
		return 0, err
	}
	ks, hs := withoutHeld(keys, hmacs, held)
	n, err := claimInto(ctx, tx, runID, PolicySuppressed, k.Name, ActionErase, ks, hs, queue)
	if err != nil {
		return 0, err
	}
	return n, tx.Commit(ctx)
}

// PolicySuppressed is the policy name of erase batches.
const PolicySuppressed = "suppressed"

package retention

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/archive"
)

// archiver is what moving subjects needs of the object store;
// *archive.Archiver is one.
type archiver interface {
	Prefix() string
	NewSegment() *archive.Segment
	Put(ctx context.Context, name string, body []byte, lock archive.Lock) (*archive.Stored, error)
	// LegalHolds is false for a bucket without Object Lock.
	LegalHolds() bool
}

var _ archiver = (*archive.Archiver)(nil)

// Batch actions.
const (
	ActionArchive = "archive" // move to the archive, then delete
	ActionDelete  = "delete"  // a then: delete policy: delete without a copy
	ActionErase   = "erase"   // a subject erased on request, found again: delete without a copy
	// ActionMinimize is a then: minimize policy: change columns in place,
	// archiving their values first if the policy says so.
	ActionMinimize = "minimize"
)

// ErrBatchBusy is returned by RunBatch when another worker holds the batch.
var ErrBatchBusy = errors.New("batch is being worked by another worker")

// Mover works batches: it archives (or destroys) the subjects a sweep
// claimed.
type Mover struct {
	MoverConfig
	// faults are set only by tests.
	faults Faults
}

// NewMover returns a Mover, or an error naming the setting at fault.
func NewMover(cfg MoverConfig) (*Mover, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Mover{MoverConfig: cfg}, nil
}

// BatchResult counts what one call of RunBatch did.
type BatchResult struct {
	Archived  int
	Destroyed int
	// Skipped subjects were no longer due when the batch ran.
	Skipped int
	// Held subjects were due for destruction but a legal hold covers them.
	Held int
	// Pending subjects are left for the next attempt (a failed put, or rows
	// that changed while the batch ran).
	Pending int
	// Blocked subjects were left in place because a foreign key from
	// outside the graph still references their rows (lethe status names
	// it).
	Blocked int
	Rows    int64
	Bytes   int64
	// RunID is the run the batch belongs to.
	RunID int64
	// Policy is the batch's policy.
	Policy string
	// Minimized subjects had columns minimised; MinimizedRows counts the
	// rows changed.
	Minimized     int
	MinimizedRows int64
	// RunClosed is set when this batch was the last of its run, and closed
	// it.
	RunClosed bool
}

// batchRun is one call of RunBatch: the Mover and the one connection the
// batch holds its lock on and does all its database work over, so that a
// batch never needs a second connection while it holds one.
type batchRun struct {
	*Mover
	db *pgxpool.Conn
}

// item is a work item: a subject a batch claimed.
type item struct {
	hmac, key string
}

// RunBatch works every remaining subject of a batch. It is idempotent and
// safe to call again after a failure or crash at any point: work items are
// the record of what is unsettled. It returns an error while any subject is
// left pending, so that the job is retried.
func (m *Mover) RunBatch(ctx context.Context, batchID int64) (*BatchResult, error) {
	conn, err := m.Pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("error acquiring connection: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, batchLockKey(batchID)).Scan(&locked); err != nil {
		return nil, fmt.Errorf("error locking batch: %w", err)
	}
	if !locked {
		return nil, ErrBatchBusy
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, batchLockKey(batchID)); err != nil {
			conn.Conn().Close(uctx) //nolint:errcheck // closing drops the lock
		}
	}()

	b := &batchRun{Mover: m, db: conn}
	res := &BatchResult{}
	var policyName, action, kindName string
	err = conn.QueryRow(ctx, `SELECT run_id, policy, action, kind FROM lethe.batch WHERE id = $1`, batchID).Scan(&res.RunID, &policyName, &action, &kindName)
	if errors.Is(err, pgx.ErrNoRows) {
		return res, nil // nothing to do: the batch was never committed
	}
	if err != nil {
		return nil, fmt.Errorf("error reading batch: %w", err)
	}
	res.Policy = policyName
	items, err := b.items(ctx, batchID)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `UPDATE lethe.batch SET attempts = attempts + 1 WHERE id = $1`, batchID); err != nil {
		return nil, fmt.Errorf("error recording attempt: %w", err)
	}

	claimed := items
	pp := m.Plan.Policy(policyName)
	kind, kindErr := m.Plan.Kind(kindName)
	switch {
	case len(claimed) == 0:
	case action == ActionErase && kindErr == nil:
		if err := b.destroy(ctx, batchID, kind, nil, claimed, res); err != nil {
			return res, err
		}
	case action == ActionErase, pp == nil, pp.Kind.Name != kindName, pp.Minimizes() != (action == ActionMinimize):
		// The policy or kind left the config since the claim, or changed
		// what it does: release the subjects. The next sweep claims them
		// again as the config says now.
		m.Logger.Warn("batch names a policy or kind of subject that is no longer configured as it was; releasing its subjects",
			"batch_id", batchID, "policy", policyName, "kind", kindName)
		if err := b.release(ctx, batchID, claimed); err != nil {
			return res, err
		}
		res.Skipped += len(claimed)
	case action == ActionMinimize:
		if err := b.minimize(ctx, batchID, pp, claimed, res); err != nil {
			return res, err
		}
	case action == ActionDelete || !pp.Archive():
		if err := b.destroy(ctx, batchID, pp.Kind, pp, claimed, res); err != nil {
			return res, err
		}
	default:
		if err := b.archive(ctx, batchID, pp, claimed, res); err != nil {
			return res, err
		}
	}

	if res.Pending > 0 {
		return res, fmt.Errorf("error archiving batch %d: %d subjects left for the next attempt", batchID, res.Pending)
	}
	tag, err := conn.Exec(ctx, `
		UPDATE lethe.batch SET state = $2, finished_at = now(), last_error = NULL
		WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM lethe.work_item WHERE batch_id = $1)`, batchID, BatchDone)
	if err != nil {
		return res, fmt.Errorf("error finishing batch: %w", err)
	}
	if tag.RowsAffected() == 1 {
		if res.RunClosed, err = FinishRun(ctx, conn, res.RunID); err != nil {
			return res, err
		}
	}
	return res, nil
}

func (m *batchRun) items(ctx context.Context, batchID int64) ([]item, error) {
	rows, err := m.db.Query(ctx, `
		SELECT subject_hmac, subject_key FROM lethe.work_item
		WHERE batch_id = $1 ORDER BY subject_hmac`, batchID)
	if err != nil {
		return nil, fmt.Errorf("error reading work items: %w", err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (item, error) {
		var it item
		return it, r.Scan(&it.hmac, &it.key)
	})
	if err != nil {
		return nil, fmt.Errorf("error reading work items: %w", err)
	}
	return items, nil
}

// RecordFailure notes that attempt (the job's, counted from 1) of the batch
// failed, and how many attempts in a row failed the same way; final marks the batch
// failed, which lets its run finish. The next sweep requeues a failed batch.
// It reports whether the run ended with it.
func (m *Mover) RecordFailure(ctx context.Context, batchID int64, cause error, attempt int, final bool) (bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	state := BatchQueued
	if final {
		state = BatchFailed
	}
	// An outage is not a failure of the batch's own: it does not count
	// towards same_failures.
	var causeKey *string
	if !Outage(cause) {
		k := hexRuns.ReplaceAllString(cause.Error(), "…")
		causeKey = &k
	}
	var runID int64
	err := m.Pool.QueryRow(ctx, `
		UPDATE lethe.batch SET last_error = $2, state = $3,
			finished_at = CASE WHEN $3 = $4 THEN now() END,
			failed_attempt = $7,
			same_failures = CASE WHEN $6::text IS NULL THEN 0 WHEN last_cause = $6 THEN same_failures + 1 ELSE 1 END,
			last_cause = $6
		WHERE id = $1 AND state <> $5 RETURNING run_id`, batchID, cause.Error(), state, BatchFailed, BatchDone, causeKey, attempt).Scan(&runID)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("error recording batch failure: %w", err)
	}
	if !final {
		return false, nil
	}
	return FinishRun(ctx, m.Pool, runID)
}

// Claimed reports whether a sweep has claimed the subject: a batch is
// archiving or destroying it.
func Claimed(ctx context.Context, db Querier, subjectHMAC string) (bool, error) {
	var claimed bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lethe.work_item WHERE subject_hmac = $1)`, subjectHMAC).Scan(&claimed); err != nil {
		return false, fmt.Errorf("error reading work items: %w", err)
	}
	return claimed, nil
}

// ClaimedAmong returns which of the subjects a sweep has claimed.
func ClaimedAmong(ctx context.Context, db Querier, subjectHMACs []string) (map[string]bool, error) {
	rows, err := db.Query(ctx, `SELECT DISTINCT subject_hmac FROM lethe.work_item WHERE subject_hmac = ANY ($1)`, subjectHMACs)
	if err != nil {
		return nil, fmt.Errorf("error reading work items: %w", err)
	}
	claimed := map[string]bool{}
	var h string
	if _, err := pgx.ForEachRow(rows, []any{&h}, func() error { claimed[h] = true; return nil }); err != nil {
		return nil, fmt.Errorf("error reading work items: %w", err)
	}
	return claimed, nil
}

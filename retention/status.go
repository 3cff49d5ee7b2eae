package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// SegmentCount is a number of segments and their bytes.
type SegmentCount struct {
	Count int64 `json:"count"`
	Bytes int64 `json:"bytes"`
}

// ArchivedPolicy is what the manifest holds of one policy: its live copies
// (for a then: minimize policy, parts of minimised values) and their bytes.
type ArchivedPolicy struct {
	Policy   string    `json:"policy"`
	Part     string    `json:"part"`
	Subjects int64     `json:"subjects"`
	Bytes    int64     `json:"bytes"`
	Oldest   time.Time `json:"oldest"`
	Newest   time.Time `json:"newest"`
}

// RunRow is one sweep run.
type RunRow struct {
	ID         int64      `json:"id"`
	Trigger    string     `json:"trigger"`
	State      string     `json:"state"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Subjects   int64      `json:"subjects"`
	Archived   int64      `json:"archived"`
	Destroyed  int64      `json:"destroyed"`
	// Minimized subjects had MinimizedRows rows minimised.
	Minimized     int64   `json:"minimized"`
	MinimizedRows int64   `json:"minimized_rows"`
	Bytes         int64   `json:"bytes"`
	Error         *string `json:"error,omitempty"`
}

// FailedBatch is a batch that failed an attempt or used up its attempts.
type FailedBatch struct {
	ID        int64  `json:"id"`
	RunID     int64  `json:"run_id"`
	Policy    string `json:"policy"`
	State     string `json:"state"`
	Attempts  int    `json:"attempts"`
	Remaining int64  `json:"remaining"`
	LastError string `json:"last_error"`
}

// SweepStatus is retention's part of lethe status: what is due, what was
// archived, unsettled and failing work, and the last runs.
type SweepStatus struct {
	Due      []DueCount       `json:"due"`
	Archived []ArchivedPolicy `json:"archived"`
	// Keys counts the manifest's entries by state: archived (a live key),
	// superseded, erased and expired.
	Keys map[string]int64 `json:"keys"`
	// Segments are the committed segments; Uncommitted are those recorded
	// and never committed (a crash, or a failed attempt): unreadable,
	// since their keys were never stored, and left to the bucket's
	// lifecycle rule. A batch in flight shows there until it commits.
	Segments    SegmentCount `json:"segments"`
	Uncommitted SegmentCount `json:"uncommitted_segments"`
	// Blocked are the subjects foreign keys keep in place, by constraint.
	Blocked   []BlockedGroup `json:"blocked_subjects"`
	Unsettled int64          `json:"unsettled_subjects"`
	Failing   []FailedBatch  `json:"failing_batches"`
	Runs      []RunRow       `json:"runs"`
}

// Status reads retention's part of lethe status, with at most runs runs.
func Status(ctx context.Context, pool *pgxpool.Pool, plan *Plan, runs int) (*SweepStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	rep := &SweepStatus{}
	var err error
	if rep.Due, err = CountDue(ctx, pool, plan, time.Now()); err != nil {
		return nil, err
	}
	rows, err := pool.Query(ctx, `
		SELECT policy, part, count(*), coalesce(sum(part_length), 0)::bigint, min(archived_at), max(archived_at)
		FROM lethe.manifest WHERE state = 'archived' GROUP BY policy, part ORDER BY policy, part`)
	if err != nil {
		return nil, fmt.Errorf("error reading the manifest: %w", err)
	}
	if rep.Archived, err = pgx.CollectRows(rows, pgx.RowToStructByPos[ArchivedPolicy]); err != nil {
		return nil, fmt.Errorf("error reading the manifest: %w", err)
	}
	rows, err = pool.Query(ctx, `SELECT state, count(*) FROM lethe.manifest GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("error reading the manifest: %w", err)
	}
	rep.Keys = map[string]int64{"archived": 0, "superseded": 0, "erased": 0, "expired": 0}
	var state string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error { rep.Keys[state] = n; return nil }); err != nil {
		return nil, fmt.Errorf("error reading the manifest: %w", err)
	}
	if err := pool.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE state = 'committed'), coalesce(sum(size) FILTER (WHERE state = 'committed'), 0)::bigint,
		       count(*) FILTER (WHERE state <> 'committed'), coalesce(sum(size) FILTER (WHERE state <> 'committed'), 0)::bigint
		FROM lethe.segment`).Scan(&rep.Segments.Count, &rep.Segments.Bytes, &rep.Uncommitted.Count, &rep.Uncommitted.Bytes); err != nil {
		return nil, fmt.Errorf("error reading segments: %w", err)
	}
	if rep.Blocked, err = BlockedSubjects(ctx, pool); err != nil {
		return nil, err
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM lethe.work_item`).Scan(&rep.Unsettled); err != nil {
		return nil, fmt.Errorf("error reading work items: %w", err)
	}
	rows, err = pool.Query(ctx, `
		SELECT b.id, b.run_id, b.policy, b.state, b.attempts,
		       (SELECT count(*) FROM lethe.work_item w WHERE w.batch_id = b.id), coalesce(b.last_error, '')
		FROM lethe.batch b
		WHERE b.state = $1 OR (b.state = $2 AND b.last_error IS NOT NULL)
		ORDER BY b.id DESC LIMIT 20`, BatchFailed, BatchQueued)
	if err != nil {
		return nil, fmt.Errorf("error reading batches: %w", err)
	}
	if rep.Failing, err = pgx.CollectRows(rows, pgx.RowToStructByPos[FailedBatch]); err != nil {
		return nil, fmt.Errorf("error reading batches: %w", err)
	}
	rows, err = pool.Query(ctx, `
		SELECT r.id, r.trigger, r.state, r.started_at, r.finished_at,
		       coalesce(sum(b.subjects), 0)::bigint, coalesce(sum(b.archived), 0)::bigint,
		       coalesce(sum(b.destroyed), 0)::bigint, coalesce(sum(b.minimized), 0)::bigint, coalesce(sum(b.minimized_rows), 0)::bigint,
		       coalesce(sum(b.bytes), 0)::bigint, r.error
		FROM lethe.run r LEFT JOIN lethe.batch b ON b.run_id = r.id
		GROUP BY r.id ORDER BY r.id DESC LIMIT $1`, runs)
	if err != nil {
		return nil, fmt.Errorf("error reading runs: %w", err)
	}
	if rep.Runs, err = pgx.CollectRows(rows, pgx.RowToStructByPos[RunRow]); err != nil {
		return nil, fmt.Errorf("error reading runs: %w", err)
	}
	return rep, nil
}

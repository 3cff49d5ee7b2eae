package retention

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/audit"
)

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
			state = CASE WHEN EXISTS (SELECT 1 FROM lethe.batch b WHERE b.run_id = r.id AND b.state = $3)
			             THEN $4 ELSE $5 END
		WHERE r.id = $1 AND r.state = $2
		  AND NOT EXISTS (SELECT 1 FROM lethe.batch b WHERE b.run_id = r.id AND b.state = $6)
		RETURNING r.state`, runID, RunWorking, BatchFailed, RunFailed, RunDone, BatchQueued).Scan(&state)
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

// RunTotals are a run's counts, for summaries and the audit log: the
// counts of all its batches (PolicyTotal's fields, at the top level in
// JSON), and each policy's.
type RunTotals struct {
	RunID   int64  `json:"run_id"`
	State   string `json:"state"`
	Batches int    `json:"batches"`
	Queued  int    `json:"batches_queued"`
	Failed  int    `json:"batches_failed"`
	PolicyTotal
	Policies map[string]*PolicyTotal `json:"policies"`
}

// PolicyTotal are one policy's counts in a run.
type PolicyTotal struct {
	Subjects  int `json:"subjects"`
	Archived  int `json:"archived"`
	Destroyed int `json:"destroyed"`
	Skipped   int `json:"skipped"`
	// Blocked subjects a foreign key from outside the graph kept in place.
	Blocked int `json:"blocked"`
	// Minimized subjects had MinimizedRows rows minimised.
	Minimized     int   `json:"minimized"`
	MinimizedRows int64 `json:"minimized_rows"`
	Rows          int64 `json:"rows"`
	Bytes         int64 `json:"bytes"`
}

// add adds q's counts to p's.
func (p *PolicyTotal) add(q PolicyTotal) {
	p.Subjects += q.Subjects
	p.Archived += q.Archived
	p.Destroyed += q.Destroyed
	p.Skipped += q.Skipped
	p.Blocked += q.Blocked
	p.Minimized += q.Minimized
	p.MinimizedRows += q.MinimizedRows
	p.Rows += q.Rows
	p.Bytes += q.Bytes
}

func runSummary(ctx context.Context, db Querier, runID int64) (*RunTotals, error) {
	rows, err := db.Query(ctx, `
		SELECT policy, state, subjects, archived, destroyed, skipped, blocked, minimized, minimized_rows, rows_moved, bytes
		FROM lethe.batch WHERE run_id = $1`, runID)
	if err != nil {
		return nil, fmt.Errorf("error summing run: %w", err)
	}
	defer rows.Close()
	t := &RunTotals{RunID: runID, Policies: map[string]*PolicyTotal{}}
	for rows.Next() {
		var policy, state string
		var b PolicyTotal
		if err := rows.Scan(&policy, &state, &b.Subjects, &b.Archived, &b.Destroyed, &b.Skipped, &b.Blocked,
			&b.Minimized, &b.MinimizedRows, &b.Rows, &b.Bytes); err != nil {
			return nil, fmt.Errorf("error summing run: %w", err)
		}
		t.Batches++
		switch state {
		case BatchQueued:
			t.Queued++
		case BatchFailed:
			t.Failed++
		}
		t.add(b)
		p := t.Policies[policy]
		if p == nil {
			p = &PolicyTotal{}
			t.Policies[policy] = p
		}
		p.add(b)
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

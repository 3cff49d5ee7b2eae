package hold

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// MatterHolds is one matter's active holds.
type MatterHolds struct {
	Matter   string    `json:"matter"`
	Subjects int64     `json:"subjects"`
	Since    time.Time `json:"since"`
}

// PendingSync is a subject whose S3 legal hold is not yet what its holds
// say.
type PendingSync struct {
	SubjectHMAC string    `json:"subject_hmac"`
	Held        bool      `json:"held"`
	Since       time.Time `json:"since"`
	LastError   *string   `json:"last_error"`
}

// HoldStatus is the holds' part of lethe status.
type HoldStatus struct {
	Holds        []MatterHolds `json:"holds"`
	PendingSyncs []PendingSync `json:"pending_hold_syncs"`
}

// Status reads the active holds by matter and the pending syncs (the oldest
// 50).
func Status(ctx context.Context, pool *pgxpool.Pool) (*HoldStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	rep := &HoldStatus{}
	rows, err := pool.Query(ctx, `
		SELECT matter, count(DISTINCT subject_hmac), min(placed_at) FROM lethe.hold
		WHERE released_at IS NULL GROUP BY matter ORDER BY matter`)
	if err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	if rep.Holds, err = pgx.CollectRows(rows, pgx.RowToStructByPos[MatterHolds]); err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	rows, err = pool.Query(ctx, `
		SELECT subject_hmac, held, requested_at, last_error FROM lethe.hold_sync
		WHERE synced < generation ORDER BY requested_at LIMIT 50`)
	if err != nil {
		return nil, fmt.Errorf("error reading hold syncs: %w", err)
	}
	if rep.PendingSyncs, err = pgx.CollectRows(rows, pgx.RowToStructByPos[PendingSync]); err != nil {
		return nil, fmt.Errorf("error reading hold syncs: %w", err)
	}
	return rep, nil
}

// Pending returns the subjects whose sync is pending, with the job that
// should be working each, a page at a time after the subject after.
func Pending(ctx context.Context, pool *pgxpool.Pool, after string, limit int) (hmacs []string, jobIDs []int64, err error) {
	rows, err := pool.Query(ctx, `
		SELECT subject_hmac, coalesce(job_id, 0) FROM lethe.hold_sync
		WHERE synced < generation AND subject_hmac > $1 ORDER BY subject_hmac LIMIT $2`, after, limit)
	if err != nil {
		return nil, nil, fmt.Errorf("error reading hold syncs: %w", err)
	}
	var h string
	var j int64
	if _, err := pgx.ForEachRow(rows, []any{&h, &j}, func() error {
		hmacs, jobIDs = append(hmacs, h), append(jobIDs, j)
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("error reading hold syncs: %w", err)
	}
	return hmacs, jobIDs, nil
}

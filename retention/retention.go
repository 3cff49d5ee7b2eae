// Package retention owns the policies and the subject graph: which subjects
// are due, the canonical form of their keys, the SQL that selects, reads and
// deletes a subject's rows, the sweep that claims due subjects in batches,
// the batches that move them to the archive (through package archive) or
// destroy them, and archive expiry. It also owns the subject locks that every
// package that destroys or holds a subject takes. Deletion requests live in
// package request and legal holds in package hold; see docs/ARCHITECTURE.md.
package retention

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Querier runs queries: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Collect runs query on db and collects its rows with fn. Any error is
// wrapped as "error <what>".
func Collect[T any](ctx context.Context, db Querier, what, query string, fn pgx.RowToFunc[T], args ...any) ([]T, error) {
	rows, err := db.Query(ctx, query, args...)
	if err == nil {
		var out []T
		if out, err = pgx.CollectRows(rows, fn); err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("error %s: %w", what, err)
}

// beginner starts transactions: a pool or a connection.
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// HoldChecker tells which subjects a legal hold covers. Package hold's
// Checker is one.
type HoldChecker interface {
	HeldAmong(ctx context.Context, db Querier, subjectHMACs []string) (map[string]bool, error)
}

// BatchQueue inserts a batch's job inside the caller's transaction, so that
// a job exists exactly when its batch does. Package jobs implements it with
// River.
type BatchQueue interface {
	EnqueueBatch(ctx context.Context, tx pgx.Tx, batchID int64) (jobID int64, err error)
}

// JobLiveness tells which jobs are still queued to run (available,
// scheduled, pending or retryable). Package jobs implements it with River's
// client, which owns River's tables.
type JobLiveness interface {
	Queued(ctx context.Context, jobIDs []int64) (map[int64]bool, error)
}

// Run states.
const (
	RunSelecting = "selecting" // the sweep is claiming
	RunWorking   = "working"   // claimed; batches are being worked
	RunDone      = "done"
	RunFailed    = "failed" // a batch used up its attempts, or claiming failed
)

// Batch states.
const (
	BatchQueued = "queued" // claimed subjects wait for (or are in) the batch's job
	BatchDone   = "done"
	BatchFailed = "failed" // used up its attempts; the next sweep takes it over
)

// Work-item states.
const (
	ItemClaimed   = "claimed"   // claimed by a batch; not yet archived or destroyed
	ItemCommitted = "committed" // archived; other object versions may remain to prune
)

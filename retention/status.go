package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

type ArchivedPolicy struct {
	Policy   string    `json:"policy"`
	Subjects int64     `json:"subjects"`
	Bytes    int64     `json:"bytes"`
	Oldest   time.Time `json:"oldest"`
	Newest   time.Time `json:"newest"`
}

type RunRow struct {
	ID         int64      `json:"id"`
	Trigger    string     `json:"trigger"`
	State      string     `json:"state"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Subjects   int64      `json:"subjects"`
	Archived   int64      `json:"archived"`
	Destroyed  int64      `json:"destroyed"`
	Bytes      int64      `json:"bytes"`
	Error      *string    `json:"error,omitempty"`
}

type FailedBatch struct {
	ID        int64  `json:"id"`
	RunID     int64  `json:"run_id"`
	Policy    string `json:"policy"`
	State     string `json:"state"`
	Attempts  int    `json:"attempts"`
	Remaining int64  `json:"remaining"`
	LastError string `json:"last_error"`
}

type RequestCount struct {
	State string `json:"state"`
	Count int64  `json:"count"`
}

type RequestAtRisk struct {
	ID       int64     `json:"id"`
	Ticket   string    `json:"ticket"`
	State    string    `json:"state"`
	Deadline time.Time `json:"deadline"`
	DaysLeft float64   `json:"days_left"`
}

type MatterHolds struct {
	Matter   string    `json:"matter"`
	Subjects int64     `json:"subjects"`
	Since    time.Time `json:"since"`
}

type PendingSync struct {
	SubjectHMAC string    `json:"subject_hmac"`
	Held        bool      `json:"held"`
	Since       time.Time `json:"since"`
	LastError   *string   `json:"last_error"`
}

type FailedJobs struct {
	Kind      string  `json:"kind"`
	State     string  `json:"state"`
	Count     int64   `json:"count"`
	LastError *string `json:"last_error"`
}

type StatusReport struct {
	Due          []DueCount       `json:"due"`
	Archived     []ArchivedPolicy `json:"archived"`
	Unsettled    int64            `json:"unsettled_subjects"`
	Failing      []FailedBatch    `json:"failing_batches"`
	Runs         []RunRow         `json:"runs"`
	Requests     []RequestCount   `json:"requests"`
	AtRisk       []RequestAtRisk  `json:"requests_near_deadline"`
	Holds        []MatterHolds    `json:"holds"`
	PendingSyncs []PendingSync    `json:"pending_hold_syncs"`
	FailedJobs   []FailedJobs     `json:"failed_jobs"`
}

// Status reads what lethe status, GET /api/v1/status and the runbook show:
// what is due, what was archived, unsettled and failing work, the last runs
// (at most runs of them), requests, holds, pending hold syncs and failed jobs.
func Status(ctx context.Context, pool *pgxpool.Pool, plan *Plan, runs int) (*StatusReport, error) {
	rep := &StatusReport{}
	var err error
	if rep.Due, err = CountDue(ctx, pool, plan, time.Now()); err != nil {
		return nil, err
	}
	rows, err := pool.Query(ctx, `
		SELECT policy, count(*), coalesce(sum(size), 0)::bigint, min(archived_at), max(archived_at)
		FROM lethe.manifest GROUP BY policy ORDER BY policy`)
	if err != nil {
		return nil, fmt.Errorf("error reading the manifest: %w", err)
	}
	if rep.Archived, err = pgx.CollectRows(rows, pgx.RowToStructByPos[ArchivedPolicy]); err != nil {
		return nil, fmt.Errorf("error reading the manifest: %w", err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM lethe.work_item`).Scan(&rep.Unsettled); err != nil {
		return nil, fmt.Errorf("error reading work items: %w", err)
	}
	rows, err = pool.Query(ctx, `
		SELECT b.id, b.run_id, b.policy, b.state, b.attempts,
		       (SELECT count(*) FROM lethe.work_item w WHERE w.batch_id = b.id), coalesce(b.last_error, '')
		FROM lethe.batch b
		WHERE b.state = 'failed' OR (b.state = 'queued' AND b.last_error IS NOT NULL)
		ORDER BY b.id DESC LIMIT 20`)
	if err != nil {
		return nil, fmt.Errorf("error reading batches: %w", err)
	}
	if rep.Failing, err = pgx.CollectRows(rows, pgx.RowToStructByPos[FailedBatch]); err != nil {
		return nil, fmt.Errorf("error reading batches: %w", err)
	}
	rows, err = pool.Query(ctx, `
		SELECT r.id, r.trigger, r.state, r.started_at, r.finished_at,
		       coalesce(sum(b.subjects), 0)::bigint, coalesce(sum(b.archived), 0)::bigint,
		       coalesce(sum(b.destroyed), 0)::bigint, coalesce(sum(b.bytes), 0)::bigint, r.error
		FROM lethe.run r LEFT JOIN lethe.batch b ON b.run_id = r.id
		GROUP BY r.id ORDER BY r.id DESC LIMIT $1`, runs)
	if err != nil {
		return nil, fmt.Errorf("error reading runs: %w", err)
	}
	if rep.Runs, err = pgx.CollectRows(rows, pgx.RowToStructByPos[RunRow]); err != nil {
		return nil, fmt.Errorf("error reading runs: %w", err)
	}
	if err := requestsStatus(ctx, pool, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// requestsStatus adds requests, holds, hold syncs and failed jobs.
func requestsStatus(ctx context.Context, pool *pgxpool.Pool, rep *StatusReport) error {
	rows, err := pool.Query(ctx, `SELECT state, count(*) FROM lethe.request GROUP BY state ORDER BY state`)
	if err != nil {
		return fmt.Errorf("error reading requests: %w", err)
	}
	if rep.Requests, err = pgx.CollectRows(rows, pgx.RowToStructByPos[RequestCount]); err != nil {
		return fmt.Errorf("error reading requests: %w", err)
	}
	rows, err = pool.Query(ctx, `
		SELECT id, ticket, state, deadline, round((extract(epoch FROM deadline - now()) / 86400)::numeric, 1)::float8
		FROM lethe.request
		WHERE state IN ('received', 'processing', 'blocked_by_hold') AND deadline < now() + interval '10 days'
		ORDER BY deadline`)
	if err != nil {
		return fmt.Errorf("error reading requests: %w", err)
	}
	if rep.AtRisk, err = pgx.CollectRows(rows, pgx.RowToStructByPos[RequestAtRisk]); err != nil {
		return fmt.Errorf("error reading requests: %w", err)
	}
	rows, err = pool.Query(ctx, `
		SELECT matter, count(DISTINCT subject_hmac), min(placed_at) FROM lethe.hold
		WHERE released_at IS NULL GROUP BY matter ORDER BY matter`)
	if err != nil {
		return fmt.Errorf("error reading holds: %w", err)
	}
	if rep.Holds, err = pgx.CollectRows(rows, pgx.RowToStructByPos[MatterHolds]); err != nil {
		return fmt.Errorf("error reading holds: %w", err)
	}
	rows, err = pool.Query(ctx, `
		SELECT subject_hmac, held, requested_at, last_error FROM lethe.hold_sync
		WHERE synced < generation ORDER BY requested_at LIMIT 50`)
	if err != nil {
		return fmt.Errorf("error reading hold syncs: %w", err)
	}
	if rep.PendingSyncs, err = pgx.CollectRows(rows, pgx.RowToStructByPos[PendingSync]); err != nil {
		return fmt.Errorf("error reading hold syncs: %w", err)
	}
	rows, err = pool.Query(ctx, `
		SELECT kind, state::text, count(*),
		       (array_agg(errors[array_length(errors, 1)] ->> 'error' ORDER BY id DESC))[1]
		FROM lethe.river_job
		WHERE kind LIKE 'lethe.%' AND (state = 'discarded' AND finalized_at > now() - interval '7 days' OR state = 'retryable')
		GROUP BY kind, state ORDER BY kind, state`)
	if err != nil {
		return fmt.Errorf("error reading failed jobs: %w", err)
	}
	if rep.FailedJobs, err = pgx.CollectRows(rows, pgx.RowToStructByPos[FailedJobs]); err != nil {
		return fmt.Errorf("error reading failed jobs: %w", err)
	}
	return nil
}

package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// enqueueRequest queues a request's job and records it on the request.
func enqueueRequest(ctx context.Context, tx pgx.Tx, queue Queue, requestID int64) error {
	jobID, err := queue.EnqueueRequest(ctx, tx, requestID)
	if err != nil {
		return fmt.Errorf("error queueing request %d: %w", requestID, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE lethe.request SET job_id = $2 WHERE id = $1`, requestID, jobID); err != nil {
		return fmt.Errorf("error recording request job: %w", err)
	}
	return nil
}

// enqueueHoldSyncs queues the subjects' hold-sync jobs and records them.
func enqueueHoldSyncs(ctx context.Context, tx pgx.Tx, queue Queue, subjectHMACs []string) error {
	if len(subjectHMACs) == 0 {
		return nil
	}
	jobIDs, err := queue.EnqueueHoldSyncs(ctx, tx, subjectHMACs)
	if err != nil {
		return fmt.Errorf("error queueing hold sync: %w", err)
	}
	if _, err := tx.Exec(ctx, `
		UPDATE lethe.hold_sync s SET job_id = u.j FROM unnest($1::text[], $2::bigint[]) AS u (h, j)
		WHERE s.subject_hmac = u.h`, subjectHMACs, jobIDs); err != nil {
		return fmt.Errorf("error recording hold sync job: %w", err)
	}
	return nil
}

// ReconcileResult counts what Reconcile queued again.
type ReconcileResult struct {
	Requests  int `json:"requests"`
	HoldSyncs int `json:"hold_syncs"`
}

// Reconcile queues a new job for every open deletion request and every
// pending hold sync that no job will work: its job was discarded, or the
// process working it died (a killed worker's job stays "running" until the
// queue rescues it, hours later). One whose subject's lock is held is being
// worked and is left alone. A job queued twice does no harm: the work is
// serialised on the subject's lock and idempotent.
func Reconcile(ctx context.Context, pool *pgxpool.Pool, queue Queue) (*ReconcileResult, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res := &ReconcileResult{}
	const notQueued = `NOT EXISTS (SELECT 1 FROM lethe.river_job j WHERE j.id = x.job_id
		AND j.state IN ('available', 'pending', 'retryable', 'scheduled'))`
	rows, err := pool.Query(ctx, `SELECT x.id, x.subject_hmac FROM lethe.request x
		WHERE x.state IN ('received', 'processing') AND `+notQueued)
	if err != nil {
		return nil, fmt.Errorf("error finding requests without a job: %w", err)
	}
	type lost struct {
		id   int64
		hmac string
	}
	requests, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (lost, error) {
		var l lost
		return l, r.Scan(&l.id, &l.hmac)
	})
	if err != nil {
		return nil, fmt.Errorf("error finding requests without a job: %w", err)
	}
	for _, l := range requests {
		ok, err := requeueIfFree(ctx, pool, l.hmac, func(tx pgx.Tx) error { return enqueueRequest(ctx, tx, queue, l.id) })
		if err != nil {
			return res, err
		}
		if ok {
			res.Requests++
		}
	}
	rows, err = pool.Query(ctx, `SELECT x.subject_hmac FROM lethe.hold_sync x WHERE x.synced < x.generation AND `+notQueued)
	if err != nil {
		return res, fmt.Errorf("error finding hold syncs without a job: %w", err)
	}
	syncs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return res, fmt.Errorf("error finding hold syncs without a job: %w", err)
	}
	for _, h := range syncs {
		ok, err := requeueIfFree(ctx, pool, h, func(tx pgx.Tx) error { return enqueueHoldSyncs(ctx, tx, queue, []string{h}) })
		if err != nil {
			return res, err
		}
		if ok {
			res.HoldSyncs++
		}
	}
	return res, nil
}

// requeueIfFree runs enqueue in a transaction that holds the subject's lock,
// if nobody else holds it.
func requeueIfFree(ctx context.Context, pool *pgxpool.Pool, subjectHMAC string, enqueue func(pgx.Tx) error) (bool, error) {
	done := false
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var free bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1, $2)`, subjectLockClass, subjectLockKey(subjectHMAC)).Scan(&free); err != nil {
			return err
		}
		if !free {
			return nil
		}
		done = true
		return enqueue(tx)
	})
	if err != nil {
		return false, fmt.Errorf("error queueing lost work again: %w", err)
	}
	return done, nil
}

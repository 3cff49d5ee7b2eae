package hold

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/retention"
)

// ErrRetryLater means the sync cannot proceed yet: the subject is being
// archived or is locked by other work. Its job tries again in a few seconds.
var ErrRetryLater = errors.New("subject is busy; retry later")

// legalHolder is what a sync needs of the object store; *archive.Archiver
// is one.
type legalHolder interface {
	SetLegalHold(ctx context.Context, subjectHMAC string, on bool) (int, error)
	Prune(ctx context.Context, subjectHMAC, keep string) ([]string, error)
}

// Syncer brings the S3 legal holds of subjects' objects in line with their
// holds.
type Syncer struct {
	pool   *pgxpool.Pool
	store  legalHolder
	logger *slog.Logger
}

// NewSyncer returns a Syncer over pool and store, which holds the worker's
// credentials.
func NewSyncer(pool *pgxpool.Pool, store legalHolder, logger *slog.Logger) (*Syncer, error) {
	if pool == nil || store == nil || logger == nil {
		return nil, errors.New("error creating the hold syncer: a pool, a store and a logger are required")
	}
	return &Syncer{pool: pool, store: store, logger: logger}, nil
}

// Sync brings the S3 legal hold of the subject's object in line with its
// holds: on for every version while any hold covers it; off when none does,
// after which versions the manifest does not name (kept while held) are
// pruned. It returns ErrRetryLater while the subject is being archived or
// is locked by other work, so that the lock lands on the version the
// archive is writing. It is idempotent.
func (h *Syncer) Sync(ctx context.Context, subjectHMAC string) error {
	var held bool
	var generation, synced int64
	err := h.pool.QueryRow(ctx, `SELECT held, generation, synced FROM lethe.hold_sync WHERE subject_hmac = $1`, subjectHMAC).Scan(&held, &generation, &synced)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && synced >= generation) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("error reading hold sync: %w", err)
	}
	sess, err := retention.TrySubject(ctx, h.pool, subjectHMAC)
	if err != nil {
		return err
	}
	if sess == nil {
		return ErrRetryLater
	}
	defer sess.Release(ctx)
	if claimed, err := retention.Claimed(ctx, sess.Conn, subjectHMAC); err != nil || claimed {
		if err != nil {
			return err
		}
		return ErrRetryLater
	}
	// Read the wanted state again under the lock: it is what counts.
	if err := sess.Conn.QueryRow(ctx, `SELECT held, generation FROM lethe.hold_sync WHERE subject_hmac = $1`, subjectHMAC).Scan(&held, &generation); err != nil {
		return fmt.Errorf("error reading hold sync: %w", err)
	}
	n, err := h.store.SetLegalHold(ctx, subjectHMAC, held)
	if err != nil {
		recordSyncError(ctx, sess.Conn, subjectHMAC, err)
		return err
	}
	var pruned []string
	if !held {
		var keep string
		err := sess.Conn.QueryRow(ctx, `SELECT version_id FROM lethe.manifest WHERE subject_hmac = $1`, subjectHMAC).Scan(&keep)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("error reading manifest: %w", err)
		}
		if keep != "" {
			if pruned, err = h.store.Prune(ctx, subjectHMAC, keep); err != nil {
				recordSyncError(ctx, sess.Conn, subjectHMAC, err)
				return err
			}
		}
	}
	tx, err := sess.Conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("error recording hold sync: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	if _, err := tx.Exec(ctx, `
		UPDATE lethe.hold_sync SET synced = $2, synced_at = now(), last_error = NULL
		WHERE subject_hmac = $1 AND synced < $2`, subjectHMAC, generation); err != nil {
		return fmt.Errorf("error recording hold sync: %w", err)
	}
	if err := audit.Append(ctx, tx, audit.Entry{Kind: audit.KindHoldSynced, Actor: "lethe", SubjectHMAC: subjectHMAC,
		Detail: map[string]any{"legal_hold": held, "versions": n, "pruned_versions": pruned}}); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func recordSyncError(ctx context.Context, conn *pgxpool.Conn, subjectHMAC string, cause error) {
	_, _ = conn.Exec(context.WithoutCancel(ctx), `UPDATE lethe.hold_sync SET last_error = $2 WHERE subject_hmac = $1`, subjectHMAC, cause.Error())
}

// Requeue queues a new sync job for a subject whose job was lost, if no one
// holds the subject, and reports whether it did.
func Requeue(ctx context.Context, pool *pgxpool.Pool, queue Queue, subjectHMAC string) (bool, error) {
	done := false
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		free, err := retention.TryLockSubject(ctx, tx, subjectHMAC)
		if err != nil || !free {
			return err
		}
		done = true
		return EnqueueSyncs(ctx, tx, queue, []string{subjectHMAC})
	})
	if err != nil {
		return false, fmt.Errorf("error queueing a hold sync again: %w", err)
	}
	return done, nil
}

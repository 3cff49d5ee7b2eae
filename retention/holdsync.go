package retention

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/internal/audit"
)

// Sync brings the S3 legal hold of the subject's object in line with its
// holds: on for every version while any hold covers it; off when none does,
// after which versions the manifest does not name (kept while held) are
// pruned. It returns ErrRetryLater while the subject is being archived or
// is locked by other work, so that the lock lands on the version the
// archive is writing. It is idempotent.
func (h *Holds) Sync(ctx context.Context, subjectHMAC string) error {
	var held bool
	var generation, synced int64
	err := h.pool.QueryRow(ctx, `SELECT held, generation, synced FROM lethe.hold_sync WHERE subject_hmac = $1`, subjectHMAC).Scan(&held, &generation, &synced)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && synced >= generation) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("error reading hold sync: %w", err)
	}
	sess, err := trySubjectSession(ctx, h.pool, subjectHMAC)
	if err != nil {
		return err
	}
	if sess == nil {
		return ErrRetryLater
	}
	defer sess.release(ctx)
	var claimed bool
	if err := sess.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lethe.work_item WHERE subject_hmac = $1)`, subjectHMAC).Scan(&claimed); err != nil {
		return fmt.Errorf("error reading work items: %w", err)
	}
	if claimed {
		return ErrRetryLater
	}
	// Read the wanted state again under the lock: it is what counts.
	if err := sess.conn.QueryRow(ctx, `SELECT held, generation FROM lethe.hold_sync WHERE subject_hmac = $1`, subjectHMAC).Scan(&held, &generation); err != nil {
		return fmt.Errorf("error reading hold sync: %w", err)
	}
	n, err := h.store.SetLegalHold(ctx, subjectHMAC, held)
	if err != nil {
		recordSyncError(ctx, sess.conn, subjectHMAC, err)
		return err
	}
	var pruned []string
	if !held {
		var keep string
		err := sess.conn.QueryRow(ctx, `SELECT version_id FROM lethe.manifest WHERE subject_hmac = $1`, subjectHMAC).Scan(&keep)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("error reading manifest: %w", err)
		}
		if keep != "" {
			if pruned, err = h.store.Prune(ctx, subjectHMAC, keep); err != nil {
				recordSyncError(ctx, sess.conn, subjectHMAC, err)
				return err
			}
		}
	}
	tx, err := sess.conn.Begin(ctx)
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

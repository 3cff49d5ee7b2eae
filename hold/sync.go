package hold

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/retention"
)

// ErrRetryLater means the sync cannot proceed yet: the subject is being
// archived or is locked by other work. Its job tries again in a few seconds.
var ErrRetryLater = errors.New("subject is busy; retry later")

// legalHolder is what a sync needs of the object store; *archive.Archiver
// is one.
type legalHolder interface {
	SetLegalHold(ctx context.Context, name, versionID string, on bool) error
}

// Syncer brings the S3 legal holds of the segments that hold a subject's
// parts in line with the holds.
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

// Sync brings in line the S3 legal hold of every segment that holds a part
// of the subject: a segment is under a legal hold while any live part in it
// (one whose key is stored) belongs to a held subject, and not otherwise.
// It returns ErrRetryLater while the subject is being archived or is locked
// by other work, so that the segment being written is seen once it commits.
// It is idempotent.
func (h *Syncer) Sync(ctx context.Context, subjectHMAC string) error {
	var generation, synced int64
	err := h.pool.QueryRow(ctx, `SELECT generation, synced FROM lethe.hold_sync WHERE subject_hmac = $1`, subjectHMAC).Scan(&generation, &synced)
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
	// Read the generation again under the lock: it is what this sync does.
	if err := sess.Conn.QueryRow(ctx, `SELECT generation FROM lethe.hold_sync WHERE subject_hmac = $1`, subjectHMAC).Scan(&generation); err != nil {
		return fmt.Errorf("error reading hold sync: %w", err)
	}
	rows, err := sess.Conn.Query(ctx, `
		SELECT DISTINCT segment_id FROM lethe.manifest WHERE subject_hmac = $1 ORDER BY segment_id`, subjectHMAC)
	if err != nil {
		return fmt.Errorf("error reading the manifest: %w", err)
	}
	segments, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("error reading the manifest: %w", err)
	}
	var on, off []string
	for _, id := range segments {
		name, wanted, changed, err := h.syncSegment(ctx, sess.Conn, id)
		if err != nil {
			recordSyncError(ctx, sess.Conn, subjectHMAC, err)
			return err
		}
		switch {
		case changed && wanted:
			on = append(on, name)
		case changed:
			off = append(off, name)
		}
	}
	return pgx.BeginFunc(ctx, sess.Conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			UPDATE lethe.hold_sync SET synced = $2, synced_at = now(), last_error = NULL
			WHERE subject_hmac = $1 AND synced < $2`, subjectHMAC, generation); err != nil {
			return fmt.Errorf("error recording hold sync: %w", err)
		}
		return audit.Append(ctx, tx, audit.Entry{Kind: audit.KindHoldSynced, Actor: "lethe", SubjectHMAC: subjectHMAC,
			Detail: map[string]any{"segments": len(segments), "legal_hold_on": nonNil(on), "legal_hold_off": nonNil(off)}})
	})
}

// syncSegment brings one segment's legal hold in line, holding the
// segment's row so that two syncs of one segment take turns. It reports
// the segment's name, whether it should be held, and whether that changed.
func (h *Syncer) syncSegment(ctx context.Context, conn *pgxpool.Conn, id int64) (name string, wanted, changed bool, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var version *string
		var current bool
		if err := tx.QueryRow(ctx, `
			SELECT name, version_id, legal_hold,
			       EXISTS (SELECT 1 FROM lethe.manifest m JOIN lethe.hold h ON h.subject_hmac = m.subject_hmac AND h.released_at IS NULL
			               WHERE m.segment_id = s.id AND m.wrapped_key IS NOT NULL)
			FROM lethe.segment s WHERE id = $1 AND state = 'committed' FOR UPDATE`, id).Scan(&name, &version, &current, &wanted); err != nil {
			return fmt.Errorf("error reading segment %d: %w", id, err)
		}
		if wanted == current {
			return nil
		}
		err := h.store.SetLegalHold(ctx, name, *version, wanted)
		if errors.Is(err, archive.ErrNoObjectLock) {
			// lock_mode none on a bucket without Object Lock: only the
			// database keeps the held subject's key; nothing keeps the
			// segment.
			h.logger.Warn("the bucket has no Object Lock: segment left without a legal hold", "segment", name)
			return nil
		}
		if err != nil {
			return err
		}
		changed = true
		_, err = tx.Exec(ctx, `UPDATE lethe.segment SET legal_hold = $2 WHERE id = $1`, id, wanted)
		return err
	})
	return name, wanted, changed, err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
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

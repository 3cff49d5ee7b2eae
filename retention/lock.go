package retention

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Whatever destroys a subject, archives it, or changes whether it is held,
// takes the subject's advisory lock first, so that a request, a hold and a
// sweep on one subject are serialised (docs/ARCHITECTURE.md, "Locks").

// subjectLockClass is the first key of every subject's advisory lock
// ("LETH"). The two-key lock space does not overlap the one-key space that
// batch and run locks use.
const subjectLockClass = 0x4c455448

// subjectLockKey is the second key of a subject's advisory lock: the first
// four bytes of its HMAC. Two subjects that share it merely wait for each
// other.
func subjectLockKey(subjectHMAC string) int32 {
	if len(subjectHMAC) < 8 {
		return 0
	}
	b, err := hex.DecodeString(subjectHMAC[:8])
	if err != nil || len(b) < 4 {
		return 0
	}
	return int32(binary.BigEndian.Uint32(b))
}

// LockSubjects takes, in tx, the advisory locks of the subjects, in a fixed
// order so that two transactions never wait on each other in a cycle.
func LockSubjects(ctx context.Context, tx pgx.Tx, hmacs []string) error {
	keys := make([]int32, 0, len(hmacs))
	for _, h := range hmacs {
		keys = append(keys, subjectLockKey(h))
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	if len(keys) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::int[]) AS k ORDER BY k`, subjectLockClass, keys); err != nil {
		return fmt.Errorf("error locking subjects: %w", err)
	}
	return nil
}

// TryLockSubject takes, in tx, the subject's advisory lock if nobody holds
// it, and reports whether it did.
func TryLockSubject(ctx context.Context, tx pgx.Tx, subjectHMAC string) (bool, error) {
	var free bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1, $2)`, subjectLockClass, subjectLockKey(subjectHMAC)).Scan(&free); err != nil {
		return false, fmt.Errorf("error locking subject: %w", err)
	}
	return free, nil
}

// TryLockSubjects takes, in tx, the advisory locks of those of the subjects
// that nobody else holds, and returns them, in the order given.
func TryLockSubjects(ctx context.Context, tx pgx.Tx, hmacs []string) ([]string, error) {
	if len(hmacs) == 0 {
		return nil, nil
	}
	keys := make([]int32, len(hmacs))
	for i, h := range hmacs {
		keys[i] = subjectLockKey(h)
	}
	return Collect(ctx, tx, "locking subjects", `
		SELECT h FROM unnest($2::text[], $3::int[]) WITH ORDINALITY AS u (h, k, i)
		WHERE pg_try_advisory_xact_lock($1, k) ORDER BY i`, pgx.RowTo[string], subjectLockClass, hmacs, keys)
}

// Session is a subject's advisory lock held on a connection of its own, for
// work that spans transactions and object-store calls. Do that work on Conn.
type Session struct {
	// Conn holds the lock.
	Conn *pgxpool.Conn
	key  int32
}

// subjectLockWait is how long a job waits for a subject's lock before it
// gives up and tries again later.
const subjectLockWait = 3 * time.Second

// TrySubject takes the subject's lock for a session, waiting up to a few
// seconds, or returns nil if someone else holds it all that time.
func TrySubject(ctx context.Context, pool *pgxpool.Pool, subjectHMAC string) (*Session, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("error acquiring connection: %w", err)
	}
	s := &Session{Conn: conn, key: subjectLockKey(subjectHMAC)}
	deadline := time.Now().Add(subjectLockWait)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, subjectLockClass, s.key).Scan(&ok); err != nil {
			conn.Release()
			return nil, fmt.Errorf("error locking subject: %w", err)
		}
		if ok {
			return s, nil
		}
		if time.Now().After(deadline) {
			conn.Release()
			return nil, nil
		}
		select {
		case <-ctx.Done():
			conn.Release()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Release lets the subject go and returns the connection to the pool.
func (s *Session) Release(ctx context.Context) {
	if _, err := s.Conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, $2)`, subjectLockClass, s.key); err != nil {
		// Closing the connection drops the lock.
		_ = s.Conn.Conn().Close(context.WithoutCancel(ctx))
	}
	s.Conn.Release()
}

// runLockKey is the advisory lock a sweep holds while it claims.
func runLockKey(runID int64) int64 { return 0x4c52<<48 | runID }

// batchLockKey is the advisory lock that whoever works a batch holds.
func batchLockKey(batchID int64) int64 { return 0x4c45<<48 | batchID }

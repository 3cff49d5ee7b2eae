package retention

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// subjectLockClass is the first key of every subject's advisory lock
// ("LETH"). The two-key lock space does not overlap the one-key space that
// batch locks use.
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

// lockSubjectsTx takes, in tx, the advisory locks of the subjects, in a
// fixed order so that two transactions never wait on each other in a cycle.
// Whatever destroys a subject, or changes whether it is held, takes its
// lock first.
func lockSubjectsTx(ctx context.Context, tx pgx.Tx, hmacs []string) error {
	keys := make([]int32, 0, len(hmacs))
	seen := map[int32]bool{}
	for _, h := range hmacs {
		k := subjectLockKey(h)
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	if len(keys) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::int[]) AS k ORDER BY k`, subjectLockClass, keys); err != nil {
		return fmt.Errorf("error locking subjects: %w", err)
	}
	return nil
}

// subjectSession is a subject's advisory lock held on a connection of its
// own, for work that spans transactions and object-store calls.
type subjectSession struct {
	conn *pgxpool.Conn
	key  int32
}

// subjectLockWait is how long a job waits for a subject's lock before it
// gives up and tries again later.
const subjectLockWait = 3 * time.Second

// trySubjectSession takes the subject's lock for the session, waiting up to
// subjectLockWait, or returns nil if someone else holds it all that time.
func trySubjectSession(ctx context.Context, pool *pgxpool.Pool, subjectHMAC string) (*subjectSession, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("error acquiring connection: %w", err)
	}
	s := &subjectSession{conn: conn, key: subjectLockKey(subjectHMAC)}
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

func (s *subjectSession) release(ctx context.Context) {
	if _, err := s.conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, $2)`, subjectLockClass, s.key); err != nil {
		// Closing the connection drops the lock.
		_ = s.conn.Conn().Close(context.WithoutCancel(ctx))
	}
	s.conn.Release()
}

package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"
)

type testBundle struct {
	pool *pgxpool.Pool
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	return &testBundle{pool: testenv.NewDB(t).Pool}
}

// appendTx appends entries in a transaction of their own and commits it.
func (tb *testBundle) appendTx(t *testing.T, entries ...Entry) {
	t.Helper()
	err := pgx.BeginFunc(t.Context(), tb.pool, func(tx pgx.Tx) error {
		return Append(t.Context(), tx, entries...)
	})
	require.NoError(t, err)
}

// entries returns n entries of assorted shapes.
func entries(n int) []Entry {
	var es []Entry
	for i := range n {
		e := Entry{Kind: KindArchive, Actor: "lethe", SubjectHMAC: fmt.Sprintf("%064x", i+1),
			Detail: map[string]any{"policy": "former-customers", "version_id": fmt.Sprintf("v%d", i), "rows": i * 3}}
		switch i % 4 {
		case 1:
			e = Entry{Kind: KindRun, Actor: "lethe", Detail: struct {
				Run      int64 `json:"run"`
				Archived int   `json:"archived"`
			}{int64(i), 7}}
		case 2:
			e = Entry{Kind: KindRestore, Actor: "Grace \"Amazing\" Hopper ☃", SubjectHMAC: "ab", Detail: []string{"a", "<b>&"}}
		case 3:
			e = Entry{Kind: KindKeysRewrapped, Actor: "lethe"} // no detail
		}
		es = append(es, e)
	}
	return es
}

func (tb *testBundle) verify(t *testing.T) *Result {
	t.Helper()
	res, err := Verify(t.Context(), tb.pool)
	require.NoError(t, err)
	return res
}

func (tb *testBundle) head(t *testing.T) (int64, []byte) {
	t.Helper()
	var seq int64
	var hash []byte
	require.NoError(t, tb.pool.QueryRow(t.Context(), `SELECT seq, hash FROM lethe.audit_head`).Scan(&seq, &hash))
	return seq, hash
}

func (tb *testBundle) record(t *testing.T, seq int64) record {
	t.Helper()
	return scanRecord(t, tb.pool.QueryRow(t.Context(), recordSQL, seq))
}

// txChain is a chain built in a transaction that the test rolls back, so
// that cases can share a database.
type txChain struct {
	tx pgx.Tx
}

func (tb *testBundle) begin(t *testing.T) *txChain {
	t.Helper()
	tx, err := tb.pool.Begin(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return &txChain{tx: tx}
}

// tamper runs sql with the append-only triggers off, as a superuser could;
// the rollback turns them on again.
func (c *txChain) tamper(t *testing.T, sql string, args ...any) {
	t.Helper()
	_, err := c.tx.Exec(t.Context(), `ALTER TABLE lethe.audit_log DISABLE TRIGGER USER`)
	require.NoError(t, err)
	_, err = c.tx.Exec(t.Context(), sql, args...)
	require.NoError(t, err)
}

func (c *txChain) record(t *testing.T, seq int64) record {
	t.Helper()
	return scanRecord(t, c.tx.QueryRow(t.Context(), recordSQL, seq))
}

func (c *txChain) verify(t *testing.T) *Result {
	t.Helper()
	res, err := Verify(t.Context(), c.tx)
	require.NoError(t, err)
	return res
}

const recordSQL = `
	SELECT seq, at, kind, actor, coalesce(subject_hmac, ''), detail, prev_hash, hash
	FROM lethe.audit_log WHERE seq = $1`

func scanRecord(t *testing.T, row pgx.Row) record {
	t.Helper()
	var r record
	require.NoError(t, row.Scan(&r.Seq, &r.At, &r.Kind, &r.Actor, &r.SubjectHMAC, &r.Detail, &r.PrevHash, &r.Hash))
	return r
}

func TestAppendAndVerify(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()

	res := tb.verify(t)
	require.Equal(t, &Result{OK: true}, res, "an empty log verifies")
	seq, hash := tb.head(t)
	require.Zero(t, seq)
	require.Equal(t, make([]byte, sha256.Size), hash)

	// Two appends in one transaction, then more in others.
	err := pgx.BeginFunc(ctx, tb.pool, func(tx pgx.Tx) error {
		if err := Append(ctx, tx, entries(3)...); err != nil {
			return err
		}
		return Append(ctx, tx, entries(4)[3:]...)
	})
	require.NoError(t, err)
	tb.appendTx(t, entries(5)...)
	tb.appendTx(t) // nothing: no-op

	res = tb.verify(t)
	require.True(t, res.OK, res.Problem)
	require.Equal(t, int64(9), res.Entries)
	require.Zero(t, res.BadSeq)
	require.Empty(t, res.Problem)

	// The stored chain: gapless, each entry linking to the one before,
	// the head on the last.
	prev := make([]byte, sha256.Size)
	for seq := int64(1); seq <= 9; seq++ {
		r := tb.record(t, seq)
		require.Equal(t, prev, r.PrevHash, "entry %d links to entry %d", seq, seq-1)
		require.Equal(t, r.hash(prev), r.Hash)
		require.Len(t, r.Hash, sha256.Size)
		prev = r.Hash
	}
	seq, hash = tb.head(t)
	require.Equal(t, int64(9), seq)
	require.Equal(t, prev, hash)

	// Entries are stored as given.
	r := tb.record(t, 1)
	require.Equal(t, KindArchive, r.Kind)
	require.Equal(t, "lethe", r.Actor)
	require.Equal(t, fmt.Sprintf("%064x", 1), r.SubjectHMAC)
	require.JSONEq(t, `{"policy":"former-customers","version_id":"v0","rows":0}`, r.Detail)
	require.WithinDuration(t, time.Now(), r.At, time.Minute)
	r = tb.record(t, 3)
	require.Equal(t, "Grace \"Amazing\" Hopper ☃", r.Actor)
	require.Equal(t, `["a","\u003cb\u003e\u0026"]`, r.Detail, "detail is kept as the exact bytes hashed")
	r = tb.record(t, 4)
	require.Equal(t, "{}", r.Detail, "no detail is {}")
	var subject *string
	require.NoError(t, tb.pool.QueryRow(ctx, `SELECT subject_hmac FROM lethe.audit_log WHERE seq = 2`).Scan(&subject))
	require.Nil(t, subject, "no subject is NULL")

	// Verify also works inside a transaction.
	err = pgx.BeginFunc(ctx, tb.pool, func(tx pgx.Tx) error {
		res, err := Verify(ctx, tx)
		require.NoError(t, err)
		require.True(t, res.OK)
		require.Equal(t, int64(9), res.Entries)
		return nil
	})
	require.NoError(t, err)
}

func TestAppendUnencodableDetail(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	tb.appendTx(t, entries(2)...)

	err := pgx.BeginFunc(ctx, tb.pool, func(tx pgx.Tx) error {
		return Append(ctx, tx, Entry{Kind: KindRun, Actor: "lethe"}, Entry{Kind: KindRun, Actor: "lethe", Detail: make(chan int)})
	})
	require.ErrorContains(t, err, "error encoding audit detail")

	res := tb.verify(t)
	require.True(t, res.OK, res.Problem)
	require.Equal(t, int64(2), res.Entries, "no entry of the failed append was written")
}

func TestAppendConcurrent(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()

	const workers, perWorker = 8, 6
	var wg sync.WaitGroup
	errs := make([]error, workers)
	start := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			<-start
			actor := fmt.Sprintf("worker-%d", w)
			errs[w] = pgx.BeginFunc(ctx, tb.pool, func(tx pgx.Tx) error {
				for i := range perWorker / 2 {
					if err := Append(ctx, tx, Entry{Kind: KindArchive, Actor: actor, Detail: map[string]int{"i": 2 * i}},
						Entry{Kind: KindArchive, Actor: actor, Detail: map[string]int{"i": 2*i + 1}}); err != nil {
						return err
					}
					time.Sleep(time.Millisecond) // hold the head while others wait
				}
				return nil
			})
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}

	res := tb.verify(t)
	require.True(t, res.OK, res.Problem)
	require.Equal(t, int64(workers*perWorker), res.Entries)

	rows, err := tb.pool.Query(ctx, `SELECT seq, actor, detail FROM lethe.audit_log ORDER BY seq`)
	require.NoError(t, err)
	type row struct {
		seq           int64
		actor, detail string
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.seq, &x.actor, &x.detail)
	})
	require.NoError(t, err)
	require.Len(t, all, workers*perWorker)
	for i, r := range all {
		require.Equal(t, int64(i+1), r.seq, "seqs are gapless")
	}
	// A transaction holds the head until it ends, so each worker's entries
	// are contiguous and in its order.
	for i := 0; i < len(all); i += perWorker {
		for j := range perWorker {
			require.Equal(t, all[i].actor, all[i+j].actor, "entries of one transaction are contiguous")
			require.JSONEq(t, fmt.Sprintf(`{"i":%d}`, j), all[i+j].detail)
		}
	}
	seq, _ := tb.head(t)
	require.Equal(t, int64(workers*perWorker), seq)
}

func TestRollbackLeavesNothing(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()

	tb.appendTx(t, entries(2)...)
	seq0, hash0 := tb.head(t)

	tx, err := tb.pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, Append(ctx, tx, entries(3)...))
	require.NoError(t, tx.Rollback(ctx))

	seq, hash := tb.head(t)
	require.Equal(t, seq0, seq, "the head did not move")
	require.Equal(t, hash0, hash)
	res := tb.verify(t)
	require.True(t, res.OK, res.Problem)
	require.Equal(t, int64(2), res.Entries)

	// The cause failing after the append rolls the entry back with it.
	boom := errors.New("boom")
	err = pgx.BeginFunc(ctx, tb.pool, func(tx pgx.Tx) error {
		if err := Append(ctx, tx, entries(1)...); err != nil {
			return err
		}
		return boom
	})
	require.ErrorIs(t, err, boom)

	// The next committed entry follows without a gap.
	tb.appendTx(t, entries(1)...)
	res = tb.verify(t)
	require.True(t, res.OK, res.Problem)
	require.Equal(t, int64(3), res.Entries)
	r := tb.record(t, 3)
	require.Equal(t, hash0, r.PrevHash)
}

func TestAppendOnly(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	tb.appendTx(t, entries(3)...)

	for _, sql := range []string{
		`UPDATE lethe.audit_log SET actor = 'mallory' WHERE seq = 2`,
		`UPDATE lethe.audit_log SET detail = '{}'`,
		`DELETE FROM lethe.audit_log WHERE seq = 3`,
		`DELETE FROM lethe.audit_log`,
		`TRUNCATE lethe.audit_log`,
	} {
		_, err := tb.pool.Exec(ctx, sql)
		require.Error(t, err, sql)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, sql)
		require.Equal(t, "42501", pgErr.Code, sql) // insufficient_privilege
		require.Contains(t, pgErr.Message, "append-only", sql)
	}
	res := tb.verify(t)
	require.True(t, res.OK, res.Problem)
	require.Equal(t, int64(3), res.Entries)
	require.Equal(t, "lethe", tb.record(t, 2).Actor)
}

func TestVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	// One database; each case builds its chain in a transaction of its own
	// and rolls it back.
	db := setup(t)

	const n = 6
	for _, tc := range []struct {
		name    string
		tamper  func(t *testing.T, c *txChain)
		badSeq  int64
		problem string
	}{
		{
			name: "edited detail",
			tamper: func(t *testing.T, c *txChain) {
				c.tamper(t, `UPDATE lethe.audit_log SET detail = '{"rows": 0}' WHERE seq = 3`)
			},
			badSeq:  3,
			problem: "edited",
		},
		{
			name: "edited detail, same JSON value",
			tamper: func(t *testing.T, c *txChain) {
				c.tamper(t, `UPDATE lethe.audit_log SET detail = detail || ' ' WHERE seq = 3`)
			},
			badSeq:  3,
			problem: "edited",
		},
		{
			name: "edited actor",
			tamper: func(t *testing.T, c *txChain) {
				c.tamper(t, `UPDATE lethe.audit_log SET actor = 'mallory' WHERE seq = 2`)
			},
			badSeq:  2,
			problem: "edited",
		},
		{
			name: "edited kind",
			tamper: func(t *testing.T, c *txChain) {
				c.tamper(t, `UPDATE lethe.audit_log SET kind = 'run' WHERE seq = 5`)
			},
			badSeq:  5,
			problem: "edited",
		},
		{
			name: "edited subject",
			tamper: func(t *testing.T, c *txChain) {
				c.tamper(t, `UPDATE lethe.audit_log SET subject_hmac = 'ff' WHERE seq = 1`)
			},
			badSeq:  1,
			problem: "edited",
		},
		{
			name: "removed subject",
			tamper: func(t *testing.T, c *txChain) {
				c.tamper(t, `UPDATE lethe.audit_log SET subject_hmac = NULL WHERE seq = 1`)
			},
			badSeq:  1,
			problem: "edited",
		},
		{
			name: "edited time",
			tamper: func(t *testing.T, c *txChain) {
				c.tamper(t, `UPDATE lethe.audit_log SET at = at - interval '1 microsecond' WHERE seq = 4`)
			},
			badSeq:  4,
			problem: "edited",
		},
		{
			name: "edited last entry",
			tamper: func(t *testing.T, c *txChain) {
				c.tamper(t, `UPDATE lethe.audit_log SET actor = 'mallory' WHERE seq = $1`, n)
			},
			badSeq:  n,
			problem: "edited",
		},
		{
			name: "edited entry with its hash recomputed",
			tamper: func(t *testing.T, c *txChain) {
				r := c.record(t, 3)
				r.Actor = "mallory"
				c.tamper(t, `UPDATE lethe.audit_log SET actor = $1, hash = $2 WHERE seq = 3`, r.Actor, r.hash(r.PrevHash))
			},
			badSeq:  4,
			problem: "does not link",
		},
		{
			name: "edited prev_hash",
			tamper: func(t *testing.T, c *txChain) {
				c.tamper(t, `UPDATE lethe.audit_log SET prev_hash = $1 WHERE seq = 4`, make([]byte, 32))
			},
			badSeq:  4,
			problem: "does not link",
		},
		{
			name:    "deleted entry",
			tamper:  func(t *testing.T, c *txChain) { c.tamper(t, `DELETE FROM lethe.audit_log WHERE seq = 3`) },
			badSeq:  4,
			problem: "missing",
		},
		{
			name:    "deleted first entry",
			tamper:  func(t *testing.T, c *txChain) { c.tamper(t, `DELETE FROM lethe.audit_log WHERE seq = 1`) },
			badSeq:  2,
			problem: "missing",
		},
		{
			name: "deleted entry, later ones renumbered",
			tamper: func(t *testing.T, c *txChain) {
				c.tamper(t, `DELETE FROM lethe.audit_log WHERE seq = 3`)
				c.tamper(t, `UPDATE lethe.audit_log SET seq = seq - 1 + 1000 WHERE seq > 3`)
				c.tamper(t, `UPDATE lethe.audit_log SET seq = seq - 1000 WHERE seq > 1000`)
			},
			badSeq:  3,
			problem: "does not link",
		},
		{
			name: "two entries swapped",
			tamper: func(t *testing.T, c *txChain) {
				c.tamper(t, `UPDATE lethe.audit_log SET seq = CASE seq WHEN 3 THEN 1004 ELSE 1003 END WHERE seq IN (3, 4)`)
				c.tamper(t, `UPDATE lethe.audit_log SET seq = seq - 1000 WHERE seq > 1000`)
			},
			badSeq:  3,
			problem: "does not link",
		},
		{
			name: "two entries' contents swapped, seq and hashes kept",
			tamper: func(t *testing.T, c *txChain) {
				c.tamper(t, `
					UPDATE lethe.audit_log a SET kind = b.kind, actor = b.actor, subject_hmac = b.subject_hmac, detail = b.detail
					FROM lethe.audit_log b WHERE (a.seq, b.seq) IN ((2, 3), (3, 2))`)
			},
			badSeq:  2,
			problem: "edited",
		},
		{
			name: "forged entry inserted, plausible hash",
			tamper: func(t *testing.T, c *txChain) {
				prev := c.record(t, 3)
				forged := record{Seq: 4, At: prev.At, Kind: KindRestore, Actor: "lethe", SubjectHMAC: "ab", Detail: `{}`}
				forged.Hash = forged.hash(prev.Hash)
				c.tamper(t, `UPDATE lethe.audit_log SET seq = seq + 1000 WHERE seq > 3`)
				c.tamper(t, `UPDATE lethe.audit_log SET seq = seq - 999 WHERE seq > 1000`)
				c.tamper(t, `INSERT INTO lethe.audit_log (seq, at, kind, actor, subject_hmac, detail, prev_hash, hash)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
					forged.Seq, forged.At, forged.Kind, forged.Actor, forged.SubjectHMAC, forged.Detail, prev.Hash, forged.Hash)
			},
			badSeq:  5,
			problem: "does not link",
		},
		{
			name: "forged entry inserted, made-up hash",
			tamper: func(t *testing.T, c *txChain) {
				prev := c.record(t, 3)
				c.tamper(t, `UPDATE lethe.audit_log SET seq = seq + 1000 WHERE seq > 3`)
				c.tamper(t, `UPDATE lethe.audit_log SET seq = seq - 999 WHERE seq > 1000`)
				c.tamper(t, `INSERT INTO lethe.audit_log (seq, at, kind, actor, detail, prev_hash, hash)
					VALUES (4, now(), 'restore', 'lethe', '{}', $1, $2)`, prev.Hash, bytes.Repeat([]byte{7}, 32))
			},
			badSeq:  4,
			problem: "edited",
		},
		{
			name: "forged entry appended, head not moved",
			tamper: func(t *testing.T, c *txChain) {
				last := c.record(t, n)
				forged := record{Seq: n + 1, At: last.At, Kind: KindRun, Actor: "lethe", Detail: `{}`}
				c.tamper(t, `INSERT INTO lethe.audit_log (seq, at, kind, actor, detail, prev_hash, hash)
					VALUES ($1, $2, $3, $4, $5, $6, $7)`, forged.Seq, forged.At, forged.Kind, forged.Actor, forged.Detail, last.Hash, forged.hash(last.Hash))
			},
			badSeq:  0,
			problem: "head records entry 6",
		},
		{
			name:    "cut tail",
			tamper:  func(t *testing.T, c *txChain) { c.tamper(t, `DELETE FROM lethe.audit_log WHERE seq > 4`) },
			badSeq:  0,
			problem: "cut from the end",
		},
		{
			name:    "everything deleted",
			tamper:  func(t *testing.T, c *txChain) { c.tamper(t, `TRUNCATE lethe.audit_log`) },
			badSeq:  0,
			problem: "cut from the end",
		},
		{
			name: "head moved back",
			tamper: func(t *testing.T, c *txChain) {
				r := c.record(t, 4)
				c.tamper(t, `UPDATE lethe.audit_head SET seq = 4, hash = $1`, r.Hash)
			},
			badSeq:  0,
			problem: "head records entry 4",
		},
		{
			name: "head hash changed",
			tamper: func(t *testing.T, c *txChain) {
				c.tamper(t, `UPDATE lethe.audit_head SET hash = $1`, make([]byte, 32))
			},
			badSeq:  0,
			problem: "head",
		},
		{
			name:    "head missing",
			tamper:  func(t *testing.T, c *txChain) { c.tamper(t, `DELETE FROM lethe.audit_head`) },
			badSeq:  0,
			problem: "head is missing",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := db.begin(t)
			for _, e := range entries(n) {
				require.NoError(t, Append(t.Context(), c.tx, e))
			}
			res := c.verify(t)
			require.True(t, res.OK, res.Problem)
			require.Equal(t, int64(n), res.Entries)

			tc.tamper(t, c)

			res = c.verify(t)
			require.False(t, res.OK)
			require.Equal(t, tc.badSeq, res.BadSeq, res.Problem)
			require.Contains(t, res.Problem, tc.problem)

			var count int64
			require.NoError(t, c.tx.QueryRow(t.Context(), `SELECT count(*) FROM lethe.audit_log`).Scan(&count))
			require.Equal(t, count, res.Entries, "every entry is still counted after the first fault")
		})
	}
}

func TestVerifyAcrossPages(t *testing.T) {
	t.Parallel()
	db := setup(t)

	// Verify reads 5000 entries a page; faults just past a page boundary
	// must still be found.
	const n = 5003
	for _, tc := range []struct {
		name    string
		sql     string
		badSeq  int64
		problem string
	}{
		{"intact", ``, 0, ""},
		{"edited first of page two", `UPDATE lethe.audit_log SET actor = 'mallory' WHERE seq = 5001`, 5001, "edited"},
		{"deleted last of page one", `DELETE FROM lethe.audit_log WHERE seq = 5000`, 5001, "missing"},
		{"deleted first of page two", `DELETE FROM lethe.audit_log WHERE seq = 5001`, 5002, "missing"},
		{"cut to one page", `DELETE FROM lethe.audit_log WHERE seq > 5000`, 0, "cut from the end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := db.begin(t)
			all := make([]Entry, n)
			for i := range all {
				all[i] = Entry{Kind: KindArchive, Actor: "lethe", SubjectHMAC: fmt.Sprintf("%064x", i), Detail: map[string]int{"i": i}}
			}
			require.NoError(t, Append(t.Context(), c.tx, all...))
			if tc.sql != "" {
				c.tamper(t, tc.sql)
			}
			res := c.verify(t)
			if tc.sql == "" {
				require.True(t, res.OK, res.Problem)
				require.Equal(t, int64(n), res.Entries)
				return
			}
			require.False(t, res.OK)
			require.Equal(t, tc.badSeq, res.BadSeq, res.Problem)
			require.Contains(t, res.Problem, tc.problem)
		})
	}
}

// racingDB commits an append by someone else just before Verify reads the
// chain's head, through whichever handle Verify uses.
type racingDB struct {
	*pgxpool.Pool
	race func()
}

func (r *racingDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if strings.Contains(sql, "audit_head") {
		r.race()
	}
	return r.Pool.QueryRow(ctx, sql, args...)
}

func (r *racingDB) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	tx, err := r.Pool.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &racingTx{Tx: tx, race: r.race}, nil
}

type racingTx struct {
	pgx.Tx
	race func()
}

func (r *racingTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if strings.Contains(sql, "audit_head") {
		r.race()
	}
	return r.Tx.QueryRow(ctx, sql, args...)
}

// TestVerifyWhileAppending checks that an append committed while Verify runs
// is not mistaken for tampering: `lethe audit verify` runs beside workers.
func TestVerifyWhileAppending(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.appendTx(t, entries(4)...)

	var raced atomic.Int32
	db := &racingDB{Pool: tb.pool, race: func() {
		raced.Add(1)
		tb.appendTx(t, Entry{Kind: KindRun, Actor: "lethe"})
	}}
	res, err := Verify(t.Context(), db)
	require.NoError(t, err)
	require.Equal(t, int32(1), raced.Load(), "the append raced the head read")
	require.True(t, res.OK, res.Problem)
	require.Equal(t, int64(4), res.Entries, "Verify sees one consistent state")

	res = tb.verify(t)
	require.True(t, res.OK, res.Problem)
	require.Equal(t, int64(5), res.Entries)
}

// TestHashCoversEveryField checks that the hash changes with each field and
// that the length prefixes keep fields apart.
func TestHashCoversEveryField(t *testing.T) {
	t.Parallel()

	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	base := record{Seq: 7, At: at, Kind: "archive", Actor: "lethe", SubjectHMAC: "ab", Detail: `{"a":1}`}
	prev := bytes.Repeat([]byte{1}, 32)
	h := base.hash(prev)
	require.Len(t, h, sha256.Size)
	require.Equal(t, h, base.hash(prev), "deterministic")
	same := base
	same.At = at.In(time.FixedZone("X", 3600))
	require.Equal(t, h, same.hash(prev), "the instant counts, not its zone")

	variants := map[string]record{}
	v := base
	v.Seq = 8
	variants["seq"] = v
	v = base
	v.At = at.Add(time.Microsecond)
	variants["at"] = v
	v = base
	v.Kind = "run"
	variants["kind"] = v
	v = base
	v.Actor = "lethE"
	variants["actor"] = v
	v = base
	v.SubjectHMAC = "ac"
	variants["subject"] = v
	v = base
	v.Detail = `{"a":2}`
	variants["detail"] = v
	// Moving bytes between adjacent fields.
	v = base
	v.Kind, v.Actor = "archivel", "ethe"
	variants["kind|actor boundary"] = v
	v = base
	v.SubjectHMAC, v.Detail = "ab{", `"a":1}`
	variants["subject|detail boundary"] = v
	for name, r := range variants {
		require.NotEqual(t, h, r.hash(prev), name)
	}
	require.NotEqual(t, h, base.hash(bytes.Repeat([]byte{2}, 32)), "prev")
	require.NotEqual(t, h, base.hash(nil), "prev")
}

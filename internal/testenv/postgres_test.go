package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"
)

// TestPostgres checks the private cluster: a migrated database on it,
// committed data surviving a clean stop and an immediate one (crash
// recovery), connections refused while it is down, the same URL after a
// restart, and a start under two seconds.
func TestPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg := testenv.NewPostgres(t)
	require.Contains(t, pg.URL, "127.0.0.1")
	db := pg.NewDB(t)

	var tables int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'lethe' AND tablename IN ('manifest', 'work_item', 'river_job', 'audit_log')`).Scan(&tables))
	require.Equal(t, 4, tables, "the database is not migrated")
	_, err := db.Pool.Exec(ctx, `CREATE TABLE t (n int); INSERT INTO t VALUES (1)`)
	require.NoError(t, err)

	count := func() (int, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, db.URL)
		if err != nil {
			return 0, err
		}
		defer conn.Close(ctx)
		var n int
		return n, conn.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n)
	}

	for i, stop := range []func() error{pg.Stop, pg.Kill} {
		require.NoError(t, stop())
		require.False(t, pg.Running())
		_, err := count()
		require.Error(t, err, "connected to a stopped cluster")
		// Stopping a stopped cluster does nothing.
		require.NoError(t, pg.Stop())
		require.NoError(t, pg.Kill())

		start := time.Now()
		require.NoError(t, pg.Start())
		took := time.Since(start)
		t.Logf("start after stop %d: %s", i, took)
		require.Less(t, took, 2*time.Second, "starting the cluster is slow")
		require.True(t, pg.Running())
		n, err := count()
		require.NoError(t, err)
		require.Equal(t, 1+i, n, "committed rows were lost")
		db.Pool.Reset() // its connections died with the server
		_, err = db.Pool.Exec(ctx, `INSERT INTO t VALUES (2)`)
		require.NoError(t, err)
	}

	require.NoError(t, pg.Restart())
	n, err := count()
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.NoError(t, pg.Start(), "starting a running cluster does nothing")
}

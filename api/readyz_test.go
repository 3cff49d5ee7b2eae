package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"
)

// TestAPIReadyzFollowsTheObjectStore stops the S3 server under a worker:
// /readyz turns 503 and names the archive, and is ready again once the
// server is back. /healthz stays 200 throughout.
func TestAPIReadyzFollowsTheObjectStore(t *testing.T) {
	t.Parallel()
	srv := testenv.NewS3Server(t)
	l := startLive(t, liveOptions{bucket: testenv.NewBucketOn(t, srv), worker: true})
	c := newAPIClient(t, "http://"+l.addr, nil)

	waitReady := func(want int) map[string]string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := c.call("GET", "/readyz", "", nil)
			if r.status == want {
				var v struct {
					Checks map[string]string `json:"checks"`
				}
				r.json(t, &v)
				return v.Checks
			}
			require.True(t, time.Now().Before(deadline), "/readyz stayed %d: %s", r.status, r.body)
			time.Sleep(250 * time.Millisecond)
		}
	}
	waitReady(200)
	require.NoError(t, srv.Kill())
	checks := waitReady(503)
	require.Equal(t, "ok", checks["database"])
	require.Equal(t, "ok", checks["migrations"])
	require.Equal(t, "failing", checks["archive"], "a caller without a token learns only what fails")
	var detail struct {
		Checks map[string]string `json:"checks"`
	}
	c.call("GET", "/readyz", "ops", nil).json(t, &detail)
	require.Contains(t, detail.Checks["archive"], "error probing bucket", "a caller with a token learns why")
	require.Equal(t, 200, c.call("GET", "/healthz", "", nil).status, "the process is alive")
	require.NoError(t, srv.Restart(context.Background()))
	require.Equal(t, map[string]string{"database": "ok", "migrations": "ok", "archive": "ok", "ledger": "ok"}, waitReady(200))
}

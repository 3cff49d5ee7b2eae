package hold_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/internal/lethetest"
	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/request"
	"github.com/lethehq/lethe/retention"
)

// BenchmarkHoldPlace places one hold on 7,000 subjects of a bigint key,
// typed as a legal team would paste them (" 0042 "), then releases it: the
// keys are made canonical and the holds written a batch at a time.
func BenchmarkHoldPlace(b *testing.B) {
	ctx := context.Background()
	db := testenv.NewDB(b)
	_, err := db.Pool.Exec(ctx, `CREATE SCHEMA k; CREATE TABLE k.subjects (id bigint PRIMARY KEY, status text, closed_at timestamptz)`)
	require.NoError(b, err)
	yaml := testenv.ConfigYAML(db, testenv.NewBucket(b), testenv.NewIdentity(b).Recipient().String(), `
subject:
  table: k.subjects
  key: id
policies:
  - name: p
    clock: closed_at
    retain: 1d
`)
	cfg, err := config.Load(strings.NewReader(yaml), func(string) (string, bool) { return "", false })
	require.NoError(b, err)
	plan, err := retention.Compile(ctx, db.Pool, cfg)
	require.NoError(b, err)
	q := &lethetest.Recorder{}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	intake, err := request.NewIntake(request.IntakeConfig{Pool: db.Pool, Plan: plan, Queue: q, Logger: logger})
	require.NoError(b, err)
	holds, err := hold.New(hold.Config{Pool: db.Pool, Plan: plan, Queue: q, Waiting: intake, Logger: logger})
	require.NoError(b, err)
	keys := make([]string, 7000)
	for i := range keys {
		keys[i] = fmt.Sprintf(" %04d ", i+1)
	}
	b.ResetTimer()
	for i := range b.N {
		matter := fmt.Sprintf("M-%d", i)
		res, err := holds.Place(ctx, matter, keys, "litigation", "legal")
		require.NoError(b, err)
		require.Len(b, res.Placed, len(keys))
		_, err = holds.Release(ctx, matter, nil, "legal")
		require.NoError(b, err)
		q.Taken()
	}
}

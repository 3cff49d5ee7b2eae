package jobs_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/internal/demo"
	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/jobs"
	"github.com/lethehq/lethe/migrations"
	"github.com/lethehq/lethe/retention"
)

type bundle struct {
	db   *testenv.DB
	cfg  *config.Config
	deps *jobs.Deps
	due  int
}

func setup(t *testing.T, subjects int) *bundle {
	t.Helper()
	ctx := context.Background()
	db := testenv.NewDB(t)
	_, err := demo.Seed(ctx, db.Pool, demo.Options{Schema: "demo", Subjects: subjects})
	require.NoError(t, err)
	bucket := testenv.NewBucket(t)
	cfg := testenv.Config(t, db, bucket, testenv.NewIdentity(t).Recipient().String(), demo.Config("demo"))
	plan, err := retention.Compile(ctx, db.Pool, cfg)
	require.NoError(t, err)
	srv := bucket.Server
	arch := archive.NewArchiver(archive.NewClient(archive.ClientConfig{Endpoint: srv.Endpoint, Region: "us-east-1", PathStyle: true,
		AccessKeyID: srv.Writer.AccessKeyID, SecretAccessKey: srv.Writer.SecretAccessKey}), bucket.Name, cfg.Archive.Prefix, cfg.Archive.ParsedRecipients)
	logger := slog.New(slog.DiscardHandler)
	counts, err := retention.CountDue(ctx, db.Pool, plan, time.Now())
	require.NoError(t, err)
	due := 0
	for _, c := range counts {
		due += int(c.Due)
	}
	require.NotZero(t, due)
	return &bundle{db: db, cfg: cfg, due: due, deps: jobs.NewDeps(db.Pool, plan, arch, cfg, logger)}
}

func (b *bundle) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, b.db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

func TestArchiveBatchWorker(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	b := setup(t, 300)
	run, err := b.deps.Sweeper.StartRun(ctx, retention.TriggerCLI, 0)
	require.NoError(t, err)
	// An insert-only client queues the batches; the test works them.
	inserter, err := jobs.NewClient(b.db.Pool, b.cfg, nil, jobs.Options{}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	_, err = b.deps.Sweeper.Sweep(ctx, run, jobs.Queue{Client: inserter})
	require.NoError(t, err)
	rows, err := b.db.Pool.Query(ctx, `SELECT id FROM lethe.batch WHERE run_id = $1 ORDER BY id`, run)
	require.NoError(t, err)
	batches, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	require.NotEmpty(t, batches)

	var failed atomic.Bool
	b.deps.Mover.Fault = func(point string) error {
		if point == retention.FaultAfterPut && failed.CompareAndSwap(false, true) {
			return errors.New("object store went away")
		}
		return nil
	}
	w := rivertest.NewWorker(t, riverpgxv5.New(b.db.Pool), &river.Config{Schema: migrations.Schema},
		&jobs.ArchiveBatchWorker{Mover: b.deps.Mover, Logger: slog.New(slog.DiscardHandler)})

	// The first attempt fails: the batch records the error and stays
	// queued, and nothing was deleted.
	tx, err := b.db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = w.Work(ctx, t, tx, jobs.ArchiveBatchArgs{BatchID: batches[0]}, nil)
	require.ErrorContains(t, err, "object store went away")
	var state, lastErr string
	require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT state, last_error FROM lethe.batch WHERE id = $1`, batches[0]).Scan(&state, &lastErr))
	require.Equal(t, "queued", state)
	require.Contains(t, lastErr, "object store went away")
	require.Zero(t, b.count(t, `SELECT count(*) FROM lethe.manifest`))

	// Every batch then works.
	for _, id := range batches {
		res, err := w.Work(ctx, t, tx, jobs.ArchiveBatchArgs{BatchID: id}, nil)
		require.NoError(t, err)
		require.Equal(t, river.EventKindJobCompleted, res.EventKind)
	}
	require.Equal(t, b.due, b.count(t, `SELECT count(*) FROM lethe.manifest`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM lethe.work_item`))
	require.Equal(t, "done", func() string {
		var s string
		require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT state FROM lethe.run WHERE id = $1`, run).Scan(&s))
		return s
	}())
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSweepJobThroughTheQueue(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	b := setup(t, 400)
	client, err := jobs.NewClient(b.db.Pool, b.cfg, b.deps, jobs.Options{}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NoError(t, client.Start(ctx))
	t.Cleanup(func() { _ = client.Stop(context.Background()) })

	res, err := client.Insert(ctx, jobs.SweepArgs{Trigger: retention.TriggerCLI, Slot: time.Now().UTC()}, nil)
	require.NoError(t, err)
	waitFor(t, 60*time.Second, "the run to finish", func() bool {
		return b.count(t, `SELECT count(*) FROM lethe.run WHERE job_id = $1 AND state = 'done'`, res.Job.ID) == 1
	})
	require.Equal(t, b.due, b.count(t, `SELECT count(*) FROM lethe.manifest`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM lethe.work_item`))
	// Job arguments name batches by id only.
	require.Zero(t, b.count(t, `SELECT count(*) FROM lethe.river_job WHERE kind = 'lethe.archive_batch' AND args::text NOT LIKE '{"batch_id": %}'`))
}

// everySecond is a schedule finer than cron allows, to see several periods
// in a short test.
type everySecond struct{}

func (everySecond) Next(t time.Time) time.Time { return t.Truncate(time.Second).Add(time.Second) }

func TestPeriodicSweepRunsOncePerPeriodAcrossWorkers(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	b := setup(t, 50)
	b.cfg.Cron = everySecond{}
	for range 3 {
		client, err := jobs.NewClient(b.db.Pool, b.cfg, b.deps, jobs.Options{Periodic: true}, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		require.NoError(t, client.Start(ctx))
		t.Cleanup(func() { _ = client.Stop(context.Background()) })
	}
	// Let the leader insert several times: the schedule fires every second,
	// and every firing within one minute is the same period.
	waitFor(t, 30*time.Second, "a scheduled sweep", func() bool {
		return b.count(t, `SELECT count(*) FROM lethe.run WHERE trigger = 'schedule' AND state = 'done'`) >= 1
	})
	time.Sleep(3 * time.Second)
	slots := b.count(t, `SELECT count(DISTINCT args->>'slot') FROM lethe.river_job WHERE kind = 'lethe.sweep'`)
	sweeps := b.count(t, `SELECT count(*) FROM lethe.river_job WHERE kind = 'lethe.sweep'`)
	runs := b.count(t, `SELECT count(*) FROM lethe.run WHERE trigger = 'schedule'`)
	require.GreaterOrEqual(t, slots, 1)
	require.LessOrEqual(t, slots, 2, "the test spans at most one minute boundary")
	require.Equal(t, slots, sweeps, "one sweep job per period, whatever the number of workers")
	require.Equal(t, slots, runs, "one run per period")
	require.Equal(t, b.due, b.count(t, `SELECT count(*) FROM lethe.manifest`))
}

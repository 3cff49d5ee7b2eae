package jobs_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/demo"
	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/jobs"
	"github.com/lethehq/lethe/migrations"
	"github.com/lethehq/lethe/retention"
)

type bundle struct {
	db  *testenv.DB
	app *app.App
	svc *jobs.Services
	due int
}

// setup seeds the demo schema and builds lethe over it, as lethe worker
// does, with its archive in bucket (nil: a bucket of the shared server).
func setup(t *testing.T, subjects int, bucket *testenv.Bucket) *bundle {
	t.Helper()
	ctx := context.Background()
	db := testenv.NewDB(t)
	_, err := demo.Seed(ctx, db.Pool, demo.Options{Schema: "demo", Subjects: subjects})
	require.NoError(t, err)
	if bucket == nil {
		bucket = testenv.NewBucket(t)
	}
	cfg := testenv.Config(t, db, bucket, testenv.NewIdentity(t).Recipient().String(), demo.Config("demo"))
	a, err := app.Open(ctx, cfg, slog.New(slog.DiscardHandler), app.Options{})
	require.NoError(t, err)
	t.Cleanup(a.Close)
	store, err := a.Store(ctx, false)
	require.NoError(t, err)
	svc, err := a.Services(store, nil)
	require.NoError(t, err)
	counts, err := retention.CountDue(ctx, db.Pool, a.Plan, time.Now())
	require.NoError(t, err)
	due := 0
	for _, c := range counts {
		due += int(c.Due)
	}
	require.NotZero(t, due)
	return &bundle{db: db, app: a, svc: svc, due: due}
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
	srv := testenv.NewS3Server(t)
	b := setup(t, 300, testenv.NewBucketOn(t, srv))
	run, err := b.svc.Sweeper.StartRun(ctx, retention.TriggerCLI, 0)
	require.NoError(t, err)
	// The app's inserting client queues the batches; the test works them.
	_, err = b.svc.Sweeper.Sweep(ctx, run, b.app.Queue)
	require.NoError(t, err)
	rows, err := b.db.Pool.Query(ctx, `SELECT id FROM lethe.batch WHERE run_id = $1 ORDER BY id`, run)
	require.NoError(t, err)
	batches, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	require.NotEmpty(t, batches)

	w := rivertest.NewWorker(t, riverpgxv5.New(b.db.Pool), &river.Config{Schema: migrations.Schema},
		&jobs.ArchiveBatchWorker{Mover: b.svc.Mover, Logger: slog.New(slog.DiscardHandler)})

	// The object store goes away: the first attempt fails, the batch
	// records the error and stays queued, and nothing was deleted.
	require.NoError(t, srv.Kill())
	tx, err := b.db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = w.Work(ctx, t, tx, jobs.ArchiveBatchArgs{BatchID: batches[0]}, nil)
	require.ErrorIs(t, err, archive.ErrUnreachable)
	var state, lastErr string
	require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT state, last_error FROM lethe.batch WHERE id = $1`, batches[0]).Scan(&state, &lastErr))
	require.Equal(t, retention.BatchQueued, state)
	require.Contains(t, lastErr, "object store unreachable")
	require.Zero(t, b.count(t, `SELECT count(*) FROM lethe.manifest`))

	// It comes back, and every batch then works.
	require.NoError(t, srv.Restart(ctx))
	for _, id := range batches {
		res, err := w.Work(ctx, t, tx, jobs.ArchiveBatchArgs{BatchID: id}, nil)
		require.NoError(t, err)
		require.Equal(t, river.EventKindJobCompleted, res.EventKind)
	}
	require.Equal(t, b.due, b.count(t, `SELECT count(*) FROM lethe.manifest`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM lethe.work_item`))
	require.Equal(t, retention.RunDone, func() string {
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
	b := setup(t, 400, nil)
	client, err := b.app.Worker(b.svc, false)
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
	b := setup(t, 50, nil)
	b.app.Config.Cron = everySecond{}
	for range 3 {
		client, err := b.app.Worker(b.svc, true)
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

// Package jobs holds lethe's River jobs, one file per kind: the arguments
// (with a Kind that never changes) and a thin worker that calls into
// retention and archive. It also builds the River client that runs them.
package jobs

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/metrics"
	"github.com/lethehq/lethe/migrations"
	"github.com/lethehq/lethe/retention"
)

// Deps are what the workers call into; every field must be set. A nil Deps
// makes an insert-only client.
type Deps struct {
	Pool     *pgxpool.Pool
	Sweeper  *retention.Sweeper
	Mover    *retention.Mover
	Requests *retention.Requests
	Holds    *retention.Holds
	Expirer  *retention.Expirer
	// Metrics counts what the workers do; nil counts nothing.
	Metrics *metrics.Metrics
}

// Options shape the client.
type Options struct {
	// Periodic schedules the nightly sweep (the elected leader inserts it).
	Periodic bool
}

// NewClient returns a River client over pool, in lethe's schema, that works
// every lethe job kind with cfg.Worker.Concurrency workers.
func NewClient(pool *pgxpool.Pool, cfg *config.Config, deps *Deps, opts Options, logger *slog.Logger) (*river.Client[pgx.Tx], error) {
	rc := &river.Config{
		// Fetch as soon as a worker frees up: the default cooldown of 100 ms
		// caps short jobs at a few dozen a second.
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 500 * time.Millisecond,
		Schema:            migrations.Schema,
		// River reports its own statistics at info every few seconds; only
		// its warnings and errors reach lethe's log.
		Logger:               slog.New(atLeast{logger.Handler(), slog.LevelWarn}),
		MaxAttempts:          cfg.Worker.MaxAttempts,
		RetryPolicy:          &backoff{base: 2 * time.Second, max: 10 * time.Minute},
		RescueStuckJobsAfter: sweepTimeout + time.Hour,
	}
	if deps != nil {
		if deps.Pool == nil || deps.Sweeper == nil || deps.Mover == nil || deps.Requests == nil || deps.Holds == nil || deps.Expirer == nil {
			return nil, errors.New("error creating the queue client: every worker needs its service")
		}
		workers := river.NewWorkers()
		river.AddWorker(workers, &SweepWorker{Sweeper: deps.Sweeper})
		river.AddWorker(workers, &ArchiveBatchWorker{Mover: deps.Mover, Logger: logger, Metrics: deps.Metrics})
		river.AddWorker(workers, &RequestWorker{Requests: deps.Requests, Logger: logger, Metrics: deps.Metrics})
		river.AddWorker(workers, &HoldSyncWorker{Holds: deps.Holds, Logger: logger})
		river.AddWorker(workers, &ExpireWorker{Expirer: deps.Expirer, Metrics: deps.Metrics})
		river.AddWorker(workers, &ReconcileWorker{Pool: deps.Pool, Logger: logger})
		rc.Workers = workers
		rc.Middleware = []rivertype.Middleware{&jobLog{logger: logger, metrics: deps.Metrics}}
		// Batches and sweeps are long and heavy; requests and hold syncs are
		// short and mostly wait on the network, so they get a queue with
		// more workers of their own.
		rc.Queues = map[string]river.QueueConfig{
			river.QueueDefault: {MaxWorkers: cfg.Worker.Concurrency},
			QueueSubjects:      {MaxWorkers: 4 * cfg.Worker.Concurrency},
		}
	}
	if opts.Periodic {
		rc.PeriodicJobs = []*river.PeriodicJob{
			river.NewPeriodicJob(cfg.Cron, func() (river.JobArgs, *river.InsertOpts) {
				return SweepArgs{Trigger: retention.TriggerSchedule, Slot: time.Now().UTC().Truncate(time.Minute)}, nil
			}, &river.PeriodicJobOpts{ID: "lethe.sweep"}),
			river.NewPeriodicJob(cfg.Cron, func() (river.JobArgs, *river.InsertOpts) {
				return ExpireArgs{Slot: time.Now().UTC().Truncate(time.Minute)}, nil
			}, &river.PeriodicJobOpts{ID: "lethe.expire"}),
			river.NewPeriodicJob(river.PeriodicInterval(time.Minute), func() (river.JobArgs, *river.InsertOpts) {
				return ReconcileArgs{}, nil
			}, &river.PeriodicJobOpts{ID: "lethe.reconcile", RunOnStart: true}),
		}
	}
	return river.NewClient(riverpgxv5.New(pool), rc)
}

// QueueSubjects is the queue of per-subject jobs: deletion requests and
// hold syncs.
const QueueSubjects = "subjects"

// NewDeps builds every service the workers call into, over one plan and one
// archiver with the worker's credentials.
func NewDeps(pool *pgxpool.Pool, plan *retention.Plan, arch *archive.Archiver, cfg *config.Config, logger *slog.Logger) *Deps {
	return &Deps{
		Pool:     pool,
		Sweeper:  retention.NewSweeper(pool, plan, cfg.Archive.BatchSize, logger),
		Mover:    retention.NewMover(pool, plan, arch, cfg.Archive.Concurrency, logger),
		Requests: retention.NewRequests(pool, plan, arch, logger),
		Holds:    retention.NewHolds(pool, plan, arch, logger),
		Expirer:  retention.NewExpirer(pool, plan, arch, logger),
	}
}

// atLeast drops records below a level.
type atLeast struct {
	slog.Handler
	level slog.Level
}

func (a atLeast) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= a.level && a.Handler.Enabled(ctx, l)
}

func (a atLeast) WithAttrs(attrs []slog.Attr) slog.Handler {
	return atLeast{a.Handler.WithAttrs(attrs), a.level}
}

func (a atLeast) WithGroup(name string) slog.Handler {
	return atLeast{a.Handler.WithGroup(name), a.level}
}

// backoff is exponential with jitter, capped: 2s, 4s, 8s, ... up to max.
// With the default 10 attempts a job gives up after about half an hour, long
// enough to ride out a restart of the database or the object store.
type backoff struct {
	base, max time.Duration
}

func (b *backoff) NextRetry(job *rivertype.JobRow) time.Time {
	d := time.Duration(float64(b.base) * math.Pow(2, float64(max(job.Attempt-1, 0))))
	if d > b.max || d <= 0 {
		d = b.max
	}
	d = d/2 + rand.N(d/2+1)
	return time.Now().Add(d)
}

// Package jobs holds lethe's River jobs, one file per kind: the arguments
// (with a Kind that never changes) and a thin worker that calls into
// retention, request and hold. It builds the River clients that insert and
// work them, and it is the only package that reaches River's tables: Queue
// inserts jobs and answers which are queued or failed through River's
// client.
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
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/metrics"
	"github.com/lethehq/lethe/migrations"
	"github.com/lethehq/lethe/request"
	"github.com/lethehq/lethe/retention"
)

// Services are what the workers call into. Every field but Metrics is
// required.
type Services struct {
	// Pool is lethe's database.
	Pool    *pgxpool.Pool
	Sweeper *retention.Sweeper
	Mover   *retention.Mover
	Expirer *retention.Expirer
	Intake  *request.Intake
	Eraser  *request.Eraser
	Syncer  *hold.Syncer
	// Store is the archive with the worker's credentials.
	Store *archive.Archiver
	// Anchorer anchors the audit chain in the bucket.
	Anchorer *audit.Anchorer
	// Ledger holds back archiving and erasing while the database does not
	// match the anchors.
	Ledger LedgerGuard
	// Queue inserts the jobs the workers queue again.
	Queue Queue
	// Metrics counts what the workers do; nil counts nothing.
	Metrics *metrics.Metrics
}

func (s *Services) validate() error {
	if s.Pool == nil || s.Sweeper == nil || s.Mover == nil || s.Expirer == nil || s.Intake == nil ||
		s.Eraser == nil || s.Syncer == nil || s.Store == nil || s.Anchorer == nil || s.Ledger == nil || s.Queue.Client == nil {
		return errors.New("error creating the queue client: every worker needs its service")
	}
	return nil
}

// Options shape a working client.
type Options struct {
	// Periodic schedules the nightly sweep and expiry and the reconcile
	// every minute (the elected leader inserts them).
	Periodic bool
}

// NewInserter returns a River client over pool, in lethe's schema, that
// inserts jobs and reads their state but works none: what the CLI and the
// API need, and the Queue of a worker process.
func NewInserter(pool *pgxpool.Pool, logger *slog.Logger) (*river.Client[pgx.Tx], error) {
	return river.NewClient(riverpgxv5.New(pool), baseConfig(logger, 0))
}

// NewWorker returns a River client over pool, in lethe's schema, that works
// every lethe job kind with cfg.Worker.Concurrency workers.
func NewWorker(cfg *config.Config, svc *Services, opts Options, logger *slog.Logger) (*river.Client[pgx.Tx], error) {
	if err := svc.validate(); err != nil {
		return nil, err
	}
	rc := baseConfig(logger, cfg.Worker.MaxAttempts)
	workers := river.NewWorkers()
	river.AddWorker(workers, &SweepWorker{Sweeper: svc.Sweeper, Logger: logger})
	river.AddWorker(workers, &ArchiveBatchWorker{Mover: svc.Mover, Logger: logger, Metrics: svc.Metrics})
	river.AddWorker(workers, &RequestWorker{Eraser: svc.Eraser, Intake: svc.Intake, Logger: logger, Metrics: svc.Metrics})
	river.AddWorker(workers, &HoldSyncWorker{Syncer: svc.Syncer, Logger: logger})
	river.AddWorker(workers, &ExpireWorker{Expirer: svc.Expirer, Metrics: svc.Metrics})
	river.AddWorker(workers, &ReconcileWorker{Pool: svc.Pool, Intake: svc.Intake, Queue: svc.Queue, Logger: logger})
	river.AddWorker(workers, &AnchorWorker{Anchorer: svc.Anchorer, Logger: logger})
	rc.Workers = workers
	rc.Middleware = []rivertype.Middleware{&jobLog{logger: logger, metrics: svc.Metrics}, &ledgerGate{guard: svc.Ledger}}
	// Batches and sweeps are long and heavy; requests and hold syncs are
	// short and mostly wait on the network, so they get a queue with more
	// workers of their own.
	rc.Queues = map[string]river.QueueConfig{
		river.QueueDefault: {MaxWorkers: cfg.Worker.Concurrency},
		QueueSubjects:      {MaxWorkers: 4 * cfg.Worker.Concurrency},
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
			river.NewPeriodicJob(river.PeriodicInterval(cfg.Audit.AnchorInterval), func() (river.JobArgs, *river.InsertOpts) {
				return AnchorArgs{Slot: time.Now().UTC().Truncate(time.Minute)}, nil
			}, &river.PeriodicJobOpts{ID: "lethe.anchor", RunOnStart: true}),
		}
	}
	return river.NewClient(riverpgxv5.New(svc.Pool), rc)
}

// baseConfig is what every lethe client shares: the schema, the log level,
// retries and fetching.
func baseConfig(logger *slog.Logger, maxAttempts int) *river.Config {
	return &river.Config{
		// Fetch as soon as a worker frees up: the default cooldown of 100 ms
		// caps short jobs at a few dozen a second.
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 500 * time.Millisecond,
		Schema:            migrations.Schema,
		// River reports its own statistics at info every few seconds; only
		// its warnings and errors reach lethe's log.
		Logger:               slog.New(atLeast{logger.Handler(), slog.LevelWarn}),
		MaxAttempts:          maxAttempts,
		RetryPolicy:          &backoff{base: 2 * time.Second, max: 10 * time.Minute},
		RescueStuckJobsAfter: sweepTimeout + time.Hour,
	}
}

// QueueSubjects is the queue of per-subject jobs: deletion requests and
// hold syncs.
const QueueSubjects = "subjects"

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

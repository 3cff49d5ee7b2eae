// Package jobs holds lethe's River jobs, one file per kind: the arguments
// (with a Kind that never changes) and a thin worker that calls into
// retention and archive. It also builds the River client that runs them.
package jobs

import (
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/migrations"
	"github.com/lethehq/lethe/retention"
)

// Deps are what the workers call into. A nil Deps makes an insert-only
// client.
type Deps struct {
	Sweeper *retention.Sweeper
	Mover   *retention.Mover
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
		Schema:               migrations.Schema,
		Logger:               logger,
		MaxAttempts:          cfg.Worker.MaxAttempts,
		RetryPolicy:          &backoff{base: 2 * time.Second, max: 10 * time.Minute},
		RescueStuckJobsAfter: sweepTimeout + time.Hour,
	}
	if deps != nil {
		workers := river.NewWorkers()
		river.AddWorker(workers, &SweepWorker{Sweeper: deps.Sweeper})
		river.AddWorker(workers, &ArchiveBatchWorker{Mover: deps.Mover, Logger: logger})
		rc.Workers = workers
		rc.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.Worker.Concurrency}}
	}
	if opts.Periodic {
		rc.PeriodicJobs = []*river.PeriodicJob{river.NewPeriodicJob(cfg.Cron, func() (river.JobArgs, *river.InsertOpts) {
			return SweepArgs{Trigger: retention.TriggerSchedule, Slot: time.Now().UTC().Truncate(time.Minute)}, nil
		}, &river.PeriodicJobOpts{ID: "lethe.sweep"})}
	}
	return river.NewClient(riverpgxv5.New(pool), rc)
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

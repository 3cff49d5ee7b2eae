package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/retention"
)

// SweepArgs starts a sweep: claim every due subject and queue a batch job per
// BatchSize of them.
type SweepArgs struct {
	// Trigger is what started the sweep: schedule or cli.
	Trigger string `json:"trigger" river:"unique"`
	// Slot is the scheduled minute of a periodic sweep; with Trigger it makes
	// the job unique, so a leader change inside one minute cannot start the
	// same nightly sweep twice.
	Slot time.Time `json:"slot" river:"unique"`
	// Limit, when not 0, caps the subjects the sweep claims (lethe sweep
	// --limit, for a bounded first run).
	Limit int `json:"limit,omitempty"`
}

// Kind is the job kind. It never changes.
func (SweepArgs) Kind() string { return "lethe.sweep" }

// InsertOpts makes sweeps unique per trigger and slot.
func (SweepArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 5, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// SweepWorker works SweepArgs.
type SweepWorker struct {
	river.WorkerDefaults[SweepArgs]
	Sweeper *retention.Sweeper
	Logger  *slog.Logger
}

// Work runs the sweep. A retried job continues the run it started.
func (w *SweepWorker) Work(ctx context.Context, job *river.Job[SweepArgs]) error {
	runID, err := w.Sweeper.StartRun(ctx, job.Args.Trigger, job.ID)
	if err != nil {
		return err
	}
	client := river.ClientFromContext[pgx.Tx](ctx)
	res, err := w.Sweeper.SweepAtMost(ctx, runID, Queue{Client: client}, job.Args.Limit)
	if err != nil {
		return fmt.Errorf("error sweeping (run %d): %w", runID, err)
	}
	if res.RunClosed {
		queueAnchor(ctx, w.Logger, runID)
	}
	return nil
}

// Timeout allows for claiming a large backlog.
func (w *SweepWorker) Timeout(*river.Job[SweepArgs]) time.Duration { return sweepTimeout }

const sweepTimeout = 6 * time.Hour

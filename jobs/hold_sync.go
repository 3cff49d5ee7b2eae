package jobs

import (
	"context"
	"errors"
	"log/slog"

	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/hold"
)

// HoldSyncArgs brings a subject's S3 legal hold in line with its holds. The
// subject appears only as its HMAC.
type HoldSyncArgs struct {
	SubjectHMAC string `json:"subject_hmac"`
}

// Kind is the job kind. It never changes.
func (HoldSyncArgs) Kind() string { return "lethe.hold_sync" }

// InsertOpts retries for long: the sync must eventually succeed.
func (HoldSyncArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 25, Queue: QueueSubjects}
}

// HoldSyncWorker works HoldSyncArgs.
type HoldSyncWorker struct {
	river.WorkerDefaults[HoldSyncArgs]
	Syncer *hold.Syncer
	Logger *slog.Logger
}

// Work syncs the hold; a subject being archived is tried again shortly, so
// the lock lands on the version being written.
func (w *HoldSyncWorker) Work(ctx context.Context, job *river.Job[HoldSyncArgs]) error {
	err := w.Syncer.Sync(ctx, job.Args.SubjectHMAC)
	if errors.Is(err, hold.ErrRetryLater) {
		return river.JobSnooze(busySnooze())
	}
	if err != nil {
		w.Logger.Warn("hold sync failed; it will be retried", "subject_hmac", job.Args.SubjectHMAC, "attempt", job.Attempt, "error", err)
	}
	return err
}

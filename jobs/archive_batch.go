package jobs

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/metrics"
	"github.com/lethehq/lethe/retention"
)

// ArchiveBatchArgs works one batch claimed by a sweep. It names the batch
// only by id: subject keys never appear in job arguments.
type ArchiveBatchArgs struct {
	BatchID int64 `json:"batch_id"`
}

// Kind is the job kind. It never changes.
func (ArchiveBatchArgs) Kind() string { return "lethe.archive_batch" }

// ArchiveBatchWorker works ArchiveBatchArgs.
type ArchiveBatchWorker struct {
	river.WorkerDefaults[ArchiveBatchArgs]
	Mover   *retention.Mover
	Logger  *slog.Logger
	Metrics *metrics.Metrics
}

// afterRun anchors the audit chain once the batch's run has ended.
func (w *ArchiveBatchWorker) afterRun(ctx context.Context, runID int64, closed bool) {
	if closed {
		queueAnchor(ctx, w.Logger, runID)
	}
}

// Work archives (or destroys) the batch's remaining subjects.
func (w *ArchiveBatchWorker) Work(ctx context.Context, job *river.Job[ArchiveBatchArgs]) error {
	start := time.Now()
	res, err := w.Mover.RunBatch(ctx, job.Args.BatchID)
	if errors.Is(err, retention.ErrBatchBusy) {
		return river.JobSnooze(30 * time.Second)
	}
	if err != nil {
		// A refusal that retrying cannot fix ends the job now; the batch is
		// marked failed and the next sweep requeues it once it is fixed.
		if permanent(err) {
			closed, rerr := w.Mover.RecordFailure(ctx, job.Args.BatchID, err, job.Attempt, true)
			if rerr != nil {
				w.Logger.Error("could not record batch failure", "batch_id", job.Args.BatchID, "error", rerr)
			}
			w.afterRun(ctx, res.RunID, closed)
			w.Logger.Error("batch failed and will not be retried", "batch_id", job.Args.BatchID, "job_id", job.ID, "error", err)
			return river.JobCancel(err)
		}
		final := job.Attempt >= job.MaxAttempts
		closed, rerr := w.Mover.RecordFailure(ctx, job.Args.BatchID, err, job.Attempt, final)
		if rerr != nil {
			w.Logger.Error("could not record batch failure", "batch_id", job.Args.BatchID, "error", rerr)
		}
		w.afterRun(ctx, res.RunID, closed)
		w.Logger.Warn("batch failed", "batch_id", job.Args.BatchID, "job_id", job.ID, "attempt", job.Attempt,
			"max_attempts", job.MaxAttempts, "final", final, "error", err)
		return err
	}
	w.Metrics.ObserveBatch(res.Policy, res.Archived, res.Destroyed, res.Bytes, time.Since(start))
	w.Metrics.Minimized(res.Policy, res.Minimized, res.MinimizedRows)
	w.afterRun(ctx, res.RunID, res.RunClosed)
	// The job's own line (jobLog) says it completed; this one adds what it
	// moved.
	w.Logger.Info("batch done", "batch_id", job.Args.BatchID, "run_id", res.RunID, "archived", res.Archived,
		"destroyed", res.Destroyed, "minimized", res.Minimized, "minimized_rows", res.MinimizedRows, "skipped", res.Skipped, "rows", res.Rows, "bytes", res.Bytes,
		"duration_ms", time.Since(start).Milliseconds())
	return nil
}

// permanent reports whether retrying err cannot help until an operator acts:
// the object store refuses the credentials or has no such bucket, or the
// database refuses the delete because of a foreign key, or refuses a
// statement outright (retention.Refused).
func permanent(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" {
		return true
	}
	return errors.Is(err, archive.ErrAccessDenied) || errors.Is(err, archive.ErrNoBucket) || retention.Refused(err)
}

// Timeout bounds one attempt.
func (w *ArchiveBatchWorker) Timeout(*river.Job[ArchiveBatchArgs]) time.Duration {
	return 30 * time.Minute
}

package jobs

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/metrics"
	"github.com/lethehq/lethe/request"
)

// RequestArgs carries out one deletion request. It names the request only by
// id: subject keys never appear in job arguments.
type RequestArgs struct {
	RequestID int64 `json:"request_id"`
}

// Kind is the job kind. It never changes.
func (RequestArgs) Kind() string { return "lethe.request" }

// InsertOpts gives a request more attempts than other jobs: it has a
// deadline of weeks, not minutes, and must not fail over a short outage.
func (RequestArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 20, Queue: QueueSubjects}
}

// RequestWorker works RequestArgs.
type RequestWorker struct {
	river.WorkerDefaults[RequestArgs]
	Eraser  *request.Eraser
	Intake  *request.Intake
	Logger  *slog.Logger
	Metrics *metrics.Metrics
}

// Work processes the request; a busy subject is tried again shortly.
func (w *RequestWorker) Work(ctx context.Context, job *river.Job[RequestArgs]) error {
	err := w.Eraser.Process(ctx, job.Args.RequestID)
	if errors.Is(err, request.ErrRetryLater) {
		return river.JobSnooze(busySnooze())
	}
	if errors.Is(err, request.ErrNoRequest) {
		// The row is gone (removed by hand, or by lethe bench's clean-up):
		// there is nothing to carry out, now or later.
		w.Logger.Warn("deletion request no longer exists; job cancelled", "request_id", job.Args.RequestID, "job_id", job.ID)
		return river.JobCancel(err)
	}
	if err != nil {
		if job.Attempt >= job.MaxAttempts {
			if ferr := w.Eraser.Fail(ctx, job.Args.RequestID, err); ferr != nil {
				w.Logger.Error("could not mark request failed", "request_id", job.Args.RequestID, "error", ferr)
			} else {
				w.Metrics.RequestDone(request.StateFailed)
			}
		}
		w.Logger.Warn("deletion request attempt failed", "request_id", job.Args.RequestID, "attempt", job.Attempt,
			"max_attempts", job.MaxAttempts, "error", err)
		return err
	}
	if w.Metrics != nil {
		if req, err := w.Intake.Get(ctx, job.Args.RequestID); err == nil && req.State != request.StateProcessing {
			w.Metrics.RequestDone(req.State)
		}
	}
	return nil
}

// Timeout bounds one attempt.
func (w *RequestWorker) Timeout(*river.Job[RequestArgs]) time.Duration { return 10 * time.Minute }

package jobs

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/retention"
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
	Requests *retention.Requests
	Logger   *slog.Logger
}

// Work processes the request; a busy subject is tried again shortly.
func (w *RequestWorker) Work(ctx context.Context, job *river.Job[RequestArgs]) error {
	err := w.Requests.Process(ctx, job.Args.RequestID)
	if errors.Is(err, retention.ErrRetryLater) {
		return river.JobSnooze(busySnooze())
	}
	if err != nil {
		if job.Attempt >= job.MaxAttempts {
			if ferr := w.Requests.Fail(ctx, job.Args.RequestID, err); ferr != nil {
				w.Logger.Error("could not mark request failed", "request_id", job.Args.RequestID, "error", ferr)
			}
		}
		w.Logger.Warn("deletion request attempt failed", "request_id", job.Args.RequestID, "attempt", job.Attempt,
			"max_attempts", job.MaxAttempts, "error", err)
		return err
	}
	return nil
}

// Timeout bounds one attempt.
func (w *RequestWorker) Timeout(*river.Job[RequestArgs]) time.Duration { return 10 * time.Minute }

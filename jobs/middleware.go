package jobs

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/lethehq/lethe/metrics"
)

// jobLog writes one log line for every attempt of every job (its id, kind,
// attempt, duration and outcome) and counts failures by kind. Job
// arguments are never logged; lethe's hold only ids.
type jobLog struct {
	river.MiddlewareDefaults
	logger  *slog.Logger
	metrics *metrics.Metrics
}

var _ rivertype.WorkerMiddleware = (*jobLog)(nil)

func (m *jobLog) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) error {
	start := time.Now()
	err := doInner(ctx)
	outcome, level := "completed", slog.LevelInfo
	var snooze *rivertype.JobSnoozeError
	var cancel *rivertype.JobCancelError
	switch {
	case err == nil:
		if job.Kind == (ReconcileArgs{}).Kind() {
			level = slog.LevelDebug // every minute, and nearly always nothing to do
		}
	case errors.As(err, &snooze):
		outcome, level = "snoozed", slog.LevelDebug
	case errors.As(err, &cancel):
		outcome, level = "cancelled", slog.LevelError
		m.metrics.JobFailed(job.Kind)
	default:
		outcome, level = "failed", slog.LevelWarn
		if job.Attempt >= job.MaxAttempts {
			outcome, level = "discarded", slog.LevelError
		}
		m.metrics.JobFailed(job.Kind)
	}
	attrs := []any{"job_id", job.ID, "kind", job.Kind, "queue", job.Queue, "attempt", job.Attempt,
		"duration_ms", time.Since(start).Milliseconds(), "outcome", outcome}
	if err != nil && snooze == nil {
		attrs = append(attrs, "error", err.Error())
	}
	m.logger.Log(ctx, level, "job", attrs...)
	return err
}

package jobs

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/lethehq/lethe/audit"
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

// LedgerGuard says whether the database matches the audit anchors in the
// bucket; *audit.Guard is one.
type LedgerGuard interface {
	Ready(ctx context.Context) error
}

// ledgerGate holds back every job that archives or erases while the
// database does not match the bucket's anchors (it was restored from a
// backup): such a job is snoozed, and runs once lethe ledger replay has
// put the erasures back. Archiving then would make erased subjects, whose
// rows the restore brought back, readable again. Holds and their syncs,
// which destroy nothing, go on.
type ledgerGate struct {
	river.MiddlewareDefaults
	guard LedgerGuard
}

var _ rivertype.WorkerMiddleware = (*ledgerGate)(nil)

// gated are the job kinds that archive or erase.
var gated = map[string]bool{
	(SweepArgs{}).Kind():        true,
	(ArchiveBatchArgs{}).Kind(): true,
	(RequestArgs{}).Kind():      true,
	(ExpireArgs{}).Kind():       true,
}

func (m *ledgerGate) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) error {
	if gated[job.Kind] {
		// Only a database known not to match holds work back. One whose
		// bucket cannot be read now goes on: a batch then fails on its put
		// and is retried as usual, and a request needs no bucket.
		if err := m.guard.Ready(ctx); errors.Is(err, audit.ErrLedger) {
			// Ten seconds: the guard reads the bucket at most every five,
			// and work resumes soon after a replay.
			return river.JobSnooze(10 * time.Second)
		}
	}
	return doInner(ctx)
}

package jobs

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/audit"
)

// AnchorArgs anchors the audit chain in the bucket: queued when a sweep's
// run ends, and every audit.anchor_every by the leader.
type AnchorArgs struct {
	// RunID is the run whose end queued the anchor; 0 for the periodic one.
	RunID int64 `json:"run_id,omitempty" river:"unique"`
	// Slot is the periodic anchor's minute; it makes that job unique.
	Slot time.Time `json:"slot,omitzero" river:"unique"`
}

// Kind is the job kind. It never changes.
func (AnchorArgs) Kind() string { return "lethe.anchor" }

// InsertOpts retries for long: an anchor must eventually be written, and
// each attempt anchors whatever the chain holds by then.
func (AnchorArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 25, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// AnchorWorker works AnchorArgs.
type AnchorWorker struct {
	river.WorkerDefaults[AnchorArgs]
	Anchorer *audit.Anchorer
	Logger   *slog.Logger
}

// Work writes an anchor if the chain grew since the last one. While the
// database does not match the anchors it writes none (an anchor of a
// restored chain would fork the ledger) and tries again later.
func (w *AnchorWorker) Work(ctx context.Context, job *river.Job[AnchorArgs]) error {
	_, err := w.Anchorer.Anchor(ctx)
	if errors.Is(err, audit.ErrLedger) {
		return river.JobSnooze(time.Minute)
	}
	if err != nil {
		w.Logger.Warn("anchoring the audit chain failed; it will be retried", "attempt", job.Attempt, "error", err)
	}
	return err
}

// Timeout bounds one attempt.
func (w *AnchorWorker) Timeout(*river.Job[AnchorArgs]) time.Duration { return 10 * time.Minute }

// queueAnchor queues the anchor of a run that just ended. Anchoring never
// holds up the work: a failure here is logged, and the periodic anchor
// covers the entries.
func queueAnchor(ctx context.Context, logger *slog.Logger, runID int64) {
	client := river.ClientFromContext[pgx.Tx](ctx)
	if _, err := client.Insert(ctx, AnchorArgs{RunID: runID}, nil); err != nil {
		logger.Warn("could not queue the anchor of a finished run; the periodic anchor will cover it", "run_id", runID, "error", err)
	}
}

package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/retention"
)

// ReconcileArgs queues again the deletion requests and hold syncs whose job
// was lost with its process. The leader runs it every minute.
type ReconcileArgs struct{}

// Kind is the job kind. It never changes.
func (ReconcileArgs) Kind() string { return "lethe.reconcile" }

// InsertOpts keeps a single reconcile queued at a time.
func (ReconcileArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 1, UniqueOpts: river.UniqueOpts{ByPeriod: time.Minute}}
}

// ReconcileWorker works ReconcileArgs.
type ReconcileWorker struct {
	river.WorkerDefaults[ReconcileArgs]
	Pool   *pgxpool.Pool
	Logger *slog.Logger
}

// Work runs the reconciliation.
func (w *ReconcileWorker) Work(ctx context.Context, _ *river.Job[ReconcileArgs]) error {
	res, err := retention.Reconcile(ctx, w.Pool, Queue{Client: river.ClientFromContext[pgx.Tx](ctx)})
	if err != nil {
		return err
	}
	if res.Requests+res.HoldSyncs > 0 {
		w.Logger.Warn("queued lost work again", "requests", res.Requests, "hold_syncs", res.HoldSyncs)
	}
	return nil
}

package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/request"
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
	Intake *request.Intake
	Queue  Queue
	Logger *slog.Logger
}

// Work runs the reconciliation.
func (w *ReconcileWorker) Work(ctx context.Context, _ *river.Job[ReconcileArgs]) error {
	res, err := Reconcile(ctx, w.Pool, w.Intake, w.Queue)
	if err != nil {
		return err
	}
	if res.Requests+res.HoldSyncs > 0 {
		w.Logger.Warn("queued lost work again", "requests", res.Requests, "hold_syncs", res.HoldSyncs)
	}
	return nil
}

// ReconcileResult counts what Reconcile queued again.
type ReconcileResult struct {
	Requests  int `json:"requests"`
	HoldSyncs int `json:"hold_syncs"`
}

// reconcilePage is how many requests or syncs one pass reads at a time.
const reconcilePage = 1000

// Reconcile queues a new job for every open deletion request and every
// pending hold sync that no job will work: its job was discarded, or the
// process working it died (a killed worker's job stays "running" until the
// queue rescues it, hours later). One whose subject's lock is held is being
// worked and is left alone. A job queued twice does no harm: the work is
// serialised on the subject's lock and idempotent.
func Reconcile(ctx context.Context, pool *pgxpool.Pool, intake *request.Intake, queue Queue) (*ReconcileResult, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res := &ReconcileResult{}
	for after := int64(0); ; {
		open, err := intake.Open(ctx, after, reconcilePage)
		if err != nil {
			return res, err
		}
		ids := make([]int64, len(open))
		for i, o := range open {
			ids[i] = o.JobID
		}
		queued, err := queue.Queued(ctx, ids)
		if err != nil {
			return res, err
		}
		for _, o := range open {
			if queued[o.JobID] {
				continue
			}
			ok, err := intake.Requeue(ctx, o.ID, o.SubjectHMAC)
			if err != nil {
				return res, err
			}
			if ok {
				res.Requests++
			}
		}
		if len(open) < reconcilePage {
			break
		}
		after = open[len(open)-1].ID
	}
	for after := ""; ; {
		hmacs, jobIDs, err := hold.Pending(ctx, pool, after, reconcilePage)
		if err != nil {
			return res, err
		}
		queued, err := queue.Queued(ctx, jobIDs)
		if err != nil {
			return res, err
		}
		for i, h := range hmacs {
			if queued[jobIDs[i]] {
				continue
			}
			ok, err := hold.Requeue(ctx, pool, queue, h)
			if err != nil {
				return res, err
			}
			if ok {
				res.HoldSyncs++
			}
		}
		if len(hmacs) < reconcilePage {
			break
		}
		after = hmacs[len(hmacs)-1]
	}
	return res, nil
}

// queuedStates are the states of a job that will still run.
var queuedStates = []string{"available", "pending", "retryable", "scheduled"}

// Queued reports which of the jobs will still run: River's client lists
// them, a page at a time. Id 0 (no job recorded) is never queued.
func (q Queue) Queued(ctx context.Context, jobIDs []int64) (map[int64]bool, error) {
	out := map[int64]bool{}
	var ids []int64
	for _, id := range jobIDs {
		if id != 0 {
			ids = append(ids, id)
		}
	}
	for start := 0; start < len(ids); start += listPage {
		page := ids[start:min(start+listPage, len(ids))]
		res, err := q.Client.JobList(ctx, river.NewJobListParams().IDs(page...).States(states(queuedStates)...).First(len(page)))
		if err != nil {
			return nil, fmt.Errorf("error listing jobs: %w", err)
		}
		for _, j := range res.Jobs {
			out[j.ID] = true
		}
	}
	return out, nil
}

package jobs

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/retention"
)

// Queue is retention.Queue over a River client: each job is inserted in the
// caller's transaction.
type Queue struct {
	Client *river.Client[pgx.Tx]
}

var _ retention.Queue = Queue{}

func (q Queue) insert(ctx context.Context, tx pgx.Tx, args river.JobArgs) (int64, error) {
	res, err := q.Client.InsertTx(ctx, tx, args, nil)
	if err != nil {
		return 0, err
	}
	return res.Job.ID, nil
}

// EnqueueBatch queues an archive-batch job.
func (q Queue) EnqueueBatch(ctx context.Context, tx pgx.Tx, batchID int64) (int64, error) {
	return q.insert(ctx, tx, ArchiveBatchArgs{BatchID: batchID})
}

// EnqueueRequest queues a deletion-request job.
func (q Queue) EnqueueRequest(ctx context.Context, tx pgx.Tx, requestID int64) (int64, error) {
	return q.insert(ctx, tx, RequestArgs{RequestID: requestID})
}

// EnqueueHoldSyncs queues one hold-sync job per subject, in one insert.
func (q Queue) EnqueueHoldSyncs(ctx context.Context, tx pgx.Tx, subjectHMACs []string) ([]int64, error) {
	params := make([]river.InsertManyParams, len(subjectHMACs))
	for i, h := range subjectHMACs {
		params[i] = river.InsertManyParams{Args: HoldSyncArgs{SubjectHMAC: h}}
	}
	res, err := q.Client.InsertManyTx(ctx, tx, params)
	if err != nil {
		return nil, err
	}
	ids := make([]int64, len(res))
	for i, r := range res {
		ids[i] = r.Job.ID
	}
	return ids, nil
}

// busySnooze is how long a job waits when its subject is busy: two to four
// seconds, varied so that two jobs waiting on each other fall out of step.
func busySnooze() time.Duration {
	return 2*time.Second + rand.N(2*time.Second)
}

package retention

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Queue inserts the jobs retention hands off, inside the caller's
// transaction, so that a job exists exactly when what caused it does.
// Package jobs implements it with River.
type Queue interface {
	// EnqueueBatch queues the archive-batch job of a batch.
	EnqueueBatch(ctx context.Context, tx pgx.Tx, batchID int64) (jobID int64, err error)
	// EnqueueRequest queues the processing of a deletion request.
	EnqueueRequest(ctx context.Context, tx pgx.Tx, requestID int64) (jobID int64, err error)
	// EnqueueHoldSyncs queues, for each subject, bringing its object-lock
	// legal hold in line with its holds: one job per subject, inserted
	// together, with their ids in the order of subjectHMACs.
	EnqueueHoldSyncs(ctx context.Context, tx pgx.Tx, subjectHMACs []string) (jobIDs []int64, err error)
}

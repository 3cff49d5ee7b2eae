package jobs

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/metrics"
	"github.com/lethehq/lethe/request"
	"github.com/lethehq/lethe/retention"
)

// Queue inserts lethe's jobs over a River client, each in the caller's
// transaction, and reads River's tables through the client: whether jobs
// are still queued, and which have failed. It is the only way the rest of
// lethe reaches River.
type Queue struct {
	Client *river.Client[pgx.Tx]
}

var (
	_ retention.BatchQueue  = Queue{}
	_ retention.JobLiveness = Queue{}
	_ request.Queue         = Queue{}
	_ hold.Queue            = Queue{}
)

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

// listPage is how many jobs one JobList call returns (River's maximum).
const listPage = 10_000

func states(names []string) []rivertype.JobState {
	out := make([]rivertype.JobState, len(names))
	for i, n := range names {
		out[i] = rivertype.JobState(n)
	}
	return out
}

// FailedJobs are lethe's jobs of one kind in one failed state.
type FailedJobs struct {
	Kind      string  `json:"kind"`
	State     string  `json:"state"`
	Count     int64   `json:"count"`
	LastError *string `json:"last_error"`
}

// failedWindow is how far back discarded jobs count as failed.
const failedWindow = 7 * 24 * time.Hour

// failedScan caps how many failed jobs one count reads.
const failedScan = 5 * listPage

// Failed counts lethe's jobs that wait for a retry and those discarded in
// the last week, by kind and state, with the newest error of each. It reads
// at most 50,000 jobs.
func (q Queue) Failed(ctx context.Context) ([]FailedJobs, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	type key struct{ kind, state string }
	counts := map[key]*FailedJobs{}
	newest := map[key]int64{}
	since := time.Now().Add(-failedWindow)
	params := river.NewJobListParams().States(rivertype.JobStateRetryable, rivertype.JobStateDiscarded).
		OrderBy(river.JobListOrderByID, river.SortOrderDesc).First(listPage)
	for read := 0; read < failedScan; {
		res, err := q.Client.JobList(ctx, params)
		if err != nil {
			return nil, fmt.Errorf("error listing failed jobs: %w", err)
		}
		for _, j := range res.Jobs {
			if !strings.HasPrefix(j.Kind, "lethe.") ||
				(j.State == rivertype.JobStateDiscarded && (j.FinalizedAt == nil || j.FinalizedAt.Before(since))) {
				continue
			}
			k := key{j.Kind, string(j.State)}
			f := counts[k]
			if f == nil {
				f = &FailedJobs{Kind: j.Kind, State: string(j.State)}
				counts[k] = f
			}
			f.Count++
			if len(j.Errors) > 0 && j.ID > newest[k] {
				newest[k] = j.ID
				msg := j.Errors[len(j.Errors)-1].Error
				f.LastError = &msg
			}
		}
		read += len(res.Jobs)
		if len(res.Jobs) < listPage {
			break
		}
		params = params.After(res.LastCursor)
	}
	out := make([]FailedJobs, 0, len(counts))
	for _, f := range counts {
		out = append(out, *f)
	}
	slices.SortFunc(out, func(a, b FailedJobs) int {
		return strings.Compare(a.Kind+"/"+a.State, b.Kind+"/"+b.State)
	})
	return out, nil
}

// busySnooze is how long a job waits when its subject is busy: two to four
// seconds, varied so that two jobs waiting on each other fall out of step.
func busySnooze() time.Duration {
	return 2*time.Second + rand.N(2*time.Second)
}

// FailedCounts is Failed for the metrics.
func (q Queue) FailedCounts(ctx context.Context) ([]metrics.JobCount, error) {
	failed, err := q.Failed(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]metrics.JobCount, len(failed))
	for i, f := range failed {
		out[i] = metrics.JobCount{Kind: f.Kind, State: f.State, Count: f.Count}
	}
	return out, nil
}

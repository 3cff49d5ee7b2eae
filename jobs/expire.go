package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/metrics"
	"github.com/lethehq/lethe/retention"
)

// ExpireArgs destroys archived copies older than their policy's
// archive_retain, except those a hold covers.
type ExpireArgs struct {
	// Slot is the scheduled minute; it makes the job unique per period.
	Slot time.Time `json:"slot" river:"unique"`
}

// Kind is the job kind. It never changes.
func (ExpireArgs) Kind() string { return "lethe.expire" }

// InsertOpts makes expiry unique per slot.
func (ExpireArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 5, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// ExpireWorker works ExpireArgs.
type ExpireWorker struct {
	river.WorkerDefaults[ExpireArgs]
	Expirer *retention.Expirer
	Metrics *metrics.Metrics
}

// Work runs the expiry.
func (w *ExpireWorker) Work(ctx context.Context, _ *river.Job[ExpireArgs]) error {
	res, err := w.Expirer.Expire(ctx)
	if res != nil {
		for policy, n := range res.ByPolicy {
			w.Metrics.ArchivesExpired(policy, n)
		}
	}
	return err
}

// Timeout allows for a large archive.
func (w *ExpireWorker) Timeout(*river.Job[ExpireArgs]) time.Duration { return sweepTimeout }

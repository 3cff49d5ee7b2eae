package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/retention"
)

// MinimizePolicy is the then: minimize policy the bench measures.
const MinimizePolicy = "bench-minimize"

// minimize measures then: minimize through the real pipeline: a sweep of a
// policy of its own hashes every seeded subject's SSN, worked by a queue
// client in this process, before the archive phase archives the subjects.
func (b *run) minimize(ctx context.Context) error {
	policy := config.Policy{Name: MinimizePolicy, Then: config.ThenMinimize, Clock: "created_at",
		Retain: "1d", Columns: map[string]config.ColumnAction{"ssn": config.MinimizeHash}}
	mcfg, err := b.cfg.WithGraph(b.cfg.Subject, []config.Policy{policy}, b.cfg.Requests)
	if err != nil {
		return fmt.Errorf("error building the bench's minimise config: %w", err)
	}
	a, err := app.Open(ctx, mcfg, b.logger, app.Options{})
	if err != nil {
		return err
	}
	defer a.Close()
	svc, client, err := a.Working(ctx, nil, false)
	if err != nil {
		return err
	}
	if err := client.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("error starting the queue client: %w", err)
	}
	defer stopClient(client)

	var want int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{b.schema, "subscribers"}.Sanitize()+
		` WHERE ssn IS NOT NULL`).Scan(&want); err != nil {
		return fmt.Errorf("error counting SSNs: %w", err)
	}
	b.opts.Progress("minimising: hashing the SSN of %d subjects", want)
	start := time.Now()
	runID, err := svc.Sweeper.StartRun(ctx, retention.TriggerCLI, 0)
	if err != nil {
		return err
	}
	b.runIDs = append(b.runIDs, runID)
	if _, err := svc.Sweeper.Sweep(ctx, runID, a.Queue); err != nil {
		return err
	}
	var t *retention.RunTotals
	for {
		if t, err = retention.Totals(ctx, b.pool, runID); err != nil {
			return fmt.Errorf("error reading progress: %w", err)
		}
		if t.State == retention.RunFailed {
			return fmt.Errorf("the bench's minimise run %d failed: see lethe status", runID)
		}
		if t.State == retention.RunDone {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	if t.Minimized != want || t.MinimizedRows != int64(want) {
		return fmt.Errorf("the bench minimised %d subjects (%d rows) of %d with an SSN", t.Minimized, t.MinimizedRows, want)
	}
	r := b.res
	r.Minimized, r.MinimizedRows = t.Minimized, t.MinimizedRows
	r.MinimizeSeconds = elapsed.Seconds()
	r.MinimizedPerSec = float64(t.Minimized) / r.MinimizeSeconds
	return nil
}

package app

import (
	"context"
	"fmt"

	"github.com/lethehq/lethe/api"
	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/metrics"
	"github.com/lethehq/lethe/migrations"
)

// Server builds the HTTP server of lethe worker and lethe serve: the API
// over the request and hold services, River UI over the app's queue client
// (stopped with ctx), the metrics m serves, and readiness checks on the
// database, its migrations and the bucket with store's credentials.
func (a *App) Server(ctx context.Context, store *archive.Archiver, m *metrics.Metrics) (*api.Server, error) {
	ui, err := api.NewRiverUI(ctx, a.Queue.Client, a.Logger)
	if err != nil {
		return nil, err
	}
	intake, err := a.Intake()
	if err != nil {
		return nil, err
	}
	holds, err := a.Holds()
	if err != nil {
		return nil, err
	}
	return api.New(api.Options{
		Config: a.Config,
		Pool:   a.Pool,
		Intake: intake,
		Holds:  holds,
		Status: func(ctx context.Context, runs int) (any, error) { return a.Status(ctx, runs) },
		Ready: []api.Check{
			{Name: "database", Fn: func(ctx context.Context) error {
				if err := a.Pool.Ping(ctx); err != nil {
					return fmt.Errorf("cannot reach the database: %s", PGReason(err))
				}
				return nil
			}},
			{Name: "migrations", Fn: func(ctx context.Context) error { return migrations.Check(ctx, a.Pool) }},
			{Name: "archive", Fn: store.Probe},
			// The database matches the bucket's audit anchors: after a
			// restore from backup this fails until lethe ledger replay.
			{Name: "ledger", Fn: a.Ledger(store).Ready},
		},
		Metrics: m.Handler(),
		RiverUI: ui,
		Logger:  a.Logger,
	})
}

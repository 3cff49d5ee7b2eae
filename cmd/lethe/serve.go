package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/api"
	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/jobs"
	"github.com/lethehq/lethe/metrics"
	"github.com/lethehq/lethe/migrations"
)

func runServe(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	fs := newFlagSet(env, "serve", "[--config FILE] [--log-level L] [--log-format F]")
	c.register(fs, "info")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	a, err := c.open(ctx, env, true)
	if err != nil {
		return err
	}
	defer a.close()
	if a.cfg.HTTP.Listen == config.HTTPListenOff {
		return config.Errorf("http.listen", "is off: lethe serve has nothing to do; set an address such as 127.0.0.1:8080")
	}
	queue, err := a.queue()
	if err != nil {
		return err
	}
	// The bucket is not probed at start: /readyz reports it, so that the
	// API comes up while the object store is away.
	srv, err := a.httpServer(ctx, queue.Client, a.newWorkerArchive(), metrics.New(a.pool, a.logger))
	if err != nil {
		return err
	}
	ln, err := srv.Listen()
	if err != nil {
		return err
	}
	return srv.Serve(ctx, ln)
}

// httpServer builds the HTTP server of lethe worker and lethe serve over
// client (which inserts the jobs requests and holds start, and backs River
// UI), with readiness checks on the database, its migrations and the bucket.
func (a *app) httpServer(ctx context.Context, client *river.Client[pgx.Tx], arch *archive.Archiver, m *metrics.Metrics) (*api.Server, error) {
	ui, err := api.NewRiverUI(ctx, client, a.logger)
	if err != nil {
		return nil, err
	}
	return api.New(api.Options{
		Config: a.cfg,
		Pool:   a.pool,
		Plan:   a.plan,
		Queue:  jobs.Queue{Client: client},
		Ready: []api.Check{
			{Name: "database", Fn: func(ctx context.Context) error {
				if err := a.pool.Ping(ctx); err != nil {
					return fmt.Errorf("cannot reach the database: %s", pgReason(err))
				}
				return nil
			}},
			{Name: "migrations", Fn: func(ctx context.Context) error { return migrations.Check(ctx, a.pool) }},
			{Name: "archive", Fn: arch.Probe},
		},
		Metrics: m.Handler(),
		RiverUI: ui,
		Logger:  a.logger,
	})
}

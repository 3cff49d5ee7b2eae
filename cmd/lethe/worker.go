package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/lethehq/lethe/api"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/jobs"
)

func runWorker(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	fs := newFlagSet(env, "worker", "[--config FILE] [--log-level L] [--log-format F]")
	c.register(fs, "info")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	a, err := c.open(ctx, env, true)
	if err != nil {
		return err
	}
	defer a.Close()
	m := a.Metrics()
	svc, client, err := a.Working(ctx, m, true)
	if err != nil {
		return err
	}
	if err := installFault(env.getenv, svc); err != nil {
		return err
	}
	// The guard logs, once, when the database does not match the audit
	// anchors in the bucket: the worker then archives and erases nothing.
	_, _ = a.Ledger(svc.Store).State(ctx)
	if advice, err := a.Plan.IndexAdvice(ctx, a.Pool); err == nil {
		for _, ad := range advice {
			a.Logger.Warn("missing index: "+ad.Problem, "key", ad.Key, "create", ad.Create)
		}
	}
	// The HTTP server listens before the queue starts, so that a port in
	// use stops the worker before it takes any work.
	var srv *api.Server
	var ln net.Listener
	if a.Config.HTTP.Listen != config.HTTPListenOff {
		if srv, err = a.Server(ctx, svc.Store, m); err != nil {
			return err
		}
		if ln, err = srv.Listen(); err != nil {
			return err
		}
	}
	// The client runs until ctx is cancelled by SIGTERM or SIGINT; it must
	// not stop with it, so that it can finish cleanly.
	if err := client.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("error starting the queue client: %w", err)
	}
	// Requests and hold syncs whose worker died are queued again at once,
	// not only when the leader's periodic reconcile comes round.
	if res, err := jobs.Reconcile(ctx, a.Pool, svc.Intake, a.Queue); err != nil {
		a.Logger.Warn("could not queue lost work again", "error", err)
	} else if res.Requests+res.HoldSyncs > 0 {
		a.Logger.Warn("queued lost work again", "requests", res.Requests, "hold_syncs", res.HoldSyncs)
	}
	var served chan error // nil, which never delivers, without a server
	if srv != nil {
		served = make(chan error, 1)
		go func() { served <- srv.Serve(ctx, ln) }()
	}
	next := a.Config.Cron.Next(time.Now())
	a.Logger.Info("worker started", "schedule", a.Config.Schedule, "timezone", a.Config.Timezone,
		"next_sweep", next.Format(time.RFC3339), "concurrency", a.Config.Worker.Concurrency)
	select {
	case <-ctx.Done():
	case err := <-served:
		if err != nil {
			// The API is part of the worker's contract: without it,
			// stop rather than run unseen.
			a.Logger.Error("http server stopped; stopping the worker", "error", err)
			stopClient(client, a.Logger)
			return err
		}
	}
	a.Logger.Info("stopping: finishing jobs in progress (a second signal cancels them)")
	err = stopClient(client, a.Logger)
	if served != nil {
		<-served
	}
	return err
}

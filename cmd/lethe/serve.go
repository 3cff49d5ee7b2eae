package main

import (
	"context"

	"github.com/lethehq/lethe/internal/config"
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
	defer a.Close()
	if a.Config.HTTP.Listen == config.HTTPListenOff {
		return config.Errorf("http.listen", "is off: lethe serve has nothing to do; set an address such as 127.0.0.1:8080")
	}
	// The bucket is not probed at start: /readyz reports it, so that the
	// API comes up while the object store is away.
	store, err := a.Store(ctx, false)
	if err != nil {
		return err
	}
	srv, err := a.Server(ctx, store, a.Metrics())
	if err != nil {
		return err
	}
	ln, err := srv.Listen()
	if err != nil {
		return err
	}
	return srv.Serve(ctx, ln)
}

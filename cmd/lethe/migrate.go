package main

import (
	"context"
	"fmt"

	"github.com/lethehq/lethe/migrations"
)

func runMigrate(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	fs := newFlagSet(env, "migrate", "[--config FILE]")
	c.register(fs, "warn")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, err := c.logger(env.stderr)
	if err != nil {
		return err
	}
	cfg, err := c.load(env)
	if err != nil {
		return err
	}
	pool, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	res, err := migrations.Migrate(ctx, pool, logger)
	if err != nil {
		return err
	}
	switch {
	case len(res.RiverApplied) == 0 && res.LetheFrom == res.LetheTo:
		fmt.Fprintf(env.stdout, "schema %s is current (lethe version %d); nothing to do\n", migrations.Schema, res.LetheTo)
	default:
		fmt.Fprintf(env.stdout, "schema %s migrated: River versions applied %v, lethe version %d -> %d\n",
			migrations.Schema, res.RiverApplied, res.LetheFrom, res.LetheTo)
	}
	return nil
}

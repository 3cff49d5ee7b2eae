package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/internal/demo"
)

func runDemo(ctx context.Context, env *cliEnv, args []string) error {
	return dispatch(ctx, env, "demo", args, subcommand{"seed", runDemoSeed}, subcommand{"config", runDemoConfig})
}

func runDemoConfig(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "demo config", "[--schema S]")
	schema := fs.String("schema", "demo", "schema of the demo tables")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprint(env.stdout, demo.Config(*schema))
	return nil
}

func runDemoSeed(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var subjects int
	var seed int64
	var schema string
	var reset bool
	fs := newFlagSet(env, "demo seed", "[--subjects N] [--schema S] [--seed N] [--reset] [--config FILE]")
	c.register(fs, "warn")
	fs.IntVar(&subjects, "subjects", 10000, "how many synthetic customers to create")
	fs.StringVar(&schema, "schema", "demo", "schema to create them in")
	fs.Int64Var(&seed, "seed", 1, "random seed: the same seed gives the same customers")
	fs.BoolVar(&reset, "reset", false, "drop the schema first")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if subjects < 1 {
		return usagef("demo seed: --subjects must be at least 1")
	}
	_, pool, err := c.connect(ctx, env)
	if err != nil {
		return err
	}
	defer pool.Close()
	if reset {
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			return fmt.Errorf("error dropping schema %s: %w", schema, err)
		}
	}
	start := time.Now()
	prog := newProgress(env.stderr)
	stats, err := demo.Seed(ctx, pool, demo.Options{Schema: schema, Subjects: subjects, Seed: seed, Progress: func(done, total int) {
		prog.statusf("seeding: %d/%d synthetic customers", done, total)
	}})
	prog.done()
	if err != nil {
		return err
	}
	var rows int64
	for _, n := range stats.Rows {
		rows += n
	}
	fmt.Fprintf(env.stdout, "seeded %d synthetic customers into schema %s (%d active, %d former, %d prospects; %d rows) in %s\n",
		stats.Subjects, schema, stats.Active, stats.Former, stats.Prospects, rows, time.Since(start).Round(time.Millisecond))
	return nil
}

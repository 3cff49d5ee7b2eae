package main

import (
	"cmp"
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
	fs := newFlagSet(env, "demo config", "[--rental] [--schema S]")
	schema := fs.String("schema", "", "schema of the demo tables (default demo, or rental with --rental)")
	rental := fs.Bool("rental", false, "the rental schema's config: two kinds of subject, a partitioned table, a minimise policy (docs/SCHEMA.md)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *rental:
		fmt.Fprint(env.stdout, demo.RentalConfig(cmp.Or(*schema, "rental")))
	default:
		fmt.Fprint(env.stdout, demo.Config(cmp.Or(*schema, "demo")))
	}
	return nil
}

func runDemoSeed(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var subjects int
	var seed int64
	var schema string
	var reset, rental bool
	fs := newFlagSet(env, "demo seed", "[--rental] [--subjects N] [--schema S] [--seed N] [--reset] [--config FILE]")
	c.register(fs, "warn")
	fs.IntVar(&subjects, "subjects", 10000, "how many synthetic customers to create")
	fs.StringVar(&schema, "schema", "", "schema to create them in (default demo, or rental with --rental)")
	fs.BoolVar(&rental, "rental", false, "the rental schema instead (docs/SCHEMA.md): customers, rentals, payments partitioned by year, identity checks, and a third as many credit applicants")
	fs.Int64Var(&seed, "seed", 1, "random seed: the same seed gives the same customers")
	fs.BoolVar(&reset, "reset", false, "drop the schema first")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if subjects < 1 {
		return usagef("demo seed: --subjects must be at least 1")
	}
	if schema == "" {
		schema = "demo"
		if rental {
			schema = "rental"
		}
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
	if rental {
		st, err := demo.SeedRental(ctx, pool, demo.RentalOptions{Schema: schema, Customers: subjects, Applicants: max(subjects/3, 1), Seed: uint64(seed)})
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "seeded schema %s: %s (%d gone for more than two years), %s, %s, %s (%d never approved and older than 90 days) in %s\n",
			schema, plural(st.Gone+st.Active, "synthetic customer"), st.Gone, plural(st.Rentals, "rental"), plural(st.Payments, "payment"),
			plural(max(subjects/3, 1), "credit applicant"), st.Stale, time.Since(start).Round(time.Millisecond))
		return nil
	}
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
	fmt.Fprintf(env.stdout, "seeded %s into schema %s (%d active, %d former, %s; %s) in %s\n",
		plural(stats.Subjects, "synthetic customer"), schema, stats.Active, stats.Former, plural(stats.Prospects, "prospect"), plural(int(rows), "row"),
		time.Since(start).Round(time.Millisecond))
	return nil
}

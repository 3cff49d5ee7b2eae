package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/lethehq/lethe/migrations"
	"github.com/lethehq/lethe/retention"
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
	return repairKeys(ctx, env, &app{cfg: cfg, logger: logger, pool: pool})
}

// repairKeys makes canonical the subject keys that earlier versions stored
// as typed, and reports what cannot be recomputed. It needs the subject
// graph, so it runs only when lethe holds any hold or request at all.
func repairKeys(ctx context.Context, env *cliEnv, a *app) error {
	var any bool
	if err := a.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lethe.hold) OR EXISTS (SELECT 1 FROM lethe.request)`).Scan(&any); err != nil {
		return fmt.Errorf("error reading holds and requests: %w", err)
	}
	if !any {
		return nil
	}
	var err error
	if a.plan, err = retention.Compile(ctx, a.pool, a.cfg); err != nil {
		return fmt.Errorf("the schema is migrated, but the stored subject keys could not be checked, because the config does not compile against the database: %w; fix it and run lethe migrate again", err)
	}
	q, err := a.queue()
	if err != nil {
		return err
	}
	rep, err := retention.RepairKeys(ctx, a.pool, a.plan, q)
	if err != nil {
		return err
	}
	if rep.Changed() || rep.Invalid > 0 {
		fmt.Fprintf(env.stdout, "subject keys made canonical: %s, %s (%d merged as duplicates), %s (%d waiting on a hold queued again)\n",
			plural(rep.Holds, "hold"), plural(rep.Requests, "open request"), rep.HoldsMerged, plural(rep.Suppressions, "suppression entry"), rep.Resumed)
	}
	if rep.Invalid > 0 {
		fmt.Fprintf(env.stdout, "%s of holds or requests no longer cast to the key column's type; they are left as they are\n", plural(rep.Invalid, "stored key"))
	}
	if len(rep.FoundNothing) > 0 {
		fmt.Fprintf(env.stdout, "%s completed with \"lethe held nothing of this subject\" (ids %s). lethe no longer has their keys, so it cannot tell whether one was typed in another spelling (0111 for 111); if in doubt, file it again with a new ticket\n",
			plural(len(rep.FoundNothing), "request"), joinIDs(rep.FoundNothing, 20))
	}
	return nil
}

// joinIDs lists up to n ids, and how many more there are.
func joinIDs(ids []int64, n int) string {
	parts := make([]string, 0, min(len(ids), n)+1)
	for i, id := range ids {
		if i == n {
			parts = append(parts, fmt.Sprintf("and %d more", len(ids)-n))
			break
		}
		parts = append(parts, strconv.FormatInt(id, 10))
	}
	return strings.Join(parts, ", ")
}

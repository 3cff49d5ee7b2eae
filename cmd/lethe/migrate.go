package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/migrations"
	"github.com/lethehq/lethe/request"
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
	cfg, pool, err := c.connect(ctx, env)
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
	return repairKeys(ctx, env, cfg, pool, logger)
}

// repairKeys makes canonical the subject keys that earlier versions stored
// as typed, and reports what cannot be recomputed. It needs the subject
// graph, so it runs only when lethe holds any hold or request at all.
func repairKeys(ctx context.Context, env *cliEnv, cfg *config.Config, pool *pgxpool.Pool, logger *slog.Logger) error {
	var any bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lethe.hold) OR EXISTS (SELECT 1 FROM lethe.request)`).Scan(&any); err != nil {
		return fmt.Errorf("error reading holds and requests: %w", err)
	}
	if !any {
		return nil
	}
	a, err := app.Open(ctx, cfg, logger, app.Options{})
	if err != nil {
		return fmt.Errorf("the schema is migrated, but the stored subject keys could not be checked, because the config does not compile against the database: %w; fix it and run lethe migrate again", err)
	}
	defer a.Close()
	var holds *hold.KeyRepair
	var reqs *request.KeyRepair
	err = pgx.BeginFunc(ctx, a.Pool, func(tx pgx.Tx) error {
		var err error
		if holds, err = hold.RepairKeys(ctx, tx, a.Plan, a.Queue); err != nil {
			return err
		}
		reqs, err = request.RepairKeys(ctx, tx, a.Plan, a.Queue)
		return err
	})
	if err != nil {
		return fmt.Errorf("error making stored subject keys canonical: %w", err)
	}
	if holds.Rewritten+holds.Merged+reqs.Rewritten > 0 {
		fmt.Fprintf(env.stdout, "subject keys made canonical: %s, %s (%d merged as duplicates), %s (%d waiting on a hold queued again)\n",
			plural(holds.Rewritten, "hold"), plural(reqs.Rewritten, "open request"), holds.Merged, plural(reqs.Suppressions, "suppression entry"), reqs.Resumed)
	}
	if n := holds.Invalid + reqs.Invalid; n > 0 {
		fmt.Fprintf(env.stdout, "%s of holds or requests no longer cast to the key column's type; they are left as they are\n", plural(n, "stored key"))
	}
	if len(reqs.FoundNothing) > 0 {
		fmt.Fprintf(env.stdout, "%s completed with \"lethe held nothing of this subject\" (ids %s). lethe no longer has their keys, so it cannot tell whether one was typed in another spelling (0111 for 111); if in doubt, file it again with a new ticket\n",
			plural(len(reqs.FoundNothing), "request"), joinIDs(reqs.FoundNothing, 20))
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

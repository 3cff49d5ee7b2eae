package main

import (
	"context"
	"errors"
	"fmt"
	"os/user"

	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/request"
)

func runLedger(ctx context.Context, env *cliEnv, args []string) error {
	return dispatch(ctx, env, "ledger", args, subcommand{"replay", runLedgerReplay})
}

func runLedgerReplay(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var confirm, asJSON bool
	fs := newFlagSet(env, "ledger replay", "[--confirm] [--json] [--config FILE]")
	c.register(fs, "warn")
	fs.BoolVar(&confirm, "confirm", false, "apply the erasures (without it, only list them)")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	a, err := c.open(ctx, env, true)
	if err != nil {
		return err
	}
	defer a.Close()
	store, err := a.Store(ctx, false)
	if err != nil {
		return err
	}
	r, err := request.NewReplayer(request.ReplayConfig{Pool: a.Pool, Plan: a.Plan, Store: store, Holds: hold.Checker{}, Logger: a.Logger})
	if err != nil {
		return err
	}
	rp, err := r.Check(ctx)
	if errors.Is(err, audit.ErrLedger) {
		return fmt.Errorf("ledger replay: %w", err)
	}
	if err != nil {
		return err
	}
	if confirm && rp.Needed() {
		who := "unknown"
		if u, err := user.Current(); err == nil {
			who = u.Username
		}
		if err := r.Apply(ctx, rp, who); err != nil {
			return err
		}
	}
	if asJSON {
		return writeJSON(env.stdout, rp)
	}
	w := env.stdout
	if !rp.Needed() {
		fmt.Fprintln(w, "the database matches the audit anchors in the bucket: nothing to replay")
		return nil
	}
	fmt.Fprintf(w, "%s\n", rp.Ledger.Reason)
	fmt.Fprintf(w, "anchors the database no longer holds: %d, the newest %s (seq %d); the chain as restored holds anchors up to seq %d\n",
		rp.Anchors, rp.HeadName, rp.Head.Seq, rp.RestorePoint)
	verb := "to"
	if rp.Applied {
		verb = "done:"
	}
	fmt.Fprintf(w, "erased subjects in them: %d (%s destroy %s, delete %s from the hot tables, put %d back on the suppression list)\n",
		len(rp.Erased), verb, plural(rp.Keys, "key"), plural(rp.HotSubjects, "subject"), rp.Unsuppressed)
	fmt.Fprintf(w, "expired keys in them: %d (%s destroy %d)\n", len(rp.Expired), verb, rp.ExpiredKeys)
	if len(rp.Held) > 0 {
		fmt.Fprintf(w, "held now, left alone: %s (their HMACs are in the replay's audit entry; once the holds are released, file their deletion requests again)\n",
			plural(len(rp.Held), "subject"))
	}
	if !rp.Applied {
		fmt.Fprintln(w, "nothing was changed: run lethe ledger replay --confirm to apply these erasures; until then the workers archive and erase nothing")
		return nil
	}
	fmt.Fprintf(w, "replayed: %s deleted; the workers resume. Intake systems must submit again the requests that were open at the time of the backup (same tickets: idempotent)\n", plural(int(rp.Rows), "row"))
	return nil
}

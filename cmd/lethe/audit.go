package main

import (
	"context"
	"fmt"
	"time"

	"github.com/lethehq/lethe/audit"
)

func runAudit(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] != "verify" {
		return usagef("audit: usage: lethe audit verify [--anchors] [--json] [--config FILE]")
	}
	var c common
	var asJSON, anchors bool
	fs := newFlagSet(env, "audit verify", "[--anchors] [--json] [--config FILE]")
	c.register(fs, "warn")
	fs.BoolVar(&anchors, "anchors", false, "also check the chain against its anchors in the bucket (with the worker's credentials)")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	a, err := c.open(ctx, env, false)
	if err != nil {
		return err
	}
	defer a.Close()
	res, err := audit.Verify(ctx, a.Pool)
	if err != nil {
		return err
	}
	var ares *audit.AnchorsResult
	if anchors {
		store, err := a.Store(ctx, false)
		if err != nil {
			return err
		}
		if ares, err = audit.VerifyAnchors(ctx, a.Pool, store); err != nil {
			return err
		}
	}
	if asJSON {
		out := any(res)
		if anchors {
			out = map[string]any{"chain": res, "anchors": ares}
		}
		if err := writeJSON(env.stdout, out); err != nil {
			return err
		}
	} else {
		if res.OK {
			fmt.Fprintf(env.stdout, "audit log intact: %s, every link verified\n", plural(int(res.Entries), "entry"))
		} else {
			fmt.Fprintf(env.stdout, "audit log BROKEN: %s (%s read)\n", res.Problem, plural(int(res.Entries), "entry"))
		}
		if anchors {
			printAnchors(env, ares)
		}
	}
	if !res.OK || (ares != nil && !ares.OK) {
		return errSilent
	}
	return nil
}

func printAnchors(env *cliEnv, r *audit.AnchorsResult) {
	switch {
	case r.Anchors == 0:
		fmt.Fprintln(env.stdout, "anchors: none in the bucket yet (the first is written at the end of the next sweep, or within audit.anchor_every)")
	case !r.OK:
		fmt.Fprintf(env.stdout, "anchors BROKEN at seq %d: %s\n", r.BadSeq, r.Problem)
	default:
		fmt.Fprintf(env.stdout, "anchors match: %s checked against the chain", plural(r.Checked, "anchor"))
		if r.Reconciled > 0 {
			fmt.Fprintf(env.stdout, ", %s lost to a database restore and reconciled by a ledger replay", plural(r.Reconciled, "anchor"))
		}
		fmt.Fprintf(env.stdout, "; the newest at seq %d, %s\n", r.Head.Seq, r.Head.At.UTC().Format(time.RFC3339))
	}
}

package main

import (
	"context"
	"fmt"

	"github.com/lethehq/lethe/audit"
)

func runAudit(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] != "verify" {
		return usagef("audit: usage: lethe audit verify [--json] [--config FILE]")
	}
	var c common
	var asJSON bool
	fs := newFlagSet(env, "audit verify", "[--json] [--config FILE]")
	c.register(fs, "warn")
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
	if asJSON {
		if err := writeJSON(env.stdout, res); err != nil {
			return err
		}
	} else if res.OK {
		fmt.Fprintf(env.stdout, "audit log intact: %d entries, every link verified\n", res.Entries)
	}
	if !res.OK {
		if !asJSON {
			fmt.Fprintf(env.stdout, "audit log BROKEN: %s (%d entries read)\n", res.Problem, res.Entries)
		}
		return errSilent
	}
	return nil
}

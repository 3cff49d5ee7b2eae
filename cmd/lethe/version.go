package main

import (
	"context"
	"fmt"

	"github.com/lethehq/lethe"
)

func runVersion(_ context.Context, env *cliEnv, args []string) error {
	var asJSON bool
	fs := newFlagSet(env, "version", "[--json]")
	fs.BoolVar(&asJSON, "json", false, "print the version as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	b := lethe.BuildInfo()
	if asJSON {
		return writeJSON(env.stdout, b)
	}
	modified := ""
	if b.Modified {
		modified = " (with uncommitted changes)"
	}
	fmt.Fprintf(env.stdout, "lethe %s\ncommit %s%s\n%s\n", b.Version, b.Commit, modified, b.Go)
	return nil
}

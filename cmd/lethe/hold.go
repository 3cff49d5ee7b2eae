package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lethehq/lethe/hold"
)

// stringList is a flag that may be repeated.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

func runHold(ctx context.Context, env *cliEnv, args []string) error {
	return dispatch(ctx, env, "hold", args,
		subcommand{"place", runHoldPlace}, subcommand{"release", runHoldRelease}, subcommand{"list", runHoldList})
}

func runHoldPlace(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var matter, kind, reason, by string
	var subjects stringList
	var asJSON bool
	fs := newFlagSet(env, "hold place", "--matter M --subject KEY... [--kind K] --reason TEXT --by WHO [--json]")
	c.register(fs, "warn")
	fs.StringVar(&matter, "matter", "", "the legal matter")
	fs.Var(&subjects, "subject", "a subject's key; repeat for several")
	fs.StringVar(&kind, "kind", "", "the kind of subject (default: the only kind, or default)")
	fs.StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	fs.StringVar(&by, "by", "", "who places it (recorded in the audit log)")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required("hold place", "matter", matter); err != nil {
		return err
	}
	if len(subjects) == 0 {
		return usagef("hold place: give at least one --subject")
	}
	if err := required("hold place", "reason", reason, "by", by); err != nil {
		return err
	}
	if err := nonBlankSubjects("hold place", subjects); err != nil {
		return err
	}
	holds, done, err := c.openHolds(ctx, env)
	if err != nil {
		return err
	}
	defer done()
	res, err := holds.Place(ctx, kind, matter, subjects, reason, by)
	if err != nil {
		return err
	}
	if asJSON {
		if res.Placed == nil {
			res.Placed = []hold.Hold{}
		}
		return writeJSON(env.stdout, res)
	}
	fmt.Fprintf(env.stdout, "matter %s: %s placed, %s already held under it; the object-store lock follows in a job (lethe status shows it)\n",
		matter, plural(len(res.Placed), "hold"), plural(res.Already, "subject"))
	return nil
}

func runHoldRelease(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var matter, kind, by string
	var subjects stringList
	var asJSON bool
	fs := newFlagSet(env, "hold release", "--matter M [--subject KEY...] [--kind K] --by WHO [--json]")
	c.register(fs, "warn")
	fs.StringVar(&matter, "matter", "", "the legal matter")
	fs.Var(&subjects, "subject", "release only this subject; repeat for several (default: the whole matter)")
	fs.StringVar(&kind, "kind", "", "the kind of subject of --subject (default: the only kind, or default); without --subject, release only this kind's holds")
	fs.StringVar(&by, "by", "", "who releases it (recorded in the audit log)")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required("hold release", "matter", matter, "by", by); err != nil {
		return err
	}
	if err := nonBlankSubjects("hold release", subjects); err != nil {
		return err
	}
	holds, done, err := c.openHolds(ctx, env)
	if err != nil {
		return err
	}
	defer done()
	res, err := holds.Release(ctx, kind, matter, subjects, by)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(env.stdout, res)
	}
	if res.Released == 0 {
		fmt.Fprintf(env.stdout, "matter %s: nothing left to release (released already)\n", matter)
		return nil
	}
	fmt.Fprintf(env.stdout, "matter %s: %s released; %s no longer held; %s resumed\n",
		matter, plural(res.Released, "hold"), plural(res.Freed, "subject"), plural(res.Resumed, "waiting deletion request"))
	return nil
}

func runHoldList(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var matter, kind, subject string
	var asJSON bool
	fs := newFlagSet(env, "hold list", "[--matter M] [--subject KEY] [--kind K] [--json]")
	c.register(fs, "warn")
	fs.StringVar(&matter, "matter", "", "only this matter")
	fs.StringVar(&subject, "subject", "", "only this subject")
	fs.StringVar(&kind, "kind", "", "only this kind of subject (with --subject, default: the only kind, or default)")
	fs.BoolVar(&asJSON, "json", false, "print the holds as a JSON array")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if flagSet(fs, "subject") && strings.TrimSpace(subject) == "" {
		return usagef("hold list: --subject cannot be empty or only whitespace")
	}
	svc, done, err := c.openHolds(ctx, env)
	if err != nil {
		return err
	}
	defer done()
	holds, err := svc.List(ctx, kind, matter, subject)
	if err != nil {
		return err
	}
	if asJSON {
		if holds == nil {
			holds = []hold.Hold{}
		}
		return writeJSON(env.stdout, holds)
	}
	if len(holds) == 0 {
		fmt.Fprintln(env.stdout, "no active holds")
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "matter\tkind\tsubject\tplaced\tby\treason")
	for _, h := range holds {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", safeText(h.Matter), h.Kind, safeText(h.Subject), h.PlacedAt.Format(time.DateTime), safeText(h.PlacedBy), safeText(h.Reason))
	}
	return tw.Flush()
}

// openHolds opens lethe and returns its hold service, and the function
// that closes it.
func (c *common) openHolds(ctx context.Context, env *cliEnv) (*hold.Service, func(), error) {
	a, err := c.open(ctx, env, true)
	if err != nil {
		return nil, nil, err
	}
	holds, err := a.Holds()
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return holds, a.Close, nil
}

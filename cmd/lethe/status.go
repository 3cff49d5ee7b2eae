package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/request"
)

func runStatus(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var asJSON bool
	var runs int
	fs := newFlagSet(env, "status", "[--json] [--runs N] [--config FILE]")
	c.register(fs, "warn")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.IntVar(&runs, "runs", 5, "how many recent runs to show")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if runs < 0 {
		return usagef("status: --runs %d: give 0 or more", runs)
	}
	a, err := c.open(ctx, env, true)
	if err != nil {
		return err
	}
	defer a.Close()

	rep, err := a.Status(ctx, runs)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(env.stdout, rep)
	}

	w := env.stdout
	fmt.Fprintln(w, "DUE NOW")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  policy\tkind\tthen\tretain\tdue\trows to minimise\theld\tprotected")
	for _, d := range rep.Due {
		rows := "-"
		if d.Then == config.ThenMinimize {
			rows = strconv.FormatInt(d.Rows, 10)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\n", d.Policy, d.Kind, d.Then, d.Retain, d.Due, rows, d.Held, d.Protected)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nARCHIVED")
	if len(rep.Archived) == 0 {
		fmt.Fprintln(w, "  nothing yet")
	} else {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  policy\tpart\tsubjects\tbytes\toldest\tnewest")
		for _, p := range rep.Archived {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\n", p.Policy, p.Part, p.Subjects, humanBytes(p.Bytes), p.Oldest.Format(time.DateTime), p.Newest.Format(time.DateTime))
		}
		tw.Flush()
	}
	k := rep.Keys
	fmt.Fprintf(w, "  keys: %d live, %d superseded, %d erased, %d expired\n", k["archived"], k["superseded"], k["erased"], k["expired"])
	fmt.Fprintf(w, "  segments: %s (%s)\n", plural(int(rep.Segments.Count), "segment"), humanBytes(rep.Segments.Bytes))
	if rep.Uncommitted.Count > 0 {
		fmt.Fprintf(w, "  not committed: %s (%s), in flight or left by a failed attempt: unreadable (no key of their parts is stored); the bucket's lifecycle rule removes those that stay\n",
			plural(int(rep.Uncommitted.Count), "segment"), humanBytes(rep.Uncommitted.Bytes))
	}
	fmt.Fprintf(w, "\nUNSETTLED: %s claimed and not yet archived or released\n", plural(int(rep.Unsettled), "subject"))
	if len(rep.Failing) > 0 {
		fmt.Fprintln(w, "\nFAILING BATCHES (a failed batch is requeued by the next sweep)")
		for _, b := range rep.Failing {
			fmt.Fprintf(w, "  batch %d (run %d, %s): %s after %s, %s left: %s\n",
				b.ID, b.RunID, b.Policy, b.State, plural(b.Attempts, "attempt"), plural(int(b.Remaining), "subject"), oneLine(b.LastError))
		}
	}
	if len(rep.Blocked) > 0 {
		fmt.Fprintln(w, "\nLEFT IN PLACE BY FOREIGN KEYS (retried by every sweep)")
		for _, g := range rep.Blocked {
			fmt.Fprintf(w, "  %s (since %s)\n", g.BlockedMessage(), g.Since.Format(time.DateTime))
		}
	}
	fmt.Fprintln(w, "\nLAST RUNS")
	if len(rep.Runs) == 0 {
		fmt.Fprintln(w, "  none yet")
	} else {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  run\ttrigger\tstate\tstarted\ttook\tsubjects\tarchived\tdestroyed\tminimised\tbytes")
		for _, r := range rep.Runs {
			took := "-"
			if r.FinishedAt != nil {
				took = r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", r.ID, r.Trigger, r.State, r.StartedAt.Format(time.DateTime), took,
				r.Subjects, r.Archived, r.Destroyed, r.Minimized, humanBytes(r.Bytes))
		}
		tw.Flush()
	}
	printRequestsStatus(w, rep)
	printAnchorStatus(w, rep.Anchors)
	return nil
}

func printAnchorStatus(w io.Writer, an *audit.AnchorStatus) {
	fmt.Fprintln(w, "\nAUDIT ANCHORS")
	switch {
	case an.LedgerError != "":
		fmt.Fprintf(w, "  ledger: cannot compare the database with the bucket's anchors: %s\n", oneLine(an.LedgerError))
	case !an.Ledger.OK:
		fmt.Fprintf(w, "  ledger: %s: %s\n", strings.ToUpper(an.Ledger.State), an.Ledger.Reason)
	case an.Ledger.Head == nil:
		fmt.Fprintln(w, "  ledger: ok (no anchor in the bucket yet)")
	default:
		fmt.Fprintf(w, "  ledger: ok (the database holds the newest anchor, seq %d)\n", an.Ledger.Head.Seq)
	}
	if an.Last != nil {
		fmt.Fprintf(w, "  last anchor: seq %d at %s; %s since\n", an.Last.Seq, an.Last.At.Format(time.DateTime), plural(int(an.Unanchored), "entry"))
	} else {
		fmt.Fprintf(w, "  last anchor: none yet; %s to anchor\n", plural(int(an.Unanchored), "entry"))
	}
	if an.LastError != "" {
		since := ""
		if an.FailingSince != nil {
			since = " since " + an.FailingSince.Format(time.DateTime)
		}
		fmt.Fprintf(w, "  anchoring FAILS%s (retried): %s\n", since, oneLine(an.LastError))
	}
}

func printRequestsStatus(w io.Writer, rep *app.Status) {
	fmt.Fprintln(w, "\nDELETION REQUESTS")
	if len(rep.Requests) == 0 {
		fmt.Fprintln(w, "  none yet")
	}
	for _, r := range rep.Requests {
		fmt.Fprintf(w, "  %-16s %d\n", r.State, r.Count)
	}
	if len(rep.ByRegime) > 0 {
		fmt.Fprintln(w, "\nOPEN REQUESTS BY REGIME")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  regime\topen\tto acknowledge\tacknowledgement overdue\twithin 10 days of deadline\tpast deadline\textended")
		for _, g := range rep.ByRegime {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%d\t%d\n", g.Regime, g.Open, g.ToAcknowledge, g.AcknowledgeOverdue, g.NearDeadline, g.PastDeadline, g.Extended)
		}
		tw.Flush()
	}
	// The lists are grouped by regime, soonest date first within each, as
	// each regime's dates answer to its own law.
	days := func(left float64, overdue bool) string {
		if overdue {
			return fmt.Sprintf("OVERDUE by %.1f days", -left)
		}
		return fmt.Sprintf("%.1f days left", left)
	}
	if len(rep.ToAcknowledge) > 0 {
		fmt.Fprintln(w, "\nREQUESTS TO ACKNOWLEDGE (tell the requester the request arrived, by the date shown)")
		for _, regime := range regimesOf(rep.ToAcknowledge, func(r request.ToAcknowledge) string { return r.Regime }) {
			fmt.Fprintf(w, "  %s\n", regime)
			for _, r := range rep.ToAcknowledge {
				if r.Regime == regime {
					fmt.Fprintf(w, "    request %d (ticket %s) %s: acknowledge by %s, %s\n", r.ID, r.Ticket, r.State,
						r.AcknowledgeBy.UTC().Format(time.DateOnly), days(r.DaysLeft, r.Overdue))
				}
			}
		}
	}
	if len(rep.AtRisk) > 0 {
		fmt.Fprintf(w, "\nREQUESTS WITHIN %d DAYS OF THEIR DEADLINE\n", request.AtRiskDays)
		for _, regime := range regimesOf(rep.AtRisk, func(r request.AtRisk) string { return r.Regime }) {
			fmt.Fprintf(w, "  %s\n", regime)
			for _, r := range rep.AtRisk {
				if r.Regime != regime {
					continue
				}
				extended := ""
				if r.Extended {
					extended = " (extended already)"
				}
				fmt.Fprintf(w, "    request %d (ticket %s) %s: deadline %s%s, %s\n", r.ID, r.Ticket, r.State,
					r.Deadline.UTC().Format(time.DateOnly), extended, days(r.DaysLeft, r.Overdue))
			}
		}
	}
	fmt.Fprintln(w, "\nACTIVE HOLDS")
	if len(rep.Holds) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, h := range rep.Holds {
		fmt.Fprintf(w, "  matter %s: %s, since %s\n", h.Matter, plural(int(h.Subjects), "subject"), h.Since.Format(time.DateTime))
	}
	if len(rep.PendingSyncs) > 0 {
		fmt.Fprintln(w, "\nPENDING HOLD SYNCS (the object-store lock is not yet what the holds say)")
		for _, p := range rep.PendingSyncs {
			want := "off"
			if p.Held {
				want = "on"
			}
			fmt.Fprintf(w, "  subject %s: lock %s, since %s", p.SubjectHMAC, want, p.Since.Format(time.DateTime))
			if p.LastError != nil {
				fmt.Fprintf(w, ", last error: %s", oneLine(*p.LastError))
			}
			fmt.Fprintln(w)
		}
	}
	if len(rep.FailedJobs) > 0 {
		fmt.Fprintln(w, "\nFAILED JOBS (retryable now, or discarded in the last 7 days)")
		for _, f := range rep.FailedJobs {
			fmt.Fprintf(w, "  %s %s: %d", f.Kind, f.State, f.Count)
			if f.LastError != nil {
				fmt.Fprintf(w, ", last error: %s", oneLine(*f.LastError))
			}
			fmt.Fprintln(w)
		}
	}
}

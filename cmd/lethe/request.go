package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lethehq/lethe"
	"github.com/lethehq/lethe/request"
)

func runRequest(ctx context.Context, env *cliEnv, args []string) error {
	return dispatch(ctx, env, "request", args,
		subcommand{"delete", runRequestDelete}, subcommand{"show", runRequestShow}, subcommand{"list", runRequestList},
		subcommand{"extend", runRequestExtend})
}

func runRequestDelete(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var subject, kind, ticket, by, regime string
	var force, wait, asJSON bool
	var timeout time.Duration
	fs := newFlagSet(env, "request delete", "--subject KEY [--kind K] --ticket ID --by WHO [--regime NAME] [--force] [--wait [--timeout D]] [--json]")
	c.register(fs, "warn")
	fs.StringVar(&subject, "subject", "", "the subject's key, as text")
	fs.StringVar(&kind, "kind", "", "the kind of subject (default: the only kind, or default)")
	fs.StringVar(&ticket, "ticket", "", "the privacy team's ticket; a request is idempotent per ticket")
	fs.StringVar(&by, "by", "", "who asks (recorded in the audit log)")
	fs.StringVar(&regime, "regime", "", "the legal regime, which sets the deadline, its extension and the acknowledge-by date: ccpa, gdpr or one of requests.regimes (default requests.default_regime)")
	fs.BoolVar(&force, "force", false, "delete even if the kind's protect predicate (requests.protect) matches the subject")
	fs.BoolVar(&wait, "wait", false, "wait until a worker has completed, rejected or blocked the request")
	fs.DurationVar(&timeout, "timeout", 5*time.Minute, "with --wait, how long to wait before giving up (the request stays queued)")
	fs.BoolVar(&asJSON, "json", false, "print the request as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case !flagSet(fs, "subject"):
		return usagef("request delete: --subject is required")
	case strings.TrimSpace(subject) == "":
		return usagef("request delete: --subject cannot be empty or only whitespace")
	}
	if err := required("request delete", "ticket", ticket, "by", by); err != nil {
		return err
	}
	if flagSet(fs, "timeout") && !wait {
		return usagef("request delete: --timeout goes with --wait")
	}
	if timeout <= 0 {
		return usagef("request delete: --timeout %s: give a positive duration, such as 10m", timeout)
	}
	if flagSet(fs, "regime") && strings.TrimSpace(regime) == "" {
		return usagef("request delete: --regime cannot be blank: name a regime, or leave the flag out for requests.default_regime")
	}
	reqs, done, err := c.openIntake(ctx, env)
	if err != nil {
		return err
	}
	defer done()
	req, created, err := reqs.Submit(ctx, request.Submission{Key: subject, Kind: kind, Ticket: ticket, By: by, Force: force, Regime: regime})
	if err != nil {
		return err
	}
	if !asJSON {
		if created {
			fmt.Fprintf(env.stderr, "request %d queued for ticket %s\n", req.ID, req.Ticket)
		} else {
			fmt.Fprintf(env.stderr, "ticket %s is request %d already; nothing new was queued\n", req.Ticket, req.ID)
		}
	}
	if wait {
		if req, err = waitRequest(ctx, env, reqs, req, timeout, asJSON); err != nil {
			return err
		}
	}
	if err := printRequest(env.stdout, req, asJSON); err != nil {
		return err
	}
	if req.State == request.StateFailed {
		return errSilent
	}
	return nil
}

// waitRequest polls until the request leaves received and processing, or
// timeout passes.
func waitRequest(ctx context.Context, env *cliEnv, reqs *request.Intake, req *request.Request, timeout time.Duration, quiet bool) (*request.Request, error) {
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	warned := false
	last := req.State
	for req.State == request.StateReceived || req.State == request.StateProcessing {
		select {
		case <-ctx.Done():
			return nil, errors.New("interrupted: the request stays queued and a worker will carry it out")
		case <-deadline.C:
			if req.State == request.StateReceived {
				return nil, fmt.Errorf("request %d is still %s after %s: no worker has picked it up; is lethe worker running? "+
					"The request stays queued, and lethe request show %d follows it", req.ID, req.State, timeout, req.ID)
			}
			return nil, fmt.Errorf("request %d is still %s after %s; it stays queued, and lethe request show %d follows it", req.ID, req.State, timeout, req.ID)
		case <-time.After(300 * time.Millisecond):
		}
		var err error
		if req, err = reqs.Get(ctx, req.ID); err != nil {
			return nil, err
		}
		if !quiet && req.State != last {
			fmt.Fprintf(env.stderr, "request %d: %s\n", req.ID, req.State)
			last = req.State
		}
		if !quiet && !warned && req.State == request.StateReceived && time.Since(start) > 15*time.Second {
			fmt.Fprintf(env.stderr, "no worker has picked the request up yet: is lethe worker running? (waiting up to %s)\n", timeout)
			warned = true
		}
	}
	return req, nil
}

func runRequestShow(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var ticket string
	var asJSON bool
	fs := newFlagSet(env, "request show", "ID | --ticket ID [--json]")
	c.register(fs, "warn")
	fs.StringVar(&ticket, "ticket", "", "find the request by its ticket")
	fs.BoolVar(&asJSON, "json", false, "print the request as JSON")
	id, err := parseRequestRef("request show", fs, args, &ticket)
	if err != nil {
		return err
	}
	reqs, done, err := c.openIntake(ctx, env)
	if err != nil {
		return err
	}
	defer done()
	req, err := findRequest(ctx, reqs, id, ticket)
	if err != nil {
		return err
	}
	return printRequest(env.stdout, req, asJSON)
}

// parseRequestRef parses fs's flags, among which a request's ID may stand
// (before, between or after them), and returns the ID: 0 when the request
// is named by --ticket (into ticket) instead. Exactly one of the two must
// be given.
func parseRequestRef(cmd string, fs *flag.FlagSet, args []string, ticket *string) (int64, error) {
	var id string
	rest := args
	for {
		if err := parseFlagsOnly(fs, rest); err != nil {
			return 0, err
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		if id != "" {
			return 0, usagef("%s: unexpected argument %q", cmd, rest[0])
		}
		id, rest = rest[0], rest[1:]
	}
	if (id == "") == (*ticket == "") {
		return 0, usagef("%s: give a request ID or --ticket ID", cmd)
	}
	if id == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 {
		return 0, usagef("%s: %q is not a request id", cmd, id)
	}
	return n, nil
}

// findRequest reads the request with id, or with ticket when id is 0.
func findRequest(ctx context.Context, reqs *request.Intake, id int64, ticket string) (*request.Request, error) {
	var req *request.Request
	var err error
	if id != 0 {
		req, err = reqs.Get(ctx, id)
	} else {
		req, err = reqs.ByTicket(ctx, ticket)
	}
	if errors.Is(err, request.ErrNoRequest) {
		what := "id " + strconv.FormatInt(id, 10)
		if id == 0 {
			what = "ticket " + ticket
		}
		return nil, fmt.Errorf("no request has %s (lethe request list shows them)", what)
	}
	return req, err
}

// runRequestExtend moves a request's deadline once by its regime's
// extension.
func runRequestExtend(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var ticket, reason, by string
	var asJSON bool
	fs := newFlagSet(env, "request extend", "ID | --ticket ID --reason TEXT --by WHO [--json]")
	c.register(fs, "warn")
	fs.StringVar(&ticket, "ticket", "", "find the request by its ticket")
	fs.StringVar(&reason, "reason", "", "why the deadline moves (recorded with the request and in the audit log)")
	fs.StringVar(&by, "by", "", "who extends it (recorded in the audit log)")
	fs.BoolVar(&asJSON, "json", false, "print the request as JSON")
	id, err := parseRequestRef("request extend", fs, args, &ticket)
	if err != nil {
		return err
	}
	if err := required("request extend", "reason", reason, "by", by); err != nil {
		return err
	}
	reqs, done, err := c.openIntake(ctx, env)
	if err != nil {
		return err
	}
	defer done()
	if id == 0 {
		req, err := findRequest(ctx, reqs, 0, ticket)
		if err != nil {
			return err
		}
		id = req.ID
	}
	req, err := reqs.Extend(ctx, id, reason, by)
	if errors.Is(err, request.ErrNoRequest) {
		return fmt.Errorf("no request has id %d (lethe request list shows them)", id)
	}
	var in *lethe.InputError
	if errors.As(err, &in) && in.Field == "id" {
		// The request, not a flag, is at fault: say so without a flag's name.
		return usagef("request extend: %s", in.Problem)
	}
	if err != nil {
		return err
	}
	if !asJSON {
		fmt.Fprintf(env.stderr, "request %d: deadline extended to %s\n", req.ID, req.Deadline.UTC().Format(time.DateOnly))
	}
	return printRequest(env.stdout, req, asJSON)
}

func runRequestList(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var state string
	var limit int
	var asJSON bool
	fs := newFlagSet(env, "request list", "[--state S] [--limit N] [--json]")
	c.register(fs, "warn")
	fs.StringVar(&state, "state", "", "only requests in this state: "+strings.Join(request.RequestStates, ", "))
	fs.IntVar(&limit, "limit", 100, "at most this many, newest first")
	fs.BoolVar(&asJSON, "json", false, "print the requests as a JSON array")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if limit < 1 {
		return usagef("request list: --limit %d: give 1 or more", limit)
	}
	reqs, done, err := c.openIntake(ctx, env)
	if err != nil {
		return err
	}
	defer done()
	list, err := reqs.List(ctx, state, limit)
	if err != nil {
		return err
	}
	if asJSON {
		if list == nil {
			list = []*request.Request{}
		}
		return writeJSON(env.stdout, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(env.stdout, "no requests")
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "id\tticket\tstate\tregime\treceived\tacknowledge by\tdeadline\tdays left\treason")
	for _, r := range list {
		left := strconv.Itoa(r.DaysLeft)
		if !r.Open() {
			left = "-"
		}
		ack := "-"
		if r.AcknowledgeBy != nil {
			ack = r.AcknowledgeBy.UTC().Format(time.DateOnly)
		}
		deadline := r.Deadline.UTC().Format(time.DateOnly)
		if r.ExtendedAt != nil {
			deadline += " (extended)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Ticket, r.State, r.Regime, r.ReceivedAt.UTC().Format(time.DateOnly),
			ack, deadline, left, deref(r.Reason))
	}
	return tw.Flush()
}

func printRequest(w io.Writer, r *request.Request, asJSON bool) error {
	if asJSON {
		return writeJSON(w, r)
	}
	fmt.Fprintf(w, "request %d  ticket %s  state %s\n", r.ID, r.Ticket, r.State)
	if r.Subject != nil {
		fmt.Fprintf(w, "  subject:   %s (kind %s)\n", safeText(*r.Subject), r.Kind)
	} else {
		fmt.Fprintf(w, "  subject:   erased from lethe's records (kind %s, hmac %s)\n", r.Kind, r.SubjectHMAC)
	}
	fmt.Fprintf(w, "  requested: %s by %s", r.ReceivedAt.Format(time.RFC3339), r.RequestedBy)
	if r.Force {
		fmt.Fprint(w, " (forced)")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  regime:    %s\n", r.Regime)
	if r.AcknowledgeBy != nil {
		ack := r.AcknowledgeBy.UTC().Format(time.DateOnly)
		if r.Open() && time.Now().After(*r.AcknowledgeBy) {
			ack += " (passed)"
		}
		fmt.Fprintf(w, "  acknowledge receipt by: %s\n", ack)
	}
	if r.Open() {
		fmt.Fprintf(w, "  deadline:  %s (%s left)\n", r.Deadline.UTC().Format(time.DateOnly), plural(r.DaysLeft, "day"))
	} else {
		fmt.Fprintf(w, "  deadline:  %s\n", r.Deadline.UTC().Format(time.DateOnly))
	}
	if r.ExtendedAt != nil {
		fmt.Fprintf(w, "  extended:  %s by %s: %s\n", r.ExtendedAt.UTC().Format(time.RFC3339), deref(r.ExtendedBy), safeText(deref(r.ExtensionReason)))
	}
	if r.Reason != nil {
		fmt.Fprintf(w, "  reason:    %s\n", *r.Reason)
	}
	if r.Receipt != nil {
		var rc request.Receipt
		if err := json.Unmarshal(*r.Receipt, &rc); err == nil {
			fmt.Fprintf(w, "  completed: %s\n  receipt:   %s\n", rc.CompletedAt.Format(time.RFC3339), rc.Summary)
			for _, t := range sortedKeys(rc.RowsDeleted) {
				fmt.Fprintf(w, "             %-32s %s\n", t, plural(int(rc.RowsDeleted[t]), "row"))
			}
			for _, p := range rc.PartsMadeUnreadable {
				fmt.Fprintf(w, "             key destroyed: part in segment %s version %s\n", p.Segment, p.VersionID)
			}
			if len(rc.CompletedWith) > 0 {
				fmt.Fprintf(w, "             completed together with requests %v\n", rc.CompletedWith)
			}
		}
		if len(r.Signature) > 0 {
			fmt.Fprintln(w, "  signed:    yes (check it offline with lethe receipt verify on request show --json)")
		} else {
			fmt.Fprintln(w, "  signed:    no (requests.signing_key_file was not set when it completed)")
		}
	}
	return nil
}

// regimesOf returns the regimes of list, in the order they first appear.
func regimesOf[T any](list []T, regime func(T) string) []string {
	var out []string
	for _, r := range list {
		if g := regime(r); !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// openIntake opens lethe and returns its request intake, and the function
// that closes it.
func (c *common) openIntake(ctx context.Context, env *cliEnv) (*request.Intake, func(), error) {
	a, err := c.open(ctx, env, true)
	if err != nil {
		return nil, nil, err
	}
	intake, err := a.Intake()
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return intake, a.Close, nil
}

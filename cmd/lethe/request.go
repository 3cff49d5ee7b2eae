package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lethehq/lethe/request"
)

func runRequest(ctx context.Context, env *cliEnv, args []string) error {
	return dispatch(ctx, env, "request", args,
		subcommand{"delete", runRequestDelete}, subcommand{"show", runRequestShow}, subcommand{"list", runRequestList})
}

func runRequestDelete(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var subject, ticket, by string
	var force, wait, asJSON bool
	fs := newFlagSet(env, "request delete", "--subject KEY --ticket ID --by WHO [--force] [--wait] [--json]")
	c.register(fs, "warn")
	fs.StringVar(&subject, "subject", "", "the subject's key, as text")
	fs.StringVar(&ticket, "ticket", "", "the privacy team's ticket; a request is idempotent per ticket")
	fs.StringVar(&by, "by", "", "who asks (recorded in the audit log)")
	fs.BoolVar(&force, "force", false, "delete even if requests.protect matches the subject")
	fs.BoolVar(&wait, "wait", false, "wait until a worker has completed, rejected or blocked the request")
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
	reqs, done, err := c.openIntake(ctx, env)
	if err != nil {
		return err
	}
	defer done()
	req, created, err := reqs.Submit(ctx, subject, ticket, by, force)
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
		if req, err = waitRequest(ctx, env, reqs, req, asJSON); err != nil {
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

// waitRequest polls until the request leaves received and processing.
func waitRequest(ctx context.Context, env *cliEnv, reqs *request.Intake, req *request.Request, quiet bool) (*request.Request, error) {
	start := time.Now()
	warned := false
	last := req.State
	for req.State == request.StateReceived || req.State == request.StateProcessing {
		select {
		case <-ctx.Done():
			return nil, errors.New("interrupted: the request stays queued and a worker will carry it out")
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
			fmt.Fprintln(env.stderr, "no worker has picked the request up yet: is lethe worker running?")
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
	// The id may stand before, between or after the flags.
	var id string
	rest := args
	for {
		if err := parseFlagsOnly(fs, rest); err != nil {
			return err
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		if id != "" {
			return usagef("request show: unexpected argument %q", rest[0])
		}
		id, rest = rest[0], rest[1:]
	}
	if (id == "") == (ticket == "") {
		return usagef("request show: give a request ID or --ticket ID")
	}
	reqs, done, err := c.openIntake(ctx, env)
	if err != nil {
		return err
	}
	defer done()
	var req *request.Request
	if id != "" {
		n, perr := strconv.ParseInt(id, 10, 64)
		if perr != nil || n <= 0 {
			return usagef("request show: %q is not a request id", id)
		}
		req, err = reqs.Get(ctx, n)
	} else {
		req, err = reqs.ByTicket(ctx, ticket)
	}
	if errors.Is(err, request.ErrNoRequest) {
		what := "id " + id
		if ticket != "" {
			what = "ticket " + ticket
		}
		return fmt.Errorf("no request has %s (lethe request list shows them)", what)
	}
	if err != nil {
		return err
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
	fmt.Fprintln(tw, "id\tticket\tstate\treceived\tdeadline\tdays left\treason")
	for _, r := range list {
		left := strconv.Itoa(r.DaysLeft)
		if !r.Open() {
			left = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Ticket, r.State, r.ReceivedAt.Format(time.DateOnly),
			r.Deadline.Format(time.DateOnly), left, deref(r.Reason))
	}
	return tw.Flush()
}

func printRequest(w io.Writer, r *request.Request, asJSON bool) error {
	if asJSON {
		return writeJSON(w, r)
	}
	fmt.Fprintf(w, "request %d  ticket %s  state %s\n", r.ID, r.Ticket, r.State)
	if r.Subject != nil {
		fmt.Fprintf(w, "  subject:   %s\n", safeText(*r.Subject))
	} else {
		fmt.Fprintf(w, "  subject:   erased from lethe's records (hmac %s)\n", r.SubjectHMAC)
	}
	fmt.Fprintf(w, "  requested: %s by %s", r.ReceivedAt.Format(time.RFC3339), r.RequestedBy)
	if r.Force {
		fmt.Fprint(w, " (forced)")
	}
	fmt.Fprintln(w)
	if r.Open() {
		fmt.Fprintf(w, "  deadline:  %s (%d days left)\n", r.Deadline.Format(time.DateOnly), r.DaysLeft)
	} else {
		fmt.Fprintf(w, "  deadline:  %s\n", r.Deadline.Format(time.DateOnly))
	}
	if r.Reason != nil {
		fmt.Fprintf(w, "  reason:    %s\n", *r.Reason)
	}
	if r.Receipt != nil {
		var rc request.Receipt
		if err := json.Unmarshal(*r.Receipt, &rc); err == nil {
			fmt.Fprintf(w, "  completed: %s\n  receipt:   %s\n", rc.CompletedAt.Format(time.RFC3339), rc.Summary)
			for _, t := range sortedKeys(rc.RowsDeleted) {
				fmt.Fprintf(w, "             %-32s %d rows\n", t, rc.RowsDeleted[t])
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

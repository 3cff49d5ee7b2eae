package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/retention"
)

type archivedPolicy struct {
	Policy   string    `json:"policy"`
	Subjects int64     `json:"subjects"`
	Bytes    int64     `json:"bytes"`
	Oldest   time.Time `json:"oldest"`
	Newest   time.Time `json:"newest"`
}

type runRow struct {
	ID         int64      `json:"id"`
	Trigger    string     `json:"trigger"`
	State      string     `json:"state"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Subjects   int64      `json:"subjects"`
	Archived   int64      `json:"archived"`
	Destroyed  int64      `json:"destroyed"`
	Bytes      int64      `json:"bytes"`
	Error      *string    `json:"error,omitempty"`
}

type failedBatch struct {
	ID        int64  `json:"id"`
	RunID     int64  `json:"run_id"`
	Policy    string `json:"policy"`
	State     string `json:"state"`
	Attempts  int    `json:"attempts"`
	Remaining int64  `json:"remaining"`
	LastError string `json:"last_error"`
}

type requestCount struct {
	State string `json:"state"`
	Count int64  `json:"count"`
}

type requestAtRisk struct {
	ID       int64     `json:"id"`
	Ticket   string    `json:"ticket"`
	State    string    `json:"state"`
	Deadline time.Time `json:"deadline"`
	DaysLeft float64   `json:"days_left"`
}

type matterHolds struct {
	Matter   string    `json:"matter"`
	Subjects int64     `json:"subjects"`
	Since    time.Time `json:"since"`
}

type pendingSync struct {
	SubjectHMAC string    `json:"subject_hmac"`
	Held        bool      `json:"held"`
	Since       time.Time `json:"since"`
	LastError   *string   `json:"last_error"`
}

type failedJobs struct {
	Kind      string  `json:"kind"`
	State     string  `json:"state"`
	Count     int64   `json:"count"`
	LastError *string `json:"last_error"`
}

type statusReport struct {
	Due          []retention.DueCount `json:"due"`
	Archived     []archivedPolicy     `json:"archived"`
	Unsettled    int64                `json:"unsettled_subjects"`
	Failing      []failedBatch        `json:"failing_batches"`
	Runs         []runRow             `json:"runs"`
	Requests     []requestCount       `json:"requests"`
	AtRisk       []requestAtRisk      `json:"requests_near_deadline"`
	Holds        []matterHolds        `json:"holds"`
	PendingSyncs []pendingSync        `json:"pending_hold_syncs"`
	FailedJobs   []failedJobs         `json:"failed_jobs"`
}

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
	defer a.close()

	var rep statusReport
	if rep.Due, err = retention.CountDue(ctx, a.pool, a.plan, time.Now()); err != nil {
		return err
	}
	rows, err := a.pool.Query(ctx, `
		SELECT policy, count(*), coalesce(sum(size), 0)::bigint, min(archived_at), max(archived_at)
		FROM lethe.manifest GROUP BY policy ORDER BY policy`)
	if err != nil {
		return fmt.Errorf("error reading the manifest: %w", err)
	}
	if rep.Archived, err = pgx.CollectRows(rows, pgx.RowToStructByPos[archivedPolicy]); err != nil {
		return fmt.Errorf("error reading the manifest: %w", err)
	}
	if err := a.pool.QueryRow(ctx, `SELECT count(*) FROM lethe.work_item`).Scan(&rep.Unsettled); err != nil {
		return fmt.Errorf("error reading work items: %w", err)
	}
	rows, err = a.pool.Query(ctx, `
		SELECT b.id, b.run_id, b.policy, b.state, b.attempts,
		       (SELECT count(*) FROM lethe.work_item w WHERE w.batch_id = b.id), coalesce(b.last_error, '')
		FROM lethe.batch b
		WHERE b.state = 'failed' OR (b.state = 'queued' AND b.last_error IS NOT NULL)
		ORDER BY b.id DESC LIMIT 20`)
	if err != nil {
		return fmt.Errorf("error reading batches: %w", err)
	}
	if rep.Failing, err = pgx.CollectRows(rows, pgx.RowToStructByPos[failedBatch]); err != nil {
		return fmt.Errorf("error reading batches: %w", err)
	}
	rows, err = a.pool.Query(ctx, `
		SELECT r.id, r.trigger, r.state, r.started_at, r.finished_at,
		       coalesce(sum(b.subjects), 0)::bigint, coalesce(sum(b.archived), 0)::bigint,
		       coalesce(sum(b.destroyed), 0)::bigint, coalesce(sum(b.bytes), 0)::bigint, r.error
		FROM lethe.run r LEFT JOIN lethe.batch b ON b.run_id = r.id
		GROUP BY r.id ORDER BY r.id DESC LIMIT $1`, runs)
	if err != nil {
		return fmt.Errorf("error reading runs: %w", err)
	}
	if rep.Runs, err = pgx.CollectRows(rows, pgx.RowToStructByPos[runRow]); err != nil {
		return fmt.Errorf("error reading runs: %w", err)
	}
	if err := requestsStatus(ctx, a, &rep); err != nil {
		return err
	}
	if asJSON {
		return writeJSON(env.stdout, rep)
	}

	w := env.stdout
	fmt.Fprintln(w, "DUE NOW")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  policy\tthen\tretain\tdue\theld\tprotected")
	for _, d := range rep.Due {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%d\n", d.Policy, d.Then, d.Retain, d.Due, d.Held, d.Protected)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nARCHIVED")
	if len(rep.Archived) == 0 {
		fmt.Fprintln(w, "  nothing yet")
	} else {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  policy\tsubjects\tbytes\toldest\tnewest")
		for _, p := range rep.Archived {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\n", p.Policy, p.Subjects, humanBytes(p.Bytes), p.Oldest.Format(time.DateTime), p.Newest.Format(time.DateTime))
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\nUNSETTLED: %d subjects claimed and not yet archived or released\n", rep.Unsettled)
	if len(rep.Failing) > 0 {
		fmt.Fprintln(w, "\nFAILING BATCHES (a failed batch is requeued by the next sweep)")
		for _, b := range rep.Failing {
			fmt.Fprintf(w, "  batch %d (run %d, %s): %s after %d attempts, %d subjects left: %s\n",
				b.ID, b.RunID, b.Policy, b.State, b.Attempts, b.Remaining, oneLine(b.LastError))
		}
	}
	fmt.Fprintln(w, "\nLAST RUNS")
	if len(rep.Runs) == 0 {
		fmt.Fprintln(w, "  none yet")
	} else {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  run\ttrigger\tstate\tstarted\ttook\tsubjects\tarchived\tdestroyed\tbytes")
		for _, r := range rep.Runs {
			took := "-"
			if r.FinishedAt != nil {
				took = r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", r.ID, r.Trigger, r.State, r.StartedAt.Format(time.DateTime), took,
				r.Subjects, r.Archived, r.Destroyed, humanBytes(r.Bytes))
		}
		tw.Flush()
	}
	printRequestsStatus(w, &rep)
	return nil
}

// requestsStatus adds requests, holds, hold syncs and failed jobs.
func requestsStatus(ctx context.Context, a *app, rep *statusReport) error {
	rows, err := a.pool.Query(ctx, `SELECT state, count(*) FROM lethe.request GROUP BY state ORDER BY state`)
	if err != nil {
		return fmt.Errorf("error reading requests: %w", err)
	}
	if rep.Requests, err = pgx.CollectRows(rows, pgx.RowToStructByPos[requestCount]); err != nil {
		return fmt.Errorf("error reading requests: %w", err)
	}
	rows, err = a.pool.Query(ctx, `
		SELECT id, ticket, state, deadline, round((extract(epoch FROM deadline - now()) / 86400)::numeric, 1)::float8
		FROM lethe.request
		WHERE state IN ('received', 'processing', 'blocked_by_hold') AND deadline < now() + interval '10 days'
		ORDER BY deadline`)
	if err != nil {
		return fmt.Errorf("error reading requests: %w", err)
	}
	if rep.AtRisk, err = pgx.CollectRows(rows, pgx.RowToStructByPos[requestAtRisk]); err != nil {
		return fmt.Errorf("error reading requests: %w", err)
	}
	rows, err = a.pool.Query(ctx, `
		SELECT matter, count(DISTINCT subject_hmac), min(placed_at) FROM lethe.hold
		WHERE released_at IS NULL GROUP BY matter ORDER BY matter`)
	if err != nil {
		return fmt.Errorf("error reading holds: %w", err)
	}
	if rep.Holds, err = pgx.CollectRows(rows, pgx.RowToStructByPos[matterHolds]); err != nil {
		return fmt.Errorf("error reading holds: %w", err)
	}
	rows, err = a.pool.Query(ctx, `
		SELECT subject_hmac, held, requested_at, last_error FROM lethe.hold_sync
		WHERE synced < generation ORDER BY requested_at LIMIT 50`)
	if err != nil {
		return fmt.Errorf("error reading hold syncs: %w", err)
	}
	if rep.PendingSyncs, err = pgx.CollectRows(rows, pgx.RowToStructByPos[pendingSync]); err != nil {
		return fmt.Errorf("error reading hold syncs: %w", err)
	}
	rows, err = a.pool.Query(ctx, `
		SELECT kind, state::text, count(*),
		       (array_agg(errors[array_length(errors, 1)] ->> 'error' ORDER BY id DESC))[1]
		FROM lethe.river_job
		WHERE kind LIKE 'lethe.%' AND (state = 'discarded' AND finalized_at > now() - interval '7 days' OR state = 'retryable')
		GROUP BY kind, state ORDER BY kind, state`)
	if err != nil {
		return fmt.Errorf("error reading failed jobs: %w", err)
	}
	if rep.FailedJobs, err = pgx.CollectRows(rows, pgx.RowToStructByPos[failedJobs]); err != nil {
		return fmt.Errorf("error reading failed jobs: %w", err)
	}
	return nil
}

func printRequestsStatus(w io.Writer, rep *statusReport) {
	fmt.Fprintln(w, "\nDELETION REQUESTS")
	if len(rep.Requests) == 0 {
		fmt.Fprintln(w, "  none yet")
	}
	for _, r := range rep.Requests {
		fmt.Fprintf(w, "  %-16s %d\n", r.State, r.Count)
	}
	if len(rep.AtRisk) > 0 {
		fmt.Fprintln(w, "\nREQUESTS WITHIN 10 DAYS OF THEIR DEADLINE")
		for _, r := range rep.AtRisk {
			fmt.Fprintf(w, "  request %d (ticket %s) %s: deadline %s, %.1f days left\n", r.ID, r.Ticket, r.State, r.Deadline.Format(time.DateOnly), r.DaysLeft)
		}
	}
	fmt.Fprintln(w, "\nACTIVE HOLDS")
	if len(rep.Holds) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, h := range rep.Holds {
		fmt.Fprintf(w, "  matter %s: %d subjects, since %s\n", h.Matter, h.Subjects, h.Since.Format(time.DateTime))
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

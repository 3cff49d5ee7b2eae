package main

import (
	"context"
	"fmt"
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

type statusReport struct {
	Due       []retention.DueCount `json:"due"`
	Archived  []archivedPolicy     `json:"archived"`
	Unsettled int64                `json:"unsettled_subjects"`
	Failing   []failedBatch        `json:"failing_batches"`
	Runs      []runRow             `json:"runs"`
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
	if asJSON {
		return writeJSON(env.stdout, rep)
	}

	w := env.stdout
	fmt.Fprintln(w, "DUE NOW")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  policy\tthen\tretain\tdue\tprotected")
	for _, d := range rep.Due {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\n", d.Policy, d.Then, d.Retain, d.Due, d.Protected)
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
	}
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
	return nil
}

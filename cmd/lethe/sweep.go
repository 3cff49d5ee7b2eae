package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/jobs"
	"github.com/lethehq/lethe/retention"
)

func runSweep(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var dryRun, wait, asJSON bool
	var limit int
	fs := newFlagSet(env, "sweep", "[--dry-run | --wait] [--limit N] [--json] [--config FILE]")
	c.register(fs, "warn")
	fs.BoolVar(&dryRun, "dry-run", false, "count, per policy, the subjects due now; change nothing")
	fs.BoolVar(&wait, "wait", false, "work the sweep and all its batches in this process, then print a summary")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	fs.IntVar(&limit, "limit", 0, "claim at most N due subjects (a bounded first run); 0: all")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if dryRun && wait {
		return usagef("sweep: --dry-run and --wait exclude each other")
	}
	if limit < 0 {
		return usagef("sweep: --limit %d: give 0 (no limit) or more", limit)
	}
	if dryRun && limit != 0 {
		return usagef("sweep: --limit does nothing with --dry-run, which changes nothing")
	}
	a, err := c.open(ctx, env, true)
	if err != nil {
		return err
	}
	defer a.Close()
	switch {
	case dryRun:
		return sweepDryRun(ctx, env, a, asJSON)
	case wait:
		return sweepWait(ctx, env, a, asJSON, limit)
	default:
		return sweepEnqueue(ctx, env, a, asJSON, limit)
	}
}

func sweepDryRun(ctx context.Context, env *cliEnv, a *app.App, asJSON bool) error {
	counts, err := retention.CountDue(ctx, a.Pool, a.Plan, time.Now())
	if err != nil {
		return err
	}
	advice, err := a.Plan.IndexAdvice(ctx, a.Pool)
	if err != nil {
		return err
	}
	if asJSON {
		if advice == nil {
			advice = []retention.Advice{}
		}
		return writeJSON(env.stdout, map[string]any{"dry_run": true, "policies": counts, "index_advice": advice})
	}
	kinds := len(a.Plan.Kinds) > 1
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	head := "policy\tthen\tretain\tdue\trows\theld\tprotected\t"
	if kinds {
		head = "policy\tkind\tthen\tretain\tdue\trows\theld\tprotected\t"
	}
	fmt.Fprintln(tw, head)
	var total, totalRows int64
	for _, c := range counts {
		rows := "-"
		if c.Then == config.ThenMinimize {
			rows = strconv.FormatInt(c.Rows, 10)
			totalRows += c.Rows
		}
		kind := ""
		if kinds {
			kind = c.Kind + "\t"
		}
		fmt.Fprintf(tw, "%s\t%s%s\t%s\t%d\t%s\t%d\t%d\t\n", c.Policy, kind, c.Then, c.Retain, c.Due, rows, c.Held, c.Protected)
		total += c.Due
	}
	blank := "\t\t"
	if kinds {
		blank = "\t\t\t"
	}
	fmt.Fprintf(tw, "total%s%d\t%d\t\t\t\n", blank, total, totalRows)
	tw.Flush()
	fmt.Fprintln(env.stdout, "rows: for then: minimize, the rows whose values would be minimised")
	fmt.Fprintln(env.stdout, "dry run: nothing was changed")
	for _, c := range counts {
		if c.Held > 0 {
			switch c.Then {
			case config.ThenDelete:
				fmt.Fprintf(env.stdout, "note: %s of policy %s under a legal hold will not be deleted\n", plural(int(c.Held), "due subject"), c.Policy)
			case config.ThenMinimize:
				fmt.Fprintf(env.stdout, "note: %s of policy %s under a legal hold will not be minimised\n", plural(int(c.Held), "due subject"), c.Policy)
			default:
				fmt.Fprintf(env.stdout, "note: %s of policy %s under a legal hold will be archived with an object lock\n", plural(int(c.Held), "due subject"), c.Policy)
			}
		}
		if c.Then == config.ThenMinimize && c.Due > 0 && dueBefore(counts, c) {
			fmt.Fprintf(env.stdout, "note: policy %s counts every due subject of kind %s; a sweep claims for the archive and delete policies first, and what they take is archived or deleted whole, not minimised\n", c.Policy, c.Kind)
		}
		if c.Protected > 0 {
			fmt.Fprintf(env.stdout, "note: %s of policy %s match the kind's protect predicate; check that the policy is not too broad\n", plural(int(c.Protected), "due subject"), c.Policy)
		}
	}
	for _, ad := range advice {
		fmt.Fprintf(env.stdout, "warning: %s: %s; create the index: %s;\n", ad.Key, ad.Problem, ad.Create)
	}
	return nil
}

// ledgerReady refuses a sweep while the database does not match the audit
// anchors in the bucket (it was restored from a backup): the workers would
// hold it anyway. unchecked says what to do when the bucket cannot be read:
// fail (sweep --wait needs the bucket anyway), or go on (a queued sweep
// waits for the workers, which check again).
func ledgerReady(ctx context.Context, env *cliEnv, a *app.App, store *archive.Archiver, unchecked bool) error {
	st, err := audit.CheckLedger(ctx, a.Pool, store)
	if err != nil && unchecked {
		fmt.Fprintf(env.stderr, "lethe: warning: cannot compare the database with the audit anchors (%s); the workers check before they sweep\n",
			oneLine(app.RootCause(err)))
		return nil
	}
	if err != nil {
		return fmt.Errorf("sweep: error comparing the database with the audit anchors: %w", err)
	}
	if !st.OK {
		return fmt.Errorf("sweep: %w: %s", audit.ErrLedger, st.Reason)
	}
	return nil
}

func sweepEnqueue(ctx context.Context, env *cliEnv, a *app.App, asJSON bool, limit int) error {
	store, err := a.Store(ctx, false)
	if err != nil {
		return err
	}
	if err := ledgerReady(ctx, env, a, store, true); err != nil {
		return err
	}
	res, err := a.Queue.Client.Insert(ctx, jobs.SweepArgs{Trigger: retention.TriggerCLI, Slot: time.Now().UTC(), Limit: limit}, nil)
	if err != nil {
		return fmt.Errorf("error queueing the sweep: %w", err)
	}
	if asJSON {
		return writeJSON(env.stdout, map[string]any{"job_id": res.Job.ID, "queued": true})
	}
	fmt.Fprintf(env.stdout, "sweep queued as job %d; a running lethe worker will work it (or use lethe sweep --wait)\n", res.Job.ID)
	return nil
}

func sweepWait(ctx context.Context, env *cliEnv, a *app.App, asJSON bool, limit int) error {
	svc, client, err := a.Working(ctx, nil, false)
	if err != nil {
		return err
	}
	if err := installFault(env.getenv, svc); err != nil {
		return err
	}
	if err := ledgerReady(ctx, env, a, svc.Store, false); err != nil {
		return err
	}
	sweeper := svc.Sweeper
	if err := client.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("error starting the queue client: %w", err)
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		return stopClient(client, a.Logger)
	}
	defer stop() //nolint:errcheck // the error path reports its own error

	start := time.Now()
	runID, err := sweeper.StartRun(ctx, retention.TriggerCLI, 0)
	if err != nil {
		return err
	}
	prog := newProgress(env.stderr)
	prog.linef("run %d: selecting due subjects", runID)
	sres, err := sweeper.SweepAtMost(ctx, runID, a.Queue, limit)
	if err != nil {
		return err
	}
	claimed := 0
	for _, n := range sres.Claimed {
		claimed += n
	}
	prog.linef("run %d: claimed %s in %s (%s requeued); working", runID, plural(claimed, "subject"), plural(sres.Batches, "batch"), plural(sres.Recovered, "earlier batch"))

	totals, err := waitRun(ctx, a, runID, start, prog)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	anchor := anchorRun(ctx, a, svc, runID, prog)
	if err := stop(); err != nil {
		return err
	}
	if asJSON {
		if err := writeJSON(env.stdout, map[string]any{"run": totals, "seconds": elapsed.Seconds(),
			"subjects_per_sec": perSec(totals.Archived+totals.Destroyed, elapsed), "anchor": anchor}); err != nil {
			return err
		}
	} else {
		printRunSummary(env.stdout, totals, elapsed)
		if anchor != nil {
			fmt.Fprintf(env.stdout, "audit chain anchored at seq %d in the bucket\n", anchor.Seq)
		}
	}
	if totals.State == retention.RunFailed {
		return failedRunError(ctx, a, totals)
	}
	if totals.Blocked > 0 {
		return blockedError(ctx, a, totals.Blocked)
	}
	return nil
}

// blockedError names what kept subjects of the run in place.
func blockedError(ctx context.Context, a *app.App, n int) error {
	groups, err := retention.BlockedSubjects(ctx, a.Pool)
	if err != nil || len(groups) == 0 {
		return fmt.Errorf("%s left in place by foreign keys; see lethe status", plural(n, "subject"))
	}
	return fmt.Errorf("%s left in place: %s (lethe status lists them all)", plural(n, "subject"), groups[0].BlockedMessage())
}

// dueBefore reports whether an archive or delete policy of c's kind has
// subjects due: a sweep claims them before c's.
func dueBefore(counts []retention.DueCount, c retention.DueCount) bool {
	for _, o := range counts {
		if o.Kind == c.Kind && o.Then != config.ThenMinimize && o.Due > 0 {
			return true
		}
	}
	return false
}

// anchorRun anchors the audit chain at the end of the run. A failure does
// not fail the sweep: it is reported, and a worker retries it.
func anchorRun(ctx context.Context, a *app.App, svc *jobs.Services, runID int64, prog *progress) *audit.Anchor {
	anchor, err := svc.Anchorer.Anchor(ctx)
	if err == nil && anchor == nil {
		// The run's own anchor job may have been quicker: report it.
		if st, serr := audit.Status(ctx, a.Pool); serr == nil && st.Last != nil {
			return &audit.Anchor{Seq: st.Last.Seq, At: st.Last.At}
		}
	}
	if err == nil {
		return anchor
	}
	prog.linef("warning: the audit chain could not be anchored in the bucket (%s); a running lethe worker retries it", oneLine(err.Error()))
	if _, qerr := a.Queue.Client.Insert(ctx, jobs.AnchorArgs{RunID: runID}, nil); qerr != nil {
		prog.linef("warning: could not queue the anchor either: %s", oneLine(qerr.Error()))
	}
	return nil
}

// waitRun polls the run until it is done or failed, printing progress and
// each new batch error.
func waitRun(ctx context.Context, a *app.App, runID int64, start time.Time, prog *progress) (*retention.RunTotals, error) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	reported := map[int64]int{}
	lastPrint := time.Time{}
	var downSince time.Time
	for {
		t, err := retention.Totals(ctx, a.Pool, runID)
		if err != nil && ctx.Err() == nil {
			// The database may be restarting: the queue client reconnects
			// by itself, so keep waiting, for a while.
			if downSince.IsZero() {
				downSince = time.Now()
				prog.linef("run %d: cannot read progress (%s); waiting for the database", runID, app.PGReason(err))
			} else if time.Since(downSince) > 5*time.Minute {
				return nil, fmt.Errorf("the database has been unreachable for 5 minutes: %w", err)
			}
		} else if err == nil && !downSince.IsZero() {
			prog.linef("run %d: the database is back", runID)
			downSince = time.Time{}
		}
		if err == nil {
			if t.State == retention.RunDone || t.State == retention.RunFailed {
				// The last attempts may have failed since the last look.
				_ = reportBatchErrors(ctx, a, runID, reported, prog)
				prog.done()
				return t, nil
			}
			// Errors are reported as they come; a failed read of them is
			// not itself worth stopping for, a batch stuck on one error is.
			var stuck *stuckError
			if err := reportBatchErrors(ctx, a, runID, reported, prog); errors.As(err, &stuck) {
				prog.done()
				return nil, err
			}
			if prog.tty || time.Since(lastPrint) >= 5*time.Second {
				settled := t.Archived + t.Destroyed + t.Skipped
				settled += t.Minimized
				prog.statusf("run %d: %d/%d subjects settled (%d archived, %d destroyed, %d minimised), %s, %.0f/s, %d/%d batches open",
					runID, settled, t.Subjects, t.Archived, t.Destroyed, t.Minimized, humanBytes(t.Bytes),
					perSec(t.Archived+t.Destroyed, time.Since(start)), t.Queued, t.Batches)
				lastPrint = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			prog.done()
			return nil, errors.New("interrupted: claimed subjects stay claimed and are safe; run lethe sweep --wait again (or start lethe worker) to finish them")
		case <-tick.C:
		}
	}
}

// stuckError is a batch that keeps failing the same way.
type stuckError struct{ msg string }

func (e *stuckError) Error() string { return e.msg }

// stuckAfter is how many attempts in a row a batch may fail the same way
// (not an outage) before sweep --wait stops waiting for it.
const stuckAfter = 3

// reportBatchErrors prints each failed attempt of the run's batches once,
// numbered as River ran it. It returns an error naming a batch
// that failed stuckAfter attempts in a row the same way: waiting longer
// would not help.
func reportBatchErrors(ctx context.Context, a *app.App, runID int64, reported map[int64]int, prog *progress) error {
	rows, err := a.Pool.Query(ctx, `SELECT id, policy, state, failed_attempt, same_failures, last_error FROM lethe.batch
		WHERE run_id = $1 AND last_error IS NOT NULL AND failed_attempt IS NOT NULL ORDER BY id`, runID)
	if err != nil {
		return err
	}
	defer rows.Close()
	maxAttempts := a.Config.Worker.MaxAttempts
	var stuck error
	for rows.Next() {
		var id int64
		var policy, state, msg string
		var attempt, same int
		if err := rows.Scan(&id, &policy, &state, &attempt, &same, &msg); err != nil {
			return err
		}
		if reported[id] == attempt {
			continue
		}
		reported[id] = attempt
		switch {
		case state == retention.BatchFailed && attempt < maxAttempts:
			prog.linef("batch %d (policy %s): attempt %d of %d failed, and retrying cannot help: %s", id, policy, attempt, maxAttempts, oneLine(msg))
		case state == retention.BatchFailed:
			prog.linef("batch %d (policy %s): attempt %d of %d failed, the last: %s", id, policy, attempt, maxAttempts, oneLine(msg))
		default:
			prog.linef("batch %d (policy %s): attempt %d of %d failed; it is retried with backoff: %s", id, policy, attempt, maxAttempts, oneLine(msg))
		}
		if state == retention.BatchQueued && same >= stuckAfter && stuck == nil {
			stuck = &stuckError{fmt.Sprintf("batch %d (policy %s) failed %d attempts in a row the same way, so this run waits no longer: %s; "+
				"fix the cause and run lethe sweep --wait again (the batch keeps its subjects, and a running lethe worker goes on retrying it)",
				id, policy, same, oneLine(msg))}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return stuck
}

// failedRunError names the batches that made the run fail, with their
// errors.
func failedRunError(ctx context.Context, a *app.App, t *retention.RunTotals) error {
	var id int64
	var policy, msg string
	var attempt int
	err := a.Pool.QueryRow(ctx, `SELECT id, policy, coalesce(failed_attempt, attempts), coalesce(last_error, '') FROM lethe.batch
		WHERE run_id = $1 AND state = $2 ORDER BY id LIMIT 1`, t.RunID, retention.BatchFailed).Scan(&id, &policy, &attempt, &msg)
	if err != nil {
		return fmt.Errorf("run %d failed: %s did not succeed; see lethe status, fix the cause and run lethe sweep --wait again", t.RunID, plural(t.Failed, "batch"))
	}
	more := ""
	if t.Failed > 1 {
		more = fmt.Sprintf(" (and %d more; lethe status lists them)", t.Failed-1)
	}
	return fmt.Errorf("run %d failed: batch %d (policy %s) gave up after attempt %d: %s%s; fix the cause and run lethe sweep --wait again, which requeues it",
		t.RunID, id, policy, attempt, oneLine(msg), more)
}

func printRunSummary(w io.Writer, t *retention.RunTotals, elapsed time.Duration) {
	fmt.Fprintf(w, "sweep run %d %s in %s\n", t.RunID, t.State, elapsed.Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tsubjects\tarchived\tdestroyed\tminimised\tskipped\trows\tbytes\t")
	names := make([]string, 0, len(t.Policies))
	for n := range t.Policies {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := t.Policies[n]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", n, p.Subjects, p.Archived, p.Destroyed, p.Minimized, p.Skipped, p.Rows+p.MinimizedRows, humanBytes(p.Bytes))
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", t.Subjects, t.Archived, t.Destroyed, t.Minimized, t.Skipped, t.Rows+t.MinimizedRows, humanBytes(t.Bytes))
	tw.Flush()
	fmt.Fprintf(w, "%.0f subjects/s, %s/s\n", perSec(t.Archived+t.Destroyed+t.Minimized, elapsed), humanBytes(int64(float64(t.Bytes)/max(elapsed.Seconds(), 1e-9))))
	if t.Minimized > 0 {
		fmt.Fprintf(w, "%s minimised in %s\n", plural(t.Minimized, "subject"), plural(int(t.MinimizedRows), "row"))
	}
	if t.Subjects == 0 {
		fmt.Fprintln(w, "nothing was due")
	}
	if t.Blocked > 0 {
		fmt.Fprintf(w, "%s left in place: a foreign key from outside the graph still references their rows (lethe status names it)\n",
			plural(t.Blocked, "subject"))
	}
}

func perSec(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// progress writes status lines: on a terminal one line rewritten in place,
// otherwise plain lines.
type progress struct {
	w       io.Writer
	tty     bool
	pending bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

// statusf shows a transient status.
func (p *progress) statusf(format string, args ...any) {
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K"+format, args...)
		p.pending = true
		return
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

// linef prints a line that stays.
func (p *progress) linef(format string, args ...any) {
	p.done()
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *progress) done() {
	if p.pending {
		fmt.Fprint(p.w, "\n")
		p.pending = false
	}
}

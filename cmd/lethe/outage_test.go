package main_test

// Outages under a running `lethe worker`: the object store or the database
// goes away for a few seconds. The worker must stay up, retry with backoff
// and say what fails, delete nothing without its copy, and finish the work
// by itself once the service is back. (The crash tests in crash_test.go
// cover outages under `lethe sweep --wait` and a database restart in the
// middle of a worker's run.)

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"
)

// outageSubjects are seeded for an outage test: about 1,200 due.
const outageSubjects = 4000

// TestOutageS3UnderWorker kills the private versitygw under a running
// worker and queues a sweep. Every batch fails and is retried with growing
// backoff; lethe.batch and `lethe status` name the failing batches and the
// cause; nothing leaves the hot tables; the worker stays up. Once the server
// is back the worker finishes the run by itself, and every due subject is
// archived exactly once.
func TestOutageS3UnderWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.NewS3Server(t)
	e := newArchiveEnv(t, testenv.NewDB(t), testenv.NewBucketOn(t, srv), outageSubjects, withMaxAttempts(t, 30))
	w := startWorker(t, e.cfgPath)

	require.NoError(t, srv.Kill())
	down := time.Now()
	mark := len(w.output())
	r := lethe(t, "sweep", "--config", e.cfgPath)
	requireOK(t, r)

	// Batches fail, and are tried again. Every batch's first attempt comes
	// before any retry (River takes the oldest scheduled job first), and each
	// takes a few seconds of the SDK's own retries: allow a few minutes.
	deadline := time.Now().Add(3 * time.Minute)
	for e.count(t, `SELECT count(*) FROM lethe.river_job WHERE kind = 'lethe.archive_batch' AND array_length(errors, 1) >= 2`) == 0 {
		require.False(t, w.exited(), "the worker exited in the S3 outage\n%s", w.output())
		require.True(t, time.Now().Before(deadline), "no batch was retried within three minutes\n%s", w.output())
		time.Sleep(100 * time.Millisecond)
	}
	var lastError string
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT last_error FROM lethe.batch WHERE attempts >= 2 AND last_error IS NOT NULL ORDER BY attempts DESC, id LIMIT 1`).Scan(&lastError))
	require.Contains(t, lastError, "object store unreachable", "lethe.batch.last_error names the cause")

	// River retries with backoff: a failed attempt waits a second or more
	// before the next (2 s doubling, half of it jitter), up to 30 attempts.
	rows, err := e.db.Pool.Query(ctx, `SELECT attempt, max_attempts, state::text, attempted_at, scheduled_at, to_jsonb(errors)::text
		FROM lethe.river_job WHERE kind = 'lethe.archive_batch' AND errors IS NOT NULL`)
	require.NoError(t, err)
	defer rows.Close()
	retried := 0
	for rows.Next() {
		var attempt, maxAttempts int
		var state, errs string
		var attemptedAt, scheduledAt time.Time
		require.NoError(t, rows.Scan(&attempt, &maxAttempts, &state, &attemptedAt, &scheduledAt, &errs))
		require.Equal(t, 30, maxAttempts, "worker.max_attempts")
		var attempts []struct {
			At      time.Time `json:"at"`
			Attempt int       `json:"attempt"`
			Error   string    `json:"error"`
		}
		require.NoError(t, json.Unmarshal([]byte(errs), &attempts))
		require.NotEmpty(t, attempts)
		require.Contains(t, attempts[0].Error, "object store unreachable")
		// scheduled_at is when River retries the job after its last
		// failure: lethe's backoff (2 s doubling, up to half of it taken
		// off at random) after the attempt, which River records by the
		// time it started.
		last := attempts[len(attempts)-1]
		backoff := scheduledAt.Sub(last.At)
		minBackoff := time.Duration(1<<(last.Attempt-1)) * time.Second
		require.GreaterOrEqual(t, backoff, minBackoff-100*time.Millisecond,
			"attempt %d started at %s and the job is scheduled again at %s: no backoff (%s)", last.Attempt, last.At, scheduledAt, errs)
		require.Contains(t, []string{"retryable", "available", "running"}, state)
		if attempt > last.Attempt {
			require.False(t, attemptedAt.Before(scheduledAt.Add(-time.Second)), "the job was tried again before its backoff ended")
		}
		if len(attempts) >= 2 {
			retried++
		}
	}
	require.NoError(t, rows.Err())
	require.Positive(t, retried, "no job has failed twice yet")

	// Nothing left the hot tables, nothing is archived, everything claimed
	// stays claimed.
	require.Equal(t, e.before, e.dump(t), "rows were deleted while the object store was away")
	require.Zero(t, e.count(t, `SELECT count(*) FROM lethe.manifest`))
	require.Equal(t, len(e.due), e.count(t, `SELECT count(*) FROM lethe.work_item`), "every due subject stays claimed")

	// lethe status names the failing batches and why.
	r = lethe(t, "status", "--config", e.cfgPath)
	requireOK(t, r)
	i := strings.Index(r.stdout, "FAILING BATCHES")
	require.GreaterOrEqual(t, i, 0, "status does not list failing batches\n%s", r.stdout)
	failing := r.stdout[i:]
	failing = failing[:strings.Index(failing, "\n\n")]
	require.Regexp(t, `batch \d+ \(run \d+, (former-customers|prospects)\): queued after \d+ attempts?, \d+ subjects? left: .*object store unreachable`, failing)
	require.Contains(t, r.stdout, "UNSETTLED: ")
	t.Logf("$ lethe status (S3 away %s)\n%s", time.Since(down).Round(time.Second), failing)
	r = lethe(t, "status", "--json", "--config", e.cfgPath)
	requireOK(t, r)
	var st struct {
		Unsettled int `json:"unsettled_subjects"`
		Failing   []struct {
			ID        int64  `json:"id"`
			State     string `json:"state"`
			Attempts  int    `json:"attempts"`
			Remaining int    `json:"remaining"`
			LastError string `json:"last_error"`
		} `json:"failing_batches"`
		FailedJobs []struct {
			Kind  string `json:"kind"`
			State string `json:"state"`
			Count int    `json:"count"`
		} `json:"failed_jobs"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), "%s", r)
	require.Equal(t, len(e.due), st.Unsettled)
	require.NotEmpty(t, st.Failing)
	for _, b := range st.Failing {
		require.Equal(t, "queued", b.State, "a batch gave up during a short outage")
		require.Positive(t, b.Attempts)
		require.Positive(t, b.Remaining)
		require.Contains(t, b.LastError, "object store unreachable")
	}

	require.False(t, w.exited(), "the worker exited in the S3 outage\n%s", w.output())
	during := w.output()[mark:]
	require.Contains(t, during, "batch failed", "the worker does not log the failing batches")
	t.Logf("the worker's log in the S3 outage (first lines):\n%s\nmessages: %s", firstLines(during, "batch failed", 2), messageCounts(during))

	require.NoError(t, srv.Restart(ctx))
	t.Logf("S3 was away for %s", time.Since(down).Round(100*time.Millisecond))
	e.waitRunSettled(t, w, 2*time.Minute)
	w.stop(t, syscall.SIGTERM)
	e.requireAllArchivedOnce(t)
	r = lethe(t, "status", "--json", "--config", e.cfgPath)
	requireOK(t, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	require.Empty(t, st.Failing, "failing batches after the run finished")
}

// TestOutagePostgresUnderWorker stops the private PostgreSQL for a few
// seconds under a running worker. The worker must not exit; once the
// database is back, a sweep queued then is worked to the end.
func TestOutagePostgresUnderWorker(t *testing.T) {
	t.Parallel()
	pg := testenv.NewPostgres(t)
	e := newArchiveEnv(t, pg.NewDB(t), testenv.NewBucket(t), outageSubjects, withMaxAttempts(t, 30))
	w := startWorker(t, e.cfgPath)

	mark := len(w.output())
	require.NoError(t, pg.Stop())
	for range 5 {
		time.Sleep(time.Second)
		require.False(t, w.exited(), "the worker exited when the database went away: %v\n%s", w.err, w.output())
	}
	during := w.output()[mark:]
	require.NoError(t, pg.Start())
	e.db.Pool.Reset()
	t.Logf("the worker's log while PostgreSQL was stopped for 5s (%d lines; the first, and the first from River's producer):\n%s\n%s\nmessages: %s",
		strings.Count(during, "\n"), firstLines(during, "", 1), firstLines(during, "producer", 1), messageCounts(during))

	r := lethe(t, "sweep", "--config", e.cfgPath)
	requireOK(t, r)
	e.waitRunSettled(t, w, 2*time.Minute)
	require.False(t, w.exited())
	w.stop(t, syscall.SIGTERM)
	e.requireAllArchivedOnce(t)
}

// messageCounts sums a text log's lines by level and message.
func messageCounts(log string) string {
	re := regexp.MustCompile(`level=(\w+) msg="((?:[^"\\]|\\.)*)"`)
	counts := map[string]int{}
	var order []string
	for _, m := range re.FindAllStringSubmatch(log, -1) {
		k := m[1] + " " + m[2]
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	var out []string
	for _, k := range order {
		out = append(out, fmt.Sprintf("%dx %s", counts[k], k))
	}
	return strings.Join(out, "; ")
}

// firstLines returns the first n lines of s that contain want.
func firstLines(s, want string, n int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" && strings.Contains(l, want) && len(out) < n {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

package main_test

// Process-level crash tests: `lethe sweep --wait` and `lethe worker` are
// killed with SIGKILL at each step of moving a subject (LETHE_FAULT_KILL_AT)
// and at random moments, and PostgreSQL and the S3 server are killed or
// restarted under them. After each blow the database and the bucket must
// satisfy the invariants 1 and 2 of docs/ARCHITECTURE.md: every due subject is either whole
// in the hot tables or archived (gone from every table, named by a live
// manifest entry whose segment version is in the bucket), and nothing in
// the bucket is readable unless the manifest names it with a stored key:
// every object is a segment lethe recorded, put once, and no manifest entry
// names a segment that never committed, whose parts the master identity
// cannot open. Then a run to completion must archive every due subject
// exactly once.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/demo"
	"github.com/lethehq/lethe/internal/testenv"
)

const (
	// crashSubjects synthetic subscribers are seeded; with crashSeed 3,658
	// of them are due (25% are former customers, two thirds of them gone
	// for over two years; 15% are prospects, seven in eight of them older
	// than 90 days).
	crashSubjects = 12000
	crashSeed     = 20261122
	// minDue is the fewest due subjects a crash test may run on.
	minDue = 3000
)

// demoTables are the demo graph's tables as the config writes them, parents
// first.
var demoTables = []string{"demo.subscribers", "demo.accounts", "demo.lines", "demo.addresses", "demo.identity_documents", "demo.credit_checks"}

// demoDumpQuery gives every row of the demo graph as to_jsonb text, with the
// subscriber it belongs to. A line's subscriber is derived from its
// account's id (the demo makes child ids as parent*10+n), so a line whose
// account was deleted still counts for its subscriber: a torn subject shows.
const demoDumpQuery = `
	SELECT id, 'demo.subscribers', to_jsonb(x)::text FROM demo.subscribers x
	UNION ALL SELECT subscriber_id, 'demo.accounts', to_jsonb(x)::text FROM demo.accounts x
	UNION ALL SELECT account_id / 10, 'demo.lines', to_jsonb(x)::text FROM demo.lines x
	UNION ALL SELECT subscriber_id, 'demo.addresses', to_jsonb(x)::text FROM demo.addresses x
	UNION ALL SELECT subscriber_id, 'demo.identity_documents', to_jsonb(x)::text FROM demo.identity_documents x
	UNION ALL SELECT subscriber_id, 'demo.credit_checks', to_jsonb(x)::text FROM demo.credit_checks x
	ORDER BY 1, 2, 3`

// dueQuery selects the subscribers the demo policies make due now.
const dueQuery = `
	SELECT id FROM demo.subscribers
	WHERE (status = 'former' AND closed_at < now() - interval '730 days')
	   OR (status = 'prospect' AND created_at < now() - interval '90 days')
	ORDER BY id`

// archiveEnv is a database seeded with the demo's customers, a bucket, a
// config for both, and what the hot tables held before anything ran.
type archiveEnv struct {
	db        *testenv.DB
	bucket    *testenv.Bucket
	keySecret string
	cfgPath   string
	idPath    string
	// due are the subjects due when the test began, isDue the same as a set.
	due   []int64
	isDue map[int64]bool
	// before is every subject's rows before any run.
	before map[int64]string
}

// newArchiveEnv seeds subjects demo customers into db and writes a config
// for db and bucket; edit, if set, changes the config's YAML.
func newArchiveEnv(t *testing.T, db *testenv.DB, bucket *testenv.Bucket, subjects int, edit func(string) string) *archiveEnv {
	t.Helper()
	ctx := context.Background()
	e := &archiveEnv{db: db, bucket: bucket}
	var now time.Time
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT now()`).Scan(&now))
	_, err := demo.Seed(ctx, db.Pool, demo.Options{Schema: "demo", Subjects: subjects, Seed: crashSeed, Now: now})
	require.NoError(t, err)
	// Keep every clock a day or more from its policy's cutoff, so that no
	// subject becomes due while the test runs.
	_, err = db.Pool.Exec(ctx, `
		UPDATE demo.subscribers SET closed_at = closed_at - interval '3 days'
		WHERE status = 'former' AND closed_at BETWEEN now() - interval '731 days' AND now() - interval '729 days';
		UPDATE demo.subscribers SET created_at = created_at - interval '3 days'
		WHERE status = 'prospect' AND created_at BETWEEN now() - interval '91 days' AND now() - interval '89 days'`)
	require.NoError(t, err)

	id := testenv.NewIdentity(t)
	dir := t.TempDir()
	e.idPath = filepath.Join(dir, "identity.txt")
	require.NoError(t, os.WriteFile(e.idPath, []byte(id.String()+"\n"), 0o600))
	yaml := testenv.ConfigYAML(db, bucket, id.Recipient().String(), "schedule: \"0 3 1 1 *\"\n"+demo.Config("demo"))
	if edit != nil {
		yaml = edit(yaml)
	}
	m := regexp.MustCompile(`(?m)^  key_secret: (\S+)$`).FindStringSubmatch(yaml)
	require.NotNil(t, m, "key_secret in\n%s", yaml)
	e.keySecret = m[1]
	e.cfgPath = filepath.Join(dir, "lethe.yaml")
	require.NoError(t, os.WriteFile(e.cfgPath, []byte(yaml), 0o600))

	rows, err := db.Pool.Query(ctx, dueQuery)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var id int64
		require.NoError(t, rows.Scan(&id))
		e.due = append(e.due, id)
	}
	require.NoError(t, rows.Err())
	e.isDue = make(map[int64]bool, len(e.due))
	for _, id := range e.due {
		e.isDue[id] = true
	}
	e.before = e.dump(t)
	require.Len(t, e.before, subjects)

	// lethe agrees on what is due.
	r := lethe(t, "sweep", "--dry-run", "--json", "--config", e.cfgPath)
	requireOK(t, r)
	var dry struct {
		Policies []struct{ Due int } `json:"policies"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &dry), "%s", r)
	total := 0
	for _, p := range dry.Policies {
		total += p.Due
	}
	require.Equal(t, len(e.due), total, "lethe and the test disagree on what is due\n%s", r)
	return e
}

// dump returns every subject's rows: per subscriber id, its rows of every
// table as to_jsonb text, in a canonical order.
func (e *archiveEnv) dump(t *testing.T) map[int64]string {
	t.Helper()
	rows, err := e.db.Pool.Query(context.Background(), demoDumpQuery)
	require.NoError(t, err)
	defer rows.Close()
	out := map[int64]string{}
	var b strings.Builder
	last := int64(-1)
	for rows.Next() {
		var id int64
		var table, row string
		require.NoError(t, rows.Scan(&id, &table, &row))
		if id != last && last >= 0 {
			out[last] = b.String()
			b.Reset()
		}
		last = id
		b.WriteString(table)
		b.WriteByte('\t')
		b.WriteString(row)
		b.WriteByte('\n')
	}
	require.NoError(t, rows.Err())
	if last >= 0 {
		out[last] = b.String()
	}
	return out
}

// hmacOf is the subject's HMAC as docs/ARCHITECTURE.md defines it.
func (e *archiveEnv) hmacOf(id int64) string {
	m := hmac.New(sha256.New, []byte(e.keySecret))
	fmt.Fprintf(m, "demo.subscribers/%d", id)
	return hex.EncodeToString(m.Sum(nil))
}

// manifestEntry is a subject's newest manifest entry.
type manifestEntry struct {
	segment, versionID, state string
	hasKey                    bool
}

func (e *archiveEnv) manifest(t *testing.T) map[string]manifestEntry {
	t.Helper()
	rows, err := e.db.Pool.Query(context.Background(), `SELECT DISTINCT ON (m.subject_hmac) m.subject_hmac, s.name, s.version_id,
		m.state, m.wrapped_key IS NOT NULL
		FROM lethe.manifest m JOIN lethe.segment s ON s.id = m.segment_id ORDER BY m.subject_hmac, m.id DESC`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]manifestEntry{}
	for rows.Next() {
		var h string
		var m manifestEntry
		require.NoError(t, rows.Scan(&h, &m.segment, &m.versionID, &m.state, &m.hasKey))
		out[h] = m
	}
	require.NoError(t, rows.Err())
	return out
}

// segments is lethe's record of its segments: name -> state and version.
func (e *archiveEnv) segments(t *testing.T) map[string]manifestEntry {
	t.Helper()
	rows, err := e.db.Pool.Query(context.Background(), `SELECT name, state, coalesce(version_id, '') FROM lethe.segment`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]manifestEntry{}
	for rows.Next() {
		var m manifestEntry
		require.NoError(t, rows.Scan(&m.segment, &m.state, &m.versionID))
		out[m.segment] = m
	}
	require.NoError(t, rows.Err())
	return out
}

func (e *archiveEnv) workItems(t *testing.T) map[string]bool {
	t.Helper()
	rows, err := e.db.Pool.Query(context.Background(), `SELECT subject_hmac FROM lethe.work_item`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var h string
		require.NoError(t, rows.Scan(&h))
		out[h] = true
	}
	require.NoError(t, rows.Err())
	return out
}

func (e *archiveEnv) count(t *testing.T, query string) int {
	t.Helper()
	var n int
	require.NoError(t, e.db.Pool.QueryRow(context.Background(), query).Scan(&n))
	return n
}

// crashState sums up a check, for the test log.
type crashState struct {
	archived, whole, unsettled, segments, uncommitted int
}

func (s crashState) String() string {
	return fmt.Sprintf("%d archived, %d due still whole, %d unsettled work items, %d segments in the bucket (%d never committed)",
		s.archived, s.whole, s.unsettled, s.segments, s.uncommitted)
}

// requireWholeOrArchived checks invariants 1 and 2 with no lethe process
// running: each due subject is whole in the hot tables (every row as it
// was) or archived (no row left in any table, a live manifest entry, and
// the segment version it names in the bucket); every other subject is as it
// was; and nothing in the bucket is readable unless the manifest names it
// with a stored key.
func (e *archiveEnv) requireWholeOrArchived(t *testing.T, when string) crashState {
	t.Helper()
	now := e.dump(t)
	manifest := e.manifest(t)
	items := e.workItems(t)
	versions := listAllVersions(t, e.bucket)
	exists := map[string]string{}
	for _, v := range versions {
		if !v.deleteMarker {
			exists[v.key] = v.versionID
		}
	}
	st := crashState{unsettled: len(items)}
	for id, was := range e.before {
		h := e.hmacOf(id)
		m, inManifest := manifest[h]
		cur, hot := now[id]
		switch {
		case hot:
			require.Equal(t, was, cur, "%s: subject %d is in the hot tables but not as it was (torn or changed)", when, id)
			require.False(t, inManifest, "%s: subject %d is whole in the hot tables and named by the manifest", when, id)
			if e.isDue[id] {
				st.whole++
			}
		case !e.isDue[id]:
			require.Fail(t, "a subject that is not due left the hot tables", "%s: subject %d", when, id)
		default:
			require.True(t, inManifest, "%s: subject %d left the hot tables but the manifest has no copy of it", when, id)
			require.Equal(t, "archived", m.state, "%s: subject %d", when, id)
			require.True(t, m.hasKey, "%s: subject %d left the hot tables but its key is not stored", when, id)
			require.Equal(t, m.versionID, exists[m.segment], "%s: subject %d left the hot tables but the segment version the manifest names (%s %s) is not in the bucket", when, id, m.segment, m.versionID)
			st.archived++
		}
	}
	for id := range now {
		_, ok := e.before[id]
		require.True(t, ok, "%s: rows of an unknown subject %d appeared", when, id)
	}
	require.Len(t, manifest, st.archived, "%s: the manifest names subjects that are still hot, or unknown ones", when)
	e.requireNothingUnnamedReadable(t, when, versions, manifest, &st)
	return st
}

// requireNothingUnnamedReadable checks that every object in the bucket is a
// segment lethe recorded, put once; that a segment the manifest names
// committed; and that one which never committed is named by no entry and
// that the master identity opens none of its parts.
func (e *archiveEnv) requireNothingUnnamedReadable(t *testing.T, when string, versions []objectVersion, manifest map[string]manifestEntry, st *crashState) {
	t.Helper()
	segs := e.segments(t)
	named := map[string]bool{}
	for _, m := range manifest {
		named[m.segment] = true
	}
	seen := map[string]bool{}
	for _, v := range versions {
		if strings.HasPrefix(v.key, "v1/probe/") {
			continue // the worker's start-up probe of Object Lock: empty
		}
		require.False(t, v.deleteMarker, "%s: a delete marker on %s: lethe never deletes", when, v.key)
		require.False(t, seen[v.key], "%s: %s was put twice: %v", when, v.key, versionsOfKey(versions, v.key))
		seen[v.key] = true
		seg, ok := segs[v.key]
		require.True(t, ok, "%s: object %s is not a segment lethe recorded", when, v.key)
		st.segments++
		if seg.state == "committed" {
			require.Equal(t, seg.versionID, v.versionID, "%s: segment %s", when, v.key)
			continue
		}
		st.uncommitted++
		require.False(t, named[v.key], "%s: the manifest names segment %s, which never committed", when, v.key)
		e.requireMasterCannotOpen(t, v.key)
	}
	for name := range named {
		require.Equal(t, "committed", segs[name].state, "%s: the manifest names segment %s, which is %s", when, name, segs[name].state)
	}
}

// requireMasterCannotOpen reads segment name as the bucket's owner and
// checks that the master identity cannot decrypt its first part: each part
// is encrypted to its subject's own key alone.
func (e *archiveEnv) requireMasterCannotOpen(t *testing.T, name string) {
	t.Helper()
	client := e.bucket.Server.Client(e.bucket.Server.Root)
	out, err := client.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(e.bucket.Name), Key: aws.String(name)})
	require.NoError(t, err)
	defer out.Body.Close()
	raw, err := os.ReadFile(e.idPath)
	require.NoError(t, err)
	ids, err := age.ParseIdentities(strings.NewReader(string(raw)))
	require.NoError(t, err)
	_, err = age.Decrypt(out.Body, ids...)
	var noMatch *age.NoIdentityMatchError
	require.ErrorAs(t, err, &noMatch, "the master identity opens a part of uncommitted segment %s", name)
}

// requireAllArchivedOnce checks the end of a crash test: every due subject
// archived exactly once (gone from the hot tables, one manifest row, one
// object version, the manifest's, and one archive entry in the audit log),
// every other subject untouched, no work item, no batch open, no orphan
// object, and an intact audit log.
func (e *archiveEnv) requireAllArchivedOnce(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	st := e.requireWholeOrArchived(t, "after the run to completion")
	require.Equal(t, len(e.due), st.archived, "every due subject is archived (%s)", st)
	require.Zero(t, st.unsettled, "work items left")
	require.Zero(t, e.count(t, `SELECT count(*) FROM lethe.batch WHERE state <> 'done'`), "batches not done\n%s\n%s",
		strings.Join(e.rowsOf(t, `SELECT to_jsonb(b)::text FROM lethe.batch b WHERE state <> 'done'`), "\n"),
		strings.Join(e.rowsOf(t, `SELECT to_jsonb(j)::text FROM lethe.river_job j WHERE state <> 'completed'`), "\n"))

	require.Equal(t, len(e.due), e.count(t, `SELECT count(*) FROM lethe.manifest`), "one manifest entry per archived subject, no more")
	require.Zero(t, e.count(t, `SELECT count(*) FROM lethe.segment WHERE state = 'pending'`), "segments left pending")

	rows, err := e.db.Pool.Query(ctx, `SELECT subject_hmac, count(*) FROM lethe.audit_log WHERE kind = 'archive' GROUP BY subject_hmac`)
	require.NoError(t, err)
	defer rows.Close()
	entries := map[string]int{}
	for rows.Next() {
		var h string
		var n int
		require.NoError(t, rows.Scan(&h, &n))
		entries[h] = n
	}
	require.NoError(t, rows.Err())
	require.Len(t, entries, len(e.due), "archive entries in the audit log")
	for _, id := range e.due {
		require.Equal(t, 1, entries[e.hmacOf(id)], "archive entries of subject %d", id)
	}
	r := lethe(t, "audit", "verify", "--config", e.cfgPath)
	requireOK(t, r)
	require.Contains(t, r.stdout, "audit log intact", "%s", r)
}

// sweepToCompletion runs `lethe sweep --wait` and requires it to finish
// the work: exit 0, then every due subject archived once.
func (e *archiveEnv) sweepToCompletion(t *testing.T) {
	t.Helper()
	r := letheWith(t, 4*time.Minute, nil, "sweep", "--wait", "--config", e.cfgPath)
	requireOK(t, r)
	t.Logf("run to completion took %s: %s", r.took.Round(time.Millisecond), lastLines(r.stdout, 3))
	e.requireAllArchivedOnce(t)
}

// sweepKilledAt runs `lethe sweep --wait` with LETHE_FAULT_KILL_AT=spec and
// requires it to die there.
func (e *archiveEnv) sweepKilledAt(t *testing.T, spec string) {
	t.Helper()
	r := letheWith(t, 3*time.Minute, []string{"LETHE_FAULT_KILL_AT=" + spec}, "sweep", "--wait", "--config", e.cfgPath)
	point, _, _ := strings.Cut(spec, ":")
	require.Equal(t, -1, r.code, "lethe was not killed by the fault point\n%s", r)
	require.Contains(t, r.stderr, "killing this process at "+point, "%s", r)
}

// spawn starts lethe with args (and extra environment) in the background.
// It is killed when t ends if it still runs.
func spawn(t *testing.T, env []string, args ...string) *worker {
	t.Helper()
	w := &worker{done: make(chan struct{})}
	w.cmd = exec.Command(letheBin, args...)
	w.cmd.Env = cleanEnv(env...)
	w.cmd.Dir = t.TempDir()
	w.cmd.Stdout = lockedWriter{&w.mu, &w.stdout}
	w.cmd.Stderr = lockedWriter{&w.mu, &w.stderr}
	require.NoError(t, w.cmd.Start())
	go func() {
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		if !w.exited() {
			_ = w.cmd.Process.Kill()
			<-w.done
		}
	})
	return w
}

// startWorkerEnv is startWorker with extra environment.
func startWorkerEnv(t *testing.T, cfg string, env ...string) *worker {
	t.Helper()
	w := spawn(t, env, "worker", "--config", cfg, "--log-level", "debug")
	w.waitOutput(t, "worker started", 30*time.Second)
	return w
}

func (w *worker) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// waitOutput waits until the process has written want, failing if it
// exits first or d passes.
func (w *worker) waitOutput(t *testing.T, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(w.output(), want) {
		if w.exited() {
			require.FailNow(t, "lethe exited before it wrote "+want, "%v\n%s", w.err, w.output())
		}
		if time.Now().After(deadline) {
			require.FailNow(t, "lethe did not write "+want+" in time", "after %s\n%s", d, w.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (w *worker) kill(t *testing.T) {
	t.Helper()
	require.False(t, w.exited(), "lethe exited before it could be killed: %v\n%s", w.err, w.output())
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGKILL))
	<-w.done
}

// wait waits up to d for the process to exit and returns its exit code
// (-1 for a signal).
func (w *worker) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(d):
		_ = w.cmd.Process.Kill()
		<-w.done
		require.FailNow(t, "lethe did not exit in time", "after %s\n%s", d, w.output())
	}
	return w.cmd.ProcessState.ExitCode()
}

// sweepKilledWhen runs `lethe sweep --wait` and kills it with SIGKILL as
// soon as moment returns true (polled every 10 ms) and a random 0-100 ms
// more, so that the kill lands at any step. The run must not end first:
// work is left when the previous one was killed.
func (e *archiveEnv) sweepKilledWhen(t *testing.T, what string, moment func() bool) {
	t.Helper()
	p := spawn(t, nil, "sweep", "--wait", "--config", e.cfgPath)
	deadline := time.Now().Add(3 * time.Minute)
	for !moment() {
		require.False(t, p.exited(), "lethe sweep --wait finished before %s\n%s", what, p.output())
		require.True(t, time.Now().Before(deadline), "%s did not come in time\n%s", what, p.output())
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
	p.kill(t)
}

func (e *archiveEnv) manifestAtLeast(t *testing.T, n int) func() bool {
	return func() bool { return e.count(t, `SELECT count(*) FROM lethe.manifest`) >= n }
}

// rowsOf returns the first column of query's rows as text.
func (e *archiveEnv) rowsOf(t *testing.T, query string) []string {
	t.Helper()
	rows, err := e.db.Pool.Query(context.Background(), query)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// TestCrashSweepKilled kills `lethe sweep --wait` over 3,658 due subjects
// again and again: at each fault point (after_commit:5, before_put,
// after_put:3, during_delete:2, before_commit:4) in one database, and
// at random moments (during the claim, past 10%, past 50% and past 75% of
// the subjects archived) in another. After each kill every due subject is
// whole or archived and no object is an orphan; a last run archives every
// due subject exactly once.
func TestCrashSweepKilled(t *testing.T) {
	t.Parallel()
	t.Run("fault points", func(t *testing.T) {
		t.Parallel()
		e := newArchiveEnv(t, testenv.NewDB(t), testenv.NewBucket(t), crashSubjects, nil)
		require.GreaterOrEqual(t, len(e.due), minDue)
		t.Logf("%d of %d subjects are due", len(e.due), crashSubjects)
		// after_commit first: on a fresh database the fifth batch commits
		// its subjects for good there, leaving no work item behind.
		for _, spec := range []string{"after_commit:5", "before_put", "after_put:3", "during_delete:2", "before_commit:4"} {
			e.sweepKilledAt(t, spec)
			st := e.requireWholeOrArchived(t, "after a kill at "+spec)
			t.Logf("killed at %s: %s", spec, st)
		}
		e.sweepToCompletion(t)
	})
	t.Run("random moments", func(t *testing.T) {
		t.Parallel()
		e := newArchiveEnv(t, testenv.NewDB(t), testenv.NewBucket(t), crashSubjects, nil)
		require.GreaterOrEqual(t, len(e.due), minDue)
		kills := []struct {
			what   string
			moment func() bool
		}{
			{"the first batch is claimed", func() bool { return e.count(t, `SELECT count(*) FROM lethe.batch`) > 0 }},
			{"10% are archived", e.manifestAtLeast(t, len(e.due)/10)},
			{"50% are archived", e.manifestAtLeast(t, len(e.due)/2)},
			{"75% are archived", e.manifestAtLeast(t, len(e.due)*3/4)},
		}
		for _, k := range kills {
			e.sweepKilledWhen(t, k.what, k.moment)
			st := e.requireWholeOrArchived(t, "after a kill once "+k.what)
			t.Logf("killed once %s: %s", k.what, st)
		}
		e.sweepToCompletion(t)
	})
}

// listAllVersions is listVersions without the duplicates versitygw v1.8.0
// adds across pages: it repeats the version at the key and version-id
// markers as the first entry of the next page, so that 2,500 versions list
// as 2,502. Two identical entries (same key and version id) are one
// version; two versions of one key are still two.
func listAllVersions(t *testing.T, b *testenv.Bucket) []objectVersion {
	t.Helper()
	var out []objectVersion
	seen := map[objectVersion]bool{}
	for _, v := range listVersions(t, b) {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// withMaxAttempts sets worker.max_attempts in a config made by
// testenv.ConfigYAML.
func withMaxAttempts(t *testing.T, n int) func(string) string {
	return func(yaml string) string {
		const worker = "worker:\n  concurrency: 2\n"
		require.Contains(t, yaml, worker)
		return strings.Replace(yaml, worker, fmt.Sprintf("%s  max_attempts: %d\n", worker, n), 1)
	}
}

// waitRunSettled polls until no work item is left and every run is done,
// or fails after d. The worker w, if given, must stay alive meanwhile.
func (e *archiveEnv) waitRunSettled(t *testing.T, w *worker, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var runs, open, items int
		err := e.db.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM lethe.run),
			(SELECT count(*) FROM lethe.run WHERE state <> 'done'), (SELECT count(*) FROM lethe.work_item)`).Scan(&runs, &open, &items)
		if err == nil && runs > 0 && open == 0 && items == 0 {
			return
		}
		if w != nil && w.exited() {
			require.FailNow(t, "lethe worker exited", "%v\n%s", w.err, w.output())
		}
		if time.Now().After(deadline) {
			require.FailNow(t, "the run did not finish in time", "after %s: %d runs, %d not done, %d work items (last error %v)\nruns: %s\nworker:\n%s", d, runs, open, items, err,
				strings.Join(e.rowsOf(t, `SELECT to_jsonb(r)::text FROM lethe.run r`), "\n"), outputOf(w))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func outputOf(w *worker) string {
	if w == nil {
		return "(none)"
	}
	return w.output()
}

func versionsOfKey(vs []objectVersion, key string) []objectVersion {
	var out []objectVersion
	for _, v := range vs {
		if v.key == key {
			out = append(out, v)
		}
	}
	return out
}

// TestCrashOutages kills the object store and restarts the database in the
// middle of a run over about 3,500 due subjects: versitygw under `lethe
// sweep --wait`, PostgreSQL under `lethe sweep --wait`, and PostgreSQL
// under a `lethe worker` working a queued sweep. lethe must neither hang
// nor delete anything without its copy; after the outage every due subject
// is whole or archived, and a run to completion archives each exactly once.
func TestCrashOutages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("S3 killed under sweep --wait", func(t *testing.T) {
		t.Parallel()
		srv := testenv.NewS3Server(t)
		e := newArchiveEnv(t, testenv.NewDB(t), testenv.NewBucketOn(t, srv), crashSubjects, nil)
		require.GreaterOrEqual(t, len(e.due), minDue)
		p := spawn(t, nil, "sweep", "--wait", "--config", e.cfgPath)
		moment := e.manifestAtLeast(t, len(e.due)*15/100)
		for !moment() {
			require.False(t, p.exited(), "sweep --wait ended before the outage\n%s", p.output())
			time.Sleep(10 * time.Millisecond)
		}
		require.NoError(t, srv.Kill())
		killedAt := time.Now()
		// It reports the failing batches and keeps retrying with backoff.
		p.waitOutput(t, "failed; it is retried with backoff", time.Minute)
		time.Sleep(3 * time.Second)
		require.False(t, p.exited(), "sweep --wait gave up within seconds of the outage\n%s", p.output())
		t.Logf("sweep --wait %s into the S3 outage:\n%s", time.Since(killedAt).Round(time.Second), lastLines(p.output(), 4))
		// An operator stops it; it must stop, not hang on the dead server.
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		code := p.wait(t, 30*time.Second)
		require.Equal(t, 1, code, "%s", p.output())
		require.Contains(t, p.output(), "interrupted")

		require.NoError(t, srv.Restart(ctx))
		st := e.requireWholeOrArchived(t, "after the S3 outage")
		t.Logf("after the S3 outage: %s", st)
		e.sweepToCompletion(t)
	})

	t.Run("PostgreSQL restarted under sweep --wait", func(t *testing.T) {
		t.Parallel()
		pg := testenv.NewPostgres(t)
		e := newArchiveEnv(t, pg.NewDB(t), testenv.NewBucket(t), crashSubjects, nil)
		require.GreaterOrEqual(t, len(e.due), minDue)
		p := spawn(t, nil, "sweep", "--wait", "--config", e.cfgPath)
		moment := e.manifestAtLeast(t, len(e.due)/5)
		for !moment() {
			require.False(t, p.exited(), "sweep --wait ended before the restart\n%s", p.output())
			time.Sleep(10 * time.Millisecond)
		}
		require.NoError(t, pg.Kill())
		time.Sleep(2 * time.Second)
		require.NoError(t, pg.Start())
		e.db.Pool.Reset()
		// It rides the restart out or fails; it must not hang.
		code := p.wait(t, 3*time.Minute)
		require.Contains(t, []int{0, 1}, code, "%s", p.output())
		t.Logf("sweep --wait across a database restart exited %d:\n%s", code, lastLines(p.output(), 4))
		st := e.requireWholeOrArchived(t, "after the database restart")
		t.Logf("after the database restart: %s", st)
		e.sweepToCompletion(t)
	})

	t.Run("PostgreSQL restarted under a worker", func(t *testing.T) {
		t.Parallel()
		pg := testenv.NewPostgres(t)
		e := newArchiveEnv(t, pg.NewDB(t), testenv.NewBucket(t), crashSubjects, withMaxAttempts(t, 25))
		require.GreaterOrEqual(t, len(e.due), minDue)
		w := startWorker(t, e.cfgPath)
		requireOK(t, lethe(t, "sweep", "--config", e.cfgPath))
		moment := e.manifestAtLeast(t, len(e.due)/5)
		deadline := time.Now().Add(2 * time.Minute)
		for !moment() {
			require.False(t, w.exited(), "the worker exited\n%s", w.output())
			require.True(t, time.Now().Before(deadline), "the worker did not start the sweep\n%s", w.output())
			time.Sleep(10 * time.Millisecond)
		}
		require.NoError(t, pg.Kill())
		time.Sleep(2 * time.Second)
		require.False(t, w.exited(), "the worker exited when the database went away\n%s", w.output())
		require.NoError(t, pg.Start())
		e.db.Pool.Reset()
		e.waitRunSettled(t, w, 3*time.Minute)
		w.stop(t, syscall.SIGTERM)
		e.requireAllArchivedOnce(t)
	})
}

// TestCrashRequestKilled kills the worker carrying out a deletion request
// (LETHE_FAULT_KILL_AT) just before its one transaction commits. The
// subject was archived and then put back in the hot tables, so it has both.
// The kill must leave everything as it was: the rows, the key, an open
// request. A normal worker started afterwards completes the request by
// itself: a receipt that counts the rows and names the part made
// unreadable, the key destroyed, the bucket untouched, a restore that says
// the subject was erased, and an intact audit log.
func TestCrashRequestKilled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newArchiveEnv(t, testenv.NewDB(t), testenv.NewBucket(t), 300, nil)
	requireOK(t, lethe(t, "sweep", "--wait", "--config", e.cfgPath))
	e.requireAllArchivedOnce(t)

	// The richest archived subject comes back into the hot tables, from its
	// own archive.
	var subject int64
	for _, id := range e.due {
		if subject == 0 || len(e.before[id]) > len(e.before[subject]) {
			subject = id
		}
	}
	key := fmt.Sprint(subject)
	h := e.hmacOf(subject)
	out := filepath.Join(t.TempDir(), "bundle.json")
	requireOK(t, lethe(t, "restore", "--subject", key, "--identity", e.idPath, "--out", out, "--config", e.cfgPath))
	raw, err := os.ReadFile(out)
	require.NoError(t, err)
	var bundle struct {
		Rows map[string][]json.RawMessage `json:"rows"`
	}
	require.NoError(t, json.Unmarshal(raw, &bundle))
	restored := map[string]int64{}
	for _, table := range demoTables {
		for _, row := range bundle.Rows[table] {
			_, err := e.db.Pool.Exec(ctx, "INSERT INTO "+table+" SELECT * FROM jsonb_populate_record(NULL::"+table+", $1::jsonb)", string(row))
			require.NoError(t, err)
		}
		restored[table] = int64(len(bundle.Rows[table]))
	}
	require.Equal(t, e.before[subject], e.dump(t)[subject], "the restored rows are the subject's rows")
	m := e.manifest(t)[h]
	bucket := listAllVersions(t, e.bucket)

	w1 := startWorkerEnv(t, e.cfgPath, "LETHE_FAULT_KILL_AT=request_before_commit")
	r := lethe(t, "request", "delete", "--subject", key, "--ticket", "CRASH-1", "--by", "privacy", "--json", "--config", e.cfgPath)
	req := decodeRequest(t, r)
	require.Equal(t, -1, w1.wait(t, time.Minute), "the worker was not killed\n%s", w1.output())
	require.Contains(t, w1.output(), "killing this process at request_before_commit")

	// The dead worker's transaction never committed: nothing changed.
	require.Equal(t, e.before[subject], e.dump(t)[subject], "the hot rows changed without a commit")
	require.Equal(t, m, e.manifest(t)[h], "the key changed without a commit")
	shown := decodeRequest(t, lethe(t, "request", "show", fmt.Sprint(req.ID), "--json", "--config", e.cfgPath))
	require.Contains(t, []string{"received", "processing"}, shown.State)

	w2 := startWorker(t, e.cfgPath)
	deadline := time.Now().Add(time.Minute)
	for shown.State != "completed" {
		require.NotContains(t, []string{"rejected", "failed", "blocked_by_hold"}, shown.State, "%s", w2.output())
		if time.Now().After(deadline) {
			require.FailNow(t, "the request killed mid-way was not completed by the next worker",
				"request %d is %s after a minute\nits jobs:\n%s\nworker:\n%s", req.ID, shown.State,
				strings.Join(e.rowsOf(t, `SELECT to_jsonb(j)::text FROM lethe.river_job j WHERE kind = 'lethe.request'`), "\n"), w2.output())
		}
		time.Sleep(250 * time.Millisecond)
		shown = decodeRequest(t, lethe(t, "request", "show", fmt.Sprint(req.ID), "--json", "--config", e.cfgPath))
	}
	rc := shown.receipt(t)
	require.True(t, *rc.Found)
	require.Equal(t, restored, rc.RowsDeleted, "the receipt counts the rows")
	require.Equal(t, []partRef{{Segment: m.segment, VersionID: m.versionID}}, rc.PartsMadeUnreadable, "%s", shown.Receipt)
	erased := e.manifest(t)[h]
	require.Equal(t, "erased", erased.state)
	require.False(t, erased.hasKey, "the erased subject's key is left")
	_, hot := e.dump(t)[subject]
	require.False(t, hot)
	require.Equal(t, bucket, listAllVersions(t, e.bucket), "erasure touched the bucket")
	r = lethe(t, "restore", "--subject", key, "--identity", e.idPath, "--config", e.cfgPath)
	require.Equal(t, 1, r.code, "%s", r)
	require.Contains(t, r.stderr, "was erased by deletion request", "%s", r)
	require.Contains(t, r.stderr, "ticket CRASH-1", "%s", r)
	w2.stop(t, syscall.SIGTERM)
	r = lethe(t, "audit", "verify", "--config", e.cfgPath)
	requireOK(t, r)
	require.Contains(t, r.stdout, "audit log intact", "%s", r)
}

// TestReleaseBinaryHasNoFaultSwitch builds lethe as it ships (go build
// ./cmd/lethe, no tags): it does not know LETHE_FAULT_KILL_AT, and a worker
// given it runs as if it were unset. The crash tests' build knows it.
func TestReleaseBinaryHasNoFaultSwitch(t *testing.T) {
	t.Parallel()
	release := filepath.Join(t.TempDir(), "lethe")
	build := exec.Command("go", "build", "-o", release, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	shipped, err := os.ReadFile(release)
	require.NoError(t, err)
	require.NotContains(t, string(shipped), "LETHE_FAULT_KILL_AT", "the shipped binary must not read the crash switch")
	tested, err := os.ReadFile(letheBin)
	require.NoError(t, err)
	require.Contains(t, string(tested), "LETHE_FAULT_KILL_AT", "the crash tests' build has it, so the check above can fail")
}

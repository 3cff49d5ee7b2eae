package main_test

// Invariant 5 (docs/ARCHITECTURE.md), end to end: no personal data in anything lethe
// writes. TestNoPersonalDataLeaks drives every command through the CLI on
// the demo's synthetic telecom customers, at debug level and in both log
// formats, including failing commands, then searches everything lethe wrote
// for every personal value of every subject: standard output and error of
// each run, the workers' logs, every row of every table in schema lethe
// (River's included), and the bucket's object names, version ids, metadata
// and tags. Only two things may hold personal values: the encrypted objects'
// bodies and the file `lethe restore --out` writes, which is the point of
// a restore.
//
// Subject keys are not personal values, but lethe must not spread them
// either: they may appear only in the output of the commands an operator
// gives a key to (hold, request and restore), which echo or list what they
// were given, and in lethe.hold and lethe.request while a hold is active or
// a request open. By the end every hold is released and every request
// closed, so no table may hold a key, and no log, sweep, status or audit
// output ever may.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/demo"
	"github.com/lethehq/lethe/internal/testenv"
)

// ---------------------------------------------------------------------------
// The scanner.

// leakScanner finds any of a set of values in text, in the forms a program
// would write them: as is, JSON-escaped (Go's HTML-safe escaping, and with
// every non-ASCII rune as \uXXXX), Go-quoted (%q and QuoteToASCII, as slog's
// text handler and error messages quote), URL-escaped and hex-encoded (as
// PostgreSQL shows bytea). It indexes the forms by their first four bytes,
// so that a scan costs one map lookup per byte of text.
type leakScanner struct {
	byPrefix map[string][]leakNeedle
	minLen   int
}

type leakNeedle struct{ form, value string }

const scanPrefix = 4

func newLeakScanner(t *testing.T, values []string) *leakScanner {
	t.Helper()
	s := &leakScanner{byPrefix: map[string][]leakNeedle{}, minLen: scanPrefix}
	seen := map[string]bool{}
	for _, v := range values {
		require.GreaterOrEqual(t, len(v), scanPrefix, "value %q is too short to search for without false alarms", v)
		for _, f := range leakForms(v) {
			if seen[f] || len(f) < scanPrefix {
				continue
			}
			seen[f] = true
			p := f[:scanPrefix]
			s.byPrefix[p] = append(s.byPrefix[p], leakNeedle{form: f, value: v})
		}
	}
	return s
}

// leakForms are the spellings of v to search for.
func leakForms(v string) []string {
	inner := func(q string) string { return q[1 : len(q)-1] }
	j, _ := json.Marshal(v)
	var ascii strings.Builder
	for _, r := range inner(string(j)) {
		switch {
		case r < utf8.RuneSelf:
			ascii.WriteRune(r)
		case r > 0xffff:
			r1, r2 := utf16Pair(r)
			fmt.Fprintf(&ascii, `\u%04x\u%04x`, r1, r2)
		default:
			fmt.Fprintf(&ascii, `\u%04x`, r)
		}
	}
	return []string{
		v,
		inner(string(j)),
		ascii.String(),
		inner(strconv.Quote(v)),
		inner(strconv.QuoteToASCII(v)),
		url.QueryEscape(v),
		url.PathEscape(v),
		hex.EncodeToString([]byte(v)),
	}
}

func utf16Pair(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff
}

// find returns the distinct values whose forms occur in text, sorted.
func (s *leakScanner) find(text string) []string {
	found := map[string]bool{}
	for i := 0; i+s.minLen <= len(text); i++ {
		for _, n := range s.byPrefix[text[i:i+scanPrefix]] {
			if strings.HasPrefix(text[i:], n.form) {
				found[n.value] = true
			}
		}
	}
	out := make([]string, 0, len(found))
	for v := range found {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// leakSource is one thing lethe wrote.
type leakSource struct{ where, text string }

// findings searches every source and returns "where: values" lines.
func (s *leakScanner) findings(sources []leakSource) []string {
	var out []string
	for _, src := range sources {
		if vs := s.find(src.text); len(vs) > 0 {
			if len(vs) > 5 {
				vs = append(vs[:5], fmt.Sprintf("... (%d values)", len(vs)))
			}
			out = append(out, fmt.Sprintf("%s: %q", src.where, vs))
		}
	}
	return out
}

func TestLeakScannerFinds(t *testing.T) {
	t.Parallel()
	s := newLeakScanner(t, []string{"912-34-5678", "Muñoz", "O'Brien", "12 Larkspur Hollow Lane", "jose.munoz7@example.com", "José"})
	cases := []struct {
		text string
		want []string
	}{
		{"nothing here but ids 12 34 5678 and O'Brie", nil},
		{`time=... msg="archived" ssn=912-34-5678`, []string{"912-34-5678"}},
		{`{"name":"Mu\u00f1oz"}`, []string{"Muñoz"}},
		{`error: "Mu\u00f1oz"` + ` and "Jos\u00e9"`, []string{"José", "Muñoz"}},
		{`addr="12 Larkspur Hollow Lane"`, []string{"12 Larkspur Hollow Lane"}},
		{`q=12+Larkspur+Hollow+Lane`, []string{"12 Larkspur Hollow Lane"}},
		{`\x` + hex.EncodeToString([]byte("jose.munoz7@example.com")), []string{"jose.munoz7@example.com"}},
		{`O'Brien`, []string{"O'Brien"}},
		{"ends with Muñ", nil},
		{"Muñoz", []string{"Muñoz"}},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, nilIfEmpty(s.find(tc.text)), "%s", tc.text)
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// ---------------------------------------------------------------------------
// The run.

// leakRun is the demo database, bucket and config of the leak test, and
// every run of lethe it made.
type leakRun struct {
	db      *testenv.DB
	bucket  *testenv.Bucket
	cfgPath string
	idPath  string
	dir     string
	yaml    string
	// runs are every run, with whether its output may name subject keys.
	runs []leakResult
}

type leakResult struct {
	result
	// keysAllowed: a hold, request, restore or archive command, which echoes or
	// lists the keys an operator gave it.
	keysAllowed bool
}

// run runs lethe with args, the config and --log-level debug, and records
// the run.
func (l *leakRun) run(t *testing.T, args ...string) result {
	t.Helper()
	return l.runWith(t, l.cfgPath, args...)
}

func (l *leakRun) runWith(t *testing.T, cfg string, args ...string) result {
	t.Helper()
	r := lethe(t, append(args, "--config", cfg, "--log-level", "debug")...)
	keys := len(args) > 0 && slices.Contains([]string{"hold", "request", "restore", "archive"}, args[0])
	l.runs = append(l.runs, leakResult{result: r, keysAllowed: keys})
	return r
}

// startJSONWorker is startWorker with --log-format json: the same worker,
// logging as JSON at debug level.
func startJSONWorker(t *testing.T, cfg string) *worker {
	t.Helper()
	w := spawn(t, nil, "worker", "--config", cfg, "--log-level", "debug", "--log-format", "json")
	w.waitOutput(t, `"msg":"worker started"`, 30*time.Second)
	return w
}

// requestState polls `request show --ticket T --json` until the request
// leaves received and processing, and returns it.
func (l *leakRun) requestState(t *testing.T, ticket string, workers ...*worker) requestView {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := l.run(t, "request", "show", "--ticket", ticket, "--json")
		v := decodeRequest(t, r)
		if v.State != "received" && v.State != "processing" {
			return v
		}
		if time.Now().After(deadline) {
			var logs []string
			for _, w := range workers {
				logs = append(logs, w.output())
			}
			require.FailNow(t, "request not worked in time", "ticket %s is %s\n%s", ticket, v.State, strings.Join(logs, "\n"))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// subjectIDs returns up to n subscriber ids matching where, in order.
func subjectIDs(t *testing.T, db *testenv.DB, where string, n int) []string {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), "SELECT id::text FROM demo.subscribers WHERE "+where+" ORDER BY id LIMIT $1", n)
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		out = append(out, id)
	}
	require.NoError(t, rows.Err())
	require.Len(t, out, n, "subjects where %s", where)
	return out
}

// letheTables lists every table in schema lethe.
func letheTables(t *testing.T, db *testenv.DB) []string {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
		WHERE table_schema = 'lethe' AND table_type = 'BASE TABLE' ORDER BY 1`)
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		var name string
		require.NoError(t, rows.Scan(&name))
		out = append(out, name)
	}
	require.NoError(t, rows.Err())
	return out
}

// databaseSources are every row of every table in schema lethe.
func databaseSources(t *testing.T, db *testenv.DB) []leakSource {
	t.Helper()
	return databaseSourcesBut(t, db, "")
}

// databaseSourcesBut is databaseSources without the column skip of
// lethe.request and lethe.hold, where an open request or an active hold
// keeps the key it was given.
func databaseSourcesBut(t *testing.T, db *testenv.DB, skip string) []leakSource {
	t.Helper()
	var out []leakSource
	tables := letheTables(t, db)
	for _, want := range []string{"lethe.audit_log", "lethe.manifest", "lethe.request", "lethe.hold", "lethe.river_job"} {
		require.Contains(t, tables, want)
	}
	for _, table := range tables {
		q := "SELECT to_jsonb(x)::text FROM " + table + " x"
		if skip != "" && (table == "lethe.request" || table == "lethe.hold") {
			q = "SELECT (to_jsonb(x) - '" + skip + "')::text FROM " + table + " x"
		}
		rows, err := db.Pool.Query(context.Background(), q)
		require.NoError(t, err)
		n := 0
		for rows.Next() {
			var row string
			require.NoError(t, rows.Scan(&row))
			n++
			out = append(out, leakSource{where: fmt.Sprintf("%s row %d", table, n), text: row})
		}
		require.NoError(t, rows.Err())
	}
	return out
}

// bucketSources are what the bucket says about every object version and
// delete marker, as its root account sees it: names, version ids, system
// and user metadata, and tags; and the audit anchors' contents, which are
// the one plaintext lethe puts.
func bucketSources(t *testing.T, b *testenv.Bucket) []leakSource {
	t.Helper()
	ctx := context.Background()
	root := b.Server.Client(b.Server.Root)
	var out []leakSource
	for _, v := range listBucket(t, b) {
		where := "object " + v.key + " version " + v.versionID
		out = append(out, leakSource{where: where + " (name and version)", text: v.key + " " + v.versionID})
		if v.deleteMarker {
			continue
		}
		head, err := root.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.Name), Key: aws.String(v.key), VersionId: aws.String(v.versionID)})
		require.NoError(t, err)
		var meta []string
		for k, mv := range head.Metadata {
			meta = append(meta, k+"="+mv)
		}
		sort.Strings(meta)
		meta = append(meta, aws.ToString(head.ContentType), aws.ToString(head.ContentDisposition), aws.ToString(head.ContentEncoding),
			aws.ToString(head.ContentLanguage), aws.ToString(head.CacheControl), aws.ToString(head.WebsiteRedirectLocation), aws.ToString(head.ETag))
		out = append(out, leakSource{where: where + " (metadata)", text: strings.Join(meta, "\n")})
		if strings.HasPrefix(v.key, "v1/ledger/") {
			obj, err := root.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.Name), Key: aws.String(v.key), VersionId: aws.String(v.versionID)})
			require.NoError(t, err)
			body, err := io.ReadAll(obj.Body)
			obj.Body.Close()
			require.NoError(t, err)
			out = append(out, leakSource{where: where + " (anchor)", text: string(body)})
		}
		tags, err := root.GetObjectTagging(ctx, &s3.GetObjectTaggingInput{Bucket: aws.String(b.Name), Key: aws.String(v.key), VersionId: aws.String(v.versionID)})
		if err == nil {
			var ts []string
			for _, tag := range tags.TagSet {
				ts = append(ts, aws.ToString(tag.Key)+"="+aws.ToString(tag.Value))
			}
			out = append(out, leakSource{where: where + " (tags)", text: strings.Join(ts, "\n")})
		}
	}
	return out
}

// TestNoPersonalDataLeaks is described at the top of this file.
func TestNoPersonalDataLeaks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const subjects = 2000
	// Ten-digit keys: a key found in a log cannot be a count, a size or an id.
	const firstID = 7_000_000_001
	l := &leakRun{db: testenv.NewDB(t), bucket: testenv.NewBucket(t), dir: t.TempDir()}
	_, err := demo.Seed(ctx, l.db.Pool, demo.Options{Subjects: subjects, FirstID: firstID, Seed: 5})
	require.NoError(t, err)
	values, err := demo.PersonalValues(ctx, l.db.Pool, "demo", subjects)
	require.NoError(t, err)
	require.Greater(t, len(values), 5*subjects, "personal values of %d subjects", subjects)
	scanner := newLeakScanner(t, values)
	var allKeys []string
	rows, err := l.db.Pool.Query(ctx, `SELECT id::text FROM demo.subscribers`)
	require.NoError(t, err)
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		allKeys = append(allKeys, k)
	}
	require.NoError(t, rows.Err())
	require.Len(t, allKeys, subjects)
	keyScanner := newLeakScanner(t, allKeys)

	identity := testenv.NewIdentity(t)
	l.yaml = testenv.ConfigYAML(l.db, l.bucket, identity.Recipient().String(), "schedule: \"0 3 1 1 *\"\n"+demo.Config("demo"))
	l.cfgPath = filepath.Join(l.dir, "lethe.yaml")
	require.NoError(t, os.WriteFile(l.cfgPath, []byte(l.yaml), 0o600))
	l.idPath = filepath.Join(l.dir, "identity.txt")
	require.NoError(t, os.WriteFile(l.idPath, []byte(identity.String()+"\n"), 0o600))
	variant := func(name, old, new string) string {
		require.Equal(t, 1, strings.Count(l.yaml, old), "%q in the config", old)
		p := filepath.Join(l.dir, name)
		require.NoError(t, os.WriteFile(p, []byte(strings.Replace(l.yaml, old, new, 1)), 0o600))
		return p
	}
	deadS3 := variant("dead-s3.yaml", "endpoint: "+l.bucket.Server.Endpoint+"\n", fmt.Sprintf("endpoint: http://127.0.0.1:%d\n", freePort(t)))
	wrongID := filepath.Join(l.dir, "wrong-identity.txt")
	wrong := testenv.NewIdentity(t)
	require.NoError(t, os.WriteFile(wrongID, []byte(wrong.String()+"\n"), 0o600))
	// A rotation to a new master, whose keys the wrong identity cannot open.
	rotated := variant("rotated.yaml", "    - "+identity.Recipient().String()+"\n", "    - "+wrong.Recipient().String()+"\n")

	// The subjects the commands name.
	due := `(status = 'former' AND closed_at < now() - interval '730 days')`
	dueIDs := subjectIDs(t, l.db, due, 3)
	erased, restored, held := dueIDs[0], dueIDs[1], dueIDs[2]
	active := subjectIDs(t, l.db, `status = 'active'`, 1)[0]
	hotOnly := subjectIDs(t, l.db, `status = 'prospect' AND created_at > now() - interval '80 days'`, 1)[0]
	const unknown = "7000999999"
	const neverHeld = "7000999998"

	// --- Before the sweep: counting, a refused sweep, a hold.
	requireOK(t, l.run(t, "migrate"))
	requireOK(t, l.run(t, "sweep", "--dry-run"))
	requireOK(t, l.run(t, "sweep", "--dry-run", "--json", "--log-format", "json"))
	requireOneLineError(t, l.runWith(t, deadS3, "sweep", "--wait"), 1, "archive.endpoint")
	requireOneLineError(t, l.runWith(t, deadS3, "sweep", "--wait", "--log-format", "json"), 1, "archive.endpoint")
	requireOK(t, l.run(t, "hold", "place", "--matter", "LIT-2031", "--subject", held, "--subject", unknown,
		"--reason", "preservation order", "--by", "legal"))

	// --- The sweep, worked in this process.
	r := l.run(t, "sweep", "--wait")
	requireOK(t, r)
	require.Positive(t, sweepSummary(t, r)["total"][1], "nothing was archived\n%s", r)
	requireOK(t, l.run(t, "sweep", "--wait", "--json", "--log-format", "json")) // nothing left: a second run

	// --- Workers, and the privacy team's requests.
	w1 := startWorker(t, l.cfgPath)
	w2 := startJSONWorker(t, l.cfgPath)
	for _, tc := range []struct {
		subject, ticket, state string
		extra                  []string
	}{
		{erased, "LEAK-1", "completed", nil},
		{active, "LEAK-2", "rejected", nil},
		{active, "LEAK-3", "completed", []string{"--force"}},
		{held, "LEAK-4", "blocked_by_hold", nil},
		{hotOnly, "LEAK-5", "completed", nil},
		{unknown, "LEAK-6", "blocked_by_hold", nil},
	} {
		r := l.run(t, append([]string{"request", "delete", "--subject", tc.subject, "--ticket", tc.ticket, "--by", "privacy"}, tc.extra...)...)
		requireOK(t, r)
		require.Equal(t, tc.state, l.requestState(t, tc.ticket, w1, w2).State, "ticket %s", tc.ticket)
	}
	// More subjects fall due; the workers archive them, one under a hold
	// (its object carries an S3 legal hold, then loses it on release).
	late := subjectIDs(t, l.db, `status = 'former' AND closed_at >= now() - interval '730 days'`, 40)
	_, err = l.db.Pool.Exec(ctx, `UPDATE demo.subscribers SET closed_at = closed_at - interval '3 years' WHERE id = ANY ($1::text[]::bigint[])`, late)
	require.NoError(t, err)
	requireOK(t, l.run(t, "hold", "place", "--matter", "LIT-2031", "--subject", late[0], "--reason", "preservation order", "--by", "legal"))
	var lastRun int64
	require.NoError(t, l.db.Pool.QueryRow(ctx, `SELECT max(id) FROM lethe.run`).Scan(&lastRun))
	r = l.run(t, "sweep", "--log-format", "json")
	requireOK(t, r)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var state string
		require.NoError(t, l.db.Pool.QueryRow(ctx, `SELECT coalesce((SELECT state FROM lethe.run WHERE id > $1 ORDER BY id DESC LIMIT 1), 'queued')`, lastRun).Scan(&state))
		if state == "done" {
			break
		}
		require.NotEqual(t, "failed", state, "%s\n%s", w1.output(), w2.output())
		require.True(t, time.Now().Before(deadline), "the queued sweep was not worked\n%s\n%s", w1.output(), w2.output())
		time.Sleep(200 * time.Millisecond)
	}
	var archivedLate int
	require.NoError(t, l.db.Pool.QueryRow(ctx, `SELECT count(*) FROM demo.subscribers WHERE id = ANY ($1::text[]::bigint[])`, late).Scan(&archivedLate))
	require.Zero(t, archivedLate, "the workers left due subjects in the hot tables")

	requireOK(t, l.run(t, "request", "delete", "--subject", erased, "--ticket", "LEAK-1", "--by", "privacy", "--wait", "--json"))
	requireOK(t, l.run(t, "request", "show", "--ticket", "LEAK-4"))
	requireOK(t, l.run(t, "request", "list"))
	requireOK(t, l.run(t, "request", "list", "--json", "--log-format", "json"))
	requireOK(t, l.run(t, "hold", "list"))
	requireOK(t, l.run(t, "hold", "list", "--json", "--log-format", "json"))
	requireOK(t, l.run(t, "status"))
	requireOK(t, l.run(t, "status", "--json", "--log-format", "json"))

	// Legal releases; the waiting requests complete.
	requireOK(t, l.run(t, "hold", "release", "--matter", "LIT-2031", "--by", "legal", "--json"))
	require.Equal(t, "completed", l.requestState(t, "LEAK-4", w1, w2).State)
	require.Equal(t, "completed", l.requestState(t, "LEAK-6", w1, w2).State)
	// A hold placed and released again, one subject at a time.
	requireOK(t, l.run(t, "hold", "place", "--matter", "AUDIT-7", "--subject", restored, "--reason", "regulator inquiry", "--by", "legal", "--json"))
	requireOK(t, l.run(t, "hold", "release", "--matter", "AUDIT-7", "--subject", restored, "--by", "legal"))

	// --- A restore, and what an operator gets wrong.
	out := filepath.Join(t.TempDir(), "bundle.json")
	requireOK(t, l.run(t, "restore", "--subject", restored, "--identity", l.idPath, "--out", out))
	out2 := filepath.Join(t.TempDir(), "bundle.json")
	requireOK(t, l.run(t, "restore", "--subject", restored, "--identity", l.idPath, "--out", out2, "--log-format", "json"))
	requireOK(t, l.run(t, "archive", "locate", "--subject", restored))
	requireOK(t, l.run(t, "archive", "locate", "--subject", erased, "--json"))
	requireOK(t, l.run(t, "archive", "locate", "--all", "--json"))
	requireOK(t, l.run(t, "archive", "locate", "--all"))
	requireOK(t, l.run(t, "archive", "verify", "--identity", l.idPath))
	requireOK(t, l.run(t, "archive", "verify", "--identity", l.idPath, "--sample", "3", "--json", "--log-format", "json"))
	requireOK(t, l.run(t, "keys", "rewrap", "--identity", l.idPath))
	failing := []struct {
		cfg  string
		code int
		args []string
	}{
		{l.cfgPath, 1, []string{"restore", "--subject", unknown, "--identity", l.idPath, "--out", out + ".x"}},
		{l.cfgPath, 1, []string{"restore", "--subject", erased, "--identity", l.idPath, "--out", out + ".x"}},
		{l.cfgPath, 1, []string{"restore", "--subject", restored, "--identity", wrongID, "--out", out + ".x"}},
		{l.cfgPath, 1, []string{"archive", "verify", "--identity", wrongID}},
		{rotated, 1, []string{"keys", "rewrap", "--identity", wrongID}},
		{l.cfgPath, 1, []string{"archive", "locate", "--subject", unknown}},
		{deadS3, 1, []string{"restore", "--subject", restored, "--identity", l.idPath, "--out", out + ".x"}},
		{deadS3, 1, []string{"worker"}},
		{l.cfgPath, 2, []string{"request", "delete", "--subject", "  ", "--ticket", "LEAK-9", "--by", "privacy"}},
		{l.cfgPath, 2, []string{"request", "delete", "--subject", restored, "--ticket", "LEAK-1", "--by", "privacy"}},
		{l.cfgPath, 1, []string{"request", "show", "--ticket", "LEAK-404"}},
		{l.cfgPath, 2, []string{"hold", "release", "--matter", "LIT-2031", "--subject", neverHeld, "--by", "legal"}},
		{l.cfgPath, 2, []string{"hold", "place", "--matter", "M", "--subject", restored, "--by", "legal"}},
	}
	for _, f := range failing {
		r := l.runWith(t, f.cfg, f.args...)
		requireOneLineError(t, r, f.code)
	}
	require.NoFileExists(t, out+".x")

	requireOK(t, l.run(t, "status"))
	requireOK(t, l.run(t, "status", "--json", "--log-format", "json"))
	requireOK(t, l.run(t, "audit", "verify"))
	requireOK(t, l.run(t, "audit", "verify", "--json", "--log-format", "json"))
	requireOK(t, l.run(t, "audit", "verify", "--anchors"))
	requireOK(t, l.run(t, "ledger", "replay", "--json"))
	w1.stop(t, syscall.SIGTERM)
	w2.stop(t, syscall.SIGTERM)

	// --- The restore wrote the subject's personal data, and only there.
	entries, err := os.ReadDir(filepath.Dir(out))
	require.NoError(t, err)
	require.Len(t, entries, 1, "restore left another file beside its output")
	bundle, err := os.ReadFile(out)
	require.NoError(t, err)
	require.NotEmpty(t, scanner.find(string(bundle)), "the restored bundle holds none of the personal values: the scanner is blind")

	// --- The search.
	var outputs []leakSource
	var keyless []leakSource // sources that may not name a subject key
	for i, r := range l.runs {
		name := fmt.Sprintf("run %d: lethe %s", i+1, strings.Join(r.args, " "))
		for _, s := range []leakSource{{name + " (stdout)", r.stdout}, {name + " (stderr)", r.stderr}} {
			outputs = append(outputs, s)
			if !r.keysAllowed {
				keyless = append(keyless, s)
			}
		}
	}
	workers := []leakSource{{"the text worker's log", w1.output()}, {"the JSON worker's log", w2.output()}}
	require.Contains(t, w2.output(), `"level":"INFO"`, "the JSON worker did not log JSON")
	database := databaseSources(t, l.db)
	objects := bucketSources(t, l.bucket)
	require.NotEmpty(t, objects)
	require.True(t, slices.ContainsFunc(objects, func(o leakSource) bool { return strings.HasSuffix(o.where, "(anchor)") }),
		"no audit anchor was searched")

	everything := slices.Concat(outputs, workers, database, objects)
	require.Empty(t, scanner.findings(everything), "personal values in what lethe wrote")
	require.Empty(t, keyScanner.findings(slices.Concat(keyless, workers, database, objects)), "subject keys outside the commands that were given them")
	var open int
	require.NoError(t, l.db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM lethe.request WHERE subject_key IS NOT NULL)
		+ (SELECT count(*) FROM lethe.hold WHERE subject_key IS NOT NULL)`).Scan(&open))
	require.Zero(t, open, "a closed request or released hold kept its subject key")
	t.Logf("searched %d outputs, 2 worker logs (%d bytes), %d rows of %d tables and %d object records for %d personal values and %d keys",
		len(outputs), len(w1.output())+len(w2.output()), len(database), len(letheTables(t, l.db)), len(objects), len(values), len(allKeys))

	// --- The search can fail: plant values where lethe writes and find them.
	var ssn, name, key string
	require.NoError(t, l.db.Pool.QueryRow(ctx, `SELECT ssn, last_name, id::text FROM demo.subscribers WHERE status = 'active' ORDER BY id LIMIT 1`).Scan(&ssn, &name, &key))
	_, err = l.db.Pool.Exec(ctx, `UPDATE lethe.river_job SET metadata = metadata || jsonb_build_object('note', $1::text)
		WHERE id = (SELECT min(id) FROM lethe.river_job)`, ssn)
	require.NoError(t, err)
	root := l.bucket.Server.Client(l.bucket.Server.Root)
	_, err = root.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(l.bucket.Name), Key: aws.String("v1/planted.age"),
		Body: strings.NewReader("x"), Metadata: map[string]string{"owner": name}})
	require.NoError(t, err)
	planted := slices.Concat(databaseSources(t, l.db), bucketSources(t, l.bucket),
		[]leakSource{{"a planted log line", fmt.Sprintf("time=x level=DEBUG msg=moved subject=%s", key)}})
	want := []string{name, ssn}
	sort.Strings(want)
	require.Equal(t, want, sortedFound(scanner, planted), "the scanner missed a planted value")
	require.Equal(t, []string{key}, sortedFound(keyScanner, planted), "the key scanner missed a planted key")
}

func sortedFound(s *leakScanner, sources []leakSource) []string {
	found := map[string]bool{}
	for _, src := range sources {
		for _, v := range s.find(src.text) {
			found[v] = true
		}
	}
	var out []string
	for v := range found {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// TestLeakMistypedSubjectKey checks the mistake a privacy analyst will make:
// pasting the customer's e-mail address or SSN as --subject where the
// subject key is a numeric id. lethe should refuse such a key when the
// request is made (exit 2, nothing recorded); if it accepts it, the worker
// that tries the request must not copy the key into its log, its job's
// errors or any table but the open request's own subject_key, which lethe
// keeps by design until the request closes.
func TestLeakMistypedSubjectKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, bucket := testenv.NewDB(t), testenv.NewBucket(t)
	_, err := demo.Seed(ctx, db.Pool, demo.Options{Subjects: 40, FirstID: 7_000_000_001, Seed: 9})
	require.NoError(t, err)
	values, err := demo.PersonalValues(ctx, db.Pool, "demo", 40)
	require.NoError(t, err)
	scanner := newLeakScanner(t, values)
	var email, ssn string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT email, ssn FROM demo.subscribers ORDER BY id LIMIT 1`).Scan(&email, &ssn))
	identity := testenv.NewIdentity(t)
	cfg := filepath.Join(t.TempDir(), "lethe.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(testenv.ConfigYAML(db, bucket, identity.Recipient().String(),
		"schedule: \"0 3 1 1 *\"\n"+demo.Config("demo"))), 0o600))
	w := startWorker(t, cfg)

	for ticket, key := range map[string]string{"MIS-1": email, "MIS-2": ssn} {
		r := lethe(t, "request", "delete", "--subject", key, "--ticket", ticket, "--by", "privacy", "--json", "--config", cfg)
		if r.code == 2 { // refused up front
			requireOneLineError(t, r, 2, "--subject")
			continue
		}
		req := decodeRequest(t, r)
		// Wait until the worker has tried the request at least once.
		deadline := time.Now().Add(30 * time.Second)
		for {
			var tried bool
			require.NoError(t, db.Pool.QueryRow(ctx, `SELECT coalesce(bool_or(cardinality(errors) > 0 OR finalized_at IS NOT NULL), false)
				FROM lethe.river_job WHERE kind = 'lethe.request' AND (args ->> 'request_id')::bigint = $1`, req.ID).Scan(&tried))
			if tried {
				break
			}
			require.True(t, time.Now().Before(deadline), "the worker did not try request %d\n%s", req.ID, w.output())
			time.Sleep(200 * time.Millisecond)
		}
	}
	w.stop(t, syscall.SIGTERM)
	sources := append(databaseSourcesBut(t, db, "subject_key"), leakSource{"the worker's log", w.output()})
	require.Empty(t, scanner.findings(sources), "a mistyped subject key was copied into logs or tables")
}

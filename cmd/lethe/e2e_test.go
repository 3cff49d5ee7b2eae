package main_test

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/require"
)

// TestEndToEndShop runs migrate, sweep --dry-run, sweep --wait, restore,
// status and audit verify on a customer schema unlike the demo's (text keys
// that need quoting, a three-level graph, jsonb, bytea, numeric, uuid), and
// checks the database and the bucket after each step.
func TestEndToEndShop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShop(t, 4) // small batches: several pages per policy
	pool := s.db.Pool
	cfg := []string{"--config", s.cfgPath}
	goneDue := s.keys(catGoneDue)
	spamDue := s.keys(catSpamDue)
	require.Len(t, goneDue, 24)
	require.Len(t, spamDue, 6)
	start := time.Now()
	var runs []result // every run whose output must not name a subject

	before := dumpShop(t, pool)
	state0 := letheState(t, pool)

	// migrate on a migrated database does nothing.
	r := lethe(t, append([]string{"migrate", "--log-level", "debug"}, cfg...)...)
	requireOK(t, r)
	require.Contains(t, r.stdout, "is current", "%s", r)
	runs = append(runs, r)
	require.Equal(t, state0, letheState(t, pool))

	// sweep --dry-run counts and changes nothing.
	r = lethe(t, append([]string{"sweep", "--dry-run", "--log-level", "debug"}, cfg...)...)
	requireOK(t, r)
	runs = append(runs, r)
	due := dryRunCounts(t, r)
	require.Equal(t, map[string]int{"gone": len(goneDue), "spam": len(spamDue), "total": len(goneDue) + len(spamDue)}, due, "%s", r)
	require.Contains(t, r.stdout, "nothing was changed")

	r = lethe(t, append([]string{"sweep", "--dry-run", "--json"}, cfg...)...)
	requireOK(t, r)
	var dry struct {
		DryRun   bool `json:"dry_run"`
		Policies []struct {
			Policy string `json:"policy"`
			Then   string `json:"then"`
			Due    int    `json:"due"`
		} `json:"policies"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &dry), "%s", r)
	require.True(t, dry.DryRun)
	require.Len(t, dry.Policies, 2)
	require.Equal(t, "gone", dry.Policies[0].Policy)
	require.Equal(t, "archive", dry.Policies[0].Then)
	require.Equal(t, len(goneDue), dry.Policies[0].Due)
	require.Equal(t, "spam", dry.Policies[1].Policy)
	require.Equal(t, "delete", dry.Policies[1].Then)
	require.Equal(t, len(spamDue), dry.Policies[1].Due)

	require.Equal(t, before, dumpShop(t, pool), "sweep --dry-run changed the shop")
	require.Equal(t, state0, letheState(t, pool), "sweep --dry-run changed lethe's tables")
	require.Empty(t, listVersions(t, s.bucket), "sweep --dry-run wrote to the bucket")

	// sweep --wait archives the due former clients and destroys the due spam.
	r = lethe(t, append([]string{"sweep", "--wait", "--log-level", "debug"}, cfg...)...)
	requireOK(t, r)
	runs = append(runs, r)
	summary := sweepSummary(t, r)
	require.Equal(t, [4]int{len(goneDue), len(goneDue), 0, 0}, summary["gone"], "%s", r)
	require.Equal(t, [4]int{len(spamDue), 0, len(spamDue), 0}, summary["spam"], "%s", r)
	require.Equal(t, [4]int{len(goneDue) + len(spamDue), len(goneDue), len(spamDue), 0}, summary["total"], "%s", r)
	require.NotContains(t, r.stdout, "nothing was due")

	// Exactly the due subjects left the hot tables; every other row is as it was.
	after := dumpShop(t, pool)
	require.Equal(t, before.without(append(append([]string{}, goneDue...), spamDue...)), after)
	for _, k := range append(append([]string{}, goneDue...), spamDue...) {
		for _, table := range shopTables {
			require.Zero(t, after.count(table, k), "%s still has rows of %q", table, k)
		}
	}

	// One segment per batch of archived subjects (24 in batches of 4), put
	// once, under a name that says nothing of them; nothing for the
	// destroyed ones.
	versions := listVersions(t, s.bucket)
	segmentName := regexp.MustCompile(`^v1/segments/\d{4}-\d{2}-\d{2}/[0-9a-f]{32}\.seg$`)
	versionOf := map[string]string{}
	for _, v := range versions {
		require.False(t, v.deleteMarker, "delete marker on %s", v.key)
		require.Regexp(t, segmentName, v.key)
		require.NotContains(t, versionOf, v.key, "segment %s put twice", v.key)
		versionOf[v.key] = v.versionID
	}
	require.Len(t, versionOf, len(goneDue)/4, "one segment per batch")

	// archive locate --all --json names each archived subject once, live,
	// in a segment version the bucket holds.
	r = lethe(t, append([]string{"archive", "locate", "--all", "--json"}, cfg...)...)
	requireOK(t, r)
	runs = append(runs, r)
	manifest := map[string]located{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal([]byte(line), &m), "%s", line)
		for _, f := range locateFields {
			require.Contains(t, m, f, "locate --all line lacks %s: %s", f, line)
		}
		var l located
		require.NoError(t, json.Unmarshal([]byte(line), &l))
		manifest[l.SubjectHMAC] = l
	}
	require.Len(t, manifest, len(goneDue))

	// An outside client restores each subject with archive locate, curl's
	// SigV4, base64 and the stock age CLI, as the README says, to the
	// subject's rows as they were before the sweep.
	reader := s.bucket.Server.Client(s.bucket.Server.Reader)
	writer := s.bucket.Server.Client(s.bucket.Server.Writer)
	root := s.bucket.Server.Client(s.bucket.Server.Root)
	plaintexts := map[string][]byte{}
	for i, k := range goneDue {
		m, ok := manifest[s.hmacOf(k)]
		require.True(t, ok, "no manifest entry for %q", k)
		require.Equal(t, "archived", m.State)
		require.Equal(t, "gone", m.Policy)
		require.Nil(t, m.RetainUntil, "the gone policy keeps its copies until erased")
		require.Equal(t, versionOf[m.Segment], m.VersionID)
		require.Equal(t, m, s.locate(t, k), "locate --subject and --all agree")
		plaintext := restoreWithoutLethe(t, s, k)
		plaintexts[k] = plaintext
		checkBundle(t, plaintext, k, "gone", before, start)

		if i == 0 {
			// The worker's credentials cannot read the archive; the
			// reader's can, and the segment's version names nobody.
			_, err := writer.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket.Name), Key: aws.String(m.Segment)})
			require.Error(t, err, "the worker's credentials read a segment")
			out, err := reader.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket.Name), Key: aws.String(m.Segment), VersionId: aws.String(m.VersionID)})
			require.NoError(t, err)
			body, err := io.ReadAll(out.Body)
			out.Body.Close()
			require.NoError(t, err)
			requireNoNeedles(t, s, "a segment's bytes", string(body))
			head, err := root.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket.Name), Key: aws.String(m.Segment)})
			require.NoError(t, err)
			for mk, mv := range head.Metadata {
				requireNoNeedles(t, s, "object metadata", mk+"="+mv)
			}
			require.Empty(t, head.ObjectLockMode, "the gone policy has no archive_retain: the put carries no retention")
		}
	}

	// The audit log has an archive entry per archived subject and a destroy
	// entry per destroyed one, with the rows they had.
	entries := auditEntries(t, s)
	requireAuditRows(t, s, entries, "archive", goneDue, before)
	requireAuditRows(t, s, entries, "destroy", spamDue, before)
	require.Len(t, entries["run"], 1)

	var workItems int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM lethe.work_item`).Scan(&workItems))
	require.Zero(t, workItems, "work items left after the run")
	var runState string
	require.NoError(t, pool.QueryRow(ctx, `SELECT state FROM lethe.run`).Scan(&runState))
	require.Equal(t, "done", runState)

	// restore writes the same bundle, for keys that need quoting too.
	for _, k := range []string{`O'Brien "x" 1`, `  spaced key  `, `x'); DROP TABLE shop.clients; --`, goneDue[len(goneDue)-1]} {
		out := filepath.Join(t.TempDir(), "bundle.json")
		r := lethe(t, append([]string{"restore", "--subject", k, "--identity", s.idPath, "--out", out}, cfg...)...)
		requireOK(t, r)
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		require.Equal(t, string(plaintexts[k]), string(got), "restore of %q", k)
		fi, err := os.Stat(out)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "mode of the restored bundle")
	}
	r = lethe(t, append([]string{"restore", "--subject", "Zoë-7", "--identity", s.idPath}, cfg...)...)
	requireOK(t, r)
	require.Equal(t, string(plaintexts["Zoë-7"]), r.stdout, "restore to standard output")
	entries = auditEntries(t, s)
	require.Len(t, entries["restore"], 5)
	for _, k := range []string{`O'Brien "x" 1`, `  spaced key  `, "Zoë-7"} {
		found := false
		for _, e := range entries["restore"] {
			found = found || e.SubjectHMAC == s.hmacOf(k)
		}
		require.True(t, found, "no restore entry for %q", k)
	}

	// A second sweep finds nothing and changes nothing.
	manifestBefore := tableDump(t, s, "lethe.manifest")
	r = lethe(t, append([]string{"sweep", "--wait", "--log-level", "debug"}, cfg...)...)
	requireOK(t, r)
	runs = append(runs, r)
	require.Contains(t, r.stdout, "nothing was due", "%s", r)
	summary = sweepSummary(t, r)
	require.Equal(t, [4]int{0, 0, 0, 0}, summary["total"], "%s", r)
	require.Equal(t, manifestBefore, tableDump(t, s, "lethe.manifest"))
	require.Equal(t, versions, listVersions(t, s.bucket))
	require.Equal(t, after, dumpShop(t, pool))

	// status reports the archived subjects.
	r = lethe(t, append([]string{"status", "--log-level", "debug"}, cfg...)...)
	requireOK(t, r)
	runs = append(runs, r)
	archivedSection := r.stdout[strings.Index(r.stdout, "ARCHIVED"):]
	archivedSection = archivedSection[:strings.Index(archivedSection, "UNSETTLED")]
	require.Regexp(t, `(?m)^\s+gone\s+subject\s+`+strconv.Itoa(len(goneDue))+`\s`, archivedSection, "%s", r)
	r = lethe(t, append([]string{"status", "--json"}, cfg...)...)
	requireOK(t, r)
	var st struct {
		Due []struct {
			Policy string `json:"policy"`
			Due    int    `json:"due"`
		} `json:"due"`
		Archived []struct {
			Policy   string `json:"policy"`
			Subjects int    `json:"subjects"`
			Bytes    int64  `json:"bytes"`
		} `json:"archived"`
		Unsettled int `json:"unsettled_subjects"`
		Runs      []struct {
			State     string `json:"state"`
			Archived  int    `json:"archived"`
			Destroyed int    `json:"destroyed"`
		} `json:"runs"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), "%s", r)
	require.Len(t, st.Archived, 1)
	require.Equal(t, "gone", st.Archived[0].Policy)
	require.Equal(t, len(goneDue), st.Archived[0].Subjects)
	require.Positive(t, st.Archived[0].Bytes)
	require.Zero(t, st.Unsettled)
	for _, d := range st.Due {
		require.Zero(t, d.Due, "policy %s still has due subjects", d.Policy)
	}
	require.Len(t, st.Runs, 2)
	require.Equal(t, "done", st.Runs[1].State)
	require.Equal(t, len(goneDue), st.Runs[1].Archived)
	require.Equal(t, len(spamDue), st.Runs[1].Destroyed)

	// The audit log's chain holds.
	r = lethe(t, append([]string{"audit", "verify"}, cfg...)...)
	requireOK(t, r)
	require.Contains(t, r.stdout, "audit log intact")

	// A restored subject put back into the hot tables is archived again by
	// the next sweep, in a new segment; its older copy's key is destroyed.
	back := `O'Brien "x" 1`
	older := s.locate(t, back)
	var bundle struct {
		Rows map[string][]json.RawMessage `json:"rows"`
	}
	require.NoError(t, json.Unmarshal(plaintexts[back], &bundle))
	for _, table := range shopTables { // parents first
		for _, row := range bundle.Rows[table] {
			_, err := pool.Exec(ctx, "INSERT INTO "+table+" SELECT * FROM jsonb_populate_record(NULL::"+table+", $1::jsonb)", string(row))
			require.NoError(t, err)
		}
	}
	require.Equal(t, before.without(append(append([]string{}, goneDue...), spamDue...)), dumpShop(t, pool).without([]string{back}))
	r = lethe(t, append([]string{"sweep", "--wait", "--log-level", "debug"}, cfg...)...)
	requireOK(t, r)
	runs = append(runs, r)
	require.Equal(t, [4]int{1, 1, 0, 0}, sweepSummary(t, r)["gone"], "%s", r)
	require.Equal(t, after, dumpShop(t, pool))
	again := listVersions(t, s.bucket)
	require.Len(t, again, len(versions)+1, "one new segment, and every older one as it was")
	require.Subset(t, again, versions)
	newer := s.locate(t, back)
	require.NotEqual(t, older.Segment, newer.Segment)
	require.Equal(t, "archived", newer.State)
	var supersededKeys int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM lethe.manifest WHERE subject_hmac = $1 AND state = 'superseded' AND wrapped_key IS NULL`,
		s.hmacOf(back)).Scan(&supersededKeys))
	require.Equal(t, 1, supersededKeys, "the older copy is superseded and its key destroyed")
	out := filepath.Join(t.TempDir(), "again.json")
	r = lethe(t, append([]string{"restore", "--subject", back, "--identity", s.idPath, "--out", out}, cfg...)...)
	requireOK(t, r)
	plaintext, err := os.ReadFile(out)
	require.NoError(t, err)
	checkBundle(t, plaintext, back, "gone", before, start)

	// No subject key, and none of the subjects' data, is anywhere but in
	// the hot tables and the encrypted objects.
	for _, v := range listVersions(t, s.bucket) {
		requireNoNeedles(t, s, "object name", v.key)
	}
	for _, table := range []string{"lethe.river_job", "lethe.audit_log", "lethe.manifest", "lethe.segment", "lethe.run", "lethe.batch", "lethe.work_item"} {
		for _, row := range tableDump(t, s, table) {
			requireNoNeedles(t, s, table, row)
		}
	}
	for _, r := range runs {
		requireNoNeedles(t, s, "stderr of lethe "+strings.Join(r.args, " "), r.stderr)
		requireNoNeedles(t, s, "stdout of lethe "+strings.Join(r.args, " "), r.stdout)
	}

	// audit verify notices an edited entry.
	_, err = pool.Exec(ctx, `
		ALTER TABLE lethe.audit_log DISABLE TRIGGER audit_log_append_only;
		UPDATE lethe.audit_log SET actor = 'mallory' WHERE seq = 3;
		ALTER TABLE lethe.audit_log ENABLE TRIGGER audit_log_append_only;`)
	require.NoError(t, err)
	r = lethe(t, append([]string{"audit", "verify"}, cfg...)...)
	require.Equal(t, 1, r.code, "%s", r)
	require.Contains(t, r.stdout, "BROKEN", "%s", r)
}

// dryRunCounts parses sweep --dry-run's table: policy (or total) -> due.
// It finds the due column by its header, so that columns may be added.
func dryRunCounts(t *testing.T, r result) map[string]int {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.NotEmpty(t, lines, "%s", r)
	head := strings.Fields(lines[0])
	require.Equal(t, "policy", head[0], "%s", r)
	col := slices.Index(head, "due")
	require.Positive(t, col, "no due column\n%s", r)
	out := map[string]int{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "total" {
			n, err := strconv.Atoi(f[1])
			require.NoError(t, err, "%s", r)
			out["total"] = n
			return out
		}
		require.Len(t, f, len(head), "line %q of\n%s", l, r)
		n, err := strconv.Atoi(f[col])
		require.NoError(t, err, "%s", r)
		out[f[0]] = n
	}
	require.Fail(t, "no total line", "%s", r)
	return out
}

// sweepSummary parses sweep --wait's summary: policy (or total) ->
// subjects, archived, destroyed, skipped. It finds the columns by their
// headers.
func sweepSummary(t *testing.T, r result) map[string][4]int {
	t.Helper()
	out := map[string][4]int{}
	var cols []int
	for _, l := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "policy" {
			for _, name := range []string{"subjects", "archived", "destroyed", "skipped"} {
				i := slices.Index(f, name)
				require.Positive(t, i, "no %s column in\n%s", name, r)
				cols = append(cols, i)
			}
			continue
		}
		if cols == nil || len(f) < 5 {
			continue
		}
		var v [4]int
		for i, c := range cols {
			n, err := strconv.Atoi(f[c])
			require.NoError(t, err, "summary line %q\n%s", l, r)
			v[i] = n
		}
		out[f[0]] = v
		if f[0] == "total" {
			break
		}
	}
	require.Contains(t, out, "total", "no summary in\n%s", r)
	return out
}

// checkBundle checks a decrypted bundle: its header, and for every table of
// the graph exactly the subject's rows as to_jsonb gave them before.
func checkBundle(t *testing.T, plaintext []byte, key, policy string, before shopDump, start time.Time) {
	t.Helper()
	var b struct {
		Format     string                       `json:"format"`
		Subject    string                       `json:"subject"`
		Policy     string                       `json:"policy"`
		ArchivedAt string                       `json:"archived_at"`
		Rows       map[string][]json.RawMessage `json:"rows"`
	}
	require.NoError(t, json.Unmarshal(plaintext, &b), "bundle of %q", key)
	require.Equal(t, "lethe.bundle.v1", b.Format)
	require.Equal(t, key, b.Subject)
	require.Equal(t, policy, b.Policy)
	at, err := time.Parse(time.RFC3339, b.ArchivedAt)
	require.NoError(t, err, "archived_at %q", b.ArchivedAt)
	require.WithinRange(t, at, start.Add(-time.Minute), time.Now().Add(time.Minute))
	var tables []string
	for table := range b.Rows {
		tables = append(tables, table)
	}
	sort.Strings(tables)
	require.Equal(t, shopTables, tables, "tables of the bundle of %q", key)
	for _, table := range shopTables {
		require.NotNil(t, b.Rows[table], "rows of %s must be a list, [] when empty", table)
		got := make([]string, len(b.Rows[table]))
		for i, row := range b.Rows[table] {
			got[i] = string(row)
		}
		require.Equal(t, canonicalRows(t, before[table][key]), canonicalRows(t, got), "rows of %s in the bundle of %q", table, key)
	}
	require.Len(t, b.Rows["shop.clients"], 1)
}

type auditEntry struct {
	SubjectHMAC string
	Detail      map[string]any
}

// auditEntries returns the audit log's entries by kind.
func auditEntries(t *testing.T, s *shop) map[string][]auditEntry {
	t.Helper()
	rows, err := s.db.Pool.Query(context.Background(), `SELECT kind, coalesce(subject_hmac, ''), detail FROM lethe.audit_log ORDER BY seq`)
	require.NoError(t, err)
	out := map[string][]auditEntry{}
	for rows.Next() {
		var kind, detail string
		var e auditEntry
		require.NoError(t, rows.Scan(&kind, &e.SubjectHMAC, &detail))
		require.NoError(t, json.Unmarshal([]byte(detail), &e.Detail))
		out[kind] = append(out[kind], e)
	}
	require.NoError(t, rows.Err())
	return out
}

// requireAuditRows checks that the entries of kind are exactly one per
// subject of keys, each counting the rows the subject had per table.
func requireAuditRows(t *testing.T, s *shop, entries map[string][]auditEntry, kind string, keys []string, before shopDump) {
	t.Helper()
	byHMAC := map[string]auditEntry{}
	for _, e := range entries[kind] {
		_, dup := byHMAC[e.SubjectHMAC]
		require.False(t, dup, "two %s entries for one subject", kind)
		byHMAC[e.SubjectHMAC] = e
	}
	require.Len(t, byHMAC, len(keys), "%s entries", kind)
	for _, k := range keys {
		e, ok := byHMAC[s.hmacOf(k)]
		require.True(t, ok, "no %s entry for %q", kind, k)
		counts, ok := e.Detail["rows"].(map[string]any)
		require.True(t, ok, "%s entry without rows: %v", kind, e.Detail)
		for _, table := range shopTables {
			require.EqualValues(t, before.count(table, k), counts[table], "%s entry of %q: rows of %s", kind, k, table)
		}
	}
}

// tableDump returns every row of a lethe table as to_jsonb text, sorted.
func tableDump(t *testing.T, s *shop, table string) []string {
	t.Helper()
	rows, err := s.db.Pool.Query(context.Background(), "SELECT to_jsonb(x)::text FROM "+table+" x ORDER BY 1")
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		var row string
		require.NoError(t, rows.Scan(&row))
		out = append(out, row)
	}
	require.NoError(t, rows.Err())
	return out
}

// requireNoNeedles fails if text names any subject of the shop or holds
// its personal data.
func requireNoNeedles(t *testing.T, s *shop, where, text string) {
	t.Helper()
	for _, c := range s.clients {
		for _, n := range c.needles {
			require.NotContains(t, text, n, "%s gives away subject %q", where, c.key)
		}
	}
}

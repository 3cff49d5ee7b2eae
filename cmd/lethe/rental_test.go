package main_test

// An end-to-end run on a schema shaped like the public sample databases:
// two kinds of subject (customers, and credit applicants in a table of
// their own), a payment table partitioned by year that references both the
// customer and the rental, listed before the rentals in the config, and a
// then: minimize policy that hashes, masks and nulls the identity check of
// active customers, archiving the original values first.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/demo"
	"github.com/lethehq/lethe/internal/testenv"
)

// rentalFragment is lethe demo config --rental, which lists payment before
// rental, which it references.
var rentalFragment = "schedule: \"0 3 1 1 *\"\n" + demo.RentalConfig("rental")

type rental struct {
	db        *testenv.DB
	bucket    *testenv.Bucket
	cfgPath   string
	idPath    string
	yaml      string
	keySecret string
}

func newRentalEnv(t *testing.T) *rental {
	t.Helper()
	r := &rental{db: testenv.NewDB(t), bucket: testenv.NewBucket(t)}
	// Twelve hours back, so that no applicant sits on a day boundary of
	// the 90-day window while the test runs.
	_, err := demo.SeedRental(context.Background(), r.db.Pool, demo.RentalOptions{Customers: 30, Applicants: 24, Seed: 11,
		Now: time.Now().Add(-12 * time.Hour)})
	require.NoError(t, err)
	id := testenv.NewIdentity(t)
	s := &shop{dir: t.TempDir()}
	// Batches of 5, so that several commit at once: they share one audit
	// chain, and none may fail an attempt for it.
	r.yaml = strings.Replace(testenv.ConfigYAML(r.db, r.bucket, id.Recipient().String(), rentalFragment), "batch_size: 50\n", "batch_size: 5\n", 1)
	require.Contains(t, r.yaml, "batch_size: 5\n")
	r.cfgPath = s.writeConfig(t, "lethe.yaml", r.yaml)
	r.idPath = s.writeConfig(t, "identity.txt", id.String()+"\n")
	m := regexp.MustCompile(`(?m)^  key_secret: (\S+)$`).FindStringSubmatch(r.yaml)
	require.NotNil(t, m)
	r.keySecret = m[1]
	return r
}

func (r *rental) run(t *testing.T, args ...string) result {
	t.Helper()
	return lethe(t, append(args, "--config", r.cfgPath)...)
}

func (r *rental) ints(t *testing.T, query string) []string {
	t.Helper()
	rows, err := r.db.Pool.Query(context.Background(), query)
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		var v int
		require.NoError(t, rows.Scan(&v))
		out = append(out, fmt.Sprint(v))
	}
	require.NoError(t, rows.Err())
	return out
}

func (r *rental) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, r.db.Pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

// dump is every row of the rental schema, by table, as to_jsonb prints it.
func (r *rental) dump(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, table := range []string{"customer", "rental", "payment", "id_check", "applicant", "applicant_document", "store"} {
		rows, err := r.db.Pool.Query(context.Background(), `SELECT to_jsonb(t)::text FROM rental.`+table+` t ORDER BY 1`)
		require.NoError(t, err)
		for rows.Next() {
			var s string
			require.NoError(t, rows.Scan(&s))
			out[table] = append(out[table], s)
		}
		require.NoError(t, rows.Err())
	}
	return out
}

func (r *rental) hmacOf(table, key string) string {
	m := hmac.New(sha256.New, []byte(r.keySecret))
	m.Write([]byte(table + "/" + key))
	return hex.EncodeToString(m.Sum(nil))
}

// idCheck is a customer's identity check as seeded.
type idCheck struct {
	SSN, Licence string
	Born         *string
}

func (r *rental) idChecks(t *testing.T) map[string]idCheck {
	t.Helper()
	rows, err := r.db.Pool.Query(context.Background(), `SELECT customer_id, ssn, licence_no, date_of_birth::text FROM rental.id_check`)
	require.NoError(t, err)
	out := map[string]idCheck{}
	for rows.Next() {
		var id int
		var c idCheck
		require.NoError(t, rows.Scan(&id, &c.SSN, &c.Licence, &c.Born))
		out[fmt.Sprint(id)] = c
	}
	require.NoError(t, rows.Err())
	return out
}

// entry is a line of archive locate --all --json.
type rentalEntry struct {
	SubjectHMAC string  `json:"subject_hmac"`
	State       string  `json:"state"`
	Part        string  `json:"part"`
	Policy      string  `json:"policy"`
	WrappedKey  *[]byte `json:"wrapped_key"`
	raw         []byte
}

func (r *rental) entries(t *testing.T) []rentalEntry {
	t.Helper()
	res := r.run(t, "archive", "locate", "--all", "--json")
	requireOK(t, res)
	var out []rentalEntry
	for _, l := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		if l == "" {
			continue
		}
		var e rentalEntry
		require.NoError(t, json.Unmarshal([]byte(l), &e), "%s", l)
		e.raw = []byte(l)
		out = append(out, e)
	}
	return out
}

// TestRentalSchema archives, erases and minimises exactly what is due on
// the rental schema, opens every archived subject and minimised record with
// the stock age CLI, and checks that a second sweep changes nothing.
func TestRentalSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRentalEnv(t)

	gone := r.ints(t, `SELECT customer_id FROM rental.customer WHERE NOT active ORDER BY 1`)
	active := r.ints(t, `SELECT customer_id FROM rental.customer WHERE active ORDER BY 1`)
	stale := r.ints(t, `SELECT applicant_id FROM rental.applicant WHERE NOT approved AND applied_at < now() - interval '90 days' ORDER BY 1`)
	approved := r.ints(t, `SELECT applicant_id FROM rental.applicant WHERE approved ORDER BY 1`)
	require.Len(t, gone, 10)
	require.Len(t, active, 20)
	require.NotEmpty(t, stale)
	require.NotEmpty(t, approved)
	require.Positive(t, r.count(t, `SELECT count(*) FROM rental.payment p JOIN rental.customer c USING (customer_id) WHERE NOT c.active AND p.rental_id IS NOT NULL`),
		"gone customers have payments that reference their rentals")
	checks := r.idChecks(t)
	before := r.dump(t)

	// A hold on an active customer: its identity check is not minimised.
	held := active[0]
	res := r.run(t, "hold", "place", "--kind", "customer", "--matter", "M-1", "--subject", held, "--reason", "dispute", "--by", "legal")
	requireOK(t, res)
	res = r.run(t, "hold", "place", "--kind", "nope", "--matter", "M-1", "--subject", held, "--reason", "r", "--by", "legal")
	requireOneLineError(t, res, 2, "--kind", `"nope"`, "customer, applicant")

	// The dry run counts each policy, with the rows a minimise would change.
	res = r.run(t, "sweep", "--dry-run")
	requireOK(t, res)
	t.Logf("$ lethe sweep --dry-run\n%s", res.stdout)
	require.Equal(t, map[string]int{"gone-customers": len(gone), "id-after-check": len(gone) + len(active), "stale-applicants": len(stale),
		"total": 2*len(gone) + len(active) + len(stale)}, dryRunCounts(t, res))
	require.Regexp(t, `(?m)^\s*id-after-check\s+customer\s+minimize\s+30d\s+30\s+30\s+1\s+0\s*$`, res.stdout)
	require.Equal(t, before, r.dump(t), "the dry run changed the hot tables")

	// The sweep.
	res = r.run(t, "sweep", "--wait")
	requireOK(t, res)
	t.Logf("$ lethe sweep --wait\n%s", res.stdout)
	sum := sweepSummary(t, res)
	require.Equal(t, [4]int{len(gone), len(gone), 0, 0}, sum["gone-customers"])
	require.Equal(t, [4]int{len(stale), len(stale), 0, 0}, sum["stale-applicants"])
	// The held customer is not claimed. A gone customer whose archive
	// commits while the minimise policy claims may be claimed by both, and
	// is then skipped by the minimise batch, which finds it gone.
	mini := sum["id-after-check"]
	require.Equal(t, len(active)-1, mini[0]-mini[3], "minimised: %v", mini)
	require.Zero(t, mini[1]+mini[2])
	require.Contains(t, res.stdout, fmt.Sprintf("%d subjects minimised in %d rows", len(active)-1, len(active)-1))
	require.Zero(t, r.count(t, `SELECT count(*) FROM lethe.batch WHERE last_error IS NOT NULL`), "a batch failed an attempt\n%s", res)
	require.Zero(t, r.count(t, `SELECT count(*) FROM lethe.segment WHERE state <> 'committed'`), "a segment never committed")

	// Exactly what was due left the hot tables, in an order that satisfies
	// every foreign key; nothing else did.
	after := r.dump(t)
	require.Equal(t, len(active), r.count(t, `SELECT count(*) FROM rental.customer`))
	require.Zero(t, r.count(t, `SELECT count(*) FROM rental.customer WHERE NOT active`))
	for _, table := range []string{"rental", "payment", "id_check"} {
		require.Zero(t, r.count(t, `SELECT count(*) FROM rental.`+table+` t WHERE NOT EXISTS (SELECT FROM rental.customer c WHERE c.customer_id = t.customer_id)`))
	}
	require.Zero(t, r.count(t, `SELECT count(*) FROM rental.applicant WHERE applicant_id = ANY($1::int[])`, stale))
	require.Zero(t, r.count(t, `SELECT count(*) FROM rental.applicant_document WHERE applicant_id = ANY($1::int[])`, stale))
	require.Equal(t, len(before["applicant"])-len(stale), len(after["applicant"]))
	require.Equal(t, before["store"], after["store"])
	for _, table := range []string{"rental", "payment"} {
		want := slices.DeleteFunc(slices.Clone(before[table]), func(row string) bool {
			var v struct {
				Customer int `json:"customer_id"`
			}
			require.NoError(t, json.Unmarshal([]byte(row), &v))
			return slices.Contains(gone, fmt.Sprint(v.Customer))
		})
		require.Equal(t, want, after[table], "the active customers' %s rows are untouched", table)
	}

	// The identity checks of active customers are minimised, the held
	// one's are not.
	now := r.idChecks(t)
	require.Len(t, now, len(active))
	for _, id := range active {
		was, is := checks[id], now[id]
		if id == held {
			require.Equal(t, was, is, "the held customer's identity check was minimised")
			continue
		}
		m := hmac.New(sha256.New, []byte(r.keySecret))
		m.Write([]byte(was.SSN))
		require.Equal(t, "hmac-sha256:"+hex.EncodeToString(m.Sum(nil)), is.SSN)
		require.Equal(t, strings.Repeat("*", len(was.Licence)-4)+was.Licence[len(was.Licence)-4:], is.Licence)
		require.Nil(t, is.Born)
	}

	// Every archived subject and every minimised record opens with the
	// stock age CLI, and holds what the hot tables held.
	entries := r.entries(t)
	require.Len(t, entries, len(gone)+len(stale)+len(active)-1)
	byHMAC := map[string]string{}
	for _, id := range gone {
		byHMAC[r.hmacOf("rental.customer", id)] = "customer " + id
	}
	for _, id := range active {
		byHMAC[r.hmacOf("rental.customer", id)] = "active " + id
	}
	for _, id := range stale {
		byHMAC[r.hmacOf("rental.applicant", id)] = "applicant " + id
	}
	seen := map[string]int{}
	for _, e := range entries {
		who, ok := byHMAC[e.SubjectHMAC]
		require.True(t, ok, "an entry of no due subject: %s", e.raw)
		seen[who]++
		require.Equal(t, "archived", e.State)
		kind, id, _ := strings.Cut(who, " ")
		bundle := openEntryWithAge(t, r.bucket, r.idPath, e.raw)
		var b struct {
			Kind    string                       `json:"kind"`
			Subject string                       `json:"subject"`
			Policy  string                       `json:"policy"`
			Tables  map[string][]json.RawMessage `json:"rows"`
		}
		require.NoError(t, json.Unmarshal(bundle, &b), "%s", bundle)
		require.Equal(t, id, b.Subject)
		require.Equal(t, e.Policy, b.Policy)
		switch kind {
		case "customer":
			require.Equal(t, "subject", e.Part)
			require.Empty(t, b.Kind)
			require.Len(t, b.Tables["rental.customer"], 1)
			require.Len(t, b.Tables["rental.id_check"], 1)
			require.Contains(t, string(b.Tables["rental.id_check"][0]), checks[id].SSN, "archived before any minimising")
			require.Equal(t, countRows(before["payment"], id), len(b.Tables["rental.payment"]))
			require.Equal(t, countRows(before["rental"], id), len(b.Tables["rental.rental"]))
		case "applicant":
			require.Equal(t, "subject", e.Part)
			require.Len(t, b.Tables["rental.applicant"], 1)
			require.NotEmpty(t, b.Tables["rental.applicant_document"])
		case "active":
			require.Equal(t, "minimized", e.Part)
			require.Equal(t, "minimized", b.Kind)
			require.Equal(t, "id-after-check", b.Policy)
			require.Len(t, b.Tables, 1)
			require.Len(t, b.Tables["rental.id_check"], 1)
			var row map[string]any
			require.NoError(t, json.Unmarshal(b.Tables["rental.id_check"][0], &row))
			require.Equal(t, checks[id].SSN, row["ssn"])
			require.Equal(t, checks[id].Licence, row["licence_no"])
			require.Equal(t, *checks[id].Born, row["date_of_birth"])
			require.Contains(t, row, "check_id", "the row's key columns come with the values")
		}
	}
	for who, n := range seen {
		require.Equal(t, 1, n, "%s has %d entries", who, n)
	}

	// A second sweep changes nothing.
	state := r.dump(t)
	res = r.run(t, "sweep", "--wait")
	requireOK(t, res)
	require.Contains(t, res.stdout, "nothing was due")
	require.Equal(t, state, r.dump(t))
	require.Len(t, r.entries(t), len(entries))

	res = r.run(t, "status")
	requireOK(t, res)
	t.Logf("$ lethe status\n%s", res.stdout)
	require.Regexp(t, `(?m)^\s+id-after-check\s+minimized\s+19\s`, res.stdout)
	require.Regexp(t, `(?m)^\s+policy\s+kind\s+then\s+retain\s+due\s+rows to minimise\s+held\s+protected$`, res.stdout)

	// Deletion requests by kind: an approved applicant, and an active
	// customer (forced past protect), whose minimised record's key goes
	// with it.
	w := startWorker(t, r.cfgPath)
	res = r.run(t, "request", "delete", "--kind", "nope", "--subject", approved[0], "--ticket", "T-0", "--by", "privacy")
	requireOneLineError(t, res, 2, "--kind", `"nope"`)
	res = r.run(t, "request", "delete", "--kind", "applicant", "--subject", approved[0], "--ticket", "T-1", "--by", "privacy", "--wait", "--json")
	requireOK(t, res)
	require.Contains(t, res.stdout, `"state":"completed"`, "%s\n%s", res, w.output())
	require.Contains(t, res.stdout, `"kind":"applicant"`)
	require.Zero(t, r.count(t, `SELECT count(*) FROM rental.applicant WHERE applicant_id = $1`, approved[0]))
	require.Zero(t, r.count(t, `SELECT count(*) FROM rental.applicant_document WHERE applicant_id = $1`, approved[0]))
	// The same key as a customer is another subject: refused (protect).
	customer := active[1]
	res = r.run(t, "request", "delete", "--kind", "customer", "--subject", customer, "--ticket", "T-2", "--by", "privacy", "--force", "--wait", "--json")
	requireOK(t, res)
	require.Contains(t, res.stdout, `"state":"completed"`, "%s\n%s", res, w.output())
	require.Zero(t, r.count(t, `SELECT count(*) FROM rental.customer WHERE customer_id = $1`, customer))
	require.Zero(t, r.count(t, `SELECT count(*) FROM rental.id_check WHERE customer_id = $1`, customer))
	for _, e := range r.entries(t) {
		if e.SubjectHMAC == r.hmacOf("rental.customer", customer) {
			require.Equal(t, "erased", e.State)
			require.Nil(t, e.WrappedKey, "the minimised record's key is destroyed with the subject")
		}
	}
	_ = ctx
	res = r.run(t, "audit", "verify")
	requireOK(t, res)
}

// countRows counts the rows of a dumped table that belong to customer id.
func countRows(rows []string, id string) int {
	n := 0
	for _, row := range rows {
		var v struct {
			Customer int `json:"customer_id"`
		}
		if json.Unmarshal([]byte(row), &v) == nil && fmt.Sprint(v.Customer) == id {
			n++
		}
	}
	return n
}

// TestRentalConfigErrors checks that each bad kind or minimise setting
// stops lethe at start: exit 2, one line naming the key, nothing changed.
func TestRentalConfigErrors(t *testing.T) {
	t.Parallel()
	r := newRentalEnv(t)
	before := r.dump(t)
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"column missing", "{ssn: hash, licence_no:", "{ssn: hash, passport: null, licence_no:",
			[]string{"policies[1].columns.passport", "rental.id_check"}},
		{"hash of a date", "date_of_birth: null}", "date_of_birth: hash}",
			[]string{"policies[1].columns.date_of_birth", "text"}},
		{"null of a NOT NULL column", "    table: rental.id_check\n    clock: checked_at\n    retain: 30d\n    columns: {ssn: hash, licence_no: \"keep_last:4\", date_of_birth: null}\n",
			"    table: rental.rental\n    clock: rental_date\n    retain: 30d\n    columns: {inventory_id: null}\n", []string{"policies[1].columns.inventory_id", "null"}},
		{"no columns", "    columns: {ssn: hash, licence_no: \"keep_last:4\", date_of_birth: null}\n", "",
			[]string{"policies[1].columns", "then: minimize"}},
		{"keep_last zero", `"keep_last:4"`, `"keep_last:0"`, []string{"policies[1].columns.licence_no", "keep_last"}},
		{"keep_last not a number", `"keep_last:4"`, `"keep_last:four"`, []string{"policies[1].columns.licence_no", "keep_last"}},
		{"same kind twice", "  - name: applicant\n", "  - name: customer\n", []string{"subjects[1].name", `"customer"`}},
		{"unknown kind", "    subject: applicant\n", "    subject: applicants\n", []string{"policies[2].subject", `"applicants"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, 1, strings.Count(r.yaml, tc.old), "%q", tc.old)
			s := &shop{dir: t.TempDir()}
			cfg := s.writeConfig(t, "lethe.yaml", strings.Replace(r.yaml, tc.old, tc.new, 1))
			for _, args := range [][]string{{"sweep", "--dry-run"}, {"sweep", "--wait"}} {
				res := lethe(t, append(args, "--config", cfg)...)
				requireConfigError(t, res, tc.want...)
			}
		})
	}
	t.Cleanup(func() { require.Equal(t, before, r.dump(t), "a refused config changed the hot tables") })
}

// requireConfigError requires exit 2 and a config error that names each of
// want: one line, or, for several problems, their count and then one per
// line.
func requireConfigError(t *testing.T, r result, want ...string) {
	t.Helper()
	require.Equal(t, 2, r.code, "%s", r)
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) > 1 {
		require.Regexp(t, fmt.Sprintf(`^lethe: %d problems:$`, len(lines)-1), lines[0], "%s", r)
		for _, l := range lines[1:] {
			require.True(t, strings.HasPrefix(l, "  config: "), "line %q\n%s", l, r)
		}
	}
	for _, w := range want {
		require.Contains(t, r.stderr, w, "%s", r)
	}
}

// TestSchemaGuideConfig checks that docs/SCHEMA.md's worked example is the
// config lethe demo config --rental prints, which TestRentalSchema runs.
func TestSchemaGuideConfig(t *testing.T) {
	t.Parallel()
	guide, err := os.ReadFile(filepath.Join("..", "..", "docs", "SCHEMA.md"))
	require.NoError(t, err)
	m := regexp.MustCompile("(?s)<!-- rental-config:[^>]*-->\n```yaml\n(.*?)```").FindSubmatch(guide)
	require.NotNil(t, m, "docs/SCHEMA.md has no rental-config block")
	r := lethe(t, "demo", "config", "--rental")
	requireOK(t, r)
	require.Equal(t, r.stdout, string(m[1]))
}

package demo

import (
	"context"
	"crypto/rand"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// testNow is the fixed instant the tests seed relative to.
var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

type testBundle struct {
	pool   *pgxpool.Pool
	schema string
}

// setup connects to TEST_DATABASE_URL and returns a fresh schema name, dropped
// when the test ends.
func setup(t *testing.T) *testBundle {
	t.Helper()
	url := os.Getenv("TEST_DATABASE_URL")
	if url == "" {
		url = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return &testBundle{pool: pool, schema: newSchema(t, pool)}
}

// newSchema returns a unique schema name and drops that schema at cleanup.
func newSchema(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	schema := "demo_test_" + strings.ToLower(rand.Text()[:10])
	t.Cleanup(func() {
		_, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		require.NoError(t, err)
	})
	return schema
}

func (b *testBundle) seed(t *testing.T, opts Options) *Stats {
	t.Helper()
	if opts.Schema == "" {
		opts.Schema = b.schema
	}
	if opts.Now.IsZero() {
		opts.Now = testNow
	}
	stats, err := Seed(t.Context(), b.pool, opts)
	require.NoError(t, err)
	return stats
}

// qualified returns schema.table, quoted.
func qualified(schema, table string) string {
	return pgx.Identifier{schema, table}.Sanitize()
}

func (b *testBundle) count(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, b.pool.QueryRow(t.Context(), strings.ReplaceAll(sql, "$schema", pgx.Identifier{b.schema}.Sanitize()), args...).Scan(&n))
	return n
}

// digests returns, per table, the MD5 of all its rows as JSON in id order.
func digests(t *testing.T, pool *pgxpool.Pool, schema string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	for _, table := range Tables() {
		var sum string
		err := pool.QueryRow(t.Context(),
			"SELECT md5(coalesce(string_agg(to_jsonb(t)::text, ',' ORDER BY id), '')) FROM "+qualified(schema, table)+" t",
		).Scan(&sum)
		require.NoError(t, err)
		out[table] = sum
	}
	return out
}

func TestSeedIsDeterministic(t *testing.T) {
	t.Parallel()
	b := setup(t)
	opts := Options{Subjects: 11000, Seed: 7, Now: testNow} // three chunks, copied concurrently
	b.seed(t, opts)
	want := digests(t, b.pool, b.schema)

	t.Run("SameOptions", func(t *testing.T) {
		t.Parallel()
		schema := newSchema(t, b.pool)
		opts := opts
		opts.Schema = schema
		b.seed(t, opts)
		require.Equal(t, want, digests(t, b.pool, schema))
	})

	t.Run("InTwoCalls", func(t *testing.T) {
		t.Parallel()
		schema := newSchema(t, b.pool)
		b.seed(t, Options{Schema: schema, Subjects: 4000, Seed: 7, Now: testNow, FirstID: 1})
		b.seed(t, Options{Schema: schema, Subjects: 7000, Seed: 7, Now: testNow, FirstID: 4001})
		require.Equal(t, want, digests(t, b.pool, schema))
	})

	t.Run("OtherSeed", func(t *testing.T) {
		t.Parallel()
		schema := newSchema(t, b.pool)
		b.seed(t, Options{Schema: schema, Subjects: 1000, Seed: 8, Now: testNow})
		got := digests(t, b.pool, schema)
		for table, sum := range got {
			require.NotEqual(t, want[table], sum, table)
		}
	})
}

func TestSeedCountsAndMix(t *testing.T) {
	t.Parallel()
	b := setup(t)

	var calls [][2]int
	const subjects = 25000 // whole chunks, so Progress sees the same totals whatever order they finish in
	stats := b.seed(t, Options{Subjects: subjects, Progress: func(done, total int) {
		calls = append(calls, [2]int{done, total})
	}})

	require.Equal(t, subjects, stats.Subjects)
	require.Equal(t, subjects, stats.Active+stats.Former+stats.Prospects)
	require.InDelta(t, 0.60, float64(stats.Active)/subjects, 0.02)
	require.InDelta(t, 0.25, float64(stats.Former)/subjects, 0.02)
	require.InDelta(t, 0.15, float64(stats.Prospects)/subjects, 0.02)

	require.Equal(t, int64(stats.Active), b.count(t, "SELECT count(*) FROM $schema.subscribers WHERE status = 'active'"))
	require.Equal(t, int64(stats.Former), b.count(t, "SELECT count(*) FROM $schema.subscribers WHERE status = 'former'"))
	require.Equal(t, int64(stats.Prospects), b.count(t, "SELECT count(*) FROM $schema.subscribers WHERE status = 'prospect'"))
	var total int64
	for _, table := range Tables() {
		require.Equal(t, stats.Rows[table], b.count(t, "SELECT count(*) FROM $schema."+pgx.Identifier{table}.Sanitize()), table)
		total += stats.Rows[table]
	}
	perSubject := float64(total) / subjects
	t.Logf("rows per subject: %.2f (%v)", perSubject, stats.Rows)
	require.InDelta(t, 6.0, perSubject, 0.5)

	// Customers have one or two accounts with one or two lines each; prospects have none.
	require.Zero(t, b.count(t, `SELECT count(*) FROM $schema.accounts a JOIN $schema.subscribers s ON s.id = a.subscriber_id WHERE s.status = 'prospect'`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM $schema.subscribers s WHERE s.status <> 'prospect'
		AND (SELECT count(*) FROM $schema.accounts a WHERE a.subscriber_id = s.id) NOT BETWEEN 1 AND 2`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM $schema.accounts a
		WHERE (SELECT count(*) FROM $schema.lines l WHERE l.account_id = a.id) NOT BETWEEN 1 AND 2`))
	// Every prospect has applied: a credit check near the time it was created.
	require.Zero(t, b.count(t, `SELECT count(*) FROM $schema.subscribers s WHERE s.status = 'prospect'
		AND NOT EXISTS (SELECT FROM $schema.credit_checks c WHERE c.subscriber_id = s.id
			AND c.checked_at BETWEEN s.created_at AND s.created_at + interval '10 minutes')`))

	require.Equal(t, [][2]int{{10000, subjects}, {20000, subjects}, {subjects, subjects}}, calls)
}

var (
	ssnPattern    = regexp.MustCompile(`^9\d\d-\d\d-\d{4}$`)
	emailPattern  = regexp.MustCompile(`^[a-z-]+\.[a-z-]+\d+@example\.(com|net|org)$`)
	phonePattern  = regexp.MustCompile(`^\+1-\d{3}-555-01\d\d$`)
	msisdnPattern = regexp.MustCompile(`^1\d{3}55501\d\d$`)
	imeiPattern   = regexp.MustCompile(`^\d{15}$`)
	imsiPattern   = regexp.MustCompile(`^310\d{12}$`)
	docPattern    = regexp.MustCompile(`^DEMO-(DL|ID|PP)-\d{8,9}$`)
)

// luhnValid reports whether digits, check digit included, pass the Luhn check.
func luhnValid(digits string) bool {
	sum := 0
	for i := range len(digits) {
		d := int(digits[len(digits)-1-i] - '0')
		if i%2 == 1 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return sum%10 == 0
}

func TestLuhn(t *testing.T) {
	t.Parallel()
	require.True(t, luhnValid("490154203237518")) // the IMEI example used across the web
	require.Equal(t, byte('8'), luhnDigit([]byte("49015420323751")))
	require.False(t, luhnValid("490154203237519"))
}

func TestSeedValuesAreSynthetic(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.seed(t, Options{Subjects: 3000})

	column := func(table, col string) []string {
		rows, err := b.pool.Query(t.Context(), "SELECT "+pgx.Identifier{col}.Sanitize()+" FROM "+qualified(b.schema, table))
		require.NoError(t, err)
		values, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.NotEmpty(t, values)
		return values
	}
	check := func(table, col string, ok func(string) bool) {
		for _, v := range column(table, col) {
			require.True(t, ok(v), "%s.%s: %q", table, col, v)
		}
	}
	check("subscribers", "ssn", ssnPattern.MatchString)
	check("subscribers", "email", emailPattern.MatchString)
	check("subscribers", "phone", phonePattern.MatchString)
	check("lines", "msisdn", msisdnPattern.MatchString)
	check("lines", "imei", func(v string) bool { return imeiPattern.MatchString(v) && luhnValid(v) })
	check("lines", "imsi", imsiPattern.MatchString)
	check("identity_documents", "number", docPattern.MatchString)
	check("addresses", "postal_code", regexp.MustCompile(`^000\d\d$`).MatchString)
	check("addresses", "line1", func(v string) bool {
		return slices.ContainsFunc(streetStems, func(s string) bool { return strings.Contains(v, " "+s+" ") })
	})
	check("subscribers", "first_name", func(v string) bool { return slices.Contains(givenNames, v) })
	check("subscribers", "last_name", func(v string) bool { return slices.Contains(familyNames, v) })

	// Dates are consistent with each other and with Now.
	require.Zero(t, b.count(t, `SELECT count(*) FROM $schema.subscribers
		WHERE created_at > $1 OR closed_at > $1 OR closed_at < created_at + interval '60 days'
		   OR date_of_birth > (created_at - interval '18 years')::date`, testNow))
	require.Zero(t, b.count(t, `SELECT count(*) FROM $schema.accounts a JOIN $schema.subscribers s ON s.id = a.subscriber_id
		WHERE a.opened_at < s.created_at OR a.opened_at > $1 OR a.closed_at < a.opened_at OR a.closed_at > $1
		   OR (s.status = 'former' AND a.closed_at IS DISTINCT FROM s.closed_at)
		   OR (s.status = 'active' AND a.id % 10 = 0 AND a.closed_at IS NOT NULL)`, testNow))
	require.Zero(t, b.count(t, `SELECT count(*) FROM $schema.lines l JOIN $schema.accounts a ON a.id = l.account_id
		WHERE l.activated_at < a.opened_at OR l.activated_at > coalesce(a.closed_at, $1)
		   OR l.deactivated_at IS DISTINCT FROM a.closed_at`, testNow))
	require.Zero(t, b.count(t, `SELECT count(*) FROM $schema.credit_checks WHERE checked_at > $1
		OR jsonb_typeof(report) <> 'object' OR report->>'synthetic' <> 'true'`, testNow))
}

func TestSeedIDRanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.seed(t, Options{Subjects: 2000, FirstID: 1})
	b.seed(t, Options{Subjects: 1500, FirstID: 1_000_000})

	require.Equal(t, int64(3500), b.count(t, "SELECT count(*) FROM $schema.subscribers WHERE id BETWEEN 1 AND 2000 OR id BETWEEN 1000000 AND 1001499"))
	// Child ids are derived from the subscriber id, so each child's id says whose it is.
	require.Zero(t, b.count(t, "SELECT count(*) FROM $schema.accounts WHERE id / 10 <> subscriber_id"))
	require.Zero(t, b.count(t, "SELECT count(*) FROM $schema.lines WHERE id / 10 <> account_id"))
	for _, table := range []string{"addresses", "identity_documents", "credit_checks"} {
		require.Zero(t, b.count(t, "SELECT count(*) FROM $schema."+table+" WHERE id / 10 <> subscriber_id"), table)
	}

	// An overlapping range is refused, not merged.
	_, err := Seed(t.Context(), b.pool, Options{Schema: b.schema, Subjects: 10, FirstID: 1995, Now: testNow})
	require.ErrorContains(t, err, "error seeding demo data")
	require.ErrorContains(t, err, "subscribers_pkey")
}

func TestSeedDueSubjects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	stats := b.seed(t, Options{Subjects: 8000})

	formerDue := b.count(t, "SELECT count(*) FROM $schema.subscribers WHERE status = 'former' AND closed_at < $1", testNow.Add(-730*day))
	prospectDue := b.count(t, "SELECT count(*) FROM $schema.subscribers WHERE status = 'prospect' AND created_at < $1", testNow.Add(-90*day))
	t.Logf("due: %d of %d former, %d of %d prospects", formerDue, stats.Former, prospectDue, stats.Prospects)
	require.InDelta(t, 2.0/3, float64(formerDue)/float64(stats.Former), 0.05)
	require.InDelta(t, 1-90.0/730, float64(prospectDue)/float64(stats.Prospects), 0.05)
}

func TestCreateSchema(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, CreateSchema(t.Context(), b.pool, b.schema))
	b.seed(t, Options{Subjects: 10})
	require.NoError(t, CreateSchema(t.Context(), b.pool, b.schema), "idempotent")
	require.Equal(t, int64(10), b.count(t, "SELECT count(*) FROM $schema.subscribers"), "data kept")

	// Foreign keys: five, none with an ON DELETE action, each with an index
	// led by its column.
	type fk struct{ Table, Column, Action string }
	rows, err := b.pool.Query(t.Context(), `
		SELECT c.conrelid::regclass::text, a.attname, c.confdeltype::text
		FROM pg_constraint c
		JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
		WHERE c.contype = 'f' AND c.connamespace = $1::regnamespace
		ORDER BY 1`, b.schema)
	require.NoError(t, err)
	fks, err := pgx.CollectRows(rows, pgx.RowToStructByPos[fk])
	require.NoError(t, err)
	require.Len(t, fks, 5)
	for _, f := range fks {
		require.Equal(t, "a", f.Action, "%s.%s has an ON DELETE action", f.Table, f.Column)
	}

	indexed := func(table string, columns ...string) bool {
		var ok bool
		err := b.pool.QueryRow(t.Context(), `
			SELECT EXISTS (
				SELECT FROM pg_index i
				WHERE i.indrelid = $1::regclass
				  AND (SELECT array_agg(a.attname::text ORDER BY k.n)
				       FROM unnest(i.indkey[0:cardinality($2::text[]) - 1]) WITH ORDINALITY k(attnum, n)
				       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) = $2::text[])`,
			table, columns).Scan(&ok)
		require.NoError(t, err)
		return ok
	}
	for _, f := range fks {
		require.True(t, indexed(f.Table, f.Column), "%s.%s is not indexed", f.Table, f.Column)
	}
	subscribers := qualified(b.schema, "subscribers")
	require.True(t, indexed(subscribers, "status", "closed_at"))
	require.True(t, indexed(subscribers, "status", "created_at"))
	require.False(t, indexed(subscribers, "email"), "the index check must be able to fail")
}

func TestConfigMatchesSchema(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, CreateSchema(t.Context(), b.pool, b.schema))

	type relation struct {
		Table   string     `yaml:"table"`
		Key     string     `yaml:"key"`
		Join    string     `yaml:"join"`
		Related []relation `yaml:"related"`
	}
	var cfg struct {
		Subject  relation `yaml:"subject"`
		Policies []struct {
			Name, Where, Clock, Retain, Then string
			ArchiveRetain                    string `yaml:"archive_retain"`
		} `yaml:"policies"`
		Requests struct{ Protect string } `yaml:"requests"`
	}
	dec := yaml.NewDecoder(strings.NewReader(Config(b.schema)))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&cfg))

	hasColumn := func(table, column string) bool {
		var ok bool
		require.NoError(t, b.pool.QueryRow(t.Context(),
			`SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped)`,
			table, column).Scan(&ok))
		return ok
	}
	var seen []string
	var walk func(r relation, parent string)
	walk = func(r relation, parent string) {
		schema, name, ok := strings.Cut(r.Table, ".")
		require.True(t, ok, r.Table)
		require.Equal(t, b.schema, schema)
		seen = append(seen, name)
		if parent != "" {
			child, parentCol, ok := strings.Cut(r.Join, " = ")
			require.True(t, ok, r.Join)
			require.True(t, hasColumn(r.Table, child), r.Join)
			require.True(t, hasColumn(parent, parentCol), r.Join)
		}
		for _, c := range r.Related {
			walk(c, r.Table)
		}
	}
	walk(cfg.Subject, "")
	require.ElementsMatch(t, Tables(), seen)
	require.True(t, hasColumn(cfg.Subject.Table, cfg.Subject.Key))

	require.Len(t, cfg.Policies, 2)
	for _, p := range cfg.Policies {
		require.True(t, hasColumn(cfg.Subject.Table, p.Clock), p.Name)
		// The predicate parses and selects someone once there is data.
		_, err := b.pool.Exec(t.Context(), "SELECT FROM "+qualified(b.schema, "subscribers")+" WHERE "+p.Where)
		require.NoError(t, err, p.Name)
	}
	_, err := b.pool.Exec(t.Context(), "SELECT FROM "+qualified(b.schema, "subscribers")+" WHERE "+cfg.Requests.Protect)
	require.NoError(t, err)

	// A schema name that YAML would misread is quoted.
	var odd struct{ Subject relation }
	require.NoError(t, yaml.Unmarshal([]byte(Config("Demo: #1")), &odd))
	require.Equal(t, `"Demo: #1".subscribers`, odd.Subject.Table)
}

func TestPersonalValues(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.seed(t, Options{Subjects: 500})

	values, err := PersonalValues(t.Context(), b.pool, b.schema, 20)
	require.NoError(t, err)
	require.True(t, slices.IsSorted(values))
	require.Equal(t, len(values), len(slices.Compact(slices.Clone(values))))

	kinds := map[string]*regexp.Regexp{
		"ssn": ssnPattern, "email": emailPattern, "phone": phonePattern, "msisdn": msisdnPattern,
		"imsi": imsiPattern, "document": docPattern,
	}
	for kind, re := range kinds {
		require.True(t, slices.ContainsFunc(values, re.MatchString), "no %s among %q", kind, values)
	}
	// The sample starts with the subjects lethe moves: no value of an active
	// subscriber while there are 20 former ones and prospects to take.
	require.Zero(t, b.count(t, "SELECT count(*) FROM $schema.subscribers WHERE status = 'active' AND ssn = ANY($1)", values))
	require.Equal(t, int64(20), b.count(t, "SELECT count(*) FROM $schema.subscribers WHERE ssn = ANY($1)", values))

	_, err = PersonalValues(t.Context(), b.pool, b.schema, 0)
	require.ErrorContains(t, err, "limit must be positive")
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	valid := Options{}.withDefaults()
	require.NoError(t, valid.validate())
	require.Equal(t, "demo", valid.Schema)
	require.Equal(t, 10000, valid.Subjects)
	require.Equal(t, int64(1), valid.Seed)
	require.Equal(t, int64(1), valid.FirstID)

	for name, opts := range map[string]Options{
		"Subjects": {Subjects: -1},
		"FirstID":  {FirstID: -5},
		"FirstID+": {FirstID: maxSubscriberID},
	} {
		err := opts.withDefaults().validate()
		require.Error(t, err, name)
		require.Contains(t, err.Error(), strings.TrimSuffix(name, "+"))
	}
}

func TestAllDue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	stats := b.seed(t, Options{Subjects: 2000, AllDue: true})
	require.Equal(t, 2000, stats.Former)
	require.Equal(t, int64(2000), b.count(t, `SELECT count(*) FROM $schema.subscribers WHERE status = 'former' AND closed_at < $1`, testNow.Add(-730*24*time.Hour)))
	rows := int64(0)
	for _, n := range stats.Rows {
		rows += n
	}
	require.InDelta(t, 6.0, float64(rows)/2000, 1.0, "about six rows per subject")
}

package main_test

// Exec tests of the lethe binary: TestMain builds it once, every test runs
// it with --config FILE against its own PostgreSQL database and its own
// bucket on a real versitygw, and checks exit codes, output and the state
// of the database and the bucket.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"
)

// letheBin is the binary under test, built once by TestMain.
var letheBin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "lethe-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating a directory for the binary:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "the tests build lethe with the go command, which is not on PATH:", err)
		return 1
	}
	// The binary under test has the crash tests' fault points (build tag
	// lethefault); TestReleaseBinaryHasNoFaultSwitch builds the shipped one.
	letheBin = filepath.Join(dir, "lethe")
	build := exec.Command(goTool, "build", "-buildvcs=auto", "-tags", "lethefault", "-o", letheBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building lethe:", err)
		return 1
	}
	return m.Run()
}

// ageBin is the stock age CLI: $LETHE_AGE, else bin/age of the repository.
func ageBin(t *testing.T) string {
	t.Helper()
	p := os.Getenv("LETHE_AGE")
	if p == "" {
		p = filepath.Join("..", "..", "bin", "age")
	}
	abs, err := filepath.Abs(p)
	require.NoError(t, err)
	_, err = os.Stat(abs)
	require.NoError(t, err, "the age CLI is missing: run make tools (or set LETHE_AGE)")
	return abs
}

// ---------------------------------------------------------------------------
// Running the binary.

// result is what one run of the binary did.
type result struct {
	args           []string
	code           int
	stdout, stderr string
	took           time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("lethe %s: exit %d after %s\n--- stdout\n%s--- stderr\n%s", strings.Join(r.args, " "), r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

// cleanEnv is the test process's environment without anything that could
// give lethe or libpq a config the test did not write.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LETHE_") || strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// lethe runs the binary with args and waits up to two minutes for it.
func lethe(t *testing.T, args ...string) result {
	t.Helper()
	return letheWith(t, 2*time.Minute, nil, args...)
}

// letheWith runs the binary with a deadline and extra environment.
func letheWith(t *testing.T, timeout time.Duration, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, letheBin, args...)
	cmd.Env = cleanEnv(env...)
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := result{args: args, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	if ctx.Err() != nil {
		require.FailNow(t, "lethe did not finish in time", "after %s\n%s", timeout, res)
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	default:
		require.NoError(t, err, "running lethe")
	}
	return res
}

// requireOK fails unless the run exited 0.
func requireOK(t *testing.T, r result) {
	t.Helper()
	require.Equal(t, 0, r.code, "%s", r)
}

// codeFailureOrUsage tells requireOneLineError to accept exit 1 or 2.
const codeFailureOrUsage = -1

// requireOneLineError fails unless the run exited with code and printed
// exactly one line on stderr that starts with "lethe: " and contains every
// one of want. It returns that line.
func requireOneLineError(t *testing.T, r result, code int, want ...string) string {
	t.Helper()
	if code == codeFailureOrUsage {
		require.Contains(t, []int{1, 2}, r.code, "%s", r)
	} else {
		require.Equal(t, code, r.code, "%s", r)
	}
	line := strings.TrimSuffix(r.stderr, "\n")
	require.NotEmpty(t, line, "%s", r)
	require.NotContains(t, line, "\n", "stderr must be a single line\n%s", r)
	require.True(t, strings.HasPrefix(line, "lethe: "), "%s", r)
	for _, w := range want {
		require.Contains(t, line, w, "%s", r)
	}
	return line
}

// ---------------------------------------------------------------------------
// The shop: a customer schema unlike the demo's.

const shopSchema = `
CREATE SCHEMA shop;
CREATE TABLE shop.clients (
	code       text PRIMARY KEY,
	state      text NOT NULL,
	left_at    timestamptz,
	created_at timestamptz NOT NULL,
	profile    jsonb,
	avatar     bytea,
	credit     numeric(14,4),
	ext        uuid
);
CREATE TABLE shop.contracts (
	id          uuid PRIMARY KEY,
	client_code text NOT NULL REFERENCES shop.clients (code),
	total       numeric,
	signed      date
);
CREATE INDEX ON shop.contracts (client_code);
CREATE TABLE shop.devices (
	id          bigint PRIMARY KEY,
	contract_id uuid NOT NULL REFERENCES shop.contracts (id),
	imei        text,
	attrs       jsonb
);
CREATE INDEX ON shop.devices (contract_id);
CREATE TABLE shop.tickets (
	id          serial PRIMARY KEY,
	client_code text NOT NULL REFERENCES shop.clients,
	body        text,
	blob        bytea
);
CREATE INDEX ON shop.tickets (client_code);
`

// shopGraph is the subject graph of the shop, as a config fragment.
const shopGraph = `subject:
  table: shop.clients
  key: code
  related:
    - table: shop.contracts
      join: client_code = code
      related:
        - table: shop.devices
          join: contract_id = id
    - table: shop.tickets
      join: client_code = code
`

// shopPolicies are the shop's retention rules.
const shopPolicies = `policies:
  - name: gone
    where: "state = 'gone'"
    clock: left_at
    retain: 730d
  - name: spam
    where: "state = 'spam'"
    clock: created_at
    retain: 30d
    then: delete
requests:
  protect: "state = 'active'"
`

// shopFragment is the whole shop config but for database and archive. The
// nightly schedule is far away, so that a worker never starts one itself.
const shopFragment = "schedule: \"0 3 1 1 *\"\n" + shopGraph + shopPolicies

// shopTables are the graph's tables as the config writes them: the keys of
// a bundle's rows.
var shopTables = []string{"shop.clients", "shop.contracts", "shop.devices", "shop.tickets"}

// Subject categories.
const (
	catGoneDue    = "gone-due"     // state gone, left more than 730 days ago
	catGoneRecent = "gone-recent"  // state gone, left less than 730 days ago
	catGoneNull   = "gone-noclock" // state gone, left_at NULL: never due
	catSpamDue    = "spam-due"     // state spam, created more than 30 days ago
	catSpamRecent = "spam-recent"  // state spam, created 5 days ago
	catActive     = "active"       // state active, whatever the clocks say
)

type client struct {
	key      string
	category string
	// needles are strings that give the subject away: its key in the forms
	// it would take quoted in logs or JSON, and its personal data.
	needles []string
}

// specialKeys are subject keys that quoting, encoding or trimming would
// break. The second field is a fragment that identifies the key however it
// is quoted.
var specialKeys = []struct{ key, fragment string }{
	{`O'Brien "x" 1`, `O'Brien`},
	{`  spaced key  `, `spaced key`},
	{`Zoë-7`, `Zoë-7`},
	{`semi;colon -- dash /* c */`, `semi;colon`},
	{`emoji 🦊 key`, `🦊`},
	{`日本語キー`, `日本語キー`},
	{`back\slash\n`, `back\`},
	{`x'); DROP TABLE shop.clients; --`, `DROP TABLE shop.clients;`},
}

// shop is a test's database with the shop schema and data, a bucket, an age
// identity and a config for all of them.
type shop struct {
	db        *testenv.DB
	bucket    *testenv.Bucket
	identity  *age.X25519Identity
	keySecret string
	yaml      string
	cfgPath   string
	idPath    string
	clients   []client
	byKey     map[string]client
	dir       string
}

// newShop creates the shop in a database of t's own. batchSize, when not 0,
// replaces the config's archive.batch_size.
func newShop(t *testing.T, batchSize int) *shop {
	t.Helper()
	return newShopOn(t, batchSize, testenv.NewBucket(t))
}

// newShopOn is newShop with the archive in bucket.
func newShopOn(t *testing.T, batchSize int, bucket *testenv.Bucket) *shop {
	t.Helper()
	ctx := context.Background()
	s := &shop{db: testenv.NewDB(t), bucket: bucket, identity: testenv.NewIdentity(t), dir: t.TempDir()}
	_, err := s.db.Pool.Exec(ctx, shopSchema)
	require.NoError(t, err)
	s.clients = seedShop(t, s.db.Pool)
	s.byKey = map[string]client{}
	for _, c := range s.clients {
		s.byKey[c.key] = c
	}
	s.yaml = testenv.ConfigYAML(s.db, s.bucket, s.identity.Recipient().String(), shopFragment)
	if batchSize > 0 {
		require.Contains(t, s.yaml, "batch_size: 50\n")
		s.yaml = strings.Replace(s.yaml, "batch_size: 50\n", "batch_size: "+strconv.Itoa(batchSize)+"\n", 1)
	}
	m := regexp.MustCompile(`(?m)^  key_secret: (\S+)$`).FindStringSubmatch(s.yaml)
	require.NotNil(t, m, "key_secret in\n%s", s.yaml)
	s.keySecret = m[1]
	s.cfgPath = s.writeConfig(t, "lethe.yaml", s.yaml)
	s.idPath = filepath.Join(s.dir, "identity.txt")
	require.NoError(t, os.WriteFile(s.idPath, []byte(s.identity.String()+"\n"), 0o600))
	return s
}

func (s *shop) writeConfig(t *testing.T, name, yaml string) string {
	t.Helper()
	p := filepath.Join(s.dir, name)
	require.NoError(t, os.WriteFile(p, []byte(yaml), 0o600))
	return p
}

// hmacOf is the subject's HMAC as docs/ARCHITECTURE.md defines it:
// hex HMAC-SHA256(key_secret, table "/" key).
func (s *shop) hmacOf(key string) string {
	m := hmac.New(sha256.New, []byte(s.keySecret))
	m.Write([]byte("shop.clients/" + key))
	return hex.EncodeToString(m.Sum(nil))
}

// located is what lethe archive locate --json prints.
type located struct {
	SubjectHMAC string     `json:"subject_hmac"`
	State       string     `json:"state"`
	Policy      string     `json:"policy"`
	ArchivedAt  time.Time  `json:"archived_at"`
	RetainUntil *time.Time `json:"retain_until"`
	Segment     string     `json:"segment"`
	VersionID   string     `json:"version_id"`
	Offset      int64      `json:"offset"`
	Length      int64      `json:"length"`
	SHA256      string     `json:"sha256"`
	WrappedKey  []byte     `json:"wrapped_key"`
}

// locateFields are the fields DESIGN.md gives archive locate --json.
var locateFields = []string{"subject_hmac", "state", "policy", "archived_at", "retain_until", "segment", "version_id",
	"offset", "length", "sha256", "wrapped_key"}

// locate runs lethe archive locate --subject key --json with cfg.
func locate(t *testing.T, cfg, key string) located {
	t.Helper()
	r := lethe(t, "archive", "locate", "--subject", key, "--json", "--config", cfg)
	requireOK(t, r)
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &m), "%s", r)
	for _, f := range locateFields {
		require.Contains(t, m, f, "archive locate --json lacks %s: %s", f, r.stdout)
	}
	var l located
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &l), "%s", r)
	return l
}

// locate is where the shop subject's archived copy lies.
func (s *shop) locate(t *testing.T, key string) located {
	t.Helper()
	return locate(t, s.cfgPath, key)
}

func (s *shop) keys(cats ...string) []string {
	var out []string
	for _, c := range s.clients {
		if slices.Contains(cats, c.category) {
			out = append(out, c.key)
		}
	}
	sort.Strings(out)
	return out
}

// seedShop fills the shop with about 60 clients and their rows, and returns
// them.
func seedShop(t *testing.T, pool *pgxpool.Pool) []client {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 11))
	var now time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT date_trunc('second', now())`).Scan(&now))
	day := 24 * time.Hour
	// Several due subjects share one left_at exactly, so that paging by
	// (clock, key) must break ties on keys that need quoting.
	sharedLeft := now.Add(-800 * day)

	var clients []client
	n := 0
	add := func(key, cat string) {
		n++
		if key == "" {
			key = fmt.Sprintf("shopkey-%03d", n)
		}
		email := fmt.Sprintf("pd-mail-%03d@example.test", n)
		c := client{key: key, category: cat, needles: []string{key, email}}
		if q, _ := json.Marshal(key); string(q[1:len(q)-1]) != key {
			c.needles = append(c.needles, string(q[1:len(q)-1]))
		}
		if q := strconv.Quote(key); q[1:len(q)-1] != key {
			c.needles = append(c.needles, q[1:len(q)-1])
		}
		for _, sk := range specialKeys {
			if sk.key == key {
				c.needles = append(c.needles, sk.fragment)
			}
		}
		clients = append(clients, c)
	}
	// Due former clients, with every special key.
	for _, sk := range specialKeys {
		add(sk.key, catGoneDue)
	}
	for range 16 {
		add("", catGoneDue)
	}
	for range 8 {
		add("", catGoneRecent)
	}
	add("Zoë-8 recent", catGoneRecent)
	for range 2 {
		add("", catGoneNull)
	}
	for range 5 {
		add("", catSpamDue)
	}
	add(`spam "quoted" ü`, catSpamDue)
	for range 3 {
		add("", catSpamRecent)
	}
	for range 14 {
		add("", catActive)
	}

	b := &pgx.Batch{}
	deviceID := int64(9007199254740993) // 2^53 + 1: not a float64
	for i, c := range clients {
		var state string
		var leftAt *time.Time
		created := now.Add(-time.Duration(1000+i) * day)
		switch c.category {
		case catGoneDue:
			state = "gone"
			l := sharedLeft
			switch {
			case i%3 == 1:
				l = now.Add(-time.Duration(731+i) * day).Add(time.Duration(i) * time.Microsecond)
			case i == 2:
				l = now.Add(-731 * day) // one day past the window
			}
			leftAt = &l
		case catGoneRecent:
			state = "gone"
			l := now.Add(-10 * day)
			if i%2 == 0 {
				l = now.Add(-729 * day) // one day short of the window
			}
			leftAt = &l
		case catGoneNull:
			state = "gone"
		case catSpamDue:
			state = "spam"
			created = now.Add(-time.Duration(60+i) * day)
		case catSpamRecent:
			state = "spam"
			created = now.Add(-5 * day)
		case catActive:
			state = "active"
			if i%4 == 0 {
				l := now.Add(-900 * day) // an old clock does not make an active client due
				leftAt = &l
			}
		}
		profile := map[string]any{
			"email":  c.needles[1],
			"name":   fmt.Sprintf("Ñame \"%d\" <tag> & 'q'", i),
			"tags":   []any{"a", 1.5, nil, true, map[string]any{"deep": []any{}}},
			"score":  json.Number(fmt.Sprintf("%d.%03d", i, i*7%1000)),
			"unicod": "ü€𝄞\u2028",
		}
		var avatar []byte
		if i%5 != 0 {
			avatar = make([]byte, rng.IntN(64))
			for j := range avatar {
				avatar[j] = byte(rng.IntN(256))
			}
		}
		var credit any
		switch i % 4 {
		case 0:
			credit = nil
		case 1:
			credit = "-1234567890.1234"
		case 2:
			credit = "0.0001"
		default:
			credit = fmt.Sprintf("%d.5", i)
		}
		b.Queue(`INSERT INTO shop.clients (code, state, left_at, created_at, profile, avatar, credit, ext)
			VALUES ($1, $2, $3, $4, $5, $6, $7::numeric, gen_random_uuid())`, c.key, state, leftAt, created, profile, avatar, credit)

		// The first due client has no rows anywhere else; the second has
		// contracts without devices.
		contracts := rng.IntN(4)
		tickets := rng.IntN(3)
		if i == 0 {
			contracts, tickets = 0, 0
		} else if contracts == 0 && i%2 == 0 {
			contracts = 1
		}
		for k := range contracts {
			var id [16]byte
			for j := range id {
				id[j] = byte(rng.IntN(256))
			}
			id[6] = id[6]&0x0f | 0x40
			id[8] = id[8]&0x3f | 0x80
			b.Queue(`INSERT INTO shop.contracts (id, client_code, total, signed) VALUES ($1, $2, $3::numeric, $4)`,
				id, c.key, fmt.Sprintf("123456789012345678901234567890.%09d", i*10+k), created.AddDate(0, 0, k))
			devices := rng.IntN(3)
			if i == 1 {
				devices = 0
			}
			for d := range devices {
				deviceID++
				attrs := fmt.Sprintf(`{"f": 1.10, "big": 12345678901234567890123, "n": {"a": [1, "two", null, true]}, "s": "q\" b\\ é %d", "d": %d}`, i, d)
				b.Queue(`INSERT INTO shop.devices (id, contract_id, imei, attrs) VALUES ($1, $2, $3, $4::jsonb)`,
					deviceID, id, fmt.Sprintf("35%013d", deviceID%1e13), attrs)
			}
		}
		for k := range tickets {
			var blob []byte
			if k == 0 {
				blob = []byte{0, 1, 2, 0xff, '\\', '"'}
			}
			b.Queue(`INSERT INTO shop.tickets (client_code, body, blob) VALUES ($1, $2, $3)`,
				c.key, fmt.Sprintf("line one\nline \"two\"\t'%d' ✓ \\", k), blob)
		}
	}
	require.NoError(t, pool.SendBatch(ctx, b).Close())
	return clients
}

// ---------------------------------------------------------------------------
// Dumps: every row of the shop, as to_jsonb gives it, by table and subject.

// shopDump is table -> subject key -> the subject's rows (to_jsonb text,
// sorted). Rows that belong to no subject are under "".
type shopDump map[string]map[string][]string

var dumpQueries = map[string]string{
	"shop.clients":   `SELECT c.code, to_jsonb(c)::text FROM shop.clients c`,
	"shop.contracts": `SELECT k.client_code, to_jsonb(k)::text FROM shop.contracts k`,
	"shop.devices":   `SELECT coalesce(k.client_code, ''), to_jsonb(d)::text FROM shop.devices d LEFT JOIN shop.contracts k ON k.id = d.contract_id`,
	"shop.tickets":   `SELECT t.client_code, to_jsonb(t)::text FROM shop.tickets t`,
}

func dumpShop(t *testing.T, pool *pgxpool.Pool) shopDump {
	t.Helper()
	ctx := context.Background()
	out := shopDump{}
	for table, q := range dumpQueries {
		rows, err := pool.Query(ctx, q)
		require.NoError(t, err)
		m := map[string][]string{}
		for rows.Next() {
			var key, row string
			require.NoError(t, rows.Scan(&key, &row))
			m[key] = append(m[key], row)
		}
		require.NoError(t, rows.Err())
		for k := range m {
			sort.Strings(m[k])
		}
		out[table] = m
	}
	return out
}

// without returns d without the rows of the given subjects.
func (d shopDump) without(keys []string) shopDump {
	out := shopDump{}
	for table, m := range d {
		out[table] = map[string][]string{}
		for k, rows := range m {
			if !slices.Contains(keys, k) {
				out[table][k] = rows
			}
		}
	}
	return out
}

// count is how many rows subject key has in table.
func (d shopDump) count(table, key string) int { return len(d[table][key]) }

// letheState is what lethe keeps about its work, for "nothing changed"
// checks.
func letheState(t *testing.T, pool *pgxpool.Pool) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, table := range []string{"run", "batch", "work_item", "manifest", "audit_log", "river_job"} {
		var n int64
		require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM lethe."+table).Scan(&n))
		out[table] = n
	}
	return out
}

// canonicalRows parses JSON rows and returns them in a canonical form
// (object keys sorted, numbers as written), sorted, so that two lists of the
// same rows compare equal whatever their order.
func canonicalRows(t *testing.T, rows []string) []string {
	t.Helper()
	out := make([]string, 0, len(rows))
	for _, r := range rows {
		dec := json.NewDecoder(strings.NewReader(r))
		dec.UseNumber()
		var v any
		require.NoError(t, dec.Decode(&v), "row %s", r)
		b, err := json.Marshal(v)
		require.NoError(t, err)
		out = append(out, string(b))
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------
// The bucket, as its root account sees it.

type objectVersion struct {
	key, versionID string
	deleteMarker   bool
}

// listVersions lists the archive's objects: every version and delete marker
// but the audit anchors under v1/ledger/ and the empty objects a worker
// puts under v1/probe/ at start to check Object Lock.
func listVersions(t *testing.T, b *testenv.Bucket) []objectVersion {
	t.Helper()
	return slices.DeleteFunc(listBucket(t, b), func(v objectVersion) bool {
		return strings.HasPrefix(v.key, "v1/probe/") || strings.HasPrefix(v.key, "v1/ledger/")
	})
}

// listBucket lists every version and delete marker in the bucket.
func listBucket(t *testing.T, b *testenv.Bucket) []objectVersion {
	t.Helper()
	client := b.Server.Client(b.Server.Root)
	in := &s3.ListObjectVersionsInput{Bucket: aws.String(b.Name)}
	var out []objectVersion
	for {
		res, err := client.ListObjectVersions(context.Background(), in)
		require.NoError(t, err)
		for _, v := range res.Versions {
			out = append(out, objectVersion{key: aws.ToString(v.Key), versionID: aws.ToString(v.VersionId)})
		}
		for _, m := range res.DeleteMarkers {
			out = append(out, objectVersion{key: aws.ToString(m.Key), versionID: aws.ToString(m.VersionId), deleteMarker: true})
		}
		if !aws.ToBool(res.IsTruncated) {
			break
		}
		in.KeyMarker, in.VersionIdMarker = res.NextKeyMarker, res.NextVersionIdMarker
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].key != out[j].key {
			return out[i].key < out[j].key
		}
		return out[i].versionID < out[j].versionID
	})
	return out
}

// freePort returns a loopback port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

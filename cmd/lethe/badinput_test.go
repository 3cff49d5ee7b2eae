package main_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"
)

// badInput is a shop that every subtest of a bad-input test shares: each
// subtest runs lethe in a way that must fail and change nothing.
type badInput struct {
	*shop
	before shopDump
	state  map[string]int64
}

func newBadInput(t *testing.T) *badInput {
	s := newShop(t, 0)
	return &badInput{shop: s, before: dumpShop(t, s.db.Pool), state: letheState(t, s.db.Pool)}
}

// requireUnchanged fails if the shop, lethe's tables or the bucket changed.
func (b *badInput) requireUnchanged(t *testing.T) {
	t.Helper()
	require.Equal(t, b.before, dumpShop(t, b.db.Pool), "the hot tables changed")
	require.Equal(t, b.state, letheState(t, b.db.Pool), "lethe's tables changed")
	require.Empty(t, listVersions(t, b.bucket), "objects were written")
}

// variant writes the shop's config with old replaced by new, which must be
// in it once.
func (b *badInput) variant(t *testing.T, old, new string) string {
	t.Helper()
	require.Equal(t, 1, strings.Count(b.yaml, old), "%q in the config", old)
	return b.writeConfig(t, fmt.Sprintf("variant-%d.yaml", time.Now().UnixNano()), strings.Replace(b.yaml, old, new, 1))
}

// TestConfigErrors checks that a config the catalog or the validation
// refuses stops every command that would act on it with exit 2 and one
// line naming the key at fault, and that nothing changes.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	b := newBadInput(t)
	secretKey := b.identity.String()

	cases := []struct {
		name     string
		old, new string
		want     []string
		// not are strings the message must not contain.
		not []string
	}{
		{name: "related table does not exist",
			old: "- table: shop.contracts", new: "- table: shop.nonexistent",
			want: []string{"subject.related[0].table", "shop.nonexistent"}},
		{name: "nested table does not exist",
			old: "- table: shop.devices", new: "- table: shop.gadgets",
			want: []string{"subject.related[0].related[0].table", "shop.gadgets"}},
		{name: "subject table does not exist",
			old: "  table: shop.clients\n", new: "  table: shop.customers\n",
			want: []string{"subject.table", "shop.customers"}},
		{name: "schema does not exist",
			old: "- table: shop.tickets", new: "- table: helpdesk.tickets",
			want: []string{"subject.related[1].table", "helpdesk.tickets"}},
		{name: "clock column does not exist",
			old: "clock: left_at", new: "clock: departed_at",
			want: []string{"policies[0].clock", "departed_at"}},
		{name: "clock column is not a time",
			old: "clock: created_at", new: "clock: credit",
			want: []string{"policies[1].clock", "credit"}},
		{name: "key column does not exist",
			old: "key: code", new: "key: kode",
			want: []string{"subject.key", "kode"}},
		{name: "key column is not unique",
			old: "key: code", new: "key: state",
			want: []string{"subject.key", "state"}},
		{name: "join column of the child does not exist",
			old: "join: contract_id = id", new: "join: contract_ref = id",
			want: []string{"subject.related[0].related[0].join", "contract_ref"}},
		{name: "join column of the parent does not exist",
			old: "- table: shop.tickets\n      join: client_code = code", new: "- table: shop.tickets\n      join: client_code = client_ref",
			want: []string{"subject.related[1].join", "client_ref"}},
		{name: "join of incomparable types",
			old: "join: contract_id = id", new: "join: imei = id",
			want: []string{"subject.related[0].related[0].join"}},
		{name: "where does not parse",
			old: `where: "state = 'gone'"`, new: `where: "state = = 'gone'"`,
			want: []string{"policies[0].where"}},
		{name: "where names a column that does not exist",
			old: `where: "state = 'gone'"`, new: `where: "status = 'gone'"`,
			want: []string{"policies[0].where", "status"}},
		{name: "where with a second statement",
			old: `where: "state = 'gone'"`, new: `where: "status = 'x'; DROP TABLE shop.clients"`,
			want: []string{"policies[0].where"}},
		{name: "where that closes lethe's parenthesis",
			old: `where: "state = 'gone'"`, new: `where: "state = 'gone') OR (TRUE"`,
			want: []string{"policies[0].where"}},
		{name: "where with a comment",
			old: `where: "state = 'gone'"`, new: `where: "state = 'gone' OR TRUE --"`,
			want: []string{"policies[0].where"}},
		{name: "protect does not parse",
			old: `protect: "state = 'active'"`, new: `protect: "state = "`,
			want: []string{"requests.protect"}},
		{name: "bad cron schedule",
			old: `schedule: "0 3 1 1 *"`, new: `schedule: "61 3 * * *"`,
			want: []string{"schedule", "61 3 * * *"}},
		{name: "cron schedule with too few fields",
			old: `schedule: "0 3 1 1 *"`, new: `schedule: "every night"`,
			want: []string{"schedule"}},
		{name: "malformed recipient",
			old: b.identity.Recipient().String(), new: "age1notarecipient",
			want: []string{"archive.recipients[0]", "is not an age recipient"}},
		{name: "identity given as recipient",
			old: b.identity.Recipient().String(), new: secretKey,
			want: []string{"archive.recipients[0]", "identity"},
			not:  []string{secretKey, secretKey[len("AGE-SECRET-KEY-1"):]}},
		{name: "missing worker secret",
			old: "    secret_access_key: " + b.bucket.Server.Writer.SecretAccessKey + "\n", new: "",
			want: []string{"archive.credentials.secret_access_key"}},
		{name: "missing worker access key",
			old: "    access_key_id: " + b.bucket.Server.Writer.AccessKeyID + "\n", new: "",
			want: []string{"archive.credentials.access_key_id"}},
		{name: "worker secret from an unset variable",
			old: "    secret_access_key: " + b.bucket.Server.Writer.SecretAccessKey + "\n", new: "    secret_access_key: ${LETHE_TEST_UNSET_SECRET}\n",
			want: []string{"archive.credentials.secret_access_key", "LETHE_TEST_UNSET_SECRET"}},
		{name: "unknown key",
			old: "  prefix: v1/\n", new: "  prefix: v1/\n  prefx: v2/\n",
			want: []string{"prefx"}},
		{name: "bad retain",
			old: "retain: 730d", new: "retain: 730",
			want: []string{"policies[0].retain"}},
		{name: "lock mode that S3 has not",
			old: "  prefix: v1/\n", new: "  prefix: v1/\n  lock_mode: legal-hold\n",
			want: []string{"archive.lock_mode", `"legal-hold" is not governance, compliance or none`}},
		{name: "anchor_every under a minute",
			old: `schedule: "0 3 1 1 *"` + "\n", new: `schedule: "0 3 1 1 *"` + "\naudit:\n  anchor_every: 30s\n",
			want: []string{"audit.anchor_every", "under a minute"}},
		{name: "anchors that would not outlive the archive",
			old: "    retain: 730d\n", new: "    retain: 730d\n    archive_retain: 8y\n",
			want: []string{"audit.anchor_retain", "7y is shorter than policies[0].archive_retain (8y)"}},
		{name: "archive_retain that S3 cannot express",
			old: "    retain: 730d\n", new: "    retain: 730d\n    archive_retain: 150y\n",
			want: []string{"policies[0].archive_retain", "at most 100y"}},
	}
	// The same config, well formed, from LETHE_CONFIG with ${VAR} and
	// *_file secrets, is accepted: the refusals below are the keys' fault.
	t.Run("config from the environment", func(t *testing.T) {
		t.Parallel()
		secretFile := filepath.Join(t.TempDir(), "secret")
		require.NoError(t, os.WriteFile(secretFile, []byte(b.bucket.Server.Writer.SecretAccessKey+"\n"), 0o600))
		yaml := strings.Replace(b.yaml, fmt.Sprintf("url: %q", b.db.URL), "url: ${LETHE_TEST_DB_URL}", 1)
		yaml = strings.Replace(yaml, "secret_access_key: "+b.bucket.Server.Writer.SecretAccessKey, "secret_access_key_file: "+secretFile, 1)
		require.NotEqual(t, b.yaml, yaml)
		cfg := b.writeConfig(t, "from-env.yaml", yaml)
		r := letheWith(t, 30*time.Second, []string{"LETHE_CONFIG=" + cfg, "LETHE_TEST_DB_URL=" + b.db.URL}, "sweep", "--dry-run")
		requireOK(t, r)
		require.Equal(t, map[string]int{"gone": len(b.keys(catGoneDue)), "spam": len(b.keys(catSpamDue)), "total": len(b.keys(catGoneDue, catSpamDue))}, dryRunCounts(t, r))
		b.requireUnchanged(t)
	})

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := b.variant(t, tc.old, tc.new)
			for _, args := range [][]string{
				{"sweep", "--dry-run"},
				{"sweep", "--wait"},
				{"worker"},
				{"status"},
			} {
				r := letheWith(t, 30*time.Second, nil, append(args, "--config", cfg)...)
				line := requireOneLineError(t, r, 2, tc.want...)
				for _, n := range tc.not {
					require.NotContains(t, line, n)
				}
			}
			b.requireUnchanged(t)
			var exists bool
			require.NoError(t, b.db.Pool.QueryRow(context.Background(), `SELECT to_regclass('shop.clients') IS NOT NULL`).Scan(&exists))
			require.True(t, exists, "shop.clients was dropped")
		})
	}
}

// TestUsageErrors checks that bad command lines exit 2 with one line.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "never-read.yaml")
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown command", []string{"frobnicate"}, []string{"frobnicate"}},
		{"unknown flag", []string{"sweep", "--frobnicate", "--config", cfg}, []string{"frobnicate"}},
		{"unknown flag of restore", []string{"restore", "--subjct", "x", "--config", cfg}, []string{"subjct"}},
		{"bad flag value", []string{"status", "--runs", "many", "--config", cfg}, []string{"runs"}},
		{"negative flag value", []string{"status", "--runs", "-1", "--config", cfg}, []string{"--runs"}},
		{"stray argument", []string{"sweep", "now", "--config", cfg}, []string{"now"}},
		{"missing --config", []string{"sweep", "--dry-run"}, []string{"--config"}},
		{"missing --config for migrate", []string{"migrate"}, []string{"--config"}},
		{"config file that does not exist", []string{"sweep", "--config", cfg}, []string{"never-read.yaml"}},
		{"dry-run and wait", []string{"sweep", "--dry-run", "--wait", "--config", cfg}, []string{"--dry-run"}},
		{"negative limit", []string{"sweep", "--wait", "--limit", "-5", "--config", cfg}, []string{"--limit -5"}},
		{"limit with dry-run", []string{"sweep", "--dry-run", "--limit", "5", "--config", cfg}, []string{"--limit"}},
		{"restore without subject", []string{"restore", "--identity", cfg, "--config", cfg}, []string{"--subject"}},
		{"restore with a blank subject", []string{"restore", "--subject", "  ", "--identity", cfg, "--config", cfg}, []string{"--subject"}},
		{"restore without identity", []string{"restore", "--subject", "x", "--config", cfg}, []string{"--identity"}},
		{"bad log level", []string{"sweep", "--dry-run", "--log-level", "loud", "--config", cfg}, []string{"loud"}},
		{"unknown audit subcommand", []string{"audit", "fix", "--config", cfg}, []string{"audit"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := lethe(t, tc.args...)
			requireOneLineError(t, r, 2, tc.want...)
		})
	}
}

// TestDatabaseUnreachable checks that a database lethe cannot reach is a
// run-time failure (exit 1) on one line that says so, without the password
// of the URL.
func TestDatabaseUnreachable(t *testing.T) {
	t.Parallel()
	s := newShop(t, 0)
	const password = "hunter2-Sekr1t"
	closed := fmt.Sprintf("postgres://lethe:%s@127.0.0.1:%d/shop?sslmode=disable&connect_timeout=5", password, freePort(t))
	missing := fmt.Sprintf("postgres://postgres:%s@127.0.0.1:5432/lethe_no_such_db_%d?sslmode=disable", password, time.Now().UnixNano())
	cases := []struct {
		name, url string
		code      int
		want      []string
	}{
		{"nothing listens", closed, 1, []string{"database"}},
		{"database does not exist", missing, 1, []string{"database"}},
		{"malformed url", fmt.Sprintf("postgres://lethe:%s@127.0.0.1:notaport/shop", password), 2, []string{"database.url"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := s.writeConfig(t, fmt.Sprintf("db-%d.yaml", time.Now().UnixNano()),
				strings.Replace(s.yaml, fmt.Sprintf("url: %q", s.db.URL), fmt.Sprintf("url: %q", tc.url), 1))
			for _, cmd := range [][]string{{"migrate"}, {"sweep", "--dry-run"}, {"sweep", "--wait"}, {"status"}, {"worker"}} {
				r := letheWith(t, 30*time.Second, nil, append(cmd, "--config", cfg)...)
				line := requireOneLineError(t, r, tc.code, tc.want...)
				require.NotContains(t, line, password, "the message gives the password away")
				require.NotContains(t, r.stdout, password)
			}
		})
	}
}

// TestArchiveRefusals checks that sweep --wait deletes nothing when the
// object store cannot be reached, answers nothing, or refuses the worker's
// credentials.
func TestArchiveRefusals(t *testing.T) {
	t.Parallel()
	b := newBadInput(t)
	endpoint := "endpoint: " + b.bucket.Server.Endpoint + "\n"

	// A server that accepts connections and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	silent := "http://" + l.Addr().String()
	wrongSecret := "0000" + b.bucket.Server.Writer.SecretAccessKey[4:]
	if wrongSecret == b.bucket.Server.Writer.SecretAccessKey {
		wrongSecret = "1111" + wrongSecret[4:]
	}

	cases := []struct {
		name     string
		old, new string
		code     int
		want     []string
		not      []string
	}{
		{name: "nothing listens",
			old: endpoint, new: "endpoint: http://127.0.0.1:" + strconv.Itoa(freePort(t)) + "\n",
			code: 1, want: []string{"archive.endpoint"}},
		{name: "endpoint never answers",
			old: endpoint, new: "endpoint: " + silent + "\n",
			code: 1, want: []string{"archive.endpoint"}},
		{name: "wrong secret",
			old: "secret_access_key: " + b.bucket.Server.Writer.SecretAccessKey, new: "secret_access_key: " + wrongSecret,
			code: 2, want: []string{"archive.credentials"}, not: []string{wrongSecret}},
		{name: "unknown access key",
			old: "access_key_id: " + b.bucket.Server.Writer.AccessKeyID, new: "access_key_id: AKNOBODY0000000000",
			code: 2, want: []string{"archive.credentials"}},
		{name: "reader's credentials for the worker",
			old:  "    access_key_id: " + b.bucket.Server.Writer.AccessKeyID + "\n    secret_access_key: " + b.bucket.Server.Writer.SecretAccessKey,
			new:  "    access_key_id: " + b.bucket.Server.Reader.AccessKeyID + "\n    secret_access_key: " + b.bucket.Server.Reader.SecretAccessKey,
			code: 2, want: []string{"archive.credentials"}},
		{name: "bucket does not exist",
			old: "bucket: " + b.bucket.Name, new: "bucket: " + b.bucket.Name + "-missing",
			code: 1, want: []string{"archive.bucket"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := b.variant(t, tc.old, tc.new)
			start := time.Now()
			r := letheWith(t, 45*time.Second, nil, "sweep", "--wait", "--config", cfg)
			require.Less(t, time.Since(start), 30*time.Second, "sweep --wait took too long to give up\n%s", r)
			line := requireOneLineError(t, r, tc.code, tc.want...)
			for _, n := range tc.not {
				require.NotContains(t, line, n)
			}
			b.requireUnchanged(t)
		})
	}
}

// TestS3Outage checks that sweep --wait against a stopped object store
// fails fast and deletes nothing, and that the next run, once the store is
// back, archives everything due.
func TestS3Outage(t *testing.T) {
	t.Parallel()
	srv := testenv.NewS3Server(t)
	s := newShopOn(t, 0, testenv.NewBucketOn(t, srv))
	cfg := s.cfgPath
	before := dumpShop(t, s.db.Pool)
	state := letheState(t, s.db.Pool)

	require.NoError(t, srv.Kill())
	start := time.Now()
	r := letheWith(t, 45*time.Second, nil, "sweep", "--wait", "--config", cfg)
	require.Less(t, time.Since(start), 30*time.Second, "%s", r)
	requireOneLineError(t, r, 1, "archive.endpoint")
	require.Equal(t, before, dumpShop(t, s.db.Pool))
	require.Equal(t, state, letheState(t, s.db.Pool))

	require.NoError(t, srv.Restart(context.Background()))
	r = lethe(t, "sweep", "--wait", "--config", cfg)
	requireOK(t, r)
	goneDue, spamDue := s.keys(catGoneDue), s.keys(catSpamDue)
	require.Equal(t, before.without(append(goneDue, spamDue...)), dumpShop(t, s.db.Pool))
	require.Len(t, listVersions(t, s.bucket), 1, "one segment for the whole batch")
	for _, k := range goneDue {
		require.Equal(t, "archived", s.locate(t, k).State)
	}
}

// TestRestoreRefusals checks restore's refusals: a wrong identity, a file
// that is not an identity (whose content must not be echoed), a subject
// never archived, and refused restore credentials.
func TestRestoreRefusals(t *testing.T) {
	t.Parallel()
	s := newShop(t, 0)
	r := lethe(t, "sweep", "--wait", "--config", s.cfgPath)
	requireOK(t, r)
	archived := s.keys(catGoneDue)[0]
	manifest := tableDump(t, s, "lethe.manifest")
	audit := tableDump(t, s, "lethe.audit_log")
	dir := t.TempDir()

	wrongID := filepath.Join(dir, "wrong.txt")
	other := testenv.NewIdentity(t).String()
	require.NoError(t, os.WriteFile(wrongID, []byte(other+"\n"), 0o600))
	const secretLine = "correct horse battery staple 0xDEADBEEF"
	notID := filepath.Join(dir, "not-an-identity.txt")
	require.NoError(t, os.WriteFile(notID, []byte(secretLine+"\n"), 0o600))
	badKey := filepath.Join(dir, "bad-key.txt")
	malformed := "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
	require.NoError(t, os.WriteFile(badKey, []byte("# created: today\n"+malformed+"\n"), 0o600))
	recipientFile := filepath.Join(dir, "recipient.txt")
	require.NoError(t, os.WriteFile(recipientFile, []byte(s.identity.Recipient().String()+"\n"), 0o600))
	noRestoreCreds := s.writeConfig(t, "no-restore.yaml", strings.Replace(s.yaml,
		"    secret_access_key: "+s.bucket.Server.Reader.SecretAccessKey+"\n", "", 1))
	wrongRestoreCreds := s.writeConfig(t, "wrong-restore.yaml", strings.Replace(s.yaml,
		"    access_key_id: "+s.bucket.Server.Reader.AccessKeyID+"\n    secret_access_key: "+s.bucket.Server.Reader.SecretAccessKey,
		"    access_key_id: "+s.bucket.Server.Writer.AccessKeyID+"\n    secret_access_key: "+s.bucket.Server.Writer.SecretAccessKey, 1))

	cases := []struct {
		name     string
		subject  string
		identity string
		cfg      string
		code     int
		want     []string
		not      []string
	}{
		{"wrong identity", archived, wrongID, s.cfgPath, 1, []string{"identity"}, []string{other}},
		{"not an identity", archived, notID, s.cfgPath, 2, []string{"identity"}, []string{secretLine, "horse", "DEADBEEF"}},
		{"malformed identity", archived, badKey, s.cfgPath, 2, []string{"identity"}, []string{malformed, "QQQQQQQQ"}},
		{"a recipient instead of an identity", archived, recipientFile, s.cfgPath, 2, []string{"identity"}, []string{s.identity.Recipient().String()}},
		{"identity file does not exist", archived, filepath.Join(dir, "missing.txt"), s.cfgPath, 2, []string{"missing.txt"}, nil},
		{"never archived", "no such subject", s.idPath, s.cfgPath, 1, nil, nil},
		{"active subject", s.keys(catActive)[0], s.idPath, s.cfgPath, 1, nil, nil},
		{"destroyed subject", s.keys(catSpamDue)[0], s.idPath, s.cfgPath, 1, nil, nil},
		{"restore credentials missing", archived, s.idPath, noRestoreCreds, 2, []string{"restore.credentials.secret_access_key"}, nil},
		// Exit 1 today, where refused worker credentials exit 2: either is
		// accepted, as long as the message names the key.
		{"restore credentials refused", archived, s.idPath, wrongRestoreCreds, codeFailureOrUsage, []string{"restore.credentials"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "bundle.json")
			r := lethe(t, "restore", "--subject", tc.subject, "--identity", tc.identity, "--out", out, "--config", tc.cfg)
			line := requireOneLineError(t, r, tc.code, tc.want...)
			for _, n := range tc.not {
				require.NotContains(t, line, n)
			}
			require.Empty(t, r.stdout)
			require.NoFileExists(t, out)
			entries, err := os.ReadDir(filepath.Dir(out))
			require.NoError(t, err)
			require.Empty(t, entries, "restore left a file behind")
		})
	}
	t.Cleanup(func() {
		// No refusal is recorded as a restore, and none changes the manifest.
		require.Equal(t, manifest, tableDump(t, s, "lethe.manifest"))
		require.Equal(t, audit, tableDump(t, s, "lethe.audit_log"))
	})
}

// TestHelp checks that help exits 0 and lists the commands, -h shows a
// command's flags, and no command at all is a usage error.
func TestHelp(t *testing.T) {
	t.Parallel()
	r := lethe(t, "help")
	requireOK(t, r)
	for _, c := range []string{"migrate", "worker", "sweep", "restore", "status", "audit", "demo"} {
		require.Regexp(t, `(?m)^\s+`+c+`\s`, r.stdout, "%s", r)
	}
	r = lethe(t)
	require.Equal(t, 2, r.code, "%s", r)
	require.Contains(t, r.stdout, "usage: lethe")

	r = lethe(t, "sweep", "-h")
	requireOK(t, r)
	require.Contains(t, r.stdout+r.stderr, "usage: lethe sweep")
	require.Contains(t, r.stdout+r.stderr, "-dry-run")
}

// freshDB creates a database with the shop schema and without lethe's
// migrations, dropped when t ends, and returns a config for it.
func freshDB(t *testing.T) (*testenv.DB, string) {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("lethe_t_%d_fresh%d", time.Now().Unix(), time.Now().UnixNano()%1e6)
	admin, err := pgx.Connect(ctx, testenv.AdminURL())
	require.NoError(t, err)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	require.NoError(t, err)
	admin.Close(ctx)
	t.Cleanup(func() {
		admin, err := pgx.Connect(context.Background(), testenv.AdminURL())
		if err == nil {
			_, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
			admin.Close(context.Background())
		}
	})
	u, err := url.Parse(testenv.AdminURL())
	require.NoError(t, err)
	u.Path = "/" + name
	pool, err := pgxpool.New(ctx, u.String())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, shopSchema)
	require.NoError(t, err)
	db := &testenv.DB{URL: u.String(), Name: name, Pool: pool}
	cfg := filepath.Join(t.TempDir(), "lethe.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(testenv.ConfigYAML(db, testenv.NewBucket(t), testenv.NewIdentity(t).Recipient().String(), shopFragment)), 0o600))
	return db, cfg
}

// TestMigrateFreshDatabase checks that commands refuse an unmigrated
// database with a hint to migrate, and that migrate migrates it and is
// idempotent.
func TestMigrateFreshDatabase(t *testing.T) {
	t.Parallel()
	_, cfg := freshDB(t)
	for _, cmd := range [][]string{{"status"}, {"sweep", "--dry-run"}, {"sweep", "--wait"}, {"worker"}} {
		r := letheWith(t, 30*time.Second, nil, append(cmd, "--config", cfg)...)
		requireOneLineError(t, r, 1, "lethe migrate")
	}
	r := lethe(t, "migrate", "--config", cfg)
	requireOK(t, r)
	require.Contains(t, r.stdout, "migrated", "%s", r)
	r = lethe(t, "migrate", "--config", cfg)
	requireOK(t, r)
	require.Contains(t, r.stdout, "is current", "%s", r)

	r = lethe(t, "status", "--config", cfg)
	requireOK(t, r)
	require.Contains(t, r.stdout, "none yet")
	require.NotContains(t, r.stdout, "trigger", "a table header for no runs\n%s", r)
}

// TestMigrateConcurrently checks that two `lethe migrate` started at once
// on a fresh database, as several machines deploying together would, both
// succeed.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	_, cfg := freshDB(t)
	var wg sync.WaitGroup
	results := make([]result, 2)
	for i := range results {
		wg.Go(func() { results[i] = lethe(t, "migrate", "--config", cfg) })
	}
	wg.Wait()
	for _, r := range results {
		requireOK(t, r)
	}
	r := lethe(t, "migrate", "--config", cfg)
	requireOK(t, r)
	require.Contains(t, r.stdout, "is current", "%s", r)
}

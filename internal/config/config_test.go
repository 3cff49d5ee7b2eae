package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/lethehq/lethe/internal/config"
)

// Two fixed age key pairs, so that tests and fuzz seeds are deterministic.
// They protect nothing.
const (
	testRecipient  = "age147np3sk4eecv3jxdgmjasu9fw4hxl7j8gh8vmwawwut74anc0pmsjh42vr"
	testRecipient2 = "age1x7elhmxsll7mw875th4rxn9f47vxmg2xwuh5n49d9dmgvpe4t5gsxqejj6"
	testIdentity   = "AGE-SECRET-KEY-1GSRX5CFKRTCMXYCZCEHYPSXTRMAYENQTY7LDQ5X4H949VFMSRGHQW5HHQ0"
)

// fullYAML is a complete config that exercises every section. ${DB_URL} and
// ${WRITER_SECRET} come from env.
const fullYAML = `database:
  url: ${DB_URL}
subject:
  table: crm.customers
  key: id
  related:
    - table: crm.accounts
      join: customer_id = id
      related:
        - table: crm.lines
          join: account_id = id
    - table: crm.credit_checks
      join: customer_id = id
policies:
  - name: former-customers
    where: "status = 'closed'"
    clock: closed_at
    retain: 730d
    then: archive
    archive_retain: 7y
  - name: prospects
    where: "status = 'prospect'"
    clock: created_at
    retain: 12w
    then: delete
  - name: leads
    clock: created_at
    retain: 2y
requests:
  protect: "status = 'active'"
archive:
  endpoint: http://127.0.0.1:7070
  bucket: lethe-archive
  prefix: v1/
  path_style: true
  credentials:
    access_key_id: writerAK
    secret_access_key: ${WRITER_SECRET}
  recipients:
    - ` + testRecipient + `
  key_secret: 0123456789abcdef0123456789abcdef
restore:
  credentials:
    access_key_id: readerAK
    secret_access_key: readerSK
`

var env = map[string]string{
	"DB_URL":        "postgres://lethe:hunter2@db.internal:5432/lethe?sslmode=disable",
	"WRITER_SECRET": "writer-secret-value",
}

func lookupIn(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func load(t *testing.T, text string, m map[string]string) (*config.Config, error) {
	t.Helper()
	return config.Load(strings.NewReader(text), lookupIn(m))
}

func mustLoad(t *testing.T, text string, m map[string]string) *config.Config {
	t.Helper()
	cfg, err := load(t, text, m)
	require.NoError(t, err)
	return cfg
}

// replace returns text with old replaced once by new; it fails the test if
// old is not in text, so that a case cannot silently test the base config.
func replace(t *testing.T, text, old, new string) string {
	t.Helper()
	require.Equal(t, 1, strings.Count(text, old), "fixture text %q must occur exactly once", old)
	i := strings.Index(text, old)
	require.True(t, i == 0 || text[i-1] == '\n' || !strings.HasSuffix(old, "\n"), "fixture line %q must match a whole line", old)
	return strings.Replace(text, old, new, 1)
}

// configErrors flattens err (an errors.Join tree) into its *config.Error
// leaves, failing the test if a leaf is anything else.
func configErrors(t *testing.T, err error) []*config.Error {
	t.Helper()
	var out []*config.Error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, c := range j.Unwrap() {
				walk(c)
			}
			return
		}
		var ce *config.Error
		require.True(t, errors.As(e, &ce), "error %q (%T) is not a *config.Error", e, e)
		out = append(out, ce)
	}
	walk(err)
	return out
}

func errorKeys(t *testing.T, err error) []string {
	t.Helper()
	var keys []string
	for _, ce := range configErrors(t, err) {
		keys = append(keys, ce.Key)
	}
	return keys
}

func TestLoadFullConfig(t *testing.T) {
	t.Parallel()

	cfg := mustLoad(t, fullYAML, env)

	// Values as written or expanded.
	require.Equal(t, env["DB_URL"], cfg.Database.URL)
	require.Equal(t, "writer-secret-value", cfg.Archive.Credentials.SecretAccessKey)
	require.Equal(t, "writerAK", cfg.Archive.Credentials.AccessKeyID)
	require.Equal(t, "readerAK", cfg.Restore.Credentials.AccessKeyID)
	require.Equal(t, "readerSK", cfg.Restore.Credentials.SecretAccessKey)
	require.Equal(t, "http://127.0.0.1:7070", cfg.Archive.Endpoint)
	require.Equal(t, "lethe-archive", cfg.Archive.Bucket)
	require.Equal(t, "v1/", cfg.Archive.Prefix)
	require.True(t, cfg.Archive.PathStyle)
	require.Equal(t, "0123456789abcdef0123456789abcdef", cfg.Archive.KeySecret)
	require.Equal(t, "status = 'active'", cfg.Requests.Protect)

	// Defaults.
	require.Equal(t, "0 3 * * *", cfg.Schedule)
	require.Equal(t, "UTC", cfg.Timezone)
	require.Equal(t, "us-east-1", cfg.Archive.Region)
	require.Equal(t, 500, cfg.Archive.BatchSize)
	require.Equal(t, "governance", cfg.Archive.LockMode)
	require.Equal(t, time.Hour, cfg.Audit.AnchorInterval)
	require.Equal(t, config.Days(7*365), cfg.Audit.AnchorRetainDays)
	require.Equal(t, 4, cfg.Worker.Concurrency)
	require.Equal(t, 10, cfg.Worker.MaxAttempts)
	require.Equal(t, 24, cfg.Database.MaxConns, "max_conns defaults to 5 × worker.concurrency + 4")
	require.Equal(t, config.ThenArchive, cfg.Policies[2].Then, "then defaults to archive")

	// The subject graph, as written.
	require.Equal(t, "crm.customers", cfg.Subject.Table)
	require.Equal(t, "id", cfg.Subject.Key)
	require.Len(t, cfg.Subject.Related, 2)
	require.Equal(t, "crm.accounts", cfg.Subject.Related[0].Table)
	require.Equal(t, "customer_id = id", cfg.Subject.Related[0].Join)
	require.Equal(t, "crm.lines", cfg.Subject.Related[0].Related[0].Table)
	require.Equal(t, "crm.credit_checks", cfg.Subject.Related[1].Table)

	// Policies, parsed.
	require.Len(t, cfg.Policies, 3)
	p := cfg.Policies[0]
	require.Equal(t, "former-customers", p.Name)
	require.Equal(t, "status = 'closed'", p.Where)
	require.Equal(t, "closed_at", p.Clock)
	require.Equal(t, config.ThenArchive, p.Then)
	require.Equal(t, config.Days(730), p.RetainDays)
	require.Equal(t, config.Days(7*365), p.ArchiveRetainDays)
	require.Equal(t, 730*24*time.Hour, p.RetainDays.Duration())
	require.Equal(t, config.ThenDelete, cfg.Policies[1].Then)
	require.Equal(t, config.Days(84), cfg.Policies[1].RetainDays)
	require.Equal(t, config.Days(0), cfg.Policies[1].ArchiveRetainDays, "unset archive_retain is zero")
	require.Equal(t, config.Days(730), cfg.Policies[2].RetainDays)
	require.Same(t, &cfg.Policies[1], cfg.Policy("prospects"))
	require.Nil(t, cfg.Policy("nobody"))

	// Recipients, parsed.
	require.Len(t, cfg.Archive.ParsedRecipients, 1)
	x, ok := cfg.Archive.ParsedRecipients[0].(*age.X25519Recipient)
	require.True(t, ok, "recipient is %T", cfg.Archive.ParsedRecipients[0])
	require.Equal(t, testRecipient, x.String())

	// Location and cron.
	require.Equal(t, time.UTC.String(), cfg.Location.String())
	require.NotNil(t, cfg.Cron)
	from := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	require.True(t, time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC).Equal(cfg.Cron.Next(from)))

	require.NoError(t, cfg.ValidateRestore())
}

func TestLoadFillsDefaultsOnlyWhereUnset(t *testing.T) {
	t.Parallel()

	text := fullYAML + `schedule: "30 1 * * 0"
timezone: Europe/Berlin
worker:
  concurrency: 7
  max_attempts: 3
`
	text = replace(t, text, "  prefix: v1/\n", "  prefix: v1/\n  region: eu-central-1\n  batch_size: 17\n  lock_mode: compliance\n")
	cfg := mustLoad(t, text, env)
	require.Equal(t, "30 1 * * 0", cfg.Schedule)
	require.Equal(t, "Europe/Berlin", cfg.Timezone)
	require.Equal(t, "eu-central-1", cfg.Archive.Region)
	require.Equal(t, 17, cfg.Archive.BatchSize)
	require.Equal(t, "compliance", cfg.Archive.LockMode)
	require.Equal(t, 7, cfg.Worker.Concurrency)
	require.Equal(t, 3, cfg.Worker.MaxAttempts)
	require.Equal(t, 39, cfg.Database.MaxConns)
}

func TestCronRunsInTimezone(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		zone     string
		schedule string
		from     time.Time
		want     time.Time // in UTC
	}{
		// Winter: Berlin is UTC+1, so 03:00 there is 02:00 UTC.
		{"Europe/Berlin", "0 3 * * *", time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 10, 2, 0, 0, 0, time.UTC)},
		// Summer: UTC+2.
		{"Europe/Berlin", "0 3 * * *", time.Date(2026, 7, 10, 0, 0, 0, 0, time.UTC), time.Date(2026, 7, 10, 1, 0, 0, 0, time.UTC)},
		// 02:30 UTC is already past 03:00 Berlin (03:30 local): the next run is tomorrow.
		{"Europe/Berlin", "0 3 * * *", time.Date(2026, 1, 10, 2, 30, 0, 0, time.UTC), time.Date(2026, 1, 11, 2, 0, 0, 0, time.UTC)},
		// New York, UTC-5 in winter; from a time given in another zone.
		{"America/New_York", "15 22 * * *", time.Date(2026, 1, 10, 12, 0, 0, 0, time.FixedZone("X", 9*3600)), time.Date(2026, 1, 10, 3, 15, 0, 0, time.UTC)},
		{"UTC", "@daily", time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC), time.Date(2026, 1, 11, 0, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.zone+" "+tc.schedule, func(t *testing.T) {
			t.Parallel()
			text := fullYAML + "schedule: \"" + tc.schedule + "\"\ntimezone: " + tc.zone + "\n"
			cfg := mustLoad(t, text, env)
			require.Equal(t, tc.zone, cfg.Location.String())
			got := cfg.Cron.Next(tc.from)
			require.True(t, tc.want.Equal(got), "next run: got %s, want %s", got.UTC(), tc.want)
			require.Equal(t, tc.zone, got.Location().String(), "Next returns a time in the configured zone")
		})
	}
}

func TestExpandFromLookup(t *testing.T) {
	t.Parallel()

	text := replace(t, fullYAML, "  bucket: lethe-archive\n", "  bucket: ${BUCKET}\n")
	text = replace(t, text, "  prefix: v1/\n", "  prefix: ${PREFIX}/${VERSION}/\n")
	text = replace(t, text, "    - "+testRecipient+"\n", "    - ${RECIPIENT}\n")
	m := map[string]string{
		"DB_URL":        "postgres://x@y/z",
		"WRITER_SECRET": "w",
		"BUCKET":        "from-env",
		"PREFIX":        "lethe",
		"VERSION":       "v2",
		"RECIPIENT":     testRecipient2,
	}
	var asked []string
	cfg, err := config.Load(strings.NewReader(text), func(k string) (string, bool) {
		asked = append(asked, k)
		v, ok := m[k]
		return v, ok
	})
	require.NoError(t, err)
	require.Equal(t, "postgres://x@y/z", cfg.Database.URL)
	require.Equal(t, "w", cfg.Archive.Credentials.SecretAccessKey)
	require.Equal(t, "from-env", cfg.Archive.Bucket)
	require.Equal(t, "lethe/v2/", cfg.Archive.Prefix)
	require.Equal(t, []string{testRecipient2}, cfg.Archive.Recipients)
	require.ElementsMatch(t, []string{"DB_URL", "WRITER_SECRET", "BUCKET", "PREFIX", "VERSION", "RECIPIENT"}, asked,
		"only referenced variables are looked up, never the environment at large")
}

func TestExpandIsNotRecursive(t *testing.T) {
	t.Parallel()

	m := map[string]string{"DB_URL": "postgres://x@y/z", "WRITER_SECRET": "${OTHER}", "OTHER": "leaked"}
	cfg := mustLoad(t, fullYAML, m)
	require.Equal(t, "${OTHER}", cfg.Archive.Credentials.SecretAccessKey)
}

func TestExpandEmptyValueIsSet(t *testing.T) {
	t.Parallel()

	// A variable set to "" is set: the error is about the empty value, not
	// about an unset variable.
	m := map[string]string{"DB_URL": "postgres://x@y/z", "WRITER_SECRET": ""}
	_, err := load(t, fullYAML, m)
	require.Error(t, err)
	require.Equal(t, []string{"archive.credentials.secret_access_key"}, errorKeys(t, err))
	require.NotContains(t, err.Error(), "not set")
	require.Contains(t, err.Error(), "is empty")
}

func TestExpandUnsetVariable(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name    string
		text    string
		env     map[string]string
		wantKey string
		wantVar string
	}{
		{"secret", fullYAML, map[string]string{"DB_URL": "postgres://x@y/z"}, "archive.credentials.secret_access_key", "WRITER_SECRET"},
		{"database", fullYAML, map[string]string{"WRITER_SECRET": "w"}, "database.url", "DB_URL"},
		{"in a list", strings.Replace(fullYAML, "    - "+testRecipient+"\n", "    - "+testRecipient+"\n    - ${SECOND_RECIPIENT}\n", 1), env, "archive.recipients[1]", "SECOND_RECIPIENT"},
		{"in a list of maps", strings.Replace(fullYAML, "    clock: closed_at\n", "    clock: ${CLOCK_COLUMN}\n", 1), env, "policies[0].clock", "CLOCK_COLUMN"},
		{"inside a value", strings.Replace(fullYAML, "  prefix: v1/\n", "  prefix: lethe/${STAGE}/\n", 1), env, "archive.prefix", "STAGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(t, tc.text, tc.env)
			require.Error(t, err)
			require.True(t, config.IsConfigError(err))
			var ce *config.Error
			require.ErrorAs(t, err, &ce)
			require.Equal(t, tc.wantKey, ce.Key)
			require.Contains(t, ce.Msg, tc.wantVar)
			require.Contains(t, ce.Msg, "not set")
			require.Contains(t, err.Error(), tc.wantKey)
		})
	}
}

func TestExpandBadReference(t *testing.T) {
	t.Parallel()

	for _, ref := range []string{"${}", "${1ABC}", "${A-B}", "${A B}"} {
		t.Run(ref, func(t *testing.T) {
			t.Parallel()
			text := replace(t, fullYAML, "  prefix: v1/\n", "  prefix: \""+ref+"\"\n")
			_, err := load(t, text, env)
			var ce *config.Error
			require.ErrorAs(t, err, &ce)
			require.Equal(t, "archive.prefix", ce.Key)
			require.Contains(t, ce.Msg, "not a valid variable reference")
		})
	}
}

func TestExpandYAMLSyntaxStaysOneString(t *testing.T) {
	t.Parallel()

	const nasty = `": #{}[]" - x: &a *b !!int | > 'q' ` + "\t%@`"
	for _, style := range []string{"${WRITER_SECRET}", `"${WRITER_SECRET}"`, `'${WRITER_SECRET}'`} {
		t.Run(style, func(t *testing.T) {
			t.Parallel()
			text := replace(t, fullYAML, "secret_access_key: ${WRITER_SECRET}", "secret_access_key: "+style)
			m := map[string]string{"DB_URL": env["DB_URL"], "WRITER_SECRET": nasty}
			cfg := mustLoad(t, text, m)
			require.Equal(t, nasty, cfg.Archive.Credentials.SecretAccessKey)
			// Nothing leaked into the neighbouring keys.
			require.Equal(t, "writerAK", cfg.Archive.Credentials.AccessKeyID)
			require.Empty(t, cfg.Archive.Credentials.SecretAccessKeyFile)
		})
	}
}

func TestExpandCannotChangeStructure(t *testing.T) {
	t.Parallel()

	// A list written in a variable is a string, not a list.
	text := replace(t, fullYAML, "  recipients:\n    - "+testRecipient+"\n", "  recipients: ${RECIPIENTS}\n")
	m := map[string]string{"DB_URL": env["DB_URL"], "WRITER_SECRET": "w", "RECIPIENTS": "[" + testRecipient + ", " + testRecipient2 + "]"}
	_, err := load(t, text, m)
	require.Error(t, err)
	require.True(t, config.IsConfigError(err))

	// A mapping written in a variable does not add keys.
	m = map[string]string{"DB_URL": env["DB_URL"], "WRITER_SECRET": "w\nbucket: other-bucket\nendpoint: http://evil:1"}
	cfg := mustLoad(t, fullYAML, m)
	require.Equal(t, "lethe-archive", cfg.Archive.Bucket)
	require.Equal(t, "http://127.0.0.1:7070", cfg.Archive.Endpoint)
	require.Equal(t, m["WRITER_SECRET"], cfg.Archive.Credentials.SecretAccessKey)
}

func TestExpandTypesUnquotedValues(t *testing.T) {
	t.Parallel()

	base := replace(t, fullYAML, "  path_style: true\n", "  path_style: ${PS}\n")
	for _, tc := range []struct {
		ps   string
		want bool
	}{{"true", true}, {"false", false}} {
		m := map[string]string{"DB_URL": env["DB_URL"], "WRITER_SECRET": "w", "PS": tc.ps}
		cfg := mustLoad(t, base, m)
		require.Equal(t, tc.want, cfg.Archive.PathStyle, "path_style: ${PS} with PS=%s", tc.ps)
	}

	// Unquoted numbers decode into int fields.
	text := replace(t, fullYAML, "  prefix: v1/\n", "  prefix: v1/\n  batch_size: ${BATCH}\n")
	cfg := mustLoad(t, text, map[string]string{"DB_URL": env["DB_URL"], "WRITER_SECRET": "w", "BATCH": "75"})
	require.Equal(t, 75, cfg.Archive.BatchSize)

	// Quoted, the value stays a string: a bool field refuses it.
	quoted := replace(t, fullYAML, "  path_style: true\n", "  path_style: \"${PS}\"\n")
	_, err := load(t, quoted, map[string]string{"DB_URL": env["DB_URL"], "WRITER_SECRET": "w", "PS": "true"})
	require.Error(t, err)
	require.True(t, config.IsConfigError(err))
	require.Contains(t, err.Error(), "bool")

	// A secret that looks like a number or a bool is kept as written, in
	// either style, not re-rendered.
	for _, secret := range []string{"12345678901234567890123", "0x1F2E3D4C5B6A79880011", "1e30000000000000000", "0o777777777777777777", "00000000000000000001"} {
		for _, tmpl := range []string{"  key_secret: ${K}\n", "  key_secret: \"${K}\"\n"} {
			text := replace(t, fullYAML, "  key_secret: 0123456789abcdef0123456789abcdef\n", tmpl)
			cfg, err := load(t, text, map[string]string{"DB_URL": env["DB_URL"], "WRITER_SECRET": "w", "K": secret})
			if len(secret) < 16 {
				require.Error(t, err)
				continue
			}
			require.NoError(t, err, "%s with K=%s", strings.TrimSpace(tmpl), secret)
			require.Equal(t, secret, cfg.Archive.KeySecret, "%s with K=%s", strings.TrimSpace(tmpl), secret)
		}
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestSecretFiles(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	dbFile := writeFile(t, dir, "db", "postgres://lethe:pw@db/lethe\n")
	writeFile(t, dir, "key", "  file-key-secret-0123456789  \n")
	skFile := writeFile(t, dir, "sk", "writer-secret-from-file\n")
	rskFile := writeFile(t, dir, "rsk", "reader-secret-from-file")

	text := replace(t, fullYAML, "  url: ${DB_URL}\n", "  url_file: "+dbFile+"\n")
	text = replace(t, text, "  key_secret: 0123456789abcdef0123456789abcdef\n", "  key_secret_file: ${SECRETS}/key\n")
	text = replace(t, text, "    secret_access_key: ${WRITER_SECRET}\n", "    secret_access_key_file: "+skFile+"\n")
	text = replace(t, text, "    secret_access_key: readerSK\n", "    secret_access_key_file: "+rskFile+"\n")

	cfg := mustLoad(t, text, map[string]string{"SECRETS": dir})
	require.Equal(t, "postgres://lethe:pw@db/lethe", cfg.Database.URL)
	require.Equal(t, "file-key-secret-0123456789", cfg.Archive.KeySecret, "surrounding space and the newline are trimmed")
	require.Equal(t, "writer-secret-from-file", cfg.Archive.Credentials.SecretAccessKey)
	require.Equal(t, "reader-secret-from-file", cfg.Restore.Credentials.SecretAccessKey)
	require.NoError(t, cfg.ValidateRestore())
}

func TestSecretFileAndValueBothSet(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	f := writeFile(t, dir, "secret", "x")
	for _, tc := range []struct {
		key  string
		old  string
		new  string
		want string
	}{
		{"database.url", "  url: ${DB_URL}\n", "  url: ${DB_URL}\n  url_file: " + f + "\n", "database.url_file"},
		{"archive.key_secret", "  key_secret: 0123456789abcdef0123456789abcdef\n", "  key_secret: 0123456789abcdef0123456789abcdef\n  key_secret_file: " + f + "\n", "archive.key_secret_file"},
		{"archive.credentials.secret_access_key", "    secret_access_key: ${WRITER_SECRET}\n", "    secret_access_key: ${WRITER_SECRET}\n    secret_access_key_file: " + f + "\n", "archive.credentials.secret_access_key_file"},
		{"restore.credentials.secret_access_key", "    secret_access_key: readerSK\n", "    secret_access_key: readerSK\n    secret_access_key_file: " + f + "\n", "restore.credentials.secret_access_key_file"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			t.Parallel()
			_, err := load(t, replace(t, fullYAML, tc.old, tc.new), env)
			require.Error(t, err)
			var ce *config.Error
			require.ErrorAs(t, err, &ce)
			require.Equal(t, tc.key, ce.Key)
			require.Contains(t, ce.Msg, tc.want, "the message names both keys")
			require.Contains(t, ce.Msg, "keep one")
		})
	}
}

func TestSecretFileMissing(t *testing.T) {
	t.Parallel()

	missing := filepath.Join(t.TempDir(), "nope")
	text := replace(t, fullYAML, "  key_secret: 0123456789abcdef0123456789abcdef\n", "  key_secret_file: "+missing+"\n")
	_, err := load(t, text, env)
	var ce *config.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "archive.key_secret_file", ce.Key)
	require.Contains(t, ce.Msg, missing)

	text = replace(t, fullYAML, "  recipients:\n", "  recipients_file: "+missing+"\n  recipients:\n")
	_, err = load(t, text, env)
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "archive.recipients_file", ce.Key)
}

func TestRecipientsFile(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	f := writeFile(t, dir, "recipients.txt", "# escrow\n\n  "+testRecipient2+"  \n# rotation, next year\n")
	text := replace(t, fullYAML, "  recipients:\n", "  recipients_file: "+f+"\n  recipients:\n")
	cfg := mustLoad(t, text, env)
	require.Equal(t, []string{testRecipient, testRecipient2}, cfg.Archive.Recipients)
	require.Len(t, cfg.Archive.ParsedRecipients, 2)
	require.Equal(t, testRecipient2, cfg.Archive.ParsedRecipients[1].(*age.X25519Recipient).String())

	// The file alone is enough.
	text = replace(t, fullYAML, "  recipients:\n    - "+testRecipient+"\n", "  recipients_file: "+f+"\n")
	cfg = mustLoad(t, text, env)
	require.Equal(t, []string{testRecipient2}, cfg.Archive.Recipients)

	// An identity file given by mistake is refused without echoing the key.
	idFile := writeFile(t, dir, "identity.txt", "# created: 2026-01-01T00:00:00Z\n# public key: "+testRecipient+"\n"+testIdentity+"\n")
	text = replace(t, fullYAML, "  recipients:\n    - "+testRecipient+"\n", "  recipients_file: "+idFile+"\n")
	_, err := load(t, text, env)
	require.Error(t, err)
	require.Equal(t, []string{"archive.recipients[0]"}, errorKeys(t, err))
	require.Contains(t, err.Error(), "private key")
	require.NotContains(t, err.Error(), testIdentity[15:])
}

func TestLoadFile(t *testing.T) {
	t.Parallel()

	// LoadFile expands from the process environment; use a file that needs
	// no variables.
	text := replace(t, fullYAML, "  url: ${DB_URL}\n", "  url: postgres://x@y/z\n")
	text = replace(t, text, "    secret_access_key: ${WRITER_SECRET}\n", "    secret_access_key: w\n")
	p := writeFile(t, t.TempDir(), "lethe.yaml", text)
	cfg, err := config.LoadFile(p)
	require.NoError(t, err)
	require.Equal(t, "postgres://x@y/z", cfg.Database.URL)

	_, err = config.LoadFile(filepath.Join(t.TempDir(), "missing.yaml"))
	require.Error(t, err)
	require.True(t, config.IsConfigError(err))
	require.Contains(t, err.Error(), "--config")

	// A relative *_file path is read from the config file's directory,
	// wherever lethe runs.
	dir := t.TempDir()
	writeFile(t, dir, "key_secret", "relative-key-secret-0123456789\n")
	text = replace(t, text, "  key_secret: 0123456789abcdef0123456789abcdef\n", "  key_secret_file: key_secret\n")
	cfg, err = config.LoadFile(writeFile(t, dir, "lethe.yaml", text))
	require.NoError(t, err)
	require.Equal(t, "relative-key-secret-0123456789", cfg.Archive.KeySecret)
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name     string
		old, new string   // replaced in fullYAML; old empty: new is appended
		env      []string // extra variables: NAME=value
		keys     []string // the keys of every error, in order
		msg      string   // the message contains this
	}{
		{name: "policies[1].retain unit", old: "    retain: 12w\n", new: "    retain: 10x\n", keys: []string{"policies[1].retain"}, msg: `"10x" has no unit`},
		{name: "retain zero", old: "    retain: 730d\n", new: "    retain: 0d\n", keys: []string{"policies[0].retain"}, msg: "greater than zero"},
		{name: "retain missing", old: "    retain: 12w\n", new: "", keys: []string{"policies[1].retain"}, msg: "empty duration"},
		{name: "archive_retain bad", old: "    archive_retain: 7y\n", new: "    archive_retain: 7 years\n", keys: []string{"policies[0].archive_retain"}, msg: "7 years"},
		{name: "duplicate policy name", old: "  - name: leads\n", new: "  - name: prospects\n", keys: []string{"policies[2].name"}, msg: "used by an earlier policy"},
		{name: "bad policy name", old: "  - name: leads\n", new: "  - name: Leads Of 2026\n", keys: []string{"policies[2].name"}, msg: "lower case"},
		{name: "then purge", old: "    then: delete\n", new: "    then: purge\n", keys: []string{"policies[1].then"}, msg: `"purge" is not archive, delete or minimize`},
		{name: "minimize without columns", old: "  - name: leads\n    clock: created_at\n    retain: 2y\n", new: "  - name: leads\n    then: minimize\n    clock: created_at\n    retain: 2y\n", keys: []string{"policies[2].columns"}, msg: "then: minimize needs the columns"},
		{name: "keep_last zero", old: "  - name: leads\n    clock: created_at\n    retain: 2y\n", new: "  - name: leads\n    then: minimize\n    clock: created_at\n    retain: 2y\n    columns: {ssn: \"keep_last:0\"}\n", keys: []string{"policies[2].columns.ssn"}, msg: "positive whole number"},
		{name: "keep_last not a number", old: "  - name: leads\n    clock: created_at\n    retain: 2y\n", new: "  - name: leads\n    then: minimize\n    clock: created_at\n    retain: 2y\n    columns: {ssn: \"keep_last:four\"}\n", keys: []string{"policies[2].columns.ssn"}, msg: "positive whole number"},
		{name: "unknown minimize action", old: "  - name: leads\n    clock: created_at\n    retain: 2y\n", new: "  - name: leads\n    then: minimize\n    clock: created_at\n    retain: 2y\n    columns: {ssn: mask, dob: null}\n", keys: []string{"policies[2].columns.ssn"}, msg: "use null, hash or keep_last:N"},
		{name: "columns on an archive policy", old: "    archive_retain: 7y\n", new: "    archive_retain: 7y\n    columns: {ssn: hash}\n", keys: []string{"policies[0].columns"}, msg: "then is archive"},
		{name: "archive_retain on minimize without archive", old: "  - name: leads\n    clock: created_at\n    retain: 2y\n", new: "  - name: leads\n    then: minimize\n    clock: created_at\n    retain: 2y\n    archive_retain: 1y\n    columns: {ssn: hash}\n", keys: []string{"policies[2].archive_retain"}, msg: "archive is false"},
		{name: "policy of an unknown kind", old: "  - name: leads\n    clock: created_at\n    retain: 2y\n", new: "  - name: leads\n    subject: applicants\n    clock: created_at\n    retain: 2y\n", keys: []string{"policies[2].subject"}, msg: `"applicants" is not a kind of subject: use default`},
		{name: "archive_retain with then delete", old: "    then: delete\n", new: "    then: delete\n    archive_retain: 1y\n", keys: []string{"policies[1].archive_retain"}, msg: "then is delete"},
		{name: "clock missing", old: "    clock: closed_at\n", new: "", keys: []string{"policies[0].clock"}, msg: "is empty"},
		{name: "clock bad identifier", old: "    clock: closed_at\n", new: "    clock: 1closed\n", keys: []string{"policies[0].clock"}, msg: "not a plain SQL name"},
		{name: "clock two names", old: "    clock: closed_at\n", new: "    clock: a.b\n", keys: []string{"policies[0].clock"}, msg: "single column"},
		{name: "no policies", old: "", new: "", keys: []string{"policies"}, msg: "at least one policy"},
		{name: "where with semicolon", old: `    where: "status = 'closed'"`, new: `    where: "status = 'closed'; DROP TABLE crm.customers"`, keys: []string{"policies[0].where"}, msg: "';'"},
		{name: "protect with comment", old: `  protect: "status = 'active'"`, new: `  protect: "status = 'active' -- or not"`, keys: []string{"requests.protect"}, msg: "-- comment"},
		{name: "bad cron", old: "", new: "schedule: \"0 3 * *\"\n", keys: []string{"schedule"}, msg: "not a cron expression"},
		{name: "cron out of range", old: "", new: "schedule: \"61 3 * * *\"\n", keys: []string{"schedule"}, msg: "61 3"},
		{name: "bad timezone", old: "", new: "timezone: Mars/Olympus_Mons\n", keys: []string{"timezone"}, msg: "Mars/Olympus_Mons"},
		{name: "empty recipients", old: "  recipients:\n    - " + testRecipient + "\n", new: "  recipients: []\n", keys: []string{"archive.recipients"}, msg: "at least one age public key"},
		{name: "recipients missing", old: "  recipients:\n    - " + testRecipient + "\n", new: "", keys: []string{"archive.recipients"}, msg: "is empty"},
		{name: "malformed recipient", old: "    - " + testRecipient + "\n", new: "    - " + testRecipient + "\n    - age1notakey\n", keys: []string{"archive.recipients[1]"}, msg: "is not an age recipient"},
		// (the value itself is not quoted back: TestParseRecipient checks it never is)
		{name: "ssh key as recipient", old: "    - " + testRecipient + "\n", new: "    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN\n", keys: []string{"archive.recipients[0]"}, msg: "not an age recipient"},
		{name: "identity as recipient", old: "    - " + testRecipient + "\n", new: "    - " + testIdentity + "\n", keys: []string{"archive.recipients[0]"}, msg: "private key"},
		{name: "lower-case identity as recipient", old: "    - " + testRecipient + "\n", new: "    - \" " + strings.ToLower(testIdentity) + "\"\n", keys: []string{"archive.recipients[0]"}, msg: "private key"},
		{name: "short key_secret", old: "  key_secret: 0123456789abcdef0123456789abcdef\n", new: "  key_secret: short\n", keys: []string{"archive.key_secret"}, msg: "is 5 bytes long"},
		{name: "missing key_secret", old: "  key_secret: 0123456789abcdef0123456789abcdef\n", new: "", keys: []string{"archive.key_secret"}, msg: "is 0 bytes long"},
		{name: "missing credentials", old: "  credentials:\n    access_key_id: writerAK\n    secret_access_key: ${WRITER_SECRET}\n", new: "", keys: []string{"archive.credentials.access_key_id", "archive.credentials.secret_access_key"}, msg: "is empty"},
		{name: "missing access key id", old: "    access_key_id: writerAK\n", new: "", keys: []string{"archive.credentials.access_key_id"}, msg: "access key id"},
		{name: "missing database.url", old: "  url: ${DB_URL}\n", new: "  max_conns: 5\n", keys: []string{"database.url"}, msg: "database.url_file"},
		{name: "max_conns too small", old: "  url: ${DB_URL}\n", new: "  url: ${DB_URL}\n  max_conns: 1\n", keys: []string{"database.max_conns"}, msg: "at least 2"},
		{name: "join on the root", old: "  key: id\n", new: "  key: id\n  join: id = id\n", keys: []string{"subject.join"}, msg: "subject table"},
		{name: "http listen", new: "http:\n  listen: localhost\n", keys: []string{"http.listen"}, msg: "not host:port"},
		{name: "http tls half", new: "http:\n  tls_cert: c.pem\n", keys: []string{"http.tls_cert"}, msg: "set both"},
		{name: "http body limit", new: "http:\n  max_body_bytes: 10\n", keys: []string{"http.max_body_bytes"}, msg: "out of range"},
		{name: "token role", new: "http:\n  tokens:\n    - {name: intake, role: admin, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}\n", keys: []string{"http.tokens[0].role"}, msg: `"admin" is not a role`},
		{name: "token name", new: "http:\n  tokens:\n    - {name: '', role: ops, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}\n", keys: []string{"http.tokens[0].name"}, msg: "letters, digits"},
		{name: "token is not a hash", new: "http:\n  tokens:\n    - {name: intake, role: ops, sha256: s3cret-token-value}\n", keys: []string{"http.tokens[0].sha256"}, msg: "never the token"},
		{name: "token twice", new: "http:\n  tokens:\n    - {name: a, role: ops, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}\n    - {name: b, role: legal, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}\n", keys: []string{"http.tokens[1].sha256"}, msg: "same token"},
		{name: "token name twice", new: "http:\n  tokens:\n    - {name: a, role: ops, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}\n    - {name: a, role: legal, sha256: 0000000000000000000000000000000000000000000000000000000000000000}\n", keys: []string{"http.tokens[1].name"}, msg: "unique"},
		{name: "key missing on the root", old: "  key: id\n", new: "", keys: []string{"subject.key"}, msg: "is empty"},
		{name: "key on a related table", old: "          join: account_id = id\n", new: "          join: account_id = id\n          key: id\n", keys: []string{"subject.related[0].related[0].key"}, msg: "related table"},
		{name: "missing join on a related table", old: "          join: account_id = id\n", new: "", keys: []string{"subject.related[0].related[0].join"}, msg: "is empty"},
		{name: "join without =", old: "      join: customer_id = id\n      related:\n", new: "      join: customer_id id\n      related:\n", keys: []string{"subject.related[0].join"}, msg: "must be"},
		{name: "join with two =", old: "          join: account_id = id\n", new: "          join: account_id = id = x\n", keys: []string{"subject.related[0].related[0].join"}, msg: "right side"},
		{name: "join bad left", old: "          join: account_id = id\n", new: "          join: 9x = id\n", keys: []string{"subject.related[0].related[0].join"}, msg: "left side"},
		{name: "duplicate table", old: "    - table: crm.credit_checks\n", new: "    - table: crm.accounts\n", keys: []string{"subject.related[1].table"}, msg: "subject.related[0].table"},
		{name: "duplicate table by case folding", old: "        - table: crm.lines\n", new: "        - table: CRM.Customers\n", keys: []string{"subject.related[0].related[0].table"}, msg: "already in the graph at subject.table"},
		{name: "quoted lower-case table is the unquoted one", old: "    - table: crm.credit_checks\n", new: "    - table: '\"crm\".\"accounts\"'\n", keys: []string{"subject.related[1].table"}, msg: "already in the graph"},
		{name: "empty table", old: "  table: crm.customers\n", new: "  table: \"\"\n", keys: []string{"subject.table"}, msg: "is empty"},
		{name: "three-part table", old: "  table: crm.customers\n", new: "  table: db.crm.customers\n", keys: []string{"subject.table"}, msg: "schema.table"},
		{name: "table with space", old: "  table: crm.customers\n", new: "  table: crm.my customers\n", keys: []string{"subject.table"}, msg: "quote it"},
		{name: "bad key identifier", old: "  key: id\n", new: "  key: \"id; drop\"\n", keys: []string{"subject.key"}, msg: "not a plain SQL name"},
		{name: "bad bucket name", old: "  bucket: lethe-archive\n", new: "  bucket: Lethe_Archive\n", keys: []string{"archive.bucket"}, msg: "not a valid S3 bucket name"},
		{name: "bucket too short", old: "  bucket: lethe-archive\n", new: "  bucket: ab\n", keys: []string{"archive.bucket"}, msg: "not a valid"},
		{name: "bucket missing", old: "  bucket: lethe-archive\n", new: "", keys: []string{"archive.bucket"}, msg: "is empty"},
		{name: "endpoint not http", old: "  endpoint: http://127.0.0.1:7070\n", new: "  endpoint: ftp://127.0.0.1:7070\n", keys: []string{"archive.endpoint"}, msg: "http://"},
		{name: "endpoint without host", old: "  endpoint: http://127.0.0.1:7070\n", new: "  endpoint: 127.0.0.1:7070\n", keys: []string{"archive.endpoint"}, msg: "not an http"},
		{name: "prefix with leading slash", old: "  prefix: v1/\n", new: "  prefix: /v1/\n", keys: []string{"archive.prefix"}, msg: "must not start with /"},
		{name: "batch_size negative", old: "  prefix: v1/\n", new: "  prefix: v1/\n  batch_size: -1\n", keys: []string{"archive.batch_size"}, msg: "out of range"},
		{name: "lock_mode unknown", old: "  prefix: v1/\n", new: "  prefix: v1/\n  lock_mode: strict\n", keys: []string{"archive.lock_mode"}, msg: `"strict" is not governance, compliance or none`},
		{name: "lock_mode upper case", old: "  prefix: v1/\n", new: "  prefix: v1/\n  lock_mode: GOVERNANCE\n", keys: []string{"archive.lock_mode"}, msg: "not governance"},
		{name: "archive_retain past S3", old: "    archive_retain: 7y\n", new: "    archive_retain: 101y\n", keys: []string{"policies[0].archive_retain"}, msg: "use at most 100y"},
		{name: "archive_retain in days past S3", old: "    archive_retain: 7y\n", new: "    archive_retain: 36501d\n", keys: []string{"policies[0].archive_retain"}, msg: "100 years"},
		{name: "anchor_every not a duration", old: "", new: "audit:\n  anchor_every: hourly\n", keys: []string{"audit.anchor_every"}, msg: "not a duration"},
		{name: "anchor_every too often", old: "", new: "audit:\n  anchor_every: 59s\n", keys: []string{"audit.anchor_every"}, msg: "under a minute"},
		{name: "anchor_retain under archive_retain", old: "", new: "audit:\n  anchor_retain: 1y\n", keys: []string{"audit.anchor_retain"}, msg: "shorter than policies[0].archive_retain"},
		{name: "anchor_retain bad", old: "", new: "audit:\n  anchor_retain: forever\n", keys: []string{"audit.anchor_retain"}, msg: "forever"},
		{name: "archive.concurrency is gone", old: "  prefix: v1/\n", new: "  prefix: v1/\n  concurrency: 32\n", keys: []string{"archive.concurrency"}, msg: ""},
		{name: "worker concurrency", old: "", new: "worker:\n  concurrency: 1000\n", keys: []string{"worker.concurrency"}, msg: "out of range"},
		{name: "worker max_attempts", old: "", new: "worker:\n  max_attempts: 101\n", keys: []string{"worker.max_attempts"}, msg: "out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var text string
			switch {
			case tc.name == "no policies":
				start := strings.Index(fullYAML, "policies:\n")
				end := strings.Index(fullYAML, "requests:\n")
				text = fullYAML[:start] + fullYAML[end:]
			case tc.old == "":
				text = fullYAML + tc.new
			default:
				text = replace(t, fullYAML, tc.old, tc.new)
			}
			_, err := load(t, text, env)
			require.Error(t, err)
			require.True(t, config.IsConfigError(err), "%v", err)
			require.Equal(t, tc.keys, errorKeys(t, err), "%v", err)
			for _, ce := range configErrors(t, err) {
				require.True(t, strings.HasPrefix(ce.Error(), "config: "+ce.Key+": "), "%q names its key", ce.Error())
			}
			require.Contains(t, err.Error(), tc.msg)
			require.NotContains(t, err.Error(), testIdentity[15:], "an error never echoes a private key")
		})
	}
}

func TestConfigErrorsAreAllReported(t *testing.T) {
	t.Parallel()

	text := replace(t, fullYAML, "    retain: 12w\n", "    retain: 10x\n")
	text = replace(t, text, "  bucket: lethe-archive\n", "  bucket: B\n")
	text += "timezone: Nowhere/Nothing\n"
	_, err := load(t, text, env)
	require.Equal(t, []string{"timezone", "policies[1].retain", "archive.bucket"}, errorKeys(t, err))
	require.Len(t, strings.Split(err.Error(), "\n"), 3, "one problem per line")
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name string
		text string
		msg  []string
	}{
		{"unknown top-level key", fullYAML + "colour: blue\n", []string{"colour"}},
		{"unknown nested key", replace(t, fullYAML, "  bucket: lethe-archive\n", "  bucket: lethe-archive\n  buckett: typo\n"), []string{"buckett"}},
		{"unknown key in a policy", replace(t, fullYAML, "    retain: 730d\n", "    retain: 730d\n    retian: 1d\n"), []string{"retian"}},
		{"parsed-only field", fullYAML + "location: UTC\n", []string{"location"}},
		{"wrong type", replace(t, fullYAML, "  path_style: true\n", "  path_style: sometimes\n"), []string{"sometimes", "bool"}},
		{"list for a scalar", replace(t, fullYAML, "  bucket: lethe-archive\n", "  bucket: [a, b]\n"), []string{"line"}},
		{"not a mapping", "just a string\n", []string{"line 1", "config.Config"}},
		{"syntax", "database:\n  url: [unclosed\n", []string{"line"}},
		{"tabs", "database:\n\turl: x\n", []string{"line"}},
		{"empty", "", []string{"empty"}},
		{"only a comment", "# nothing here\n", []string{"empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(t, tc.text, env)
			require.Error(t, err)
			require.True(t, config.IsConfigError(err), "%v", err)
			require.True(t, strings.HasPrefix(err.Error(), "config: "), "%q", err)
			require.NotContains(t, err.Error(), "\n", "one line")
			for _, m := range tc.msg {
				require.Contains(t, err.Error(), m)
			}
		})
	}
}

func TestIsConfigError(t *testing.T) {
	t.Parallel()

	require.False(t, config.IsConfigError(nil))
	require.False(t, config.IsConfigError(errors.New("config: looks like one")))
	ce := config.Errorf("archive.bucket", "is %s", "bad")
	require.True(t, config.IsConfigError(ce))
	require.Equal(t, "config: archive.bucket: is bad", ce.Error())
	require.True(t, config.IsConfigError(errors.Join(errors.New("x"), ce)))
	require.True(t, config.IsConfigError(errors.Join(errors.New("x"), errors.Join(ce))))
	require.Equal(t, "config: no key", (&config.Error{Msg: "no key"}).Error())
}

func TestValidateRestore(t *testing.T) {
	t.Parallel()

	text := replace(t, fullYAML, "restore:\n  credentials:\n    access_key_id: readerAK\n    secret_access_key: readerSK\n", "")
	cfg := mustLoad(t, text, env) // the worker does not need restore credentials
	err := cfg.ValidateRestore()
	require.Error(t, err)
	require.Equal(t, []string{"restore.credentials.access_key_id", "restore.credentials.secret_access_key"}, errorKeys(t, err))
}

func TestRedacted(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	skFile := writeFile(t, dir, "sk", "secret-from-file")
	text := replace(t, fullYAML, "    secret_access_key: readerSK\n", "    secret_access_key_file: "+skFile+"\n")
	cfg := mustLoad(t, text, env)
	red := cfg.Redacted()

	require.Equal(t, "<redacted>", red.Archive.KeySecret)
	require.Equal(t, "<redacted>", red.Archive.Credentials.SecretAccessKey)
	require.Equal(t, "<redacted>", red.Restore.Credentials.SecretAccessKey)
	require.NotContains(t, red.Database.URL, "hunter2")
	require.Contains(t, red.Database.URL, "lethe:")
	require.Contains(t, red.Database.URL, "db.internal:5432/lethe")
	// What is not secret stays, so that the output helps.
	require.Equal(t, "writerAK", red.Archive.Credentials.AccessKeyID)
	require.Equal(t, "lethe-archive", red.Archive.Bucket)
	require.Equal(t, cfg.Archive.Recipients, red.Archive.Recipients)

	// The original is untouched.
	require.Equal(t, "0123456789abcdef0123456789abcdef", cfg.Archive.KeySecret)
	require.Equal(t, "writer-secret-value", cfg.Archive.Credentials.SecretAccessKey)
	require.Equal(t, "secret-from-file", cfg.Restore.Credentials.SecretAccessKey)
	require.Equal(t, env["DB_URL"], cfg.Database.URL)

	// Printed, it holds no secret.
	out, err := yaml.Marshal(red)
	require.NoError(t, err)
	for _, secret := range []string{"hunter2", "0123456789abcdef0123456789abcdef", "writer-secret-value", "secret-from-file"} {
		require.NotContains(t, string(out), secret)
	}
}

func TestRedactedDatabaseURL(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		url    string
		secret string
		keep   string
	}{
		{"postgres://lethe:hunter2@db:5432/lethe", "hunter2", "db:5432/lethe"},
		{"postgresql://lethe:p%40ss%3Aw0rd@db/lethe?sslmode=require", "p%40ss", "sslmode=require"},
		{"postgres://lethe@db/lethe?password=hunter2&sslmode=disable", "hunter2", "sslmode=disable"},
		{"host=db user=lethe password=hunter2 dbname=lethe", "hunter2", ""},
		{"postgres://lethe@db/lethe", "", "postgres://lethe@db/lethe"},
		{"host=db user=lethe dbname=lethe", "", "host=db user=lethe dbname=lethe"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			t.Parallel()
			m := map[string]string{"DB_URL": tc.url, "WRITER_SECRET": "w"}
			red := mustLoad(t, fullYAML, m).Redacted()
			if tc.secret != "" {
				require.NotContains(t, red.Database.URL, tc.secret)
			} else {
				require.Equal(t, tc.url, red.Database.URL, "nothing to hide")
			}
			require.Contains(t, red.Database.URL, tc.keep)
		})
	}
}

func TestWalk(t *testing.T) {
	t.Parallel()

	cfg := mustLoad(t, fullYAML, env)
	var got []string
	cfg.Subject.Walk("subject", func(key string, depth int, parent, table *config.Table) {
		p := "-"
		if parent != nil {
			p = parent.Table
		}
		got = append(got, key+"|"+table.Table+"|"+p+"|"+string(rune('0'+depth)))
	})
	require.Equal(t, []string{
		"subject|crm.customers|-|0",
		"subject.related[0]|crm.accounts|crm.customers|1",
		"subject.related[0].related[0]|crm.lines|crm.accounts|2",
		"subject.related[1]|crm.credit_checks|crm.customers|1",
	}, got)
}

// TestTokenErrorDoesNotEchoTheValue: a token pasted where its hash belongs
// must not be printed back.
func TestTokenErrorDoesNotEchoTheValue(t *testing.T) {
	t.Parallel()
	_, err := load(t, fullYAML+"http:\n  tokens:\n    - {name: intake, role: ops, sha256: s3cret-token-value}\n", env)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret-token-value")
	cfg, err := load(t, fullYAML+"http:\n  tokens:\n    - {name: intake, role: ops, sha256: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08}\n", env)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8080", cfg.HTTP.Listen, "the default address")
	require.Equal(t, byte(0x9f), cfg.HTTP.Tokens[0].Hash[0], "upper-case hex is a hash too")
}

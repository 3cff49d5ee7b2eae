// Package config owns lethe's configuration file: its YAML format, the
// expansion of ${VAR} from the environment and of *_file secrets, defaults,
// and the validation that does not need a database. Checks against the live
// catalog (tables, columns, joins, predicates) live in package retention.
package config

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"

	"github.com/lethehq/lethe"
)

// Config is a whole lethe configuration file; the README documents every
// key.
type Config struct {
	// Archive says where and how archived subjects are stored.
	Archive Archive `yaml:"archive"`
	// Audit configures the audit log's anchors in the bucket.
	Audit Audit `yaml:"audit"`
	// Database says how to reach PostgreSQL.
	Database Database `yaml:"database"`
	// HTTP configures the API, metrics and health server of lethe worker and
	// lethe serve.
	HTTP HTTP `yaml:"http"`
	// Policies are the retention rules, tried in order; the first policy whose
	// predicate matches a subject decides what happens to it.
	Policies []Policy `yaml:"policies"`
	// Requests configures deletion requests.
	Requests Requests `yaml:"requests"`
	// Restore holds the credentials used only by `lethe restore`.
	Restore Restore `yaml:"restore"`
	// Schedule is the cron expression (5 fields, or @daily and friends) of
	// the nightly sweep, evaluated in Timezone. Default "0 3 * * *".
	Schedule string `yaml:"schedule"`
	// Subject is the graph of one customer's rows: the short form of
	// Subjects, a single kind named default.
	Subject Table `yaml:"subject"`
	// Subjects are the kinds of subject, each a graph of its own with its
	// own policies. After Load it holds every kind, Subject included.
	Subjects []Subject `yaml:"subjects"`
	// Timezone is the IANA zone Schedule is read in. Default UTC.
	Timezone string `yaml:"timezone"`
	// Worker tunes the queue.
	Worker Worker `yaml:"worker"`

	// Location is Timezone, loaded. Set by Load.
	Location *time.Location `yaml:"-"`
	// Cron is Schedule, parsed and bound to Location. Set by Load.
	Cron cron.Schedule `yaml:"-"`
}

// Database configures the connection to PostgreSQL.
type Database struct {
	// URL is a libpq connection string or URL. Secret: prefer ${VAR} or URLFile.
	URL string `yaml:"url"`
	// URLFile names a file holding URL, for secrets mounted as files.
	URLFile string `yaml:"url_file"`
	// MaxConns caps lethe's connection pool. Default: 5 × worker.concurrency
	// + 4: a connection for each batch worker and each of the four times as
	// many request workers, and some for the queue itself.
	MaxConns int `yaml:"max_conns"`
}

// Table is one table of the subject graph.
type Table struct {
	// Table is the table, optionally schema-qualified ("crm.customers").
	// Unquoted names fold to lower case as in SQL; "Quoted" names keep case.
	Table string `yaml:"table"`
	// Key is the subject's key column; only on the root table.
	Key string `yaml:"key"`
	// Join is "<column of this table> = <column of the parent table>"; on
	// every table but the root.
	Join string `yaml:"join"`
	// Related are the tables whose rows hang off this one.
	Related []Table `yaml:"related"`
	// IgnoreReferences, on the root only, lists tables outside the graph
	// whose foreign keys into it lethe need not check at start: their rows
	// never reference a subject it removes. A row that does still stops
	// that subject, which lethe then leaves in place and reports.
	IgnoreReferences []string `yaml:"ignore_references"`
}

// Subject is one kind of subject: a named graph.
type Subject struct {
	// Name names the kind in policies, requests and holds.
	Name string `yaml:"name"`
	// Protect is an SQL predicate on the kind's table; a deletion request
	// for a matching subject is rejected unless forced.
	Protect string `yaml:"protect"`
	// Table is the kind's graph, its root being the subject table.
	Table `yaml:",inline"`

	// ConfigKey is where the kind is configured: subject or subjects[i].
	ConfigKey string `yaml:"-"`
}

// DefaultKind is the name of the kind that subject: configures.
const DefaultKind = "default"

// Policy is one retention rule.
type Policy struct {
	// Name identifies the policy in the manifest, runs and logs.
	Name string `yaml:"name"`
	// Subject is the kind of subject the policy governs. Default: the only
	// kind; required when there are several.
	Subject string `yaml:"subject"`
	// Where is an SQL predicate on the subject table (for then: minimize, on
	// Table); empty matches every row.
	Where string `yaml:"where"`
	// Clock is the column of the subject table (for then: minimize, of
	// Table) the retention window runs from (timestamptz, timestamp or
	// date). Rows whose clock is NULL are never due.
	Clock string `yaml:"clock"`
	// Retain is the retention window: 730d, 12w or 7y.
	Retain string `yaml:"retain"`
	// Then is what happens to a due subject: archive (default), delete, or
	// minimize (named columns of its rows are hashed, masked or nulled).
	Then string `yaml:"then"`
	// ArchiveRetain is how long the archived copy lives; empty keeps it until
	// a deletion request. For then: archive, and then: minimize with
	// archive: true.
	ArchiveRetain string `yaml:"archive_retain"`
	// Table is, for then: minimize, the table of the graph whose rows are
	// minimised. Default: the subject table.
	Table string `yaml:"table"`
	// Columns are, for then: minimize, what becomes of each column: null,
	// hash or keep_last:N.
	Columns map[string]ColumnAction `yaml:"columns"`
	// Archive, for then: minimize, archives the original values of the
	// minimised columns before they change.
	Archive bool `yaml:"archive"`

	// RetainDays is Retain, parsed.
	RetainDays Days `yaml:"-"`
	// ArchiveRetainDays is ArchiveRetain, parsed; zero when unset.
	ArchiveRetainDays Days `yaml:"-"`
	// Minimize is Columns, parsed, in column order.
	Minimize []Minimize `yaml:"-"`
}

// Then values.
const (
	ThenArchive  = "archive"
	ThenDelete   = "delete"
	ThenMinimize = "minimize"
)

// Lock modes of archive.lock_mode.
const (
	LockGovernance = "governance"
	LockCompliance = "compliance"
	LockNone       = "none"
)

// MaxArchiveRetain is the longest archive_retain: S3 Object Lock retains an
// object for at most 100 years.
const MaxArchiveRetain Days = 36500

// Requests configures deletion requests.
type Requests struct {
	// Protect is an SQL predicate on the subject table; a deletion request for
	// a matching subject is rejected unless forced.
	Protect string `yaml:"protect"`
	// SigningKeyFile is an Ed25519 private key (PKCS#8 PEM) that signs each
	// completed request's receipt; empty: receipts are not signed. A
	// relative path is read from the config file's directory.
	SigningKeyFile string `yaml:"signing_key_file"`
	// SigningKey is SigningKeyFile, parsed.
	SigningKey ed25519.PrivateKey `yaml:"-"`
	// Regimes are the legal regimes a request may be received under, by
	// name: their deadline, extension and acknowledgement periods. The
	// built-in ccpa and gdpr are added unless a regime of the same name
	// replaces them. After Load it holds every regime, parsed.
	Regimes map[string]Regime `yaml:"regimes"`
	// DefaultRegime is the regime of a request that names none. Default
	// ccpa.
	DefaultRegime string `yaml:"default_regime"`
}

// Audit configures the anchors of the audit log's chain in the bucket.
type Audit struct {
	// AnchorEvery is the longest time entries wait for an anchor: a Go
	// duration (such as 1h or 30m), at least a minute. Default 1h.
	AnchorEvery string `yaml:"anchor_every"`
	// AnchorRetain is how long each anchor is retained under Object Lock,
	// as d, w or y; at least the longest archive_retain. Default 7y.
	AnchorRetain string `yaml:"anchor_retain"`
	// AnchorInterval and AnchorRetainDays are the two, parsed.
	AnchorInterval   time.Duration `yaml:"-"`
	AnchorRetainDays Days          `yaml:"-"`
}

// Archive configures the object store and the encryption of bundles.
type Archive struct {
	// Endpoint is the S3 endpoint URL; empty means AWS.
	Endpoint string `yaml:"endpoint"`
	// Region is the S3 region. Default us-east-1.
	Region string `yaml:"region"`
	// Bucket holds the archive. It must have versioning and object lock on.
	Bucket string `yaml:"bucket"`
	// Prefix is put before every object name, such as "v1/".
	Prefix string `yaml:"prefix"`
	// PathStyle addresses the bucket in the path, as local servers need.
	PathStyle bool `yaml:"path_style"`
	// Credentials are the worker's: put objects and set their locks; never
	// get, list or delete.
	Credentials Credentials `yaml:"credentials"`
	// Recipients are the master age public keys (age1...): every subject's
	// own key is wrapped to all of them.
	Recipients []string `yaml:"recipients"`
	// RecipientsFile names a file of recipients, one per line, added to
	// Recipients.
	RecipientsFile string `yaml:"recipients_file"`
	// KeySecret is the HMAC secret that names subjects outside the hot
	// tables. Secret, at least 16 bytes; changing it orphans every name.
	KeySecret string `yaml:"key_secret"`
	// KeySecretFile names a file holding KeySecret.
	KeySecretFile string `yaml:"key_secret_file"`
	// BatchSize is how many subjects one archive-batch job moves, and so
	// how many parts one segment holds. Default 500.
	BatchSize int `yaml:"batch_size"`
	// LockMode is the S3 Object Lock mode of each segment: governance,
	// compliance or none. Default governance. With a policy's
	// archive_retain, the segment is retained until archived_at plus it.
	LockMode string `yaml:"lock_mode"`

	// LedgerPrefix is where the audit anchors go: Prefix + "ledger/". It is
	// not read from the file; lethe bench keeps the worker's when it moves
	// Prefix.
	LedgerPrefix string `yaml:"-"`
	// ParsedRecipients are Recipients and RecipientsFile, parsed.
	ParsedRecipients []age.Recipient `yaml:"-"`
}

// Credentials is an S3 access key pair.
type Credentials struct {
	AccessKeyID         string `yaml:"access_key_id"`
	SecretAccessKey     string `yaml:"secret_access_key"`
	SecretAccessKeyFile string `yaml:"secret_access_key_file"`
}

// Restore configures `lethe restore`.
type Restore struct {
	// Credentials are the reader's: get objects, nothing else.
	Credentials Credentials `yaml:"credentials"`
}

// Worker tunes the River queue.
type Worker struct {
	// Concurrency is how many jobs one process works at once. Default 4.
	Concurrency int `yaml:"concurrency"`
	// MaxAttempts is how often a failing job is tried before it is
	// discarded. Default 10.
	MaxAttempts int `yaml:"max_attempts"`
}

// HTTP configures lethe's HTTP server.
type HTTP struct {
	// Listen is the address to listen on. Default 127.0.0.1:8080; "off"
	// turns the server off in lethe worker.
	Listen string `yaml:"listen"`
	// TLSCert and TLSKey are PEM files; with both set the server speaks
	// only TLS.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// Tokens are the API's bearer tokens. Only their SHA-256 is stored.
	Tokens []Token `yaml:"tokens"`
	// MaxBodyBytes caps a request body. Default 65536.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// Token is one bearer token of the API.
type Token struct {
	// Name is who holds the token; the audit log records calls under it.
	Name string `yaml:"name"`
	// Role is privacy, legal, auditor or ops.
	Role string `yaml:"role"`
	// SHA256 is the hex SHA-256 of the token (sha256sum of it, without a
	// newline).
	SHA256 string `yaml:"sha256"`

	// Hash is SHA256, decoded. Set by Load.
	Hash [32]byte `yaml:"-"`
}

// The roles a token may have.
const (
	RolePrivacy = "privacy"
	RoleLegal   = "legal"
	RoleAuditor = "auditor"
	RoleOps     = "ops"
)

// HTTPListenOff in http.listen turns lethe worker's server off.
const HTTPListenOff = "off"

// Error is a configuration problem that names the key at fault.
type Error struct {
	Key string
	Msg string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return "config: " + e.Msg
	}
	return "config: " + e.Key + ": " + e.Msg
}

// Unwrap makes every config error a lethe.ErrBadInput: the CLI exits 2.
func (e *Error) Unwrap() error { return lethe.ErrBadInput }

// Errorf returns an *Error for key.
func Errorf(key, format string, args ...any) error {
	return &Error{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// IsConfigError reports whether err is, or wraps, a configuration problem.
func IsConfigError(err error) bool {
	var ce *Error
	return errors.As(err, &ce)
}

// LoadFile reads, expands, defaults and validates the config at path. The
// relative paths of *_file keys are read from the config file's directory.
func LoadFile(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{Msg: fmt.Sprintf("cannot read config file: %v (pass --config FILE or set LETHE_CONFIG)", err)}
	}
	return load(bytes.NewReader(b), os.LookupEnv, filepath.Dir(path))
}

// Load reads a config from r, expanding ${VAR} with lookup, applies defaults
// and validates everything that can be checked without a database.
func Load(r io.Reader, lookup func(string) (string, bool)) (*Config, error) {
	return load(r, lookup, "")
}

func load(r io.Reader, lookup func(string) (string, bool), dir string) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(r)
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Msg: "config file is empty"}
		}
		return nil, &Error{Msg: oneLine(err.Error())}
	}
	if err := expandNode(&root, "", lookup); err != nil {
		return nil, err
	}
	var c Config
	if err := decodeStrict(&root, &c); err != nil {
		return nil, err
	}
	if err := c.readFiles(dir); err != nil {
		return nil, err
	}
	c.applyDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// decodeStrict decodes node into c, refusing unknown keys.
func decodeStrict(node *yaml.Node, c *Config) error {
	if err := unknownKeys(node, reflect.TypeOf(*c), ""); err != nil {
		return err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(node); err != nil {
		return &Error{Msg: oneLine(err.Error())}
	}
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return &Error{Msg: oneLine(strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:"))}
	}
	return nil
}

// unknownKeys reports the first mapping key below n that t (a struct, or
// a slice or map of them) has no yaml field for, with its whole key path.
func unknownKeys(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := unknownKeys(c, t, path); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice {
			return nil // a type error, which decoding reports
		}
		for i, c := range n.Content {
			if err := unknownKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		if t.Kind() == reflect.Map {
			// A map's keys are names the config chooses (requests.regimes);
			// its values are checked like any struct.
			for i := 0; i+1 < len(n.Content); i += 2 {
				if err := unknownKeys(n.Content[i+1], t.Elem(), path+"."+n.Content[i].Value); err != nil {
					return err
				}
			}
			return nil
		}
		if t.Kind() != reflect.Struct {
			return nil
		}
		fields := map[string]reflect.Type{}
		yamlFields(t, fields)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			key := k.Value
			if path != "" {
				key = path + "." + k.Value
			}
			ft, ok := fields[k.Value]
			if !ok {
				return Errorf(key, "unknown key (line %d): check its spelling against the README's configuration reference", k.Line)
			}
			if err := unknownKeys(n.Content[i+1], ft, key); err != nil {
				return err
			}
		}
	}
	return nil
}

// yamlFields adds the yaml keys of struct t to fields, with those of its
// inline fields.
func yamlFields(t reflect.Type, fields map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case opts == "inline" && f.Type.Kind() == reflect.Struct:
			yamlFields(f.Type, fields)
		case name != "" && name != "-":
			fields[name] = f.Type
		}
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// readFiles resolves the *_file variants of secrets.
func (c *Config) readFiles(dir string) error {
	resolve := func(p string) string {
		if dir == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	type pair struct {
		key  string
		file string
		dst  *string
	}
	pairs := []pair{
		{"database.url", c.Database.URLFile, &c.Database.URL},
		{"archive.key_secret", c.Archive.KeySecretFile, &c.Archive.KeySecret},
		{"archive.credentials.secret_access_key", c.Archive.Credentials.SecretAccessKeyFile, &c.Archive.Credentials.SecretAccessKey},
		{"restore.credentials.secret_access_key", c.Restore.Credentials.SecretAccessKeyFile, &c.Restore.Credentials.SecretAccessKey},
	}
	for _, p := range pairs {
		if p.file == "" {
			continue
		}
		if *p.dst != "" {
			return Errorf(p.key, "set both %s and %s_file: keep one", p.key, p.key)
		}
		b, err := os.ReadFile(resolve(p.file))
		if err != nil {
			return Errorf(p.key+"_file", "cannot read %q: %v", p.file, err)
		}
		*p.dst = strings.TrimSpace(string(b))
	}
	if c.Requests.SigningKeyFile != "" {
		b, err := os.ReadFile(resolve(c.Requests.SigningKeyFile))
		if err != nil {
			return Errorf("requests.signing_key_file", "cannot read %q: %v", c.Requests.SigningKeyFile, err)
		}
		if c.Requests.SigningKey, err = ParseSigningKey(b); err != nil {
			return Errorf("requests.signing_key_file", "%s: %v", c.Requests.SigningKeyFile, err)
		}
	}
	if c.Archive.RecipientsFile != "" {
		b, err := os.ReadFile(resolve(c.Archive.RecipientsFile))
		if err != nil {
			return Errorf("archive.recipients_file", "cannot read %q: %v", c.Archive.RecipientsFile, err)
		}
		// A PEM block (an SSH or TLS private key, chosen by mistake) is one
		// mistake, not one per line; its lines are never quoted back.
		if strings.Contains(string(b), "-----BEGIN ") {
			return Errorf("archive.recipients_file", "%s holds a PEM block (a private key?), not age recipients: give a file of public keys, age1... one per line, as age-keygen -y prints them",
				c.Archive.RecipientsFile)
		}
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			c.Archive.Recipients = append(c.Archive.Recipients, line)
		}
	}
	return nil
}

func (c *Config) applyDefaults() {
	if c.Schedule == "" {
		c.Schedule = "0 3 * * *"
	}
	if c.Timezone == "" {
		c.Timezone = "UTC"
	}
	if c.Archive.Region == "" {
		c.Archive.Region = "us-east-1"
	}
	if c.Archive.BatchSize == 0 {
		c.Archive.BatchSize = 500
	}
	if c.Archive.LockMode == "" {
		c.Archive.LockMode = LockGovernance
	}
	if c.Archive.LedgerPrefix == "" {
		c.Archive.LedgerPrefix = c.Archive.Prefix + "ledger/"
	}
	if c.Audit.AnchorEvery == "" {
		c.Audit.AnchorEvery = "1h"
	}
	if c.Audit.AnchorRetain == "" {
		c.Audit.AnchorRetain = "7y"
	}
	if c.Worker.Concurrency == 0 {
		c.Worker.Concurrency = 4
	}
	if c.Worker.MaxAttempts == 0 {
		c.Worker.MaxAttempts = 10
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:8080"
	}
	if c.HTTP.MaxBodyBytes == 0 {
		c.HTTP.MaxBodyBytes = 64 << 10
	}
	if c.Database.MaxConns == 0 {
		c.Database.MaxConns = 5*c.Worker.Concurrency + 4
	}
	if c.Requests.DefaultRegime == "" {
		c.Requests.DefaultRegime = RegimeCCPA
	}
	for i := range c.Policies {
		if c.Policies[i].Then == "" {
			c.Policies[i].Then = ThenArchive
		}
	}
	// subject: is the short form of a one-kind subjects: list.
	if c.Subject.Table != "" && len(c.Subjects) == 0 {
		c.Subjects = []Subject{{Name: DefaultKind, Protect: c.Requests.Protect, Table: c.Subject, ConfigKey: "subject"}}
	}
	for i := range c.Subjects {
		if c.Subjects[i].ConfigKey == "" {
			c.Subjects[i].ConfigKey = fmt.Sprintf("subjects[%d]", i)
		}
	}
	if len(c.Subjects) == 1 {
		for i := range c.Policies {
			if c.Policies[i].Subject == "" {
				c.Policies[i].Subject = c.Subjects[0].Name
			}
		}
	}
}

// Kind returns the kind of subject called name, or nil. An empty name is
// the default kind: the only one, or the one named default.
func (c *Config) Kind(name string) *Subject {
	if name == "" {
		if len(c.Subjects) == 1 {
			return &c.Subjects[0]
		}
		name = DefaultKind
	}
	for i := range c.Subjects {
		if c.Subjects[i].Name == name {
			return &c.Subjects[i]
		}
	}
	return nil
}

// Policy returns the policy called name, or nil.
func (c *Config) Policy(name string) *Policy {
	for i := range c.Policies {
		if c.Policies[i].Name == name {
			return &c.Policies[i]
		}
	}
	return nil
}

// ValidateRestore checks what `lethe restore` needs beyond the rest.
func (c *Config) ValidateRestore() error {
	return validateCredentials("restore.credentials", c.Restore.Credentials)
}

// Redacted returns a copy of c with every secret replaced, for printing.
func (c *Config) Redacted() *Config {
	r := *c
	const hidden = "<redacted>"
	if r.Database.URL != "" {
		r.Database.URL = redactURL(r.Database.URL)
	}
	if r.Archive.KeySecret != "" {
		r.Archive.KeySecret = hidden
	}
	if r.Archive.Credentials.SecretAccessKey != "" {
		r.Archive.Credentials.SecretAccessKey = hidden
	}
	if r.Restore.Credentials.SecretAccessKey != "" {
		r.Restore.Credentials.SecretAccessKey = hidden
	}
	return &r
}

// WithGraph returns a copy of c with another subject graph (one kind, named
// default), policies and requests section, defaulted and validated like a
// whole config. lethe bench uses it to point the configured database and
// bucket at its own scratch tables.
func (c *Config) WithGraph(subject Table, policies []Policy, requests Requests) (*Config, error) {
	out := *c
	out.Subject, out.Subjects, out.Policies, out.Requests = subject, nil, slices.Clone(policies), requests
	out.Archive.Recipients = slices.Clone(c.Archive.Recipients)
	out.applyDefaults()
	if err := out.validate(); err != nil {
		return nil, err
	}
	return &out, nil
}

// ParseSigningKey parses an Ed25519 private key in PKCS#8 PEM, as
// "openssl genpkey -algorithm ed25519" writes it.
func ParseSigningKey(b []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----): make one with openssl genpkey -algorithm ed25519")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKCS#8 private key: %v", err)
	}
	ed, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an Ed25519 key: make one with openssl genpkey -algorithm ed25519", key)
	}
	return ed, nil
}

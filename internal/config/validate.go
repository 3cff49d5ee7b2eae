package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/robfig/cron/v3"
)

var policyName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// validate checks everything that does not need a database and fills in the
// parsed fields. It reports every problem it finds, one per line.
func (c *Config) validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}

	if c.Database.URL == "" {
		add(Errorf("database.url", "is empty: set it (for example ${LETHE_DATABASE_URL}) or database.url_file"))
	}
	if c.Database.MaxConns < 2 {
		add(Errorf("database.max_conns", "%d is too small: lethe needs at least 2 connections", c.Database.MaxConns))
	}

	loc, err := time.LoadLocation(c.Timezone)
	if err != nil {
		add(Errorf("timezone", "%q is not a known IANA time zone (such as UTC or Europe/Berlin)", c.Timezone))
	} else {
		c.Location = loc
	}
	sched, err := cron.ParseStandard(c.Schedule)
	if err != nil {
		add(Errorf("schedule", "%q is not a cron expression: %v (write 5 fields, such as \"0 3 * * *\")", c.Schedule, err))
	} else if loc != nil {
		c.Cron = inZone{sched, loc}
	}

	add(c.validateKinds())

	if len(c.Policies) == 0 {
		add(Errorf("policies", "is empty: add at least one policy"))
	}
	seen := map[string]bool{}
	for i := range c.Policies {
		p := &c.Policies[i]
		key := fmt.Sprintf("policies[%d]", i)
		if !policyName.MatchString(p.Name) {
			add(Errorf(key+".name", "%q must be lower case letters, digits, - and _ (at most 63)", p.Name))
		} else if seen[p.Name] {
			add(Errorf(key+".name", "%q is used by an earlier policy: names must be unique", p.Name))
		}
		seen[p.Name] = true
		switch {
		case p.Subject == "" && len(c.Subjects) > 1:
			add(Errorf(key+".subject", "is empty: name the kind of subject the policy governs (%s)", c.kindNames()))
		case p.Subject != "" && len(c.Subjects) > 0 && c.Kind(p.Subject) == nil:
			add(Errorf(key+".subject", "%q is not a kind of subject: use %s", p.Subject, c.kindNames()))
		}
		if strings.TrimSpace(p.Clock) == "" {
			add(Errorf(key+".clock", "is empty: name the column the retention window runs from"))
		} else if _, err := ParseIdent(p.Clock); err != nil {
			add(Errorf(key+".clock", "%q: %v", p.Clock, err))
		}
		if d, err := ParseDays(p.Retain); err != nil {
			add(Errorf(key+".retain", "%v", err))
		} else {
			p.RetainDays = d
		}
		switch p.Then {
		case ThenArchive, ThenDelete:
			if p.ArchiveRetain != "" && p.Then == ThenDelete {
				add(Errorf(key+".archive_retain", "is set but then is delete: nothing is archived, so remove it"))
			}
			if p.Table != "" {
				add(Errorf(key+".table", "is set but then is %s: a policy names a table only to minimise it", p.Then))
			}
			if len(p.Columns) > 0 {
				add(Errorf(key+".columns", "are set but then is %s: columns are what then: minimize minimises", p.Then))
			}
			if p.Archive {
				add(Errorf(key+".archive", "is set but then is %s: it says whether then: minimize archives first", p.Then))
			}
		case ThenMinimize:
			if p.ArchiveRetain != "" && !p.Archive {
				add(Errorf(key+".archive_retain", "is set but archive is false: nothing is archived, so remove it or set archive: true"))
			}
			if p.Table != "" {
				if _, err := ParseQualified(p.Table); err != nil {
					add(Errorf(key+".table", "%q: %v", p.Table, err))
				}
			}
			cols, err := parseColumns(key+".columns", p.Columns)
			add(err)
			p.Minimize = cols
		default:
			add(Errorf(key+".then", "%q is not archive, delete or minimize", p.Then))
		}
		if p.ArchiveRetain != "" {
			switch d, err := ParseDays(p.ArchiveRetain); {
			case err != nil:
				add(Errorf(key+".archive_retain", "%v", err))
			case d > MaxArchiveRetain:
				add(Errorf(key+".archive_retain", "%s is longer than S3 Object Lock retains an object (100 years, %dd): use at most 100y", p.ArchiveRetain, int(MaxArchiveRetain)))
			default:
				p.ArchiveRetainDays = d
			}
		}
		add(CheckPredicate(key+".where", p.Where))
	}
	add(c.Requests.validateRegimes())

	a := &c.Archive
	if a.Endpoint != "" {
		u, err := url.Parse(a.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(Errorf("archive.endpoint", "%q is not an http:// or https:// URL", a.Endpoint))
		}
	}
	if a.Bucket == "" {
		add(Errorf("archive.bucket", "is empty: name the bucket that holds the archive"))
	} else if !bucketName.MatchString(a.Bucket) {
		add(Errorf("archive.bucket", "%q is not a valid S3 bucket name", a.Bucket))
	}
	if strings.HasPrefix(a.Prefix, "/") {
		add(Errorf("archive.prefix", "%q must not start with /", a.Prefix))
	}
	add(validateCredentials("archive.credentials", a.Credentials))
	if len(a.Recipients) == 0 {
		add(Errorf("archive.recipients", "is empty: give at least one age public key (age1...)"))
	}
	a.ParsedRecipients = nil
	for i, r := range a.Recipients {
		rec, err := ParseRecipient(r)
		if err != nil {
			add(Errorf(fmt.Sprintf("archive.recipients[%d]", i), "%v", err))
			continue
		}
		a.ParsedRecipients = append(a.ParsedRecipients, rec)
	}
	if len(a.KeySecret) < 16 {
		add(Errorf("archive.key_secret", "is %d bytes long: use at least 16 random bytes (openssl rand -hex 32)", len(a.KeySecret)))
	}
	if a.BatchSize < 1 || a.BatchSize > 10_000 {
		add(Errorf("archive.batch_size", "%d is out of range 1..10000", a.BatchSize))
	}
	switch a.LockMode {
	case LockGovernance, LockCompliance, LockNone:
	default:
		add(Errorf("archive.lock_mode", "%q is not governance, compliance or none", a.LockMode))
	}
	if d, err := time.ParseDuration(c.Audit.AnchorEvery); err != nil {
		add(Errorf("audit.anchor_every", "%q is not a duration: write one such as 1h or 30m", c.Audit.AnchorEvery))
	} else if d < time.Minute {
		add(Errorf("audit.anchor_every", "%s is under a minute: anchor at most once a minute (such as 1h)", c.Audit.AnchorEvery))
	} else {
		c.Audit.AnchorInterval = d
	}
	if d, err := ParseDays(c.Audit.AnchorRetain); err != nil {
		add(Errorf("audit.anchor_retain", "%v", err))
	} else if d > MaxArchiveRetain {
		add(Errorf("audit.anchor_retain", "%s is longer than S3 Object Lock retains an object: use at most 100y", c.Audit.AnchorRetain))
	} else {
		c.Audit.AnchorRetainDays = d
		for i, p := range c.Policies {
			if p.ArchiveRetainDays > d {
				add(Errorf("audit.anchor_retain", "%s is shorter than policies[%d].archive_retain (%s): the anchors must outlive every archived copy", c.Audit.AnchorRetain, i, p.ArchiveRetain))
				break
			}
		}
	}
	if c.Worker.Concurrency < 1 || c.Worker.Concurrency > 256 {
		add(Errorf("worker.concurrency", "%d is out of range 1..256", c.Worker.Concurrency))
	}
	if c.Worker.MaxAttempts < 1 || c.Worker.MaxAttempts > 100 {
		add(Errorf("worker.max_attempts", "%d is out of range 1..100", c.Worker.MaxAttempts))
	}
	add(c.HTTP.validate())
	return errors.Join(errs...)
}

var tokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$`)

func (h *HTTP) validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if h.Listen != HTTPListenOff {
		if _, port, err := net.SplitHostPort(h.Listen); err != nil || port == "" {
			add(Errorf("http.listen", "%q is not host:port (such as 127.0.0.1:8080), nor off", h.Listen))
		}
	}
	if (h.TLSCert == "") != (h.TLSKey == "") {
		add(Errorf("http.tls_cert", "and http.tls_key go together: set both for TLS, or neither"))
	}
	if h.MaxBodyBytes < 1024 || h.MaxBodyBytes > 64<<20 {
		add(Errorf("http.max_body_bytes", "%d is out of range 1024..67108864", h.MaxBodyBytes))
	}
	names := map[string]bool{}
	hashes := map[[32]byte]bool{}
	for i := range h.Tokens {
		t := &h.Tokens[i]
		key := fmt.Sprintf("http.tokens[%d]", i)
		if !tokenName.MatchString(t.Name) {
			add(Errorf(key+".name", "%q must be letters, digits, . _ @ and - (at most 63)", t.Name))
		} else if names[t.Name] {
			add(Errorf(key+".name", "%q is used by an earlier token: names must be unique", t.Name))
		}
		names[t.Name] = true
		switch t.Role {
		case RolePrivacy, RoleLegal, RoleAuditor, RoleOps:
		default:
			add(Errorf(key+".role", "%q is not a role: use privacy, legal, auditor or ops", t.Role))
		}
		b, err := hex.DecodeString(strings.TrimSpace(t.SHA256))
		if err != nil || len(b) != 32 {
			// The value is not repeated: it may be the token itself,
			// pasted by mistake.
			add(Errorf(key+".sha256", "is not 64 hex digits: store the SHA-256 of the token (printf %%s TOKEN | sha256sum), never the token"))
			continue
		}
		copy(t.Hash[:], b)
		if hashes[t.Hash] {
			add(Errorf(key+".sha256", "is the same token as an earlier one: give each holder a token of its own"))
		}
		hashes[t.Hash] = true
	}
	return errors.Join(errs...)
}

// ParseRecipient parses one age recipient. It refuses an identity (a
// private key) with an error that says so: the worker must never hold one.
func ParseRecipient(s string) (age.Recipient, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(strings.ToUpper(s), "AGE-SECRET-KEY-") {
		return nil, errors.New("is an age identity (a private key), not a recipient: the worker must hold only public keys; give the output of age-keygen -y instead, and keep the identity offline")
	}
	recs, err := age.ParseRecipients(strings.NewReader(s))
	if err != nil || len(recs) != 1 {
		// The value is not quoted back: a mistaken paste may be a secret
		// (an SSH private key, say).
		return nil, errors.New("is not an age recipient: give a public key, age1... as age-keygen -y prints it")
	}
	return recs[0], nil
}

func validateCredentials(key string, c Credentials) error {
	var errs []error
	if c.AccessKeyID == "" {
		errs = append(errs, Errorf(key+".access_key_id", "is empty: set the access key id"))
	}
	if c.SecretAccessKey == "" {
		errs = append(errs, Errorf(key+".secret_access_key", "is empty: set it or secret_access_key_file"))
	}
	return errors.Join(errs...)
}

// validateKinds checks the kinds of subject: subject: or subjects:, their
// names, their graphs and their protect predicates.
func (c *Config) validateKinds() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	setSubject := c.Subject.Table != "" || c.Subject.Key != "" || len(c.Subject.Related) > 0
	switch {
	case len(c.Subjects) == 0:
		// subject: without a table (applyDefaults moves a whole one into
		// subjects:), or neither.
		add(c.Subject.validateGraph("subject", true, map[string]string{}))
	case setSubject && c.Subjects[0].ConfigKey != "subject":
		add(Errorf("subject", "is set beside subjects: use subject: for one kind, or subjects: for several, not both"))
	}
	names := map[string]string{}
	roots := map[string]string{}
	for i := range c.Subjects {
		k := &c.Subjects[i]
		if !policyName.MatchString(k.Name) {
			add(Errorf(k.ConfigKey+".name", "%q must be lower case letters, digits, - and _ (at most 63)", k.Name))
		} else if prev, dup := names[k.Name]; dup {
			add(Errorf(k.ConfigKey+".name", "%q is the name of %s too: each kind needs a name of its own", k.Name, prev))
		} else {
			names[k.Name] = k.ConfigKey
		}
		add(k.Table.validateGraph(k.ConfigKey, true, map[string]string{}))
		if parts, err := ParseQualified(k.Table.Table); err == nil {
			norm := strings.Join(parts, ".")
			if prev, dup := roots[norm]; dup {
				add(Errorf(k.ConfigKey+".table", "%q is the subject table of %s too: a table can be the subject table of one kind only", k.Table.Table, prev))
			}
			roots[norm] = k.ConfigKey
		}
		add(CheckPredicate(k.ProtectKey(), k.Protect))
	}
	if c.Requests.Protect != "" && (len(c.Subjects) > 1 || len(c.Subjects) == 1 && c.Subjects[0].ConfigKey != "subject") {
		if d := c.Kind(DefaultKind); d == nil || d.Protect != "" {
			add(Errorf("requests.protect", "is the short form of the protect of kind default, which subjects: does not configure without its own: set protect on each kind under subjects: instead"))
		} else {
			d.Protect = c.Requests.Protect
		}
	}
	return errors.Join(errs...)
}

// ProtectKey is where the kind's protect predicate is configured.
func (k *Subject) ProtectKey() string {
	if k.ConfigKey == "subject" {
		return "requests.protect"
	}
	return k.ConfigKey + ".protect"
}

// kindNames lists the kinds' names, for errors.
func (c *Config) kindNames() string {
	var names []string
	for _, k := range c.Subjects {
		if !slices.Contains(names, k.Name) {
			names = append(names, k.Name)
		}
	}
	return strings.Join(names, ", ")
}

// validateGraph checks the shape of the subject graph. seen maps each table
// already in the graph to the key that named it.
func (t *Table) validateGraph(key string, root bool, seen map[string]string) error {
	var errs []error
	name, err := ParseQualified(t.Table)
	switch {
	case strings.TrimSpace(t.Table) == "":
		errs = append(errs, Errorf(key+".table", "is empty: name the table"))
	case err != nil:
		errs = append(errs, Errorf(key+".table", "%q: %v", t.Table, err))
	default:
		norm := strings.Join(name, ".")
		if prev, dup := seen[norm]; dup {
			errs = append(errs, Errorf(key+".table", "%q is already in the graph at %s: each table may appear once", t.Table, prev))
		}
		seen[norm] = key + ".table"
	}
	if root {
		if t.Join != "" {
			errs = append(errs, Errorf(key+".join", "is set on the subject table: only related tables join"))
		}
		if strings.TrimSpace(t.Key) == "" {
			errs = append(errs, Errorf(key+".key", "is empty: name the subject's key column"))
		} else if _, err := ParseIdent(t.Key); err != nil {
			errs = append(errs, Errorf(key+".key", "%q: %v", t.Key, err))
		}
	} else {
		if t.Key != "" {
			errs = append(errs, Errorf(key+".key", "is set on a related table: only the subject table has a key"))
		}
		if len(t.IgnoreReferences) > 0 {
			errs = append(errs, Errorf(key+".ignore_references", "is set on a related table: list the tables to ignore on the subject table"))
		}
		if _, _, err := ParseJoin(t.Join); err != nil {
			errs = append(errs, Errorf(key+".join", "%q: %v", t.Join, err))
		}
	}
	for i := range t.Related {
		errs = append(errs, t.Related[i].validateGraph(key+".related["+strconv.Itoa(i)+"]", false, seen))
	}
	return errors.Join(errs...)
}

// Walk calls fn for t and every table below it, parents before children,
// with the key path each was configured at and its depth (root 0).
func (t *Table) Walk(prefix string, fn func(key string, depth int, parent, table *Table)) {
	var walk func(key string, depth int, parent, table *Table)
	walk = func(key string, depth int, parent, table *Table) {
		fn(key, depth, parent, table)
		for i := range table.Related {
			walk(key+".related["+strconv.Itoa(i)+"]", depth+1, table, &table.Related[i])
		}
	}
	walk(prefix, 0, nil, t)
}

// inZone evaluates a cron schedule in a fixed location.
type inZone struct {
	cron.Schedule
	loc *time.Location
}

func (z inZone) Next(t time.Time) time.Time { return z.Schedule.Next(t.In(z.loc)) }

package retention

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/internal/config"
)

// Plan is the config's subject graph and policies, checked against the live
// catalog and turned into SQL.
type Plan struct {
	// Root is the subject table.
	Root *Node
	// Nodes are every table of the graph, parents before children.
	Nodes []*Node
	// Policies are the config's policies, in order.
	Policies []*PolicyPlan
	// KeyType is the SQL type of the subject key, such as bigint.
	KeyType string
	// Protect is requests.protect (may be empty).
	Protect string

	keyCol  string
	keyBase string // the key type's base type, such as int8 or numeric
	subject string // subject.table as written: part of every HMAC
	hasher  *Hasher
	hmacp   hmacParams // the same HMAC, computed by PostgreSQL
	sql     statements
}

// Node is one table of the subject graph.
type Node struct {
	// Name is the table as written in the config; it keys the bundle's rows.
	Name string
	// ConfigKey is where the table is configured, such as
	// subject.related[0].related[1].
	ConfigKey string
	// Ident is the table's schema-qualified name as it is in the catalog.
	Ident pgx.Identifier
	// OID is the table's oid.
	OID uint32
	// Parent is nil for the root.
	Parent *Node
	// Depth is 0 for the root.
	Depth int
	// Join is the join as written in the config (empty on the root).
	Join string
	// ChildCol and ParentCol are the join columns (empty on the root).
	ChildCol, ParentCol string

	columns map[string]column
}

// PolicyPlan is a policy with what the catalog said about it.
type PolicyPlan struct {
	config.Policy
	// ClockType is the clock column's type.
	ClockType string
	// ConfigKey is where the policy is configured, such as policies[1].
	ConfigKey string
}

// Archive reports whether the policy archives (else it destroys).
func (p *PolicyPlan) Archive() bool { return p.Then == config.ThenArchive }

// Cutoff is the instant before which a clock value is due.
func (p *PolicyPlan) Cutoff(now time.Time) time.Time { return now.Add(-p.RetainDays.Duration()) }

type column struct {
	typ    string // format_type, without modifiers
	unique bool   // a unique index covers exactly this column
}

// Tables returns the graph's table names as written in the config, in graph
// order: the keys of a bundle's rows.
func (p *Plan) Tables() []string {
	names := make([]string, len(p.Nodes))
	for i, n := range p.Nodes {
		names[i] = n.Name
	}
	return names
}

// Policy returns the policy called name, or nil.
func (p *Plan) Policy(name string) *PolicyPlan {
	for _, pp := range p.Policies {
		if pp.Name == name {
			return pp
		}
	}
	return nil
}

// Hasher returns the HMAC that names this plan's subjects.
func (p *Plan) Hasher() *Hasher { return p.hasher }

// Compile checks the config's graph, policies and predicates against the
// live catalog and prepares the SQL. Every problem it finds is a
// *config.Error naming the key at fault. It changes nothing: predicates and
// statements are checked with EXPLAIN in a read-only transaction that is
// rolled back.
func Compile(ctx context.Context, pool *pgxpool.Pool, cfg *config.Config) (*Plan, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("error checking config against the database: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only, always rolled back

	p := &Plan{Protect: cfg.Requests.Protect, subject: cfg.Subject.Table, hasher: NewHasher(cfg.Archive.KeySecret, cfg.Subject.Table),
		hmacp: newHMACParams(cfg.Archive.KeySecret, cfg.Subject.Table)}
	var errs []error
	var walkErr error
	parents := map[*config.Table]*Node{}
	cfg.Subject.Walk(func(key string, depth int, parent, t *config.Table) {
		if walkErr != nil {
			return
		}
		n := &Node{Name: t.Table, ConfigKey: key, Depth: depth, Parent: parents[parent], Join: t.Join}
		if parent != nil && n.Parent == nil {
			return // the parent is unusable; its error is reported
		}
		oid, ident, cols, err := lookupTable(ctx, tx, t.Table)
		if err != nil {
			if !config.IsConfigError(err) {
				walkErr = err
				return
			}
			errs = append(errs, config.Errorf(key+".table", "%v", err.(*config.Error).Msg))
			return
		}
		n.OID, n.Ident, n.columns = oid, ident, cols
		if depth == 0 {
			k, _ := config.ParseIdent(t.Key)
			c, ok := cols[k]
			switch {
			case !ok:
				errs = append(errs, config.Errorf(key+".key", "column %q does not exist in %s", k, t.Table))
				return
			case !c.unique:
				errs = append(errs, config.Errorf(key+".key", "column %q of %s has no unique index or primary key: the key must name one row", k, t.Table))
				return
			}
			typ, base, err := keyType(ctx, tx, oid, k)
			if err != nil {
				if !config.IsConfigError(err) {
					walkErr = err
					return
				}
				errs = append(errs, config.Errorf(key+".key", "column %q of %s %s", k, t.Table, err.(*config.Error).Msg))
				return
			}
			p.keyCol, p.KeyType, p.keyBase = k, typ, base
		} else {
			child, par, _ := config.ParseJoin(t.Join)
			if _, ok := cols[child]; !ok {
				errs = append(errs, config.Errorf(key+".join", "column %q does not exist in %s", child, t.Table))
				return
			}
			pc, ok := n.Parent.columns[par]
			if !ok {
				errs = append(errs, config.Errorf(key+".join", "column %q does not exist in the parent table %s", par, n.Parent.Name))
				return
			}
			if !pc.unique {
				errs = append(errs, config.Errorf(key+".join", "column %q of the parent table %s has no unique index: each row of %s must belong to one parent row", par, n.Parent.Name, t.Table))
				return
			}
			n.ChildCol, n.ParentCol = child, par
		}
		parents[t] = n
		p.Nodes = append(p.Nodes, n)
	})
	if walkErr != nil {
		return nil, walkErr
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	p.Root = p.Nodes[0]

	// Tables outside the graph that reference it would make deletes fail
	// (NO ACTION, RESTRICT) or delete rows lethe never archived (CASCADE).
	if err := p.checkOutsideReferences(ctx, tx); err != nil {
		errs = append(errs, err)
	}

	// Joins: the column types must compare.
	for _, n := range p.Nodes[1:] {
		q := fmt.Sprintf("SELECT 1 FROM %s c JOIN %s p ON c.%s = p.%s",
			n.Ident.Sanitize(), n.Parent.Ident.Sanitize(), quote(n.ChildCol), quote(n.ParentCol))
		if err := parse(ctx, tx, q); err != nil {
			errs = append(errs, config.Errorf(n.ConfigKey+".join", "%q does not work: %v", n.Join, pgMessage(err)))
		}
	}

	for i := range cfg.Policies {
		cp := cfg.Policies[i]
		key := fmt.Sprintf("policies[%d]", i)
		pp := &PolicyPlan{Policy: cp, ConfigKey: key}
		clock, _ := config.ParseIdent(cp.Clock)
		c, ok := p.Root.columns[clock]
		switch {
		case !ok:
			errs = append(errs, config.Errorf(key+".clock", "column %q does not exist in %s", clock, p.Root.Name))
		case c.typ != "timestamp with time zone" && c.typ != "timestamp without time zone" && c.typ != "date":
			errs = append(errs, config.Errorf(key+".clock", "column %q of %s is %s: it must be a timestamptz, timestamp or date", clock, p.Root.Name, c.typ))
		default:
			pp.Policy.Clock, pp.ClockType = clock, c.typ
		}
		if err := p.checkPredicate(ctx, tx, cp.Where); err != nil {
			errs = append(errs, config.Errorf(key+".where", "%q: %v", cp.Where, err))
		}
		if strings.TrimSpace(cp.Where) == "" && i < len(cfg.Policies)-1 {
			errs = append(errs, config.Errorf(fmt.Sprintf("policies[%d]", i+1), "can never apply: %s has no where, so it governs every subject first", key))
		}
		p.Policies = append(p.Policies, pp)
	}
	if err := p.checkPredicate(ctx, tx, cfg.Requests.Protect); err != nil {
		errs = append(errs, config.Errorf("requests.protect", "%q: %v", cfg.Requests.Protect, err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	p.sql = p.buildStatements()
	// Every statement lethe will run is parsed once now, so a problem the
	// checks above missed still stops lethe before it moves data.
	for _, q := range p.sql.all() {
		if err := parse(ctx, tx, q.sql); err != nil {
			return nil, fmt.Errorf("error checking the statement that %s: %w", q.what, err)
		}
	}
	return p, nil
}

// lookupTable resolves a configured table name in the catalog and returns
// its qualified identifier and its columns.
func lookupTable(ctx context.Context, tx pgx.Tx, name string) (uint32, pgx.Identifier, map[string]column, error) {
	parts, err := config.ParseQualified(name)
	if err != nil {
		return 0, nil, nil, &config.Error{Msg: err.Error()}
	}
	var oid uint32
	var schema, rel, kind string
	err = tx.QueryRow(ctx, `
		SELECT c.oid, n.nspname, c.relname, c.relkind
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1)`, pgx.Identifier(parts).Sanitize()).Scan(&oid, &schema, &rel, &kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil, nil, &config.Error{Msg: fmt.Sprintf("table %q does not exist (or lethe's role cannot see it)", name)}
	}
	if err != nil {
		return 0, nil, nil, fmt.Errorf("error looking up table %q: %w", name, err)
	}
	if kind != "r" && kind != "p" {
		return 0, nil, nil, &config.Error{Msg: fmt.Sprintf("%q is not a table (relkind %s): lethe deletes rows, so it needs tables", name, kind)}
	}
	rows, err := tx.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, NULL),
		       EXISTS (SELECT 1 FROM pg_catalog.pg_index i
		               WHERE i.indrelid = a.attrelid AND i.indisunique AND i.indpred IS NULL
		                 AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum)
		FROM pg_catalog.pg_attribute a
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`, oid)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("error reading columns of %q: %w", name, err)
	}
	cols := map[string]column{}
	for rows.Next() {
		var n string
		var c column
		if err := rows.Scan(&n, &c.typ, &c.unique); err != nil {
			return 0, nil, nil, fmt.Errorf("error reading columns of %q: %w", name, err)
		}
		cols[n] = c
	}
	if err := rows.Err(); err != nil {
		return 0, nil, nil, fmt.Errorf("error reading columns of %q: %w", name, err)
	}
	return oid, pgx.Identifier{schema, rel}, cols, nil
}

// keyType returns the type to cast subject keys to and its base type, or a
// *config.Error when the column cannot be a subject key: its type must print
// each value one way (keyTypes), and its collation must not let two
// different strings be equal.
func keyType(ctx context.Context, tx pgx.Tx, rel uint32, col string) (cast, base string, err error) {
	var typ, btype string
	var domain, deterministic bool
	err = tx.QueryRow(ctx, `
		SELECT format_type(a.atttypid, NULL), b.typname, t.typtype = 'd',
		       coalesce((SELECT c.collisdeterministic FROM pg_catalog.pg_collation c WHERE c.oid = a.attcollation), true)
		FROM pg_catalog.pg_attribute a
		JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
		JOIN pg_catalog.pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
		WHERE a.attrelid = $1 AND a.attname = $2 AND NOT a.attisdropped`, rel, col).Scan(&typ, &btype, &domain, &deterministic)
	if err != nil {
		return "", "", fmt.Errorf("error reading the type of the key column %q: %w", col, err)
	}
	if !keyTypes[btype] {
		return "", "", &config.Error{Msg: fmt.Sprintf("is %s: a subject key must be a %s column, whose text names exactly one value (choose another unique column)", typ, keyTypeNames)}
	}
	if !deterministic {
		return "", "", &config.Error{Msg: "has a nondeterministic collation, under which different text is equal: a subject key must compare byte for byte (choose another unique column)"}
	}
	if btype == "bpchar" && !domain {
		// format_type says "character", which as a cast means char(1) and
		// would cut every key to one letter.
		typ = "bpchar"
	}
	return typ, btype, nil
}

// checkPredicate parses a predicate on the subject table for real. The
// extended protocol refuses a second statement outright.
func (p *Plan) checkPredicate(ctx context.Context, tx pgx.Tx, pred string) error {
	if strings.TrimSpace(pred) == "" {
		return nil
	}
	q := fmt.Sprintf("SELECT 1 FROM %s WHERE (%s)", p.Root.Ident.Sanitize(), pred)
	if err := parse(ctx, tx, q); err != nil {
		return errors.New(pgMessage(err))
	}
	return nil
}

// parse has the server parse and analyse q without running it, inside a
// savepoint so that a failure does not abort the checking transaction. It
// uses the extended protocol, where a second statement is an error.
func parse(ctx context.Context, tx pgx.Tx, q string) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := sp.Conn().Prepare(ctx, "", q); err != nil {
		_ = sp.Rollback(ctx)
		return err
	}
	return sp.Commit(ctx)
}

// checkOutsideReferences finds foreign keys from tables outside the graph
// into it whose ON DELETE would block or cascade a subject's deletion. SET
// NULL and SET DEFAULT are the schema's own way of letting go and are fine.
func (p *Plan) checkOutsideReferences(ctx context.Context, tx pgx.Tx) error {
	oids := make([]uint32, len(p.Nodes))
	byOID := map[uint32]*Node{}
	for i, n := range p.Nodes {
		oids[i] = n.OID
		byOID[n.OID] = n
	}
	rows, err := tx.Query(ctx, `
		SELECT c.conname, c.conrelid::regclass::text, c.confrelid, c.confdeltype::text
		FROM pg_catalog.pg_constraint c
		WHERE c.contype = 'f' AND c.confrelid = ANY ($1::oid[]) AND NOT c.conrelid = ANY ($1::oid[])
		  AND c.confdeltype IN ('a', 'r', 'c')
		ORDER BY c.conrelid::regclass::text, c.conname`, oids)
	if err != nil {
		return fmt.Errorf("error reading foreign keys: %w", err)
	}
	defer rows.Close()
	var errs []error
	for rows.Next() {
		var name, from, action string
		var to uint32
		if err := rows.Scan(&name, &from, &to, &action); err != nil {
			return fmt.Errorf("error reading foreign keys: %w", err)
		}
		n := byOID[to]
		what := "deleting a subject would fail"
		if action == "c" {
			what = "deleting a subject would cascade to rows lethe never archived"
		}
		errs = append(errs, config.Errorf(n.ConfigKey+".table", "table %s references %s through foreign key %s, and %s: add %s to the graph under %s (or make the key ON DELETE SET NULL)",
			from, n.Name, name, what, from, n.Name))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("error reading foreign keys: %w", err)
	}
	return errors.Join(errs...)
}

func quote(col string) string { return pgx.Identifier{col}.Sanitize() }

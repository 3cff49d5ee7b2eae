package retention

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe"
	"github.com/lethehq/lethe/internal/config"
)

// Plan is the config's kinds of subject and policies, checked against the
// live catalog and turned into SQL.
type Plan struct {
	// Kinds are the kinds of subject, in config order.
	Kinds []*Kind
	// Policies are the config's policies, in order.
	Policies []*PolicyPlan
}

// Kind is one kind of subject: its graph, its policies and its SQL.
type Kind struct {
	// Name is the kind's name: default for the config's subject:.
	Name string
	// ConfigKey is where the kind is configured: subject or subjects[i].
	ConfigKey string
	// Root is the subject table.
	Root *Node
	// Nodes are every table of the graph, parents before children.
	Nodes []*Node
	// Policies are the kind's archive and delete policies, in order: the
	// first whose predicate matches a subject governs it. Minimise
	// policies are in Minimize.
	Policies []*PolicyPlan
	// Minimize are the kind's then: minimize policies.
	Minimize []*PolicyPlan
	// KeyType is the SQL type of the subject key, such as bigint.
	KeyType string
	// Protect is the kind's protect predicate (may be empty).
	Protect string

	keyCol  string
	keyBase string // the key type's base type, such as int8 or numeric
	// deleteOrder is the order DeleteGraph deletes Nodes in (indexes).
	deleteOrder []int
	hasher      *Hasher
	hmacp       hmacParams // the same HMAC, computed by PostgreSQL
	valuep      hmacParams // HMAC-SHA256(key_secret, value), for then: minimize hash
	sql         statements
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
	// Partitioned is set for a partitioned table, which covers all its
	// partitions.
	Partitioned bool
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
	// Kind is the kind of subject the policy governs.
	Kind *Kind
	// Node is the table a then: minimize policy minimises (the root for
	// the others).
	Node *Node
	// ClockType is the clock column's type.
	ClockType string
	// ConfigKey is where the policy is configured, such as policies[1].
	ConfigKey string
	// PrimaryKey are the columns of Node's primary key, for then: minimize.
	PrimaryKey []string
}

// Archive reports whether the policy archives: then: archive, and then:
// minimize with archive: true.
func (p *PolicyPlan) Archive() bool {
	return p.Then == config.ThenArchive || p.Then == config.ThenMinimize && p.Policy.Archive
}

// Minimizes reports whether the policy is a then: minimize.
func (p *PolicyPlan) Minimizes() bool { return p.Then == config.ThenMinimize }

// Cutoff is the instant before which a clock value is due.
func (p *PolicyPlan) Cutoff(now time.Time) time.Time { return now.Add(-p.RetainDays.Duration()) }

type column struct {
	typ     string // format_type, without modifiers
	typmod  int    // atttypmod: varchar(n) has n+4; -1 without a limit
	unique  bool   // a unique index covers exactly this column
	notNull bool
}

// Tables returns the graph's table names as written in the config, in graph
// order: the keys of a bundle's rows.
func (k *Kind) Tables() []string {
	names := make([]string, len(k.Nodes))
	for i, n := range k.Nodes {
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

// Kind returns the kind of subject called name. An empty name is the
// default kind: the only one, or the one called default. Any other name
// that is not a kind is a *lethe.InputError naming the kinds there are.
func (p *Plan) Kind(name string) (*Kind, error) {
	if name == "" && len(p.Kinds) == 1 {
		return p.Kinds[0], nil
	}
	look := name
	if look == "" {
		look = config.DefaultKind
	}
	for _, k := range p.Kinds {
		if k.Name == look {
			return k, nil
		}
	}
	names := make([]string, len(p.Kinds))
	for i, k := range p.Kinds {
		names[i] = k.Name
	}
	if name == "" {
		return nil, lethe.Input("kind", "is needed: lethe has several kinds of subject (%s); name one", strings.Join(names, ", "))
	}
	return nil, lethe.Input("kind", "%q is not a kind of subject: use %s", name, strings.Join(names, ", "))
}

// DefaultKind is the kind a request or hold that names none is of, or nil
// when there are several and none is called default.
func (p *Plan) DefaultKind() *Kind {
	k, _ := p.Kind("")
	return k
}

// Hasher returns the HMAC that names this kind's subjects.
func (k *Kind) Hasher() *Hasher { return k.hasher }

// Compile checks the config's kinds, graphs, policies and predicates
// against the live catalog and prepares the SQL. Every problem it finds is
// a *config.Error naming the key at fault. It changes nothing: predicates
// and statements are checked with EXPLAIN in a read-only transaction that
// is rolled back.
func Compile(ctx context.Context, pool *pgxpool.Pool, cfg *config.Config) (*Plan, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("error checking config against the database: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only, always rolled back

	p := &Plan{}
	var errs []error
	for i := range cfg.Subjects {
		k, err := compileKind(ctx, tx, cfg, &cfg.Subjects[i])
		if err != nil {
			if !config.IsConfigError(err) {
				return nil, err
			}
			errs = append(errs, err)
			continue
		}
		p.Kinds = append(p.Kinds, k)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	for i := range cfg.Policies {
		pp, err := compilePolicy(ctx, tx, p, cfg.Policies[i], fmt.Sprintf("policies[%d]", i))
		if err != nil {
			if !config.IsConfigError(err) {
				return nil, err
			}
			errs = append(errs, err)
			continue
		}
		p.Policies = append(p.Policies, pp)
		if pp.Minimizes() {
			pp.Kind.Minimize = append(pp.Kind.Minimize, pp)
			continue
		}
		// A policy after one without a where never governs a subject.
		for _, earlier := range pp.Kind.Policies {
			if strings.TrimSpace(earlier.Where) == "" {
				errs = append(errs, config.Errorf(pp.ConfigKey, "can never apply: %s has no where, so it governs every subject of kind %s first", earlier.ConfigKey, pp.Kind.Name))
				break
			}
		}
		pp.Kind.Policies = append(pp.Kind.Policies, pp)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	for _, k := range p.Kinds {
		k.sql = k.buildStatements()
		// Every statement lethe will run is parsed once now, so a problem
		// the checks above missed still stops lethe before it moves data.
		for _, q := range k.sql.all() {
			if err := parse(ctx, tx, q.sql); err != nil {
				return nil, fmt.Errorf("error checking the statement that %s: %w", q.what, err)
			}
		}
	}
	return p, nil
}

// compileKind checks one kind's graph against the catalog.
func compileKind(ctx context.Context, tx pgx.Tx, cfg *config.Config, sk *config.Subject) (*Kind, error) {
	k := &Kind{Name: sk.Name, ConfigKey: sk.ConfigKey, Protect: sk.Protect,
		hasher: NewHasher(cfg.Archive.KeySecret, sk.Table.Table),
		hmacp:  newHMACParams(cfg.Archive.KeySecret, sk.Table.Table+"/"),
		valuep: newHMACParams(cfg.Archive.KeySecret, "")}
	var errs []error
	var walkErr error
	parents := map[*config.Table]*Node{}
	sk.Table.Walk(sk.ConfigKey, func(key string, depth int, parent, t *config.Table) {
		if walkErr != nil {
			return
		}
		n := &Node{Name: t.Table, ConfigKey: key, Depth: depth, Parent: parents[parent], Join: t.Join}
		if parent != nil && n.Parent == nil {
			return // the parent is unusable; its error is reported
		}
		oid, ident, cols, partitioned, err := lookupRelation(ctx, tx, t.Table)
		if err != nil {
			if !config.IsConfigError(err) {
				walkErr = err
				return
			}
			errs = append(errs, config.Errorf(key+".table", "%v", err.(*config.Error).Msg))
			return
		}
		n.OID, n.Ident, n.columns, n.Partitioned = oid, ident, cols, partitioned
		if depth == 0 {
			col, _ := config.ParseIdent(t.Key)
			c, ok := cols[col]
			switch {
			case !ok:
				errs = append(errs, config.Errorf(key+".key", "column %q does not exist in %s", col, t.Table))
				return
			case !c.unique:
				errs = append(errs, config.Errorf(key+".key", "column %q of %s has no unique index or primary key: the key must name one row", col, t.Table))
				return
			}
			typ, base, err := keyType(ctx, tx, oid, col)
			if err != nil {
				if !config.IsConfigError(err) {
					walkErr = err
					return
				}
				errs = append(errs, config.Errorf(key+".key", "column %q of %s %s", col, t.Table, err.(*config.Error).Msg))
				return
			}
			k.keyCol, k.KeyType, k.keyBase = col, typ, base
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
		k.Nodes = append(k.Nodes, n)
	})
	if walkErr != nil {
		return nil, walkErr
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	k.Root = k.Nodes[0]

	// Partitions, and the foreign keys that order the deletes or would
	// stop them.
	if err := k.checkPartitions(ctx, tx); err != nil {
		return nil, err
	}
	fks, err := k.readForeignKeys(ctx, tx)
	if err != nil {
		return nil, err
	}
	if err := k.checkReferences(ctx, tx, fks, sk.Table.IgnoreReferences, sk.ConfigKey+".ignore_references"); err != nil {
		if !config.IsConfigError(err) {
			return nil, err
		}
		errs = append(errs, err)
	}
	if err := k.orderDeletes(fks); err != nil {
		errs = append(errs, err)
	}

	// Joins: the column types must compare.
	for _, n := range k.Nodes[1:] {
		q := fmt.Sprintf("SELECT 1 FROM %s c JOIN %s p ON c.%s = p.%s",
			n.Ident.Sanitize(), n.Parent.Ident.Sanitize(), quote(n.ChildCol), quote(n.ParentCol))
		if err := parse(ctx, tx, q); err != nil {
			errs = append(errs, config.Errorf(n.ConfigKey+".join", "%q does not work: %v", n.Join, pgMessage(err)))
		}
	}
	if err := checkPredicate(ctx, tx, k.Root, k.Protect); err != nil {
		errs = append(errs, config.Errorf(sk.ProtectKey(), "%q: %v", k.Protect, err))
	}
	return k, errors.Join(errs...)
}

// compilePolicy checks one policy against its kind's graph.
func compilePolicy(ctx context.Context, tx pgx.Tx, p *Plan, cp config.Policy, key string) (*PolicyPlan, error) {
	k, err := p.Kind(cp.Subject)
	if err != nil {
		// config.Load refuses an unknown kind; a kind that did not
		// compile has its own errors.
		return nil, config.Errorf(key+".subject", "%v", err)
	}
	pp := &PolicyPlan{Policy: cp, Kind: k, Node: k.Root, ConfigKey: key}
	var errs []error
	if pp.Minimizes() && cp.Table != "" {
		n, err := k.findNode(ctx, tx, cp.Table)
		if err != nil {
			if !config.IsConfigError(err) {
				return nil, err
			}
			return nil, config.Errorf(key+".table", "%v", err.(*config.Error).Msg)
		}
		pp.Node = n
	}
	clock, _ := config.ParseIdent(cp.Clock)
	c, ok := pp.Node.columns[clock]
	switch {
	case !ok:
		errs = append(errs, config.Errorf(key+".clock", "column %q does not exist in %s", clock, pp.Node.Name))
	case c.typ != "timestamp with time zone" && c.typ != "timestamp without time zone" && c.typ != "date":
		errs = append(errs, config.Errorf(key+".clock", "column %q of %s is %s: it must be a timestamptz, timestamp or date", clock, pp.Node.Name, c.typ))
	default:
		pp.Policy.Clock, pp.ClockType = clock, c.typ
	}
	if err := checkPredicate(ctx, tx, pp.Node, cp.Where); err != nil {
		errs = append(errs, config.Errorf(key+".where", "%q: %v", cp.Where, err))
	}
	if pp.Minimizes() {
		if err := pp.checkColumns(ctx, tx); err != nil {
			if !config.IsConfigError(err) {
				return nil, err
			}
			errs = append(errs, err)
		}
	}
	return pp, errors.Join(errs...)
}

// lookupTable resolves a configured table name in the catalog and returns
// its qualified identifier and its columns.
func lookupTable(ctx context.Context, tx pgx.Tx, name string) (uint32, pgx.Identifier, map[string]column, error) {
	oid, ident, cols, _, err := lookupRelation(ctx, tx, name)
	return oid, ident, cols, err
}

// lookupRelation is lookupTable that also says whether the table is
// partitioned.
func lookupRelation(ctx context.Context, tx pgx.Tx, name string) (uint32, pgx.Identifier, map[string]column, bool, error) {
	parts, err := config.ParseQualified(name)
	if err != nil {
		return 0, nil, nil, false, &config.Error{Msg: err.Error()}
	}
	var oid uint32
	var schema, rel, kind string
	err = tx.QueryRow(ctx, `
		SELECT c.oid, n.nspname, c.relname, c.relkind
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1)`, pgx.Identifier(parts).Sanitize()).Scan(&oid, &schema, &rel, &kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil, nil, false, &config.Error{Msg: fmt.Sprintf("table %q does not exist (or lethe's role cannot see it)", name)}
	}
	if err != nil {
		return 0, nil, nil, false, fmt.Errorf("error looking up table %q: %w", name, err)
	}
	if kind != "r" && kind != "p" {
		return 0, nil, nil, false, &config.Error{Msg: fmt.Sprintf("%q is not a table (relkind %s): lethe deletes rows, so it needs tables", name, kind)}
	}
	rows, err := tx.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, NULL), a.atttypmod,
		       EXISTS (SELECT 1 FROM pg_catalog.pg_index i
		               WHERE i.indrelid = a.attrelid AND i.indisunique AND i.indpred IS NULL
		                 AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum),
		       a.attnotnull
		FROM pg_catalog.pg_attribute a
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`, oid)
	if err != nil {
		return 0, nil, nil, false, fmt.Errorf("error reading columns of %q: %w", name, err)
	}
	cols := map[string]column{}
	for rows.Next() {
		var n string
		var c column
		if err := rows.Scan(&n, &c.typ, &c.typmod, &c.unique, &c.notNull); err != nil {
			return 0, nil, nil, false, fmt.Errorf("error reading columns of %q: %w", name, err)
		}
		cols[n] = c
	}
	if err := rows.Err(); err != nil {
		return 0, nil, nil, false, fmt.Errorf("error reading columns of %q: %w", name, err)
	}
	return oid, pgx.Identifier{schema, rel}, cols, kind == "p", nil
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

// checkPredicate parses a predicate on a table of the graph for real. The
// extended protocol refuses a second statement outright.
func checkPredicate(ctx context.Context, tx pgx.Tx, n *Node, pred string) error {
	if strings.TrimSpace(pred) == "" {
		return nil
	}
	q := fmt.Sprintf("SELECT 1 FROM %s WHERE (%s)", n.Ident.Sanitize(), pred)
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
func quote(col string) string { return pgx.Identifier{col}.Sanitize() }

package retention

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lethehq/lethe/internal/config"
)

// lethe reads the catalog's foreign keys once, at start. Those among the
// graph's tables order the deletes; those from outside the graph that would
// stop a delete are config errors, unless the config says to ignore them.
// A partition is its partitioned parent here: its foreign keys are the
// parent's, whether the parent declared them or the partition did.

// foreignKey is a foreign key that references a table of the graph, seen
// from the partition roots of both tables.
type foreignKey struct {
	name     string
	from     uint32 // the referencing table's root
	fromName string
	to       *Node
	action   string // confdeltype: a (no action), r (restrict), c (cascade), n (set null), d (set default)
}

// readForeignKeys returns every foreign key that references a table of the
// graph (or one of its partitions).
func (k *Kind) readForeignKeys(ctx context.Context, tx pgx.Tx) ([]foreignKey, error) {
	byOID := map[uint32]*Node{}
	oids := make([]uint32, len(k.Nodes))
	for i, n := range k.Nodes {
		oids[i], byOID[n.OID] = n.OID, n
	}
	// Constraints a partition inherits from its parent's (conparentid) are
	// the parent's, already counted.
	rows, err := tx.Query(ctx, `
		SELECT c.conname, r.oid, r.oid::regclass::text, t.oid, c.confdeltype::text
		FROM pg_catalog.pg_constraint c,
		     LATERAL (SELECT coalesce(pg_partition_root(c.conrelid), c.conrelid)::oid AS oid) r,
		     LATERAL (SELECT coalesce(pg_partition_root(c.confrelid), c.confrelid)::oid AS oid) t
		WHERE c.contype = 'f' AND c.conparentid = 0 AND t.oid = ANY ($1::oid[])
		ORDER BY r.oid::regclass::text, c.conname`, oids)
	if err != nil {
		return nil, fmt.Errorf("error reading foreign keys: %w", err)
	}
	var out []foreignKey
	var fk foreignKey
	var to uint32
	if _, err := pgx.ForEachRow(rows, []any{&fk.name, &fk.from, &fk.fromName, &to, &fk.action}, func() error {
		fk.to = byOID[to]
		out = append(out, fk)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("error reading foreign keys: %w", err)
	}
	return out, nil
}

// checkPartitions refuses a graph that lists a partition and also its
// partitioned parent (or another partition of the same tree): the parent
// covers all of them, and two nodes would read and delete the same rows.
func (k *Kind) checkPartitions(ctx context.Context, tx pgx.Tx) error {
	oids := make([]uint32, len(k.Nodes))
	for i, n := range k.Nodes {
		oids[i] = n.OID
	}
	rows, err := tx.Query(ctx, `
		SELECT o, coalesce(pg_partition_root(o), o)::oid FROM unnest($1::oid[]) AS o`, oids)
	if err != nil {
		return fmt.Errorf("error reading partitions: %w", err)
	}
	roots := map[uint32]uint32{}
	var o, root uint32
	if _, err := pgx.ForEachRow(rows, []any{&o, &root}, func() error { roots[o] = root; return nil }); err != nil {
		return fmt.Errorf("error reading partitions: %w", err)
	}
	var errs []error
	first := map[uint32]*Node{} // by partition root, the first node of each tree
	for _, n := range k.Nodes {
		r := roots[n.OID]
		if prev := first[r]; prev != nil {
			listed, partition := prev, n
			if n.OID == r { // n is the parent itself, listed after a partition
				listed, partition = n, prev
			}
			errs = append(errs, config.Errorf(partition.ConfigKey+".table",
				"%s is a partition of the same partitioned table as %s (%s): list only the partitioned parent, which covers all its partitions",
				partition.Name, listed.Name, listed.ConfigKey))
			continue
		}
		first[r] = n
	}
	return errors.Join(errs...)
}

// checkReferences refuses foreign keys from outside the graph that would
// stop a subject's delete (NO ACTION, RESTRICT), unless ignore_references
// lists the referencing table. CASCADE, SET NULL and SET DEFAULT let the
// delete through.
func (k *Kind) checkReferences(ctx context.Context, tx pgx.Tx, fks []foreignKey, ignore []string, ignoreKey string) error {
	inGraph := map[uint32]bool{}
	for _, n := range k.Nodes {
		inGraph[n.OID] = true
	}
	ignored := map[uint32]bool{}
	var errs []error
	for i, name := range ignore {
		oid, _, _, err := lookupTable(ctx, tx, name)
		if err != nil {
			if !config.IsConfigError(err) {
				return err
			}
			errs = append(errs, config.Errorf(fmt.Sprintf("%s[%d]", ignoreKey, i), "%v", err.(*config.Error).Msg))
			continue
		}
		var root uint32
		if err := tx.QueryRow(ctx, `SELECT coalesce(pg_partition_root($1::oid), $1::oid)::oid`, oid).Scan(&root); err != nil {
			return fmt.Errorf("error reading partitions: %w", err)
		}
		ignored[root] = true
	}
	for _, fk := range fks {
		if inGraph[fk.from] || ignored[fk.from] || (fk.action != "a" && fk.action != "r") {
			continue
		}
		errs = append(errs, config.Errorf(fk.to.ConfigKey+".table",
			"table %s references %s through foreign key %s, which neither cascades nor sets null, so deleting a subject would fail: "+
				"add %s to the graph (under the table its rows belong to), make the key ON DELETE CASCADE or SET NULL, "+
				"or list it under %s if its rows never reference a subject lethe removes",
			fk.fromName, fk.to.Name, fk.name, fk.fromName, ignoreKey))
	}
	return errors.Join(errs...)
}

// orderDeletes sets the order in which DeleteGraph deletes: every child
// before its parent (the join), and every table before the tables it
// references by a foreign key, whatever order the config lists them in.
// Among tables that could go in any order, the config's order, reversed,
// decides. A cycle of foreign keys among the graph's tables is a config
// error.
func (k *Kind) orderDeletes(fks []foreignKey) error {
	idx := map[*Node]int{}
	for i, n := range k.Nodes {
		idx[n] = i
	}
	byOID := map[uint32]int{}
	for i, n := range k.Nodes {
		byOID[n.OID] = i
	}
	// before[i] are the tables that must be deleted before table i.
	before := make([][]int, len(k.Nodes))
	why := map[[2]int]string{}
	add := func(first, then int, reason string) {
		if first == then || slices.Contains(before[then], first) {
			return
		}
		before[then] = append(before[then], first)
		why[[2]int{first, then}] = reason
	}
	for i, n := range k.Nodes[1:] {
		add(i+1, idx[n.Parent], "joins")
	}
	for _, fk := range fks {
		from, ok := byOID[fk.from]
		if !ok {
			continue
		}
		add(from, idx[fk.to], "foreign key "+fk.name)
	}
	done := make([]bool, len(k.Nodes))
	var order []int
	for len(order) < len(k.Nodes) {
		next := -1
		for i := len(k.Nodes) - 1; i >= 0; i-- {
			if done[i] {
				continue
			}
			ready := true
			for _, b := range before[i] {
				ready = ready && done[b]
			}
			if ready {
				next = i
				break
			}
		}
		if next < 0 {
			var names []string
			for i, n := range k.Nodes {
				if !done[i] {
					names = append(names, n.Name)
				}
			}
			return config.Errorf(k.Root.ConfigKey+".table",
				"the foreign keys among %s form a cycle, so no order of deletes satisfies them all: make one of them ON DELETE CASCADE or SET NULL, or leave one table out of the graph",
				strings.Join(names, ", "))
		}
		done[next] = true
		order = append(order, next)
	}
	k.deleteOrder = order
	return nil
}

// Blocked is a subject whose delete a foreign key stopped at run time: a
// table outside the graph (ignore_references, or a reference added since
// lethe started) still references its rows. It is left in place.
type Blocked struct {
	// Constraint and Table name the foreign key and the table it is on.
	Constraint string `json:"constraint"`
	Table      string `json:"table"`
}

// ErrReferenced is returned, wrapped with the constraint, when a foreign
// key stops the delete of a single subject.
var ErrReferenced = errors.New("a foreign key still references the subject's rows")

// DeleteSubjects is DeleteGraph that survives a foreign key stopping it: the
// subjects are deleted together, and if a foreign key refuses, each again
// on its own, so that those it refuses are left in place and returned with
// the constraint; the others are deleted. It needs tx free of errors, and
// leaves it so.
func (k *Kind) DeleteSubjects(ctx context.Context, tx pgx.Tx, keys []string, afterFirst func() error) (map[string][]Deleted, int64, map[string]Blocked, error) {
	if _, err := tx.Exec(ctx, `SAVEPOINT lethe_delete`); err != nil {
		return nil, 0, nil, fmt.Errorf("error deleting: %w", err)
	}
	del, total, err := k.DeleteGraph(ctx, tx, keys, afterFirst)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23503" {
		if err == nil {
			_, err = tx.Exec(ctx, `RELEASE SAVEPOINT lethe_delete`)
		}
		return del, total, nil, err
	}
	if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT lethe_delete`); err != nil {
		return nil, 0, nil, fmt.Errorf("error deleting: %w", err)
	}
	del = make(map[string][]Deleted, len(keys))
	blocked := map[string]Blocked{}
	total = 0
	for _, key := range keys {
		if _, err := tx.Exec(ctx, `SAVEPOINT lethe_delete_one`); err != nil {
			return nil, 0, nil, fmt.Errorf("error deleting: %w", err)
		}
		d, n, err := k.DeleteGraph(ctx, tx, []string{key}, nil)
		if errors.As(err, &pgErr) && pgErr.Code == "23503" {
			table := pgErr.TableName
			if pgErr.SchemaName != "" {
				table = pgErr.SchemaName + "." + table
			}
			blocked[key] = Blocked{Constraint: pgErr.ConstraintName, Table: table}
			if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT lethe_delete_one`); err != nil {
				return nil, 0, nil, fmt.Errorf("error deleting: %w", err)
			}
			continue
		}
		if err != nil {
			return nil, 0, nil, err
		}
		if _, err := tx.Exec(ctx, `RELEASE SAVEPOINT lethe_delete_one`); err != nil {
			return nil, 0, nil, fmt.Errorf("error deleting: %w", err)
		}
		del[key] = d[key]
		total += n
	}
	if _, err := tx.Exec(ctx, `RELEASE SAVEPOINT lethe_delete`); err != nil {
		return nil, 0, nil, fmt.Errorf("error deleting: %w", err)
	}
	return del, total, blocked, nil
}

// recordBlocked notes, in tx, the subjects a foreign key kept in place, for
// lethe status; and forgets those that are gone now.
func recordBlocked(ctx context.Context, tx pgx.Tx, policy string, hmacOf map[string]string, blocked map[string]Blocked, gone []string) error {
	if len(gone) > 0 {
		if _, err := tx.Exec(ctx, `DELETE FROM lethe.blocked_subject WHERE subject_hmac = ANY ($1)`, gone); err != nil {
			return fmt.Errorf("error recording blocked subjects: %w", err)
		}
	}
	for k, b := range blocked {
		if _, err := tx.Exec(ctx, `
			INSERT INTO lethe.blocked_subject (subject_hmac, policy, constraint_name, table_name) VALUES ($1, $2, $3, $4)
			ON CONFLICT (subject_hmac) DO UPDATE SET policy = $2, constraint_name = $3, table_name = $4, last_at = now(), times = lethe.blocked_subject.times + 1`,
			hmacOf[k], policy, b.Constraint, b.Table); err != nil {
			return fmt.Errorf("error recording blocked subjects: %w", err)
		}
	}
	return nil
}

// BlockedGroup counts the subjects one foreign key keeps in place.
type BlockedGroup struct {
	Policy     string    `json:"policy"`
	Constraint string    `json:"constraint"`
	Table      string    `json:"table"`
	Subjects   int       `json:"subjects"`
	Since      time.Time `json:"since"`
}

// BlockedSubjects counts the subjects foreign keys keep in place, by policy
// and constraint, the largest groups first.
func BlockedSubjects(ctx context.Context, db Querier) ([]BlockedGroup, error) {
	return Collect(ctx, db, "reading blocked subjects", `
		SELECT policy, constraint_name, table_name, count(*)::int, min(first_at) FROM lethe.blocked_subject
		GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2 LIMIT 100`, pgx.RowToStructByPos[BlockedGroup])
}

// BlockedMessage says, in a sentence, what keeps subjects in place and what
// to do about it.
func (g BlockedGroup) BlockedMessage() string {
	return fmt.Sprintf("%d subjects of policy %s: foreign key %s on table %s still references their rows; "+
		"add %s to the graph, make the key ON DELETE CASCADE or SET NULL, or remove those rows",
		g.Subjects, g.Policy, g.Constraint, g.Table, g.Table)
}

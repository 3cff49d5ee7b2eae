package retention

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// statements is the SQL a plan runs, built once from the config's
// identifiers (always quoted) and predicates (checked by Compile). Values
// are always parameters.
type statements struct {
	// per policy, by name
	claimFirst map[string]string // $1 cutoff, $2 limit
	claimNext  map[string]string // $1 cutoff, $2 last clock, $3 last key, $4 limit
	dueCount   map[string]string // $1 cutoff, $2-$4 HMAC pads -> due, of which protected, of which held
	readRoot   map[string]string // $1 keys, $2 cutoff -> key, rows, md5 (still-due subjects only)
	lockDue    map[string]string // $1 keys, $2 cutoff -> key (still due, locked)
	// per node, in plan order
	read   []string // $1 keys -> key, rows, md5
	delete []string // $1 keys -> key, count, md5 of the deleted rows
	// lockRoots locks subjects' root rows: $1 keys -> key
	lockRoots string
	// lockProtect locks subjects' root rows: $1 keys -> key, requests.protect
	lockProtect string
	// suppressed finds subjects erased on request, a page at a time: $1-$3
	// HMAC pads, $4 the last key or NULL, $5 the page size -> key
	suppressed string
	// byHMAC finds the subjects with the given HMACs: $1-$3 HMAC pads, $4
	// the HMACs -> key
	byHMAC string
	// minimize is the SQL of each then: minimize policy, by name.
	minimize map[string]minimizeSQL
}

type namedSQL struct{ what, sql string }

func (s *statements) all() []namedSQL {
	var out []namedSQL
	for name, q := range s.claimFirst {
		out = append(out, namedSQL{"selects due subjects of policy " + name, q}, namedSQL{"selects due subjects of policy " + name, s.claimNext[name]},
			namedSQL{"counts due subjects of policy " + name, s.dueCount[name]}, namedSQL{"reads due subjects of policy " + name, s.readRoot[name]},
			namedSQL{"locks due subjects of policy " + name, s.lockDue[name]})
	}
	for i, q := range s.read {
		if q != "" { // the root is read per policy
			out = append(out, namedSQL{fmt.Sprintf("reads table %d of the graph", i), q})
		}
		out = append(out, namedSQL{fmt.Sprintf("deletes from table %d of the graph", i), s.delete[i]})
	}
	for name, q := range s.minimize {
		what := "of policy " + name
		out = append(out, namedSQL{"finds rows to minimise " + what, q.claim}, namedSQL{"counts rows to minimise " + what, q.count},
			namedSQL{"reads values to minimise " + what, q.read}, namedSQL{"locks rows to minimise " + what, q.lock},
			namedSQL{"minimises rows " + what, q.update})
	}
	return append(out, namedSQL{"locks subjects", s.lockRoots}, namedSQL{"checks protect", s.lockProtect},
		namedSQL{"finds erased subjects", s.suppressed}, namedSQL{"finds subjects by HMAC", s.byHMAC})
}

func (k *Kind) buildStatements() statements {
	s := statements{
		claimFirst: map[string]string{},
		claimNext:  map[string]string{},
		dueCount:   map[string]string{},
		readRoot:   map[string]string{},
		lockDue:    map[string]string{},
		minimize:   map[string]minimizeSQL{},
	}
	for _, pp := range k.Minimize {
		s.minimize[pp.Name] = k.buildMinimize(pp)
	}
	root := k.Root.Ident.Sanitize()
	rowRef := quote(k.Root.Ident[len(k.Root.Ident)-1])
	key := quote(k.keyCol)
	keys := "$1::text[]::" + k.KeyType + "[]"

	var earlier []string
	for _, pp := range k.Policies {
		clock := quote(pp.Clock)
		match := k.matchExpr(pp, earlier)
		earlier = append(earlier, pp.Where)
		due := fmt.Sprintf("%s AND %s < $1::timestamptz", match, clock)
		s.claimFirst[pp.Name] = fmt.Sprintf(
			"SELECT %[5]s AS k, %[3]s::text AS c FROM %[1]s WHERE %[4]s ORDER BY %[1]s.%[3]s, %[1]s.%[2]s LIMIT $2 FOR UPDATE SKIP LOCKED",
			root, key, clock, due, k.keyText(key))
		s.claimNext[pp.Name] = fmt.Sprintf(
			// "after (clock, key)" is spelled out rather than written as a
			// row comparison, whose selectivity the planner misjudges: so an
			// index on the clock (alone, or after the predicate's columns)
			// starts the scan at the last position and an incremental sort
			// orders keys within one clock value. Each page then costs its
			// own size, not the backlog's. ORDER BY names the table's
			// columns, not the text outputs of the same names.
			"SELECT %[7]s AS k, %[3]s::text AS c FROM %[1]s WHERE %[4]s AND %[3]s >= $2::text::%[5]s "+
				"AND (%[3]s > $2::text::%[5]s OR %[2]s > $3::text::%[6]s) ORDER BY %[1]s.%[3]s, %[1]s.%[2]s LIMIT $4 FOR UPDATE SKIP LOCKED",
			root, key, clock, due, pp.ClockType, k.KeyType, k.keyText(key))
		protect := "FALSE"
		if strings.TrimSpace(k.Protect) != "" {
			protect = "(" + k.Protect + ")"
		}
		s.dueCount[pp.Name] = fmt.Sprintf(
			"SELECT count(*), count(*) FILTER (WHERE coalesce(%s, false)), "+
				"count(*) FILTER (WHERE CASE WHEN EXISTS (SELECT 1 FROM lethe.hold WHERE released_at IS NULL) "+
				"THEN %s IN (SELECT subject_hmac FROM lethe.hold WHERE released_at IS NULL) ELSE false END) FROM %s WHERE %s",
			protect, hmacSQL(k.keyText(key), 2), root, due)
		stillDue := fmt.Sprintf("%s = ANY (%s) AND %s AND %s < $2::timestamptz", key, keys, match, clock)
		s.readRoot[pp.Name] = fmt.Sprintf(
			"SELECT %[5]s, agg::text, md5(agg::text) FROM (SELECT %[2]s AS s, jsonb_agg(to_jsonb(%[3]s)) AS agg FROM %[1]s WHERE %[4]s GROUP BY %[2]s) r",
			root, key, rowRef, stillDue, k.keyText("s"))
		s.lockDue[pp.Name] = fmt.Sprintf("SELECT %[4]s FROM %[1]s WHERE %[3]s ORDER BY %[2]s FOR UPDATE", root, key, stillDue, k.keyText(key))
	}

	for _, n := range k.Nodes {
		if n.Parent == nil {
			s.read = append(s.read, "") // the root is read by readRoot, per policy
			s.delete = append(s.delete, fmt.Sprintf(
				"WITH d AS (DELETE FROM %[1]s t WHERE t.%[2]s = ANY (%[3]s) RETURNING %[4]s AS s, to_jsonb(t) AS j) "+
					"SELECT s, count(*), md5(jsonb_agg(j ORDER BY j::text)::text) FROM d GROUP BY s",
				root, key, keys, k.keyText("t."+key)))
			continue
		}
		// The chain from this table up to the root: t, p1, ..., pN (root).
		var from, using, conds []string
		alias := "t"
		for c, i := n, 1; c.Parent != nil; c, i = c.Parent, i+1 {
			pa := fmt.Sprintf("p%d", i)
			from = append(from, fmt.Sprintf("JOIN %s %s ON %s.%s = %s.%s", c.Parent.Ident.Sanitize(), pa, alias, quote(c.ChildCol), pa, quote(c.ParentCol)))
			using = append(using, fmt.Sprintf("%s %s", c.Parent.Ident.Sanitize(), pa))
			conds = append(conds, fmt.Sprintf("%s.%s = %s.%s", alias, quote(c.ChildCol), pa, quote(c.ParentCol)))
			alias = pa
		}
		rootKey := alias + "." + key
		s.read = append(s.read, fmt.Sprintf(
			"SELECT %[5]s, agg::text, md5(agg::text) FROM (SELECT %[3]s AS s, jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text) AS agg "+
				"FROM %[1]s t %[2]s WHERE %[3]s = ANY (%[4]s) GROUP BY %[3]s) r",
			n.Ident.Sanitize(), strings.Join(from, " "), rootKey, keys, k.keyText("s")))
		s.delete = append(s.delete, fmt.Sprintf(
			"WITH d AS (DELETE FROM %[1]s t USING %[2]s WHERE %[3]s AND %[4]s = ANY (%[5]s) RETURNING %[6]s AS s, to_jsonb(t) AS j) "+
				"SELECT s, count(*), md5(jsonb_agg(j ORDER BY j::text)::text) FROM d GROUP BY s",
			n.Ident.Sanitize(), strings.Join(using, ", "), strings.Join(conds, " AND "), rootKey, keys, k.keyText(rootKey)))
	}
	protect := "FALSE"
	if strings.TrimSpace(k.Protect) != "" {
		protect = "(" + k.Protect + ")"
	}
	s.lockProtect = fmt.Sprintf("SELECT %[5]s, coalesce(%[1]s, false) FROM %[2]s WHERE %[3]s = ANY (%[4]s) ORDER BY %[3]s FOR UPDATE",
		protect, root, key, keys, k.keyText(key))
	s.suppressed = fmt.Sprintf("SELECT %[4]s FROM %[1]s r JOIN lethe.suppression s ON s.subject_hmac = %[3]s "+
		"WHERE ($4::text IS NULL OR r.%[2]s > $4::text::%[5]s) ORDER BY r.%[2]s LIMIT $5",
		root, key, hmacSQL(k.keyText("r."+key), 1), k.keyText("r."+key), k.KeyType)
	s.lockRoots = fmt.Sprintf("SELECT %[4]s FROM %[1]s WHERE %[2]s = ANY (%[3]s) ORDER BY %[2]s FOR UPDATE", root, key, keys, k.keyText(key))
	s.byHMAC = fmt.Sprintf("SELECT %[3]s FROM %[1]s r WHERE %[2]s = ANY ($4::text[]) ORDER BY r.%[4]s",
		root, hmacSQL(k.keyText("r."+key), 1), k.keyText("r."+key), key)
	return s
}

// matchExpr is the condition under which pp governs a subject: its own
// predicate holds and no earlier policy's does.
func (k *Kind) matchExpr(pp *PolicyPlan, earlier []string) string {
	parts := []string{"TRUE"}
	if strings.TrimSpace(pp.Where) != "" {
		parts[0] = "(" + pp.Where + ")"
	}
	for _, w := range earlier {
		parts = append(parts, "NOT coalesce(("+w+"), false)")
	}
	return strings.Join(parts, " AND ")
}

// pgMessage returns a PostgreSQL error's message and hint without the
// driver's decoration.
func pgMessage(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		msg := pgErr.Message
		if pgErr.Hint != "" {
			msg += " (" + pgErr.Hint + ")"
		}
		return msg
	}
	return err.Error()
}

package retention

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Advice is a missing index that would make a sweep scan a whole table.
type Advice struct {
	// Key is the config key the advice is about.
	Key string `json:"key"`
	// Problem says what would be slow.
	Problem string `json:"problem"`
	// Create is the statement that fixes it.
	Create string `json:"create"`
}

// IndexAdvice checks every kind's indexes (Kind.IndexAdvice). It changes
// nothing.
func (p *Plan) IndexAdvice(ctx context.Context, pool *pgxpool.Pool) ([]Advice, error) {
	var out []Advice
	for _, k := range p.Kinds {
		a, err := k.IndexAdvice(ctx, pool)
		if err != nil {
			return nil, err
		}
		out = append(out, a...)
	}
	return out, nil
}

// IndexAdvice checks that candidate selection and the graph's joins can use
// an index: each policy's claim query must not scan the subject table
// sequentially even when told to avoid it, and each related table needs an
// index led by its join column. It changes nothing.
func (k *Kind) IndexAdvice(ctx context.Context, pool *pgxpool.Pool) ([]Advice, error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("error checking indexes: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	// With sequential scans priced out, a plan that still has one has no
	// index to use.
	if _, err := tx.Exec(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
		return nil, fmt.Errorf("error checking indexes: %w", err)
	}
	var out []Advice
	root := k.Root.Ident.Sanitize()
	for _, pp := range k.Policies {
		var plan []byte
		err := tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+k.sql.claimFirst[pp.Name], "2000-01-01T00:00:00Z", 100).Scan(&plan)
		if err != nil {
			return nil, fmt.Errorf("error checking the index of policy %s: %w", pp.Name, err)
		}
		if scansSequentially(plan, k.Root.Ident[len(k.Root.Ident)-1]) {
			create := fmt.Sprintf("%s %s (%s)", createIndex(k.Root), root, quote(pp.Clock))
			if strings.TrimSpace(pp.Where) != "" {
				create += " WHERE " + pp.Where
			}
			out = append(out, Advice{Key: pp.ConfigKey + ".clock",
				Problem: fmt.Sprintf("no index serves policy %s: every sweep reads all of %s to find due subjects", pp.Name, k.Root.Name),
				Create:  create})
		}
	}
	for _, n := range k.Nodes[1:] {
		var ok bool
		err := tx.QueryRow(ctx, `
			SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
			               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
			               WHERE i.indrelid = $1 AND a.attname = $2 AND i.indpred IS NULL)`, n.OID, n.ChildCol).Scan(&ok)
		if err != nil {
			return nil, fmt.Errorf("error checking the index of %s: %w", n.Name, err)
		}
		if !ok {
			out = append(out, Advice{Key: n.ConfigKey + ".join",
				Problem: fmt.Sprintf("no index is led by %s.%s: every batch reads all of %s to find its subjects' rows", n.Name, n.ChildCol, n.Name),
				Create:  fmt.Sprintf("%s %s (%s)", createIndex(n), n.Ident.Sanitize(), quote(n.ChildCol))})
		}
	}
	return out, nil
}

// createIndex is how to start a CREATE INDEX on n: CONCURRENTLY, so that
// the table stays writable, except on a partitioned table, where
// PostgreSQL refuses it (the statement builds the index on every partition,
// locking each in turn).
func createIndex(n *Node) string {
	if n.Partitioned {
		return "CREATE INDEX ON"
	}
	return "CREATE INDEX CONCURRENTLY ON"
}

// scansSequentially reports whether an EXPLAIN (FORMAT JSON) plan reads
// relation with a sequential scan.
func scansSequentially(plan []byte, relation string) bool {
	var doc []struct {
		Plan json.RawMessage `json:"Plan"`
	}
	if json.Unmarshal(plan, &doc) != nil || len(doc) == 0 {
		return false
	}
	var walk func(raw json.RawMessage) bool
	walk = func(raw json.RawMessage) bool {
		var node struct {
			NodeType     string            `json:"Node Type"`
			RelationName string            `json:"Relation Name"`
			Plans        []json.RawMessage `json:"Plans"`
		}
		if json.Unmarshal(raw, &node) != nil {
			return false
		}
		if node.NodeType == "Seq Scan" && node.RelationName == relation {
			return true
		}
		for _, c := range node.Plans {
			if walk(c) {
				return true
			}
		}
		return false
	}
	return walk(doc[0].Plan)
}

package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/archive"
)

// GraphRows is one subject's rows, read from every table of the graph.
type GraphRows struct {
	// Key is the subject's canonical key.
	Key string
	// Bundle holds the rows, ready to archive.
	Bundle *archive.Bundle
	// Digests are the md5 of each table's rows (indexed as Plan.Nodes), ""
	// where the subject has none; a delete compares them with what it
	// deletes, to catch rows that changed since.
	Digests []string
}

// ReadGraph reads in tx, which should be a repeatable-read snapshot, the
// whole graph of every subject among keys that policy pp still finds due at
// now: one statement per table for all of them. Subjects no longer due are
// left out.
func (k *Kind) ReadGraph(ctx context.Context, tx pgx.Tx, pp *PolicyPlan, keys []string, now time.Time) ([]*GraphRows, error) {
	rows, err := tx.Query(ctx, k.sql.readRoot[pp.Name], keys, pp.Cutoff(now))
	if err != nil {
		return nil, fmt.Errorf("error reading subjects: %w", err)
	}
	bySubject := map[string]*GraphRows{}
	var out []*GraphRows
	for rows.Next() {
		var key, digest string
		var agg []byte
		if err := rows.Scan(&key, &agg, &digest); err != nil {
			rows.Close()
			return nil, fmt.Errorf("error reading subjects: %w", err)
		}
		g := &GraphRows{Key: key, Digests: make([]string, len(k.Nodes)), Bundle: &archive.Bundle{
			Subject: key, Policy: pp.Name, ArchivedAt: now, Tables: make([]archive.TableRows, len(k.Nodes)),
		}}
		for i, n := range k.Nodes {
			g.Bundle.Tables[i].Table = n.Name
		}
		g.Bundle.Tables[0].Rows, g.Digests[0] = agg, digest
		bySubject[key] = g
		out = append(out, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("error reading subjects: %w", err)
	}
	if len(out) == 0 || len(k.Nodes) == 1 {
		return out, nil
	}
	dueKeys := make([]string, len(out))
	for i, g := range out {
		dueKeys[i] = g.Key
	}
	var b pgx.Batch
	for _, q := range k.sql.read[1:] {
		b.Queue(q, dueKeys)
	}
	br := tx.SendBatch(ctx, &b)
	defer br.Close()
	for i := 1; i < len(k.Nodes); i++ {
		if err := readNode(br, i, bySubject); err != nil {
			return nil, fmt.Errorf("error reading %s: %w", k.Nodes[i].Name, err)
		}
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("error reading subjects: %w", err)
	}
	return out, nil
}

func readNode(br pgx.BatchResults, i int, bySubject map[string]*GraphRows) error {
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var key, digest string
		var agg []byte
		if err := rows.Scan(&key, &agg, &digest); err != nil {
			return err
		}
		if g := bySubject[key]; g != nil {
			g.Bundle.Tables[i].Rows, g.Digests[i] = agg, digest
		}
	}
	return rows.Err()
}

// LockRoots locks, in tx, the root rows of the subjects with keys, and
// returns the keys of those that exist.
func (k *Kind) LockRoots(ctx context.Context, tx pgx.Tx, keys []string) ([]string, error) {
	return k.lockKeys(ctx, tx, k.sql.lockRoots, keys)
}

// LockDue locks, in tx, the root rows of the subjects with keys that policy
// pp still finds due at now, and returns their keys.
func (k *Kind) LockDue(ctx context.Context, tx pgx.Tx, pp *PolicyPlan, keys []string, now time.Time) ([]string, error) {
	return k.lockKeys(ctx, tx, k.sql.lockDue[pp.Name], keys, pp.Cutoff(now))
}

func (k *Kind) lockKeys(ctx context.Context, tx pgx.Tx, q string, keys []string, args ...any) ([]string, error) {
	return Collect(ctx, tx, "locking subjects", q, pgx.RowTo[string], append([]any{keys}, args...)...)
}

// LockForErasure locks, in tx, the root rows of the subjects with keys
// and returns, for each that exists, whether requests.protect matches it.
// Once the locks are granted, a sweep that claimed one of them has
// committed its claim, and no sweep can claim them until tx ends.
func (k *Kind) LockForErasure(ctx context.Context, tx pgx.Tx, keys []string) (map[string]bool, error) {
	rows, err := tx.Query(ctx, k.sql.lockProtect, keys)
	if err != nil {
		return nil, fmt.Errorf("error locking subjects: %w", err)
	}
	out := map[string]bool{}
	var key string
	var protected bool
	if _, err := pgx.ForEachRow(rows, []any{&key, &protected}, func() error { out[key] = protected; return nil }); err != nil {
		return nil, fmt.Errorf("error locking subjects: %w", err)
	}
	return out, nil
}

// KeysByHMAC returns the keys of the subjects in the hot tables whose HMACs
// are hmacs. PostgreSQL computes every root row's HMAC: one pass over the
// subject table, for work as rare as a ledger replay.
func (k *Kind) KeysByHMAC(ctx context.Context, db Querier, hmacs []string) ([]string, error) {
	if len(hmacs) == 0 {
		return nil, nil
	}
	return Collect(ctx, db, "finding subjects by HMAC", k.sql.byHMAC, pgx.RowTo[string], append(k.hmacp.args(), hmacs)...)
}

// Deleted is what one delete statement removed of one subject.
type Deleted struct {
	// Count is how many rows.
	Count int64
	// Digest is the md5 of the rows, as ReadGraph digests them; "" when
	// there were none.
	Digest string
}

// DeleteGraph deletes the subjects' rows from every table, in an order that
// satisfies the joins and every foreign key among the graph's tables
// (orderDeletes), with one statement per table, and returns per subject
// what was deleted from each table (indexed as Plan.Nodes) and the total of
// rows. afterFirst, if set, runs after the first delete (a fault point).
func (k *Kind) DeleteGraph(ctx context.Context, tx pgx.Tx, keys []string, afterFirst func() error) (map[string][]Deleted, int64, error) {
	out := make(map[string][]Deleted, len(keys))
	for _, key := range keys {
		out[key] = make([]Deleted, len(k.Nodes))
	}
	if len(keys) == 0 {
		return out, 0, nil
	}
	var total int64
	for j, i := range k.deleteOrder {
		n, err := k.deleteNode(ctx, tx, i, keys, out)
		if err != nil {
			return nil, 0, fmt.Errorf("error deleting from %s: %w", k.Nodes[i].Name, err)
		}
		total += n
		if j == 0 && afterFirst != nil {
			if err := afterFirst(); err != nil {
				return nil, 0, err
			}
		}
	}
	return out, total, nil
}

func (k *Kind) deleteNode(ctx context.Context, tx pgx.Tx, i int, keys []string, out map[string][]Deleted) (int64, error) {
	rows, err := tx.Query(ctx, k.sql.delete[i], keys)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var total int64
	for rows.Next() {
		var key string
		var d Deleted
		if err := rows.Scan(&key, &d.Count, &d.Digest); err != nil {
			return 0, err
		}
		if ds := out[key]; ds != nil {
			ds[i] = d
			total += d.Count
		}
	}
	return total, rows.Err()
}

// RowsByTable turns DeleteGraph's result for one subject into counts by
// table name, for audit entries and receipts; nil gives every table 0.
func (k *Kind) RowsByTable(ds []Deleted) map[string]int64 {
	out := make(map[string]int64, len(k.Nodes))
	for i, n := range k.Nodes {
		if i < len(ds) {
			out[n.Name] = ds[i].Count
		} else {
			out[n.Name] = 0
		}
	}
	return out
}

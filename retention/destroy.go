package retention

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/audit"
)

// destroy deletes a batch's subjects of kind k without a copy: for then:
// delete policy pp, or, with pp nil, subjects erased on request earlier
// and found again.
func (m *batchRun) destroy(ctx context.Context, batchID int64, k *Kind, pp *PolicyPlan, items []item, res *BatchResult) error {
	ctx, cancel := context.WithTimeout(ctx, m.QueryTimeout)
	defer cancel()
	hmacOf := make(map[string]string, len(items))
	hmacs := make([]string, len(items))
	for i, it := range items {
		hmacOf[it.key] = it.hmac
		hmacs[i] = it.hmac
	}
	now := m.Now()
	return pgx.BeginFunc(ctx, m.db, func(tx pgx.Tx) error {
		// The subjects' locks order this against holds being placed.
		if err := LockSubjects(ctx, tx, hmacs); err != nil {
			return err
		}
		held, err := m.Holds.HeldAmong(ctx, tx, hmacs)
		if err != nil {
			return err
		}
		var keys []string
		for _, it := range items {
			if !held[it.hmac] {
				keys = append(keys, it.key)
			}
		}
		var dueKeys []string
		if pp != nil {
			dueKeys, err = k.LockDue(ctx, tx, pp, keys, now)
		} else {
			dueKeys, err = k.LockRoots(ctx, tx, keys)
		}
		if err != nil {
			return err
		}
		del, total, stopped, err := k.DeleteSubjects(ctx, tx, dueKeys, func() error { return m.faults.At(FaultDuringDelete) })
		if err != nil {
			return err
		}
		// A subject a foreign key kept in place stays, reported.
		dueKeys = slices.DeleteFunc(dueKeys, func(key string) bool { _, ok := stopped[key]; return ok })
		gone := make([]string, len(dueKeys))
		for i, key := range dueKeys {
			gone[i] = hmacOf[key]
		}
		policy := PolicySuppressed
		if pp != nil {
			policy = pp.Name
		}
		if err := recordBlocked(ctx, tx, policy, hmacOf, stopped, gone); err != nil {
			return err
		}
		entries := make([]audit.Entry, 0, len(dueKeys))
		for _, key := range dueKeys {
			e := audit.Entry{Kind: audit.KindDestroy, Actor: "lethe", SubjectHMAC: hmacOf[key],
				Detail: map[string]any{"batch_id": batchID, "rows": k.RowsByTable(del[key])}}
			if pp != nil {
				e.Detail.(map[string]any)["policy"] = pp.Name
			} else {
				e.Kind = audit.KindSuppressed
				e.Detail.(map[string]any)["reason"] = "erased on request earlier; found again in the hot tables"
			}
			entries = append(entries, e)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM lethe.work_item WHERE subject_hmac = ANY ($1)`, hmacs); err != nil {
			return fmt.Errorf("error dropping work items: %w", err)
		}
		skipped := len(keys) - len(dueKeys) - len(stopped)
		if _, err := tx.Exec(ctx, `UPDATE lethe.batch SET destroyed = destroyed + $2, skipped = skipped + $3, held = held + $4, rows_moved = rows_moved + $5,
			blocked = blocked + $6 WHERE id = $1`, batchID, len(dueKeys), skipped, len(held), total, len(stopped)); err != nil {
			return fmt.Errorf("error counting batch: %w", err)
		}
		if err := audit.Append(ctx, tx, entries...); err != nil {
			return err
		}
		if err := m.faults.At(FaultBeforeCommit); err != nil {
			return err
		}
		res.Destroyed += len(dueKeys)
		res.Blocked += len(stopped)
		res.Skipped += skipped
		res.Held += len(held)
		res.Rows += total
		return nil
	})
}

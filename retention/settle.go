package retention

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/audit"
)

// settle finishes subjects whose archive is committed: every version of
// their object but the one the manifest names is removed, then their work
// items are dropped.
func (m *batchRun) settle(ctx context.Context, batchID int64, items []item) error {
	return m.prune(ctx, batchID, items, true)
}

// release gives up claimed subjects: any version put for them that the
// manifest does not name is removed, and their work items are dropped.
func (m *batchRun) release(ctx context.Context, batchID int64, items []item) error {
	if err := m.prune(ctx, batchID, items, false); err != nil {
		return err
	}
	_, err := m.db.Exec(ctx, `UPDATE lethe.batch SET skipped = skipped + $2 WHERE id = $1`, batchID, len(items))
	return err
}

// prune removes, for each item no hold covers, every version of its object
// that the manifest does not name, and drops the items with an audit entry
// for what was removed. A held subject keeps every version: releasing the
// last hold prunes them. committed says the items were archived, so the
// manifest must name a version; one that does not is left for a person.
func (m *batchRun) prune(ctx context.Context, batchID int64, items []item, committed bool) error {
	if len(items) == 0 {
		return nil
	}
	hmacs := make([]string, len(items))
	for i, it := range items {
		hmacs[i] = it.hmac
	}
	rows, err := m.db.Query(ctx, `SELECT subject_hmac, version_id FROM lethe.manifest WHERE subject_hmac = ANY ($1)`, hmacs)
	if err != nil {
		return fmt.Errorf("error reading manifest: %w", err)
	}
	keep := map[string]string{}
	var h, v string
	if _, err := pgx.ForEachRow(rows, []any{&h, &v}, func() error { keep[h] = v; return nil }); err != nil {
		return fmt.Errorf("error reading manifest: %w", err)
	}
	held, err := m.Holds.HeldAmong(ctx, m.db, hmacs)
	if err != nil {
		return err
	}
	reason := "settled after the archive committed"
	if !committed {
		reason = "no longer due"
	}
	var done []string
	var entries []audit.Entry
	for _, it := range items {
		version, named := keep[it.hmac]
		switch {
		case held[it.hmac]:
		case committed && !named:
			// A committed item always has a manifest row: they are written
			// together. Without one, keep everything and say so.
			m.Logger.Error("committed work item has no manifest entry; leaving its object alone", "subject_hmac", it.hmac)
			continue
		case !committed && it.puts == 0:
			// Nothing was ever put for it.
		default:
			deleted, err := m.Store.Prune(ctx, it.hmac, version)
			if err != nil {
				return fmt.Errorf("error removing unneeded object versions: %w", err)
			}
			if len(deleted) > 0 {
				entries = append(entries, audit.Entry{Kind: audit.KindRecovery, Actor: "lethe", SubjectHMAC: it.hmac,
					Detail: map[string]any{"batch_id": batchID, "kept_version": version, "deleted_versions": deleted, "reason": reason}})
			}
		}
		done = append(done, it.hmac)
	}
	return m.dropItems(ctx, done, entries)
}

func (m *batchRun) dropItems(ctx context.Context, hmacs []string, entries []audit.Entry) error {
	if len(hmacs) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, m.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM lethe.work_item WHERE subject_hmac = ANY ($1)`, hmacs); err != nil {
			return fmt.Errorf("error dropping work items: %w", err)
		}
		return audit.Append(ctx, tx, entries...)
	})
}

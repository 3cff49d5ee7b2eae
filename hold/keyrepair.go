package hold

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/retention"
)

// KeyRepair says what RepairKeys changed.
type KeyRepair struct {
	// Rewritten are active holds whose key was stored in another spelling
	// and has been rewritten, with its HMAC, in canonical form.
	Rewritten int `json:"rewritten"`
	// Merged are active holds that, once canonical, named a subject the
	// same matter already held; they were released as duplicates.
	Merged int `json:"merged"`
	// Invalid are stored keys the cast refuses now (the key column's type
	// changed since): left as they are.
	Invalid int `json:"invalid"`
}

// RepairKeys rewrites, in tx, the active holds that versions before
// canonical keys stored under the spelling legal typed: key and HMAC are
// recomputed, a duplicate of another hold of its matter is released, the
// object-store locks follow, and each change is audited with both HMACs. It
// is idempotent.
func RepairKeys(ctx context.Context, tx pgx.Tx, plan *retention.Plan, queue Queue) (*KeyRepair, error) {
	res := &KeyRepair{}
	if _, err := tx.Exec(ctx, `LOCK TABLE lethe.hold IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return nil, fmt.Errorf("error locking holds: %w", err)
	}
	var stale []retention.StaleKey
	for _, k := range plan.Kinds {
		ks, invalid, err := k.StaleKeys(ctx, tx, `
			SELECT id, matter, subject_key, subject_hmac FROM lethe.hold WHERE released_at IS NULL AND kind = $1 ORDER BY id`, k.Name)
		if err != nil {
			return nil, err
		}
		stale = append(stale, ks...)
		res.Invalid += invalid
	}
	var entries []audit.Entry
	var held, touched []string
	for _, h := range stale {
		touched = append(touched, h.HMAC, h.CanonicalHMAC)
		var dup bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lethe.hold WHERE matter = $1 AND subject_hmac = $2 AND released_at IS NULL AND id <> $3)`,
			h.Group, h.CanonicalHMAC, h.ID).Scan(&dup); err != nil {
			return nil, fmt.Errorf("error reading holds: %w", err)
		}
		detail := map[string]any{"hold_id": h.ID, "matter": h.Group, "old_subject_hmac": h.HMAC}
		if dup {
			if _, err := tx.Exec(ctx, `UPDATE lethe.hold SET released_at = now(), released_by = 'lethe', subject_key = NULL WHERE id = $1`, h.ID); err != nil {
				return nil, fmt.Errorf("error merging holds: %w", err)
			}
			res.Merged++
			detail["merged"] = true
		} else {
			if _, err := tx.Exec(ctx, `UPDATE lethe.hold SET subject_key = $2, subject_hmac = $3 WHERE id = $1`, h.ID, h.Canonical, h.CanonicalHMAC); err != nil {
				return nil, fmt.Errorf("error rewriting hold: %w", err)
			}
			res.Rewritten++
		}
		held = append(held, h.CanonicalHMAC)
		entries = append(entries, audit.Entry{Kind: audit.KindKeyRepaired, Actor: "lethe", SubjectHMAC: h.CanonicalHMAC, Detail: detail})
	}
	if len(touched) == 0 {
		return res, nil
	}
	if err := retention.LockSubjects(ctx, tx, touched); err != nil {
		return nil, err
	}
	// The canonical subjects are held; an old spelling's subject that no
	// hold covers any more is not.
	if err := requestSync(ctx, tx, queue, retention.Unique(held), true); err != nil {
		return nil, err
	}
	freed, err := unheld(ctx, tx, retention.Unique(touched))
	if err != nil {
		return nil, err
	}
	if err := requestSync(ctx, tx, queue, freed, false); err != nil {
		return nil, err
	}
	return res, audit.Append(ctx, tx, entries...)
}

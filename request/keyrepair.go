package request

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/retention"
)

// KeyRepair says what RepairKeys found and changed.
type KeyRepair struct {
	// Rewritten are open requests whose key was stored in another spelling
	// and has been rewritten, with its HMAC, in canonical form.
	Rewritten int `json:"rewritten"`
	// Resumed are those that waited on a hold that, once canonical, turned
	// out to name another subject; they are queued again.
	Resumed int `json:"resumed"`
	// Suppressions are the suppression entries of open requests rewritten.
	Suppressions int `json:"suppressions"`
	// Invalid are stored keys the cast refuses now: left as they are.
	Invalid int `json:"invalid"`
	// Unverifiable are ended requests (completed, rejected, failed): lethe
	// erased their key when they ended, so their HMAC cannot be recomputed.
	Unverifiable int `json:"unverifiable"`
	// FoundNothing are the completed ones among Unverifiable whose receipt
	// says lethe held nothing of the subject. A key typed in another
	// spelling would have given exactly that receipt: such requests are
	// worth filing again with the canonical key.
	FoundNothing []int64 `json:"found_nothing_request_ids"`
}

// RepairKeys rewrites, in tx, the open requests that versions before
// canonical keys stored under the spelling privacy typed: key, HMAC and
// suppression entry are recomputed, a request that waited on a hold of
// another spelling is queued again, and each change is audited with both
// HMACs. Ended requests keep no key and are reported. It is idempotent.
func RepairKeys(ctx context.Context, tx pgx.Tx, plan *retention.Plan, queue Queue) (*KeyRepair, error) {
	res := &KeyRepair{}
	if _, err := tx.Exec(ctx, `LOCK TABLE lethe.request, lethe.suppression IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return nil, fmt.Errorf("error locking requests: %w", err)
	}
	var stale []retention.StaleKey
	for _, k := range plan.Kinds {
		ks, invalid, err := k.StaleKeys(ctx, tx, `
			SELECT id, state, subject_key, subject_hmac FROM lethe.request
			WHERE state IN ($1, $2, $3) AND kind = $4 ORDER BY id`, StateReceived, StateProcessing, StateBlockedByHold, k.Name)
		if err != nil {
			return nil, err
		}
		stale = append(stale, ks...)
		res.Invalid += invalid
	}
	var entries []audit.Entry
	for _, r := range stale {
		if err := retention.LockSubjects(ctx, tx, []string{r.HMAC, r.CanonicalHMAC}); err != nil {
			return nil, err
		}
		if _, err := tx.Exec(ctx, `UPDATE lethe.request SET subject_key = $2, subject_hmac = $3, updated_at = now() WHERE id = $1`,
			r.ID, r.Canonical, r.CanonicalHMAC); err != nil {
			return nil, fmt.Errorf("error rewriting request: %w", err)
		}
		res.Rewritten++
		var moved int
		if err := tx.QueryRow(ctx, `
			WITH gone AS (DELETE FROM lethe.suppression WHERE request_id = $1 AND subject_hmac <> $2 RETURNING request_id),
			     added AS (INSERT INTO lethe.suppression (subject_hmac, request_id) SELECT $2, $1 FROM gone LIMIT 1
			               ON CONFLICT (subject_hmac) DO NOTHING)
			SELECT count(*) FROM gone`, r.ID, r.CanonicalHMAC).Scan(&moved); err != nil {
			return nil, fmt.Errorf("error rewriting suppression: %w", err)
		}
		res.Suppressions += moved
		entries = append(entries, audit.Entry{Kind: audit.KindKeyRepaired, Actor: "lethe", SubjectHMAC: r.CanonicalHMAC,
			Detail: map[string]any{"request_id": r.ID, "old_subject_hmac": r.HMAC}})
		if r.Group != StateBlockedByHold {
			continue
		}
		// It waited on holds of the old spelling: its job decides again,
		// under the canonical key's holds.
		if _, err := tx.Exec(ctx, `UPDATE lethe.request SET state = $2, reason = NULL WHERE id = $1`, r.ID, StateReceived); err != nil {
			return nil, fmt.Errorf("error resuming request: %w", err)
		}
		if err := enqueue(ctx, tx, queue, r.ID); err != nil {
			return nil, err
		}
		res.Resumed++
	}
	rows, err := tx.Query(ctx, `
		SELECT id, state = $1 AND coalesce((receipt ->> 'found')::boolean, true) = false
		FROM lethe.request WHERE state IN ($1, $2, $3) ORDER BY id`, StateCompleted, StateRejected, StateFailed)
	if err != nil {
		return nil, fmt.Errorf("error reading ended requests: %w", err)
	}
	var id int64
	var nothing bool
	if _, err := pgx.ForEachRow(rows, []any{&id, &nothing}, func() error {
		res.Unverifiable++
		if nothing {
			res.FoundNothing = append(res.FoundNothing, id)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("error reading ended requests: %w", err)
	}
	return res, audit.Append(ctx, tx, entries...)
}

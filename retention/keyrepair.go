package retention

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/internal/audit"
)

// KeyRepair says what RepairKeys found and changed.
type KeyRepair struct {
	// Holds are active holds whose key was stored in another spelling and
	// has been rewritten, with its HMAC, in canonical form.
	Holds int `json:"holds"`
	// HoldsMerged are active holds that, once canonical, named a subject
	// the same matter already held; they were released as duplicates.
	HoldsMerged int `json:"holds_merged"`
	// Requests are open deletion requests rewritten in canonical form.
	Requests int `json:"requests"`
	// Resumed are requests that waited on a hold that, once canonical,
	// turned out to name another subject; they are queued again.
	Resumed int `json:"resumed"`
	// Suppressions are suppression entries of open requests rewritten.
	Suppressions int `json:"suppressions"`
	// Invalid are stored keys the cast refuses now (the key column's type
	// changed since): left as they are.
	Invalid int `json:"invalid"`
	// Unverifiable are ended requests (completed, rejected, failed): lethe
	// erased their key when they ended, so their HMAC cannot be
	// recomputed.
	Unverifiable int `json:"unverifiable"`
	// FoundNothing are the completed ones among Unverifiable whose receipt
	// says lethe held nothing of the subject. A key typed in another
	// spelling would have given exactly that receipt: such requests are
	// worth filing again with the canonical key.
	FoundNothing []int64 `json:"found_nothing_request_ids"`
}

// Changed reports whether the repair rewrote anything.
func (r *KeyRepair) Changed() bool {
	return r.Holds+r.HoldsMerged+r.Requests+r.Suppressions > 0
}

// RepairKeys brings the subject keys that earlier versions of lethe stored
// as typed (before keys were made canonical) into canonical form: active
// holds and open requests keep their key, so their key and HMAC are
// recomputed; ended requests keep only an HMAC, which cannot be, and are
// reported. Holds and requests that change are audited, with both HMACs.
// It is idempotent: a second run finds nothing to rewrite.
func RepairKeys(ctx context.Context, pool *pgxpool.Pool, plan *Plan, queue Queue) (*KeyRepair, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	res := &KeyRepair{}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		*res = KeyRepair{}
		// Nothing else may place, release or process meanwhile.
		if _, err := tx.Exec(ctx, `LOCK TABLE lethe.hold, lethe.request, lethe.suppression IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return fmt.Errorf("error locking holds and requests: %w", err)
		}
		var entries []audit.Entry
		holdEntries, err := repairHolds(ctx, tx, plan, queue, res)
		if err != nil {
			return err
		}
		reqEntries, err := repairRequests(ctx, tx, plan, queue, res)
		if err != nil {
			return err
		}
		entries = append(holdEntries, reqEntries...)
		rows, err := tx.Query(ctx, `
			SELECT id, state = 'completed' AND coalesce((receipt ->> 'found')::boolean, true) = false
			FROM lethe.request WHERE state IN ('completed', 'rejected', 'failed') ORDER BY id`)
		if err != nil {
			return fmt.Errorf("error reading ended requests: %w", err)
		}
		type ended struct {
			id      int64
			nothing bool
		}
		all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ended, error) {
			var e ended
			return e, r.Scan(&e.id, &e.nothing)
		})
		if err != nil {
			return fmt.Errorf("error reading ended requests: %w", err)
		}
		res.Unverifiable = len(all)
		for _, e := range all {
			if e.nothing {
				res.FoundNothing = append(res.FoundNothing, e.id)
			}
		}
		return audit.Append(ctx, tx, entries...)
	})
	if err != nil {
		return nil, fmt.Errorf("error repairing stored subject keys: %w", err)
	}
	return res, nil
}

// stored is a key as an earlier version may have stored it.
type stored struct {
	id        int64
	group     string // the hold's matter, or the request's state
	key, hmac string
	canon     string // "" when the cast refuses key
}

func readStored(ctx context.Context, tx pgx.Tx, plan *Plan, q string) ([]stored, error) {
	rows, err := tx.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (stored, error) {
		var s stored
		return s, r.Scan(&s.id, &s.group, &s.key, &s.hmac)
	})
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(all))
	for i, s := range all {
		keys[i] = s.key
	}
	// A refused cast ends a transaction, so each attempt runs in a
	// savepoint: first all keys at once, then, if one no longer casts (the
	// key column's type changed), each on its own.
	canonical := func(keys []string) ([]string, error) {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return nil, err
		}
		defer sp.Rollback(ctx) //nolint:errcheck // read only
		return plan.CanonicalKeys(ctx, sp, keys)
	}
	if canon, err := canonical(keys); err == nil {
		for i := range all {
			all[i].canon = canon[i]
		}
		return all, nil
	} else if !errors.Is(err, ErrBadInput) {
		return nil, err
	}
	for i := range all {
		c, err := canonical([]string{all[i].key})
		switch {
		case err == nil:
			all[i].canon = c[0]
		case !errors.Is(err, ErrBadInput):
			return nil, err
		}
	}
	return all, nil
}

func repairHolds(ctx context.Context, tx pgx.Tx, plan *Plan, queue Queue, res *KeyRepair) ([]audit.Entry, error) {
	holds, err := readStored(ctx, tx, plan, `
		SELECT id, matter, subject_key, subject_hmac FROM lethe.hold WHERE released_at IS NULL ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	var entries []audit.Entry
	var held, touched []string
	for _, h := range holds {
		if h.canon == "" {
			res.Invalid++
			continue
		}
		newHMAC := plan.hasher.HMAC(h.canon)
		if h.canon == h.key && newHMAC == h.hmac {
			continue
		}
		touched = append(touched, h.hmac, newHMAC)
		var dup bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lethe.hold WHERE matter = $1 AND subject_hmac = $2 AND released_at IS NULL AND id <> $3)`,
			h.group, newHMAC, h.id).Scan(&dup); err != nil {
			return nil, fmt.Errorf("error reading holds: %w", err)
		}
		detail := map[string]any{"hold_id": h.id, "matter": h.group, "old_subject_hmac": h.hmac}
		if dup {
			if _, err := tx.Exec(ctx, `UPDATE lethe.hold SET released_at = now(), released_by = 'lethe', subject_key = NULL WHERE id = $1`, h.id); err != nil {
				return nil, fmt.Errorf("error merging holds: %w", err)
			}
			res.HoldsMerged++
			detail["merged"] = true
		} else {
			if _, err := tx.Exec(ctx, `UPDATE lethe.hold SET subject_key = $2, subject_hmac = $3 WHERE id = $1`, h.id, h.canon, newHMAC); err != nil {
				return nil, fmt.Errorf("error rewriting hold: %w", err)
			}
			res.Holds++
		}
		held = append(held, newHMAC)
		entries = append(entries, audit.Entry{Kind: audit.KindKeyRepaired, Actor: "lethe", SubjectHMAC: newHMAC, Detail: detail})
	}
	if len(touched) == 0 {
		return nil, nil
	}
	if err := lockSubjectsTx(ctx, tx, touched); err != nil {
		return nil, err
	}
	// The canonical subjects are held; an old spelling's subject that no
	// hold covers any more is not.
	if err := requestSync(ctx, tx, queue, uniqueKeys(held), true); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `
		SELECT t FROM unnest($1::text[]) AS t
		WHERE NOT EXISTS (SELECT 1 FROM lethe.hold WHERE subject_hmac = t AND released_at IS NULL)`, uniqueKeys(touched))
	if err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	freed, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	return entries, requestSync(ctx, tx, queue, freed, false)
}

func repairRequests(ctx context.Context, tx pgx.Tx, plan *Plan, queue Queue, res *KeyRepair) ([]audit.Entry, error) {
	reqs, err := readStored(ctx, tx, plan, `
		SELECT id, state, subject_key, subject_hmac FROM lethe.request
		WHERE state IN ('received', 'processing', 'blocked_by_hold') ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("error reading requests: %w", err)
	}
	var entries []audit.Entry
	for _, r := range reqs {
		if r.canon == "" {
			res.Invalid++
			continue
		}
		newHMAC := plan.hasher.HMAC(r.canon)
		if r.canon == r.key && newHMAC == r.hmac {
			continue
		}
		if err := lockSubjectsTx(ctx, tx, []string{r.hmac, newHMAC}); err != nil {
			return nil, err
		}
		if _, err := tx.Exec(ctx, `UPDATE lethe.request SET subject_key = $2, subject_hmac = $3, updated_at = now() WHERE id = $1`,
			r.id, r.canon, newHMAC); err != nil {
			return nil, fmt.Errorf("error rewriting request: %w", err)
		}
		res.Requests++
		var rewritten int
		if err := tx.QueryRow(ctx, `
			WITH gone AS (DELETE FROM lethe.suppression WHERE request_id = $1 AND subject_hmac <> $2 RETURNING request_id),
			     added AS (INSERT INTO lethe.suppression (subject_hmac, request_id) SELECT $2, $1 FROM gone LIMIT 1
			               ON CONFLICT (subject_hmac) DO NOTHING)
			SELECT count(*) FROM gone`, r.id, newHMAC).Scan(&rewritten); err != nil {
			return nil, fmt.Errorf("error rewriting suppression: %w", err)
		}
		res.Suppressions += rewritten
		entries = append(entries, audit.Entry{Kind: audit.KindKeyRepaired, Actor: "lethe", SubjectHMAC: newHMAC,
			Detail: map[string]any{"request_id": r.id, "old_subject_hmac": r.hmac}})
		if r.group != StateBlockedByHold {
			continue
		}
		// It waited on holds of the old spelling: the request job decides
		// again, under the canonical key's holds.
		if _, err := tx.Exec(ctx, `UPDATE lethe.request SET state = 'received', reason = NULL WHERE id = $1`, r.id); err != nil {
			return nil, fmt.Errorf("error resuming request: %w", err)
		}
		if err := enqueueRequest(ctx, tx, queue, r.id); err != nil {
			return nil, err
		}
		res.Resumed++
	}
	return entries, nil
}

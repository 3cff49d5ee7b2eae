package request

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/retention"
)

// A database restored from a backup has forgotten the erasures made since
// the backup: the hot rows and wrapped keys of those subjects are back, and
// so is the suppression list as it was. The bucket's anchors remember them.
// A replay reads the anchors the database's chain no longer holds and
// erases again every subject they list, unless a hold covers it now.

// ReplayConfig is what a Replayer needs.
type ReplayConfig struct {
	// Pool is lethe's database. Required.
	Pool *pgxpool.Pool
	// Plan finds and deletes subjects' rows. Required.
	Plan *retention.Plan
	// Store reads the anchors with the worker's credentials. Required.
	Store audit.AnchorStore
	// Holds says which subjects a hold covers now. Required.
	Holds retention.HoldChecker
	// Logger gets a line per replay. Required.
	Logger *slog.Logger
}

// Replayer applies again the erasures of the bucket's anchors that a
// restored database lacks.
type Replayer struct {
	ReplayConfig
}

// NewReplayer returns a Replayer, or an error naming what is missing.
func NewReplayer(cfg ReplayConfig) (*Replayer, error) {
	if cfg.Pool == nil || cfg.Plan == nil || cfg.Store == nil || cfg.Holds == nil || cfg.Logger == nil {
		return nil, errors.New("error creating the ledger replay: Pool, Plan, Store, Holds and Logger are required")
	}
	return &Replayer{ReplayConfig: cfg}, nil
}

// Replay is what a replay finds to do, or did.
type Replay struct {
	// Ledger is how the database stood against the newest anchor.
	Ledger *audit.LedgerState `json:"ledger"`
	// Head is the newest anchor, which the replay reconciles; nil when
	// there is nothing to replay.
	Head *audit.Anchor `json:"-"`
	// HeadName is its object name.
	HeadName string `json:"head,omitempty"`
	// RestorePoint is the seq of the newest anchor the database's chain
	// still holds (0: none); Anchors are the anchors after it, which the
	// restore lost.
	RestorePoint int64 `json:"restore_point"`
	Anchors      int   `json:"anchors"`
	// Erased and Expired are the subjects (HMACs) those anchors list,
	// those a hold covers now excepted.
	Erased  []string `json:"erased"`
	Expired []string `json:"expired"`
	// Held are the subjects listed that a hold covers now: reported, and
	// left alone.
	Held []string `json:"held"`
	// What the database lacks of those erasures: stored keys of erased
	// subjects, stored keys of expired copies, subjects back in the hot
	// tables, and erased subjects missing from the suppression list.
	Keys         int `json:"keys_to_destroy"`
	ExpiredKeys  int `json:"expired_keys_to_destroy"`
	HotSubjects  int `json:"hot_subjects"`
	Unsuppressed int `json:"unsuppressed"`
	// Rows is how many hot rows the replay deleted (after Apply).
	Rows int64 `json:"rows_deleted"`
	// Applied is set once the replay was applied.
	Applied bool `json:"applied"`
}

// Needed says whether the database needs a replay.
func (r *Replay) Needed() bool { return r.Head != nil }

// Check reads the anchors and says what a replay would do; it changes
// nothing. A database that matches the anchors needs none. A bucket whose
// anchors belong to another database's chain is refused with ErrLedger.
func (r *Replayer) Check(ctx context.Context) (*Replay, error) {
	st, err := audit.CheckLedger(ctx, r.Pool, r.Store)
	if err != nil {
		return nil, err
	}
	rp := &Replay{Ledger: st, Erased: []string{}, Expired: []string{}, Held: []string{}}
	if st.OK {
		return rp, nil
	}
	if st.State == audit.LedgerForeign {
		return nil, fmt.Errorf("%w: %s; nothing was changed", audit.ErrLedger, st.Reason)
	}
	anchors, err := audit.Anchors(ctx, r.Store)
	if err != nil {
		return nil, err
	}
	rp.Head, rp.HeadName = &anchors[0], audit.AnchorName(r.Store.LedgerPrefix(), anchors[0].Seq)
	// Newest first: the anchors the chain no longer holds, down to the
	// newest one it does (the restore point).
	var lost []audit.Anchor
	for _, a := range anchors {
		holds, err := chainHolds(ctx, r.Pool, a)
		if err != nil {
			return nil, err
		}
		if holds {
			rp.RestorePoint = a.Seq
			break
		}
		lost = append(lost, a)
	}
	rp.Anchors = len(lost)
	erased, expired := map[string]bool{}, map[string]bool{}
	for _, a := range lost {
		for _, h := range a.Erased {
			erased[h] = true
		}
		for _, h := range a.Expired {
			expired[h] = true
		}
	}
	all := make([]string, 0, len(erased)+len(expired))
	for h := range erased {
		all = append(all, h)
	}
	for h := range expired {
		if !erased[h] {
			all = append(all, h)
		}
	}
	held, err := r.Holds.HeldAmong(ctx, r.Pool, all)
	if err != nil {
		return nil, err
	}
	for _, h := range all {
		switch {
		case held[h]:
			rp.Held = append(rp.Held, h)
		case erased[h]:
			rp.Erased = append(rp.Erased, h)
		default:
			rp.Expired = append(rp.Expired, h)
		}
	}
	slices.Sort(rp.Erased)
	slices.Sort(rp.Expired)
	slices.Sort(rp.Held)
	return rp, r.lacks(ctx, r.Pool, rp)
}

// chainHolds says whether the database's chain holds anchor a: the entry
// at its seq has its hash, or a replay reconciled it.
func chainHolds(ctx context.Context, db retention.Querier, a audit.Anchor) (bool, error) {
	want, err := hex.DecodeString(a.Hash)
	if err != nil {
		return false, fmt.Errorf("error reading anchor at seq %d: its hash is not hex", a.Seq)
	}
	var holds bool
	err = db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lethe.audit_log WHERE seq = $1 AND hash = $2)
		OR EXISTS (SELECT 1 FROM lethe.ledger_replay WHERE anchor_seq = $1 AND anchor_hash = $2)`, a.Seq, want).Scan(&holds)
	if err != nil {
		return false, fmt.Errorf("error reading the chain: %w", err)
	}
	return holds, nil
}

// lacks counts what the database lacks of the replay's erasures.
func (r *Replayer) lacks(ctx context.Context, db retention.Querier, rp *Replay) error {
	if err := db.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM lethe.manifest WHERE subject_hmac = ANY ($1) AND wrapped_key IS NOT NULL),
		       (SELECT count(*) FROM lethe.manifest WHERE subject_hmac = ANY ($2) AND state = 'archived' AND wrapped_key IS NOT NULL),
		       (SELECT count(*) FROM unnest($1::text[]) AS h WHERE NOT EXISTS (SELECT 1 FROM lethe.suppression s WHERE s.subject_hmac = h))`,
		rp.Erased, rp.Expired).Scan(&rp.Keys, &rp.ExpiredKeys, &rp.Unsuppressed); err != nil {
		return fmt.Errorf("error reading the manifest: %w", err)
	}
	rp.HotSubjects = 0
	for _, k := range r.Plan.Kinds {
		keys, err := k.KeysByHMAC(ctx, db, rp.Erased)
		if err != nil {
			return err
		}
		rp.HotSubjects += len(keys)
	}
	return nil
}

// Apply carries out a replay that Check found needed, in one transaction:
// it deletes the erased subjects' rows, destroys their keys (and the keys
// of the expired copies), puts them back on the suppression list, records
// the head anchor as reconciled and appends one audit entry, numbered past
// the head anchor. Subjects a hold covers now are left alone. Run again, a
// replay that committed finds nothing to do; one that did not starts over.
func (r *Replayer) Apply(ctx context.Context, rp *Replay, by string) error {
	if !rp.Needed() {
		return nil
	}
	want, err := hex.DecodeString(rp.Head.Hash)
	if err != nil {
		return fmt.Errorf("error reading the newest anchor: its hash is not hex")
	}
	err = pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		subjects := append(slices.Clone(rp.Erased), rp.Expired...)
		if err := retention.LockSubjects(ctx, tx, subjects); err != nil {
			return err
		}
		// A hold placed since Check read them keeps its subject.
		held, err := r.Holds.HeldAmong(ctx, tx, subjects)
		if err != nil {
			return err
		}
		for h := range held {
			rp.Held = append(rp.Held, h)
		}
		rp.Erased = slices.DeleteFunc(rp.Erased, func(h string) bool { return held[h] })
		rp.Expired = slices.DeleteFunc(rp.Expired, func(h string) bool { return held[h] })
		if err := r.lacks(ctx, tx, rp); err != nil {
			return err
		}
		// HMACs carry the subject table: each erased subject is of one
		// kind only.
		rp.Rows = 0
		for _, k := range r.Plan.Kinds {
			keys, err := k.KeysByHMAC(ctx, tx, rp.Erased)
			if err != nil {
				return err
			}
			if _, err := k.LockRoots(ctx, tx, keys); err != nil {
				return err
			}
			_, n, err := k.DeleteGraph(ctx, tx, keys, nil)
			if err != nil {
				return err
			}
			rp.Rows += n
		}
		if _, err := tx.Exec(ctx, `
			UPDATE lethe.manifest SET state = 'erased', wrapped_key = NULL,
				destroyed_at = coalesce(destroyed_at, now()), destroyed_by = coalesce(destroyed_by, 'ledger replay')
			WHERE subject_hmac = ANY ($1) AND state <> 'erased'`, rp.Erased); err != nil {
			return fmt.Errorf("error destroying keys: %w", err)
		}
		if _, err := tx.Exec(ctx, `
			UPDATE lethe.manifest SET state = 'expired', wrapped_key = NULL, destroyed_at = now(), destroyed_by = 'ledger replay'
			WHERE subject_hmac = ANY ($1) AND state = 'archived'`, rp.Expired); err != nil {
			return fmt.Errorf("error destroying keys: %w", err)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO lethe.suppression (subject_hmac) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, rp.Erased); err != nil {
			return fmt.Errorf("error recording suppression: %w", err)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO lethe.ledger_replay (anchor_seq, anchor_hash, anchor_name, restored_seq) VALUES ($1, $2, $3, $4)
			ON CONFLICT DO NOTHING`, rp.Head.Seq, want, rp.HeadName, rp.Ledger.ChainSeq); err != nil {
			return fmt.Errorf("error recording the replay: %w", err)
		}
		// The head anchor is the newest anchor now: the next one links to it.
		if _, err := tx.Exec(ctx, `
			INSERT INTO lethe.anchor (seq, hash, name, version_id, erased, expired) VALUES ($1, $2, $3, '', $4, $5)
			ON CONFLICT (seq) DO NOTHING`, rp.Head.Seq, want, rp.HeadName, len(rp.Head.Erased), len(rp.Head.Expired)); err != nil {
			return fmt.Errorf("error recording the replay: %w", err)
		}
		slices.Sort(rp.Held)
		rp.Held = slices.Compact(rp.Held)
		return audit.AppendAfter(ctx, tx, rp.Head.Seq, audit.Entry{Kind: audit.KindLedgerReplay, Actor: by, Detail: map[string]any{
			"anchor": rp.HeadName, "anchor_seq": rp.Head.Seq, "anchor_hash": rp.Head.Hash,
			"restored_seq": rp.Ledger.ChainSeq, "restore_point": rp.RestorePoint, "anchors": rp.Anchors,
			"erased": len(rp.Erased), "expired": len(rp.Expired), "keys_destroyed": rp.Keys, "expired_keys_destroyed": rp.ExpiredKeys,
			"hot_subjects_deleted": rp.HotSubjects, "rows_deleted": rp.Rows, "held": rp.Held,
		}})
	})
	if err != nil {
		return fmt.Errorf("error applying the ledger replay (nothing was changed; run it again): %w", err)
	}
	rp.Applied = true
	r.Logger.Info("ledger replayed", "anchor", rp.HeadName, "erased", len(rp.Erased), "expired", len(rp.Expired),
		"held", len(rp.Held), "rows", rp.Rows)
	return nil
}

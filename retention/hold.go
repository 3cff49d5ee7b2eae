package retention

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/internal/audit"
)

// Hold is an active legal hold of one subject for one matter.
type Hold struct {
	ID          int64     `json:"id"`
	Matter      string    `json:"matter"`
	Subject     string    `json:"subject"`
	SubjectHMAC string    `json:"subject_hmac"`
	Reason      string    `json:"reason"`
	PlacedBy    string    `json:"placed_by"`
	PlacedAt    time.Time `json:"placed_at"`
}

// Errors of hold commands that the caller reports as bad input.
var (
	// ErrNoSuchMatter: no active hold has this matter.
	ErrNoSuchMatter = errors.New("no active hold has this matter")
	// ErrNotHeld: the subject is not held under this matter.
	ErrNotHeld = errors.New("subject is not held under this matter")
)

// Holds places, releases and lists legal holds. While any hold covers a
// subject nothing destroys it; its archive object carries an S3 legal hold,
// which a hold-sync job sets and clears.
type Holds struct {
	pool   *pgxpool.Pool
	plan   *Plan
	store  archiver
	logger *slog.Logger
}

// NewHolds returns the hold service for plan's subjects. store may be nil in
// a process that does not sync holds to the object store.
func NewHolds(pool *pgxpool.Pool, plan *Plan, store archiver, logger *slog.Logger) *Holds {
	return &Holds{pool: pool, plan: plan, store: store, logger: logger}
}

// PlaceResult says what Place did.
type PlaceResult struct {
	// Placed are the holds created; a subject already held under the
	// matter is not placed twice.
	Placed []Hold `json:"placed"`
	// Already counts subjects that were already held under the matter.
	Already int `json:"already_held"`
}

// Place holds every subject under matter. It takes effect in the database at
// once; the S3 legal hold follows in a job. A subject need not exist yet.
func (h *Holds) Place(ctx context.Context, queue Queue, matter string, keys []string, reason, by string) (*PlaceResult, error) {
	if err := nonBlank(map[string]string{"matter": matter, "reason": reason, "by": by}); err != nil {
		return nil, err
	}
	keys, err := h.plan.CanonicalKeys(ctx, h.pool, keys)
	if err != nil {
		return nil, err
	}
	keys = uniqueKeys(keys)
	res := &PlaceResult{}
	hmacs := h.hmacs(keys)
	err = pgx.BeginFunc(ctx, h.pool, func(tx pgx.Tx) error {
		res.Placed, res.Already = nil, 0
		if err := lockSubjectsTx(ctx, tx, hmacs); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			INSERT INTO lethe.hold (matter, subject_hmac, subject_key, reason, placed_by)
			SELECT $1, h, k, $4, $5 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u (h, k, i) ORDER BY i
			ON CONFLICT (matter, subject_hmac) WHERE released_at IS NULL DO NOTHING
			RETURNING id, subject_key, subject_hmac, placed_at`, matter, hmacs, keys, reason, by)
		if err != nil {
			return fmt.Errorf("error placing holds: %w", err)
		}
		res.Placed, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Hold, error) {
			hold := Hold{Matter: matter, Reason: reason, PlacedBy: by}
			return hold, r.Scan(&hold.ID, &hold.Subject, &hold.SubjectHMAC, &hold.PlacedAt)
		})
		if err != nil {
			return fmt.Errorf("error placing holds: %w", err)
		}
		slices.SortFunc(res.Placed, func(a, b Hold) int { return cmp.Compare(a.ID, b.ID) })
		res.Already = len(keys) - len(res.Placed)
		entries := make([]audit.Entry, len(res.Placed))
		placed := make([]string, len(res.Placed))
		for i, hold := range res.Placed {
			placed[i] = hold.SubjectHMAC
			entries[i] = audit.Entry{Kind: audit.KindHoldPlaced, Actor: by, SubjectHMAC: hold.SubjectHMAC,
				Detail: map[string]any{"hold_id": hold.ID, "matter": matter, "reason": reason}}
		}
		if err := requestSync(ctx, tx, queue, placed, true); err != nil {
			return err
		}
		return audit.Append(ctx, tx, entries...)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// ReleaseResult says what Release did.
type ReleaseResult struct {
	// Released counts the holds released.
	Released int `json:"released"`
	// Freed counts subjects that no hold covers any more.
	Freed int `json:"freed"`
	// Resumed counts deletion requests that were waiting on the holds and
	// are queued again.
	Resumed int `json:"resumed"`
}

// Release ends the matter's holds on the named subjects, or on all of its
// subjects when keys is empty. A subject no other hold covers is freed: its
// S3 legal hold is switched off by a job, and deletion requests waiting on
// it resume by themselves.
func (h *Holds) Release(ctx context.Context, queue Queue, matter string, keys []string, by string) (*ReleaseResult, error) {
	if err := nonBlank(map[string]string{"matter": matter, "by": by}); err != nil {
		return nil, err
	}
	keys, err := h.plan.CanonicalKeys(ctx, h.pool, keys)
	if err != nil {
		return nil, err
	}
	keys = uniqueKeys(keys)
	res := &ReleaseResult{}
	err = pgx.BeginFunc(ctx, h.pool, func(tx pgx.Tx) error {
		*res = ReleaseResult{}
		rows, err := tx.Query(ctx, `SELECT subject_hmac FROM lethe.hold WHERE matter = $1 AND released_at IS NULL`, matter)
		if err != nil {
			return fmt.Errorf("error reading holds: %w", err)
		}
		active, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("error reading holds: %w", err)
		}
		if len(active) == 0 {
			return fmt.Errorf("%w: %q (lethe hold list shows the active ones)", ErrNoSuchMatter, matter)
		}
		targets := active
		if len(keys) > 0 {
			held := map[string]bool{}
			for _, a := range active {
				held[a] = true
			}
			targets = h.hmacs(keys)
			for i, t := range targets {
				if !held[t] {
					return fmt.Errorf("%w: subject %q under matter %q; nothing was released", ErrNotHeld, keys[i], matter)
				}
			}
		}
		if err := lockSubjectsTx(ctx, tx, targets); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `
			UPDATE lethe.hold SET released_at = now(), released_by = $3, subject_key = NULL
			WHERE matter = $1 AND subject_hmac = ANY ($2) AND released_at IS NULL
			RETURNING id, subject_hmac`, matter, targets, by)
		if err != nil {
			return fmt.Errorf("error releasing holds: %w", err)
		}
		var entries []audit.Entry
		for rows.Next() {
			var id int64
			var hm string
			if err := rows.Scan(&id, &hm); err != nil {
				return fmt.Errorf("error releasing holds: %w", err)
			}
			res.Released++
			entries = append(entries, audit.Entry{Kind: audit.KindHoldReleased, Actor: by, SubjectHMAC: hm,
				Detail: map[string]any{"hold_id": id, "matter": matter}})
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("error releasing holds: %w", err)
		}
		// Subjects no other matter holds.
		rows, err = tx.Query(ctx, `
			SELECT t FROM unnest($1::text[]) AS t
			WHERE NOT EXISTS (SELECT 1 FROM lethe.hold WHERE subject_hmac = t AND released_at IS NULL)`, targets)
		if err != nil {
			return fmt.Errorf("error reading holds: %w", err)
		}
		freed, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("error reading holds: %w", err)
		}
		res.Freed = len(freed)
		// Requests still blocked by another matter: their reason names the
		// matters left.
		if _, err := tx.Exec(ctx, `
			UPDATE lethe.request r SET reason = 'held under matter ' || m.matters, updated_at = now()
			FROM (SELECT subject_hmac, string_agg(DISTINCT matter, ', ' ORDER BY matter) AS matters
			      FROM lethe.hold WHERE released_at IS NULL AND subject_hmac = ANY ($1) GROUP BY subject_hmac) m
			WHERE r.subject_hmac = m.subject_hmac AND r.state = 'blocked_by_hold'`, targets); err != nil {
			return fmt.Errorf("error updating blocked requests: %w", err)
		}
		if err := requestSync(ctx, tx, queue, freed, false); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `
			UPDATE lethe.request SET state = 'received', reason = NULL, updated_at = now()
			WHERE subject_hmac = ANY ($1) AND state = 'blocked_by_hold'
			RETURNING id, subject_hmac`, freed)
		if err != nil {
			return fmt.Errorf("error resuming requests: %w", err)
		}
		type resumed struct {
			id   int64
			hmac string
		}
		var rs []resumed
		for rows.Next() {
			var r resumed
			if err := rows.Scan(&r.id, &r.hmac); err != nil {
				return fmt.Errorf("error resuming requests: %w", err)
			}
			rs = append(rs, r)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("error resuming requests: %w", err)
		}
		for _, r := range rs {
			if err := enqueueRequest(ctx, tx, queue, r.id); err != nil {
				return err
			}
			entries = append(entries, audit.Entry{Kind: audit.KindRequestResumed, Actor: by, SubjectHMAC: r.hmac,
				Detail: map[string]any{"request_id": r.id, "matter": matter}})
		}
		res.Resumed = len(rs)
		return audit.Append(ctx, tx, entries...)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// requestSync records that the subjects' objects should (or should not) be
// under an S3 legal hold and queues the jobs that make it so.
func requestSync(ctx context.Context, tx pgx.Tx, queue Queue, subjectHMACs []string, held bool) error {
	if len(subjectHMACs) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO lethe.hold_sync (subject_hmac, held) SELECT h, $2 FROM unnest($1::text[]) AS h
		ON CONFLICT (subject_hmac) DO UPDATE SET held = excluded.held, generation = lethe.hold_sync.generation + 1,
			requested_at = now(), last_error = NULL`, subjectHMACs, held)
	if err != nil {
		return fmt.Errorf("error recording hold sync: %w", err)
	}
	return enqueueHoldSyncs(ctx, tx, queue, subjectHMACs)
}

// List returns the active holds, optionally of one matter or one subject.
func (h *Holds) List(ctx context.Context, matter, key string) ([]Hold, error) {
	var hm *string
	if key != "" {
		canon, err := h.plan.CanonicalKey(ctx, h.pool, key)
		if err != nil {
			return nil, err
		}
		s := h.plan.hasher.HMAC(canon)
		hm = &s
	}
	var m *string
	if matter != "" {
		m = &matter
	}
	rows, err := h.pool.Query(ctx, `
		SELECT id, matter, subject_key, subject_hmac, reason, placed_by, placed_at FROM lethe.hold
		WHERE released_at IS NULL AND ($1::text IS NULL OR matter = $1) AND ($2::text IS NULL OR subject_hmac = $2)
		ORDER BY matter, placed_at, id`, m, hm)
	if err != nil {
		return nil, fmt.Errorf("error listing holds: %w", err)
	}
	holds, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Hold])
	if err != nil {
		return nil, fmt.Errorf("error listing holds: %w", err)
	}
	return holds, nil
}

func (h *Holds) hmacs(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = h.plan.hasher.HMAC(k)
	}
	return out
}

// heldAmong returns which of the subjects any active hold covers.
func heldAmong(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, hmacs []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(hmacs) == 0 {
		return out, nil
	}
	rows, err := q.Query(ctx, `SELECT DISTINCT subject_hmac FROM lethe.hold WHERE released_at IS NULL AND subject_hmac = ANY ($1)`, hmacs)
	if err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	held, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	for _, h := range held {
		out[h] = true
	}
	return out, nil
}

// ErrBadInput is wrapped by every error about a caller's argument: a blank
// matter, ticket, reason or actor, or a blank subject key.
var ErrBadInput = errors.New("bad input")

func nonBlank(fields map[string]string) error {
	for _, name := range []string{"matter", "ticket", "reason", "by"} {
		v, ok := fields[name]
		if !ok {
			continue
		}
		if strings.TrimSpace(v) == "" {
			return fmt.Errorf("%w: --%s is required and cannot be blank", ErrBadInput, name)
		}
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return fmt.Errorf("%w: --%s is not valid UTF-8 text", ErrBadInput, name)
		}
	}
	return nil
}

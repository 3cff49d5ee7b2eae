// Package hold owns legal holds: placing, releasing and listing them, the
// check every destroyer makes before it destroys a subject (Checker), and
// their mirror in the bucket: every segment that holds a live part of a held
// subject carries an S3 Object Lock legal hold, which a job brings in line
// (Syncer). While any hold covers a subject nothing destroys it: not its
// rows, not its key, not its segment; see docs/ARCHITECTURE.md.
package hold

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe"
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/retention"
)

// Hold is an active legal hold of one subject for one matter.
type Hold struct {
	ID     int64  `json:"id"`
	Matter string `json:"matter"`
	// Kind is the kind of subject held.
	Kind        string    `json:"kind"`
	Subject     string    `json:"subject"`
	SubjectHMAC string    `json:"subject_hmac"`
	Reason      string    `json:"reason"`
	PlacedBy    string    `json:"placed_by"`
	PlacedAt    time.Time `json:"placed_at"`
}

// Errors of hold commands; both wrap lethe.ErrBadInput.
var (
	// ErrNoSuchMatter: no hold was ever placed under this matter.
	ErrNoSuchMatter = errors.New("no hold was ever placed under this matter")
	// ErrNotHeld: the subject was never held under this matter.
	ErrNotHeld = errors.New("subject was never held under this matter")
)

// Queue inserts hold-sync jobs inside the caller's transaction. Package jobs
// implements it with River.
type Queue interface {
	// EnqueueHoldSyncs queues, for each subject, bringing its object-lock
	// legal hold in line with its holds, and returns the jobs' ids in order.
	EnqueueHoldSyncs(ctx context.Context, tx pgx.Tx, subjectHMACs []string) (jobIDs []int64, err error)
}

// Waiting is what releasing a hold needs of the deletion requests that wait
// on it. Package request's Intake is one.
type Waiting interface {
	// Resume queues again, in tx, the requests that waited on subjects no
	// hold covers any more, and returns how many and their audit entries.
	Resume(ctx context.Context, tx pgx.Tx, subjectHMACs []string, matter, by string) (int, []audit.Entry, error)
	// StillHeld rewrites, in tx, the reason of the requests that wait on
	// subjects other matters still hold.
	StillHeld(ctx context.Context, tx pgx.Tx, subjectHMACs []string) error
}

// Config is what a Service needs.
type Config struct {
	// Pool is lethe's database. Required.
	Pool *pgxpool.Pool
	// Plan turns keys into canonical keys and HMACs. Required.
	Plan *retention.Plan
	// Queue inserts hold-sync jobs. Required.
	Queue Queue
	// Waiting resumes the requests a release frees. Required.
	Waiting Waiting
	// Logger gets the service's log lines. Required.
	Logger *slog.Logger
}

// Service places, releases and lists legal holds. A hold takes effect in the
// database at once; the S3 legal hold follows in a job.
type Service struct {
	Config
}

// New returns a Service, or an error naming what is missing.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil || cfg.Plan == nil || cfg.Queue == nil || cfg.Waiting == nil || cfg.Logger == nil {
		return nil, errors.New("error creating the hold service: Pool, Plan, Queue, Waiting and Logger are required")
	}
	return &Service{Config: cfg}, nil
}

// PlaceResult says what Place did.
type PlaceResult struct {
	// Placed are the holds created; a subject already held under the
	// matter is not placed twice.
	Placed []Hold `json:"placed"`
	// Already counts subjects that were already held under the matter.
	Already int `json:"already_held"`
}

// Place holds every subject of kind (empty: the default kind) under
// matter. A subject need not exist yet. Keys are made canonical first, so
// that one subject typed two ways is held once.
func (s *Service) Place(ctx context.Context, kind, matter string, keys []string, reason, by string) (*PlaceResult, error) {
	if err := lethe.NonBlank("matter", matter, "reason", reason, "by", by); err != nil {
		return nil, err
	}
	k, err := s.Plan.Kind(kind)
	if err != nil {
		return nil, err
	}
	keys, err = k.CanonicalKeys(ctx, s.Pool, keys)
	if err != nil {
		return nil, err
	}
	keys = retention.Unique(keys)
	hmacs := hmacsOf(k, keys)
	res := &PlaceResult{}
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		*res = PlaceResult{}
		if err := retention.LockSubjects(ctx, tx, hmacs); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			INSERT INTO lethe.hold (matter, kind, subject_hmac, subject_key, reason, placed_by)
			SELECT $1, $6, h, k, $4, $5 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u (h, k, i) ORDER BY i
			ON CONFLICT (matter, subject_hmac) WHERE released_at IS NULL DO NOTHING
			RETURNING id, subject_key, subject_hmac, placed_at`, matter, hmacs, keys, reason, by, k.Name)
		if err != nil {
			return fmt.Errorf("error placing holds: %w", err)
		}
		res.Placed, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Hold, error) {
			h := Hold{Matter: matter, Kind: k.Name, Reason: reason, PlacedBy: by}
			return h, r.Scan(&h.ID, &h.Subject, &h.SubjectHMAC, &h.PlacedAt)
		})
		if err != nil {
			return fmt.Errorf("error placing holds: %w", err)
		}
		slices.SortFunc(res.Placed, func(a, b Hold) int { return cmp.Compare(a.ID, b.ID) })
		res.Already = len(keys) - len(res.Placed)
		entries := make([]audit.Entry, len(res.Placed))
		placed := make([]string, len(res.Placed))
		for i, h := range res.Placed {
			placed[i] = h.SubjectHMAC
			entries[i] = audit.Entry{Kind: audit.KindHoldPlaced, Actor: by, SubjectHMAC: h.SubjectHMAC,
				Detail: map[string]any{"hold_id": h.ID, "matter": matter, "kind": k.Name, "reason": reason}}
		}
		if err := requestSync(ctx, tx, s.Queue, placed, true); err != nil {
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

// Release ends the matter's holds on the named subjects of kind (empty:
// the default kind), or, when keys is empty, on all of its subjects of kind
// (empty: of every kind). A subject no other hold covers is freed: its S3
// legal hold is switched off by a job, and deletion requests waiting on it
// resume by themselves. Holds released already are left as they are: a
// repeated release changes nothing and is not an error (ReleaseResult
// counts zero); a matter, or a subject, never held is ErrNoSuchMatter or
// ErrNotHeld.
func (s *Service) Release(ctx context.Context, kind, matter string, keys []string, by string) (*ReleaseResult, error) {
	if err := lethe.NonBlank("matter", matter, "by", by); err != nil {
		return nil, err
	}
	var k *retention.Kind
	if kind != "" || len(keys) > 0 {
		var err error
		if k, err = s.Plan.Kind(kind); err != nil {
			return nil, err
		}
		if keys, err = k.CanonicalKeys(ctx, s.Pool, keys); err != nil {
			return nil, err
		}
	}
	keys = retention.Unique(keys)
	res := &ReleaseResult{}
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		*res = ReleaseResult{}
		targets, err := s.releaseTargets(ctx, tx, k, matter, keys)
		if err != nil || len(targets) == 0 {
			return err
		}
		if err := retention.LockSubjects(ctx, tx, targets); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			UPDATE lethe.hold SET released_at = now(), released_by = $3, subject_key = NULL
			WHERE matter = $1 AND subject_hmac = ANY ($2) AND released_at IS NULL
			RETURNING id, subject_hmac`, matter, targets, by)
		if err != nil {
			return fmt.Errorf("error releasing holds: %w", err)
		}
		var entries []audit.Entry
		var id int64
		var hm string
		if _, err := pgx.ForEachRow(rows, []any{&id, &hm}, func() error {
			res.Released++
			entries = append(entries, audit.Entry{Kind: audit.KindHoldReleased, Actor: by, SubjectHMAC: hm,
				Detail: map[string]any{"hold_id": id, "matter": matter}})
			return nil
		}); err != nil {
			return fmt.Errorf("error releasing holds: %w", err)
		}
		freed, err := unheld(ctx, tx, targets)
		if err != nil {
			return err
		}
		res.Freed = len(freed)
		if err := s.Waiting.StillHeld(ctx, tx, targets); err != nil {
			return err
		}
		// An older copy of a freed subject loses the key the hold kept.
		destroyed, err := retention.DestroySuperseded(ctx, tx, freed, by)
		if err != nil {
			return err
		}
		entries = append(entries, destroyed...)
		if err := requestSync(ctx, tx, s.Queue, freed, false); err != nil {
			return err
		}
		resumed, more, err := s.Waiting.Resume(ctx, tx, freed, matter, by)
		if err != nil {
			return err
		}
		res.Resumed = resumed
		return audit.Append(ctx, tx, append(entries, more...)...)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// releaseTargets returns the HMACs of the matter's active holds to release:
// those of keys, or all of them (of kind k, unless k is nil) when keys is
// empty.
func (s *Service) releaseTargets(ctx context.Context, tx pgx.Tx, k *retention.Kind, matter string, keys []string) ([]string, error) {
	var kind *string
	if k != nil {
		kind = &k.Name
	}
	// Every subject ever held under the matter, and whether a hold on it
	// is still active. What was held and released already is released: a
	// release repeated (a retried script, say) does nothing and succeeds.
	// A matter or a subject never held under it is a mistake.
	rows, err := tx.Query(ctx, `SELECT subject_hmac, bool_or(released_at IS NULL) FROM lethe.hold
		WHERE matter = $1 AND ($2::text IS NULL OR kind = $2) GROUP BY subject_hmac ORDER BY subject_hmac`, matter, kind)
	if err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	isActive := map[string]bool{}
	var active []string
	var hm string
	var on bool
	if _, err := pgx.ForEachRow(rows, []any{&hm, &on}, func() error {
		isActive[hm] = on
		if on {
			active = append(active, hm)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	if len(isActive) == 0 {
		problem := fmt.Sprintf("no hold was ever placed under matter %q (lethe hold list shows the active ones)", matter)
		if k != nil && len(s.Plan.Kinds) > 1 {
			problem = fmt.Sprintf("no hold of kind %s was ever placed under matter %q (lethe hold list shows the active ones)", k.Name, matter)
		}
		return nil, &lethe.InputError{Field: "matter", Index: -1, Err: ErrNoSuchMatter, Problem: problem}
	}
	if len(keys) == 0 {
		return active, nil
	}
	var targets []string
	for i, t := range hmacsOf(k, keys) {
		on, ever := isActive[t]
		switch {
		case on:
			targets = append(targets, t)
		case ever:
			// released already
		default:
			e := &lethe.InputError{Field: "subject", Index: -1, Err: ErrNotHeld,
				Problem: fmt.Sprintf("subject %q was never held under matter %q; nothing was released", keys[i], matter)}
			if len(keys) > 1 {
				e.Index, e.Of = i, len(keys)
			}
			return nil, e
		}
	}
	return targets, nil
}

// unheld returns those of hmacs that no active hold covers.
func unheld(ctx context.Context, tx pgx.Tx, hmacs []string) ([]string, error) {
	return retention.Collect(ctx, tx, "reading holds", `
		SELECT t FROM unnest($1::text[]) AS t
		WHERE NOT EXISTS (SELECT 1 FROM lethe.hold WHERE subject_hmac = t AND released_at IS NULL)`, pgx.RowTo[string], hmacs)
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
	return EnqueueSyncs(ctx, tx, queue, subjectHMACs)
}

// EnqueueSyncs queues the subjects' hold-sync jobs and records them, so
// that a job lost with its process can be told from one still queued.
func EnqueueSyncs(ctx context.Context, tx pgx.Tx, queue Queue, subjectHMACs []string) error {
	if len(subjectHMACs) == 0 {
		return nil
	}
	jobIDs, err := queue.EnqueueHoldSyncs(ctx, tx, subjectHMACs)
	if err != nil {
		return fmt.Errorf("error queueing hold sync: %w", err)
	}
	if _, err := tx.Exec(ctx, `
		UPDATE lethe.hold_sync s SET job_id = u.j FROM unnest($1::text[], $2::bigint[]) AS u (h, j)
		WHERE s.subject_hmac = u.h`, subjectHMACs, jobIDs); err != nil {
		return fmt.Errorf("error recording hold sync job: %w", err)
	}
	return nil
}

// List returns the active holds, optionally of one matter, one kind (empty:
// every kind), or one subject (of kind; empty: the default kind).
func (s *Service) List(ctx context.Context, kind, matter, key string) ([]Hold, error) {
	var hm, kn *string
	if kind != "" || key != "" {
		k, err := s.Plan.Kind(kind)
		if err != nil {
			return nil, err
		}
		kn = &k.Name
		if key != "" {
			canon, err := k.CanonicalKey(ctx, s.Pool, key)
			if err != nil {
				return nil, err
			}
			h := k.HMAC(canon)
			hm = &h
		}
	}
	var m *string
	if matter != "" {
		m = &matter
	}
	return retention.Collect(ctx, s.Pool, "listing holds", `
		SELECT id, matter, kind, subject_key, subject_hmac, reason, placed_by, placed_at FROM lethe.hold
		WHERE released_at IS NULL AND ($1::text IS NULL OR matter = $1) AND ($2::text IS NULL OR subject_hmac = $2)
		  AND ($3::text IS NULL OR kind = $3)
		ORDER BY matter, placed_at, id`, pgx.RowToStructByPos[Hold], m, hm, kn)
}

func hmacsOf(k *retention.Kind, keys []string) []string {
	out := make([]string, len(keys))
	for i, key := range keys {
		out[i] = k.HMAC(key)
	}
	return out
}

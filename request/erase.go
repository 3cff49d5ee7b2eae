package request

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/retention"
)

// holdReader is what erasure needs to know of legal holds; package hold's
// Checker is one.
type holdReader interface {
	Matters(ctx context.Context, db retention.Querier, subjectHMAC string) ([]string, error)
}

// EraserConfig is what an Eraser needs.
type EraserConfig struct {
	// Pool is lethe's database. Required.
	Pool *pgxpool.Pool
	// Plan deletes the subject's rows. Required.
	Plan *retention.Plan
	// Holds says whether holds cover a subject. Required.
	Holds holdReader
	// Logger gets the eraser's log lines. Required.
	Logger *slog.Logger
	// Now returns the current time. Default time.Now; tests move it.
	Now func() time.Time
}

// Eraser carries out deletion requests. Erasing a subject calls no S3 API:
// it deletes the subject's rows and destroys the keys of its archived
// copies, in one transaction.
type Eraser struct {
	EraserConfig
	// faults are set only by tests.
	faults retention.Faults
}

// NewEraser returns an Eraser, or an error naming what is missing.
func NewEraser(cfg EraserConfig) (*Eraser, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Pool == nil || cfg.Plan == nil || cfg.Holds == nil || cfg.Logger == nil {
		return nil, errors.New("error creating the request eraser: Pool, Plan, Holds and Logger are required")
	}
	return &Eraser{EraserConfig: cfg}, nil
}

// FaultRequestBeforeCommit is the fault point of a request: everything
// done but the commit.
const FaultRequestBeforeCommit = "request_before_commit"

// Process carries out a request. Unless a hold covers the subject (then the
// request waits in blocked_by_hold) or requests.protect refuses it (then it
// is rejected), one transaction deletes the subject's rows from every table
// of the graph, destroys the keys of its archived copies, puts its HMAC on
// the suppression list and completes every open request of the subject
// with its receipt. It returns ErrRetryLater while a sweep is archiving the
// subject. It is idempotent.
func (r *Eraser) Process(ctx context.Context, id int64) error {
	req, err := getRequest(ctx, r.Pool, `id = $1`, id)
	if err != nil {
		return err
	}
	if req.State != StateReceived && req.State != StateProcessing {
		return nil // ended, or waiting for a hold to be released
	}
	hmac := req.SubjectHMAC
	sess, err := retention.TrySubject(ctx, r.Pool, hmac)
	if err != nil {
		return err
	}
	if sess == nil {
		return ErrRetryLater
	}
	defer sess.Release(ctx)
	// Holds come first: a held subject is never destroyed.
	matters, err := r.Holds.Matters(ctx, sess.Conn, hmac)
	if err != nil {
		return err
	}
	if len(matters) > 0 {
		return r.block(ctx, sess.Conn, hmac, matters)
	}
	return pgx.BeginFunc(ctx, sess.Conn, func(tx pgx.Tx) error { return r.erase(ctx, tx, hmac) })
}

// block parks every open request of the subject until its holds are
// released; the release queues them again.
func (r *Eraser) block(ctx context.Context, conn *pgxpool.Conn, hmac string, matters []string) error {
	reason := "held under matter " + strings.Join(matters, ", ")
	var ids []int64
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			UPDATE lethe.request SET state = $3, reason = $2, updated_at = now()
			WHERE subject_hmac = $1 AND state IN ($4, $5) RETURNING id`, hmac, reason, StateBlockedByHold, StateReceived, StateProcessing)
		if err != nil {
			return fmt.Errorf("error blocking request: %w", err)
		}
		if ids, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
			return fmt.Errorf("error blocking request: %w", err)
		}
		entries := make([]audit.Entry, len(ids))
		for i, id := range ids {
			entries[i] = audit.Entry{Kind: audit.KindRequestBlocked, Actor: "lethe", SubjectHMAC: hmac,
				Detail: map[string]any{"request_id": id, "matters": matters}}
		}
		return audit.Append(ctx, tx, entries...)
	})
	if err != nil {
		return err
	}
	r.Logger.Info("deletion request blocked by a legal hold", "request_ids", ids, "matters", len(matters))
	return nil
}

// open is an open request of the subject being erased.
type open struct {
	id         int64
	ticket, by string
	key        string
	force      bool
	received   time.Time
}

// erase does, in tx, everything a request does to its subject.
func (r *Eraser) erase(ctx context.Context, tx pgx.Tx, hmac string) error {
	rows, err := tx.Query(ctx, `
		SELECT id, ticket, requested_by, subject_key, force, received_at FROM lethe.request
		WHERE subject_hmac = $1 AND state IN ($2, $3) ORDER BY id FOR UPDATE`, hmac, StateReceived, StateProcessing)
	if err != nil {
		return fmt.Errorf("error reading requests: %w", err)
	}
	opens, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (open, error) {
		var o open
		return o, row.Scan(&o.id, &o.ticket, &o.by, &o.key, &o.force, &o.received)
	})
	if err != nil {
		return fmt.Errorf("error reading requests: %w", err)
	}
	if len(opens) == 0 {
		return nil
	}
	key := opens[0].key
	forced := slices.ContainsFunc(opens, func(o open) bool { return o.force })
	// Locking the subject's root row: a sweep that claimed it has committed
	// its claim once the lock is granted, and none can claim it after.
	exists, protected, err := r.Plan.LockForErasure(ctx, tx, key)
	if err != nil {
		return err
	}
	if exists && protected && !forced {
		return r.reject(ctx, tx, hmac, opens)
	}
	claimed, err := retention.Claimed(ctx, tx, hmac)
	if err != nil {
		return err
	}
	if claimed {
		return ErrRetryLater // a sweep is archiving it: erase the copy once it is made
	}
	del, total, err := r.Plan.DeleteGraph(ctx, tx, []string{key}, nil)
	if err != nil {
		return err
	}
	parts, copies, err := retention.EraseCopies(ctx, tx, hmac, fmt.Sprintf("request %d", opens[0].id))
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO lethe.suppression (subject_hmac, request_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
		hmac, opens[0].id); err != nil {
		return fmt.Errorf("error recording suppression: %w", err)
	}
	refs := make([]PartRef, len(parts))
	for i, p := range parts {
		refs[i] = PartRef{Segment: p.Segment, VersionID: p.VersionID}
	}
	rowsDeleted := r.Plan.RowsByTable(del[key])
	found := total > 0 || copies > 0
	summary := fmt.Sprintf("deleted %s from %s and destroyed the keys of %s", count(total, "row", "rows"),
		count(int64(len(rowsDeleted)), "table", "tables"), count(int64(len(parts)), "archived copy", "archived copies"))
	if copies > len(parts) {
		summary += fmt.Sprintf("; %s had lost their keys before (superseded or expired)", count(int64(copies-len(parts)), "older copy", "older copies"))
	}
	if !found {
		summary = "lethe held nothing of this subject: no rows in the hot tables and no archived copy; nothing was deleted"
	}
	now := r.Now().UTC().Truncate(time.Microsecond)
	ids := make([]int64, len(opens))
	for i, o := range opens {
		ids[i] = o.id
	}
	if err := r.faults.At(FaultRequestBeforeCommit); err != nil {
		return err
	}
	var entries []audit.Entry
	for _, o := range opens {
		rc := Receipt{RequestID: o.id, Ticket: o.ticket, SubjectHMAC: hmac, RequestedBy: o.by, ReceivedAt: o.received.UTC(),
			CompletedAt: now, Found: found, RowsDeleted: rowsDeleted, PartsMadeUnreadable: refs, ArchivedCopies: copies,
			CompletedWith: others(ids, o.id), Summary: summary}
		b, err := json.Marshal(rc)
		if err != nil {
			return fmt.Errorf("error writing receipt: %w", err)
		}
		if _, err := tx.Exec(ctx, `
			UPDATE lethe.request SET state = $4, reason = NULL, subject_key = NULL, completed_at = $2,
				receipt = $3, updated_at = now()
			WHERE id = $1`, o.id, now, b, StateCompleted); err != nil {
			return fmt.Errorf("error completing request: %w", err)
		}
		entries = append(entries, audit.Entry{Kind: audit.KindRequestCompleted, Actor: "lethe", SubjectHMAC: hmac, Detail: rc})
	}
	if err := audit.Append(ctx, tx, entries...); err != nil {
		return err
	}
	r.Logger.Info("deletion request completed", "request_ids", ids, "rows", total, "keys_destroyed", len(parts), "found", found)
	return nil
}

// reject ends the subject's open requests as protected: requests.protect
// matches it, and none was forced.
func (r *Eraser) reject(ctx context.Context, tx pgx.Tx, hmac string, opens []open) error {
	var entries []audit.Entry
	for _, o := range opens {
		if _, err := tx.Exec(ctx, `
			UPDATE lethe.request SET state = $2, reason = 'protected', subject_key = NULL, updated_at = now()
			WHERE id = $1`, o.id, StateRejected); err != nil {
			return fmt.Errorf("error rejecting request: %w", err)
		}
		entries = append(entries, audit.Entry{Kind: audit.KindRequestRejected, Actor: "lethe", SubjectHMAC: hmac,
			Detail: map[string]any{"request_id": o.id, "reason": "protected"}})
	}
	return audit.Append(ctx, tx, entries...)
}

// count writes n with its noun in the right number.
func count(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func others(ids []int64, self int64) []int64 {
	out := []int64{}
	for _, id := range ids {
		if id != self {
			out = append(out, id)
		}
	}
	return out
}

// Fail ends a request whose retries are used up, with the error as its
// reason. lethe forgets the subject's key; a new ticket starts over.
func (r *Eraser) Fail(ctx context.Context, id int64, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		var hmac string
		err := tx.QueryRow(ctx, `
			UPDATE lethe.request SET state = $3, reason = $2, subject_key = NULL, updated_at = now()
			WHERE id = $1 AND state IN ($4, $5) RETURNING subject_hmac`, id, cause.Error(), StateFailed, StateReceived, StateProcessing).Scan(&hmac)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("error failing request: %w", err)
		}
		return audit.Append(ctx, tx, audit.Entry{Kind: audit.KindRequestFailed, Actor: "lethe", SubjectHMAC: hmac,
			Detail: map[string]any{"request_id": id, "error": cause.Error()}})
	})
}

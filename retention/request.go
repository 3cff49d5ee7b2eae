package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/internal/audit"
)

// Request states.
const (
	StateReceived      = "received"
	StateProcessing    = "processing"
	StateBlockedByHold = "blocked_by_hold"
	StateCompleted     = "completed"
	StateRejected      = "rejected"
	StateFailed        = "failed"
)

// RequestStates are every state, in the order a request moves through them.
var RequestStates = []string{StateReceived, StateProcessing, StateBlockedByHold, StateCompleted, StateRejected, StateFailed}

// Deadline is how long after receipt a request must be completed (CCPA: 45
// days).
const Deadline = 45 * 24 * time.Hour

// Request is a deletion request as reported by show and list.
type Request struct {
	ID     int64  `json:"id"`
	Ticket string `json:"ticket"`
	// Subject is the subject's key while the request is open. lethe erases
	// it from its own records when the request ends; then it is null and
	// only SubjectHMAC remains.
	Subject     *string          `json:"subject"`
	SubjectHMAC string           `json:"subject_hmac"`
	State       string           `json:"state"`
	Reason      *string          `json:"reason"`
	RequestedBy string           `json:"requested_by"`
	Force       bool             `json:"force"`
	ReceivedAt  time.Time        `json:"received_at"`
	Deadline    time.Time        `json:"deadline"`
	DaysLeft    int              `json:"days_left"`
	CompletedAt *time.Time       `json:"completed_at"`
	Receipt     *json.RawMessage `json:"receipt"`
}

// Open reports whether the request has not ended.
func (r *Request) Open() bool {
	return r.State == StateReceived || r.State == StateProcessing || r.State == StateBlockedByHold
}

// Receipt is the proof that a request was carried out. It holds no personal
// data: the subject appears only as its HMAC.
type Receipt struct {
	RequestID   int64     `json:"request_id"`
	Ticket      string    `json:"ticket"`
	SubjectHMAC string    `json:"subject_hmac"`
	RequestedBy string    `json:"requested_by"`
	ReceivedAt  time.Time `json:"received_at"`
	CompletedAt time.Time `json:"completed_at"`
	// Found is false when lethe held nothing of the subject: no row in the
	// hot tables and no archived copy.
	Found bool `json:"found"`
	// RowsDeleted counts the rows deleted from each table of the graph.
	RowsDeleted map[string]int64 `json:"rows_deleted"`
	// ObjectVersionsDeleted are the archive object versions (and delete
	// markers) deleted.
	ObjectVersionsDeleted []ObjectVersion `json:"object_versions_deleted"`
	// ManifestEntryDeleted says whether the manifest named an archived copy.
	ManifestEntryDeleted bool `json:"manifest_entry_deleted"`
	// CompletedWith are the other requests for the same subject that this
	// deletion completed at the same time.
	CompletedWith []int64 `json:"completed_with"`
	// Summary says in words what was done.
	Summary string `json:"summary"`
}

// ObjectVersion names one deleted object version.
type ObjectVersion struct {
	Key       string `json:"key"`
	VersionID string `json:"version_id"`
}

// ErrRetryLater means the request cannot proceed yet (the subject is being
// archived, or its hold is being lifted); try again in a few seconds.
var ErrRetryLater = errors.New("subject is busy; retry later")

// ErrTicketReused is returned by Submit when the ticket already names
// another subject.
var ErrTicketReused = errors.New("ticket already names another subject")

// ErrNoRequest is returned when no request has the id or ticket.
var ErrNoRequest = errors.New("no such request")

// Requests queues and carries out deletion requests.
type Requests struct {
	pool   *pgxpool.Pool
	plan   *Plan
	store  archiver
	logger *slog.Logger
	// Now returns the current time; tests move it.
	Now func() time.Time
	// Fault, when set, is called at each request fault point; an error it
	// returns aborts the request there as a crash would. Tests only.
	Fault func(point string) error
}

// Request fault points.
const (
	FaultRequestAfterHot     = "request_after_hot"     // hot rows deleted, archive untouched
	FaultRequestAfterObjects = "request_after_objects" // object versions deleted, not yet completed
)

func (r *Requests) fault(point string) error {
	if r.Fault == nil {
		return nil
	}
	if err := r.Fault(point); err != nil {
		return fmt.Errorf("fault injected at %s: %w", point, err)
	}
	return nil
}

// NewRequests returns the request service. store may be nil for a process
// that only submits and reads requests.
func NewRequests(pool *pgxpool.Pool, plan *Plan, store archiver, logger *slog.Logger) *Requests {
	return &Requests{pool: pool, plan: plan, store: store, logger: logger, Now: time.Now}
}

// Submit records a deletion request and queues its job in one transaction.
// It is idempotent per ticket: the same ticket for the same subject returns
// the existing request with created false.
func (r *Requests) Submit(ctx context.Context, queue Queue, key, ticket, by string, force bool) (req *Request, created bool, err error) {
	if err := nonBlank(map[string]string{"ticket": ticket, "by": by}); err != nil {
		return nil, false, err
	}
	key, err = r.plan.CanonicalKey(ctx, r.pool, key)
	if err != nil {
		return nil, false, err
	}
	hmac := r.plan.hasher.HMAC(key)
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		var id int64
		var existing string
		err := tx.QueryRow(ctx, `
			INSERT INTO lethe.request (ticket, subject_hmac, subject_key, requested_by, force, deadline)
			VALUES ($1, $2, $3, $4, $5, now() + $6::interval)
			ON CONFLICT (ticket) DO NOTHING RETURNING id`,
			ticket, hmac, key, by, force, fmt.Sprintf("%d seconds", int(Deadline.Seconds()))).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			if err := tx.QueryRow(ctx, `SELECT id, subject_hmac FROM lethe.request WHERE ticket = $1`, ticket).Scan(&id, &existing); err != nil {
				return fmt.Errorf("error reading request: %w", err)
			}
			if existing != hmac {
				return fmt.Errorf("%w: %q was used for request %d; use a new ticket", ErrTicketReused, ticket, id)
			}
			created = false
			req, err = getRequest(ctx, tx, `id = $1`, id)
			return err
		}
		if err != nil {
			return fmt.Errorf("error recording request: %w", err)
		}
		created = true
		if err := enqueueRequest(ctx, tx, queue, id); err != nil {
			return err
		}
		if err := audit.Append(ctx, tx, audit.Entry{Kind: audit.KindRequestReceived, Actor: by, SubjectHMAC: hmac,
			Detail: map[string]any{"request_id": id, "ticket": ticket, "force": force}}); err != nil {
			return err
		}
		req, err = getRequest(ctx, tx, `id = $1`, id)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return req, created, nil
}

const requestColumns = `id, ticket, subject_key, subject_hmac, state, reason, requested_by, force, received_at, deadline, completed_at, receipt`

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func scanRequest(row pgx.Row) (*Request, error) {
	var q Request
	var receipt []byte
	if err := row.Scan(&q.ID, &q.Ticket, &q.Subject, &q.SubjectHMAC, &q.State, &q.Reason, &q.RequestedBy, &q.Force,
		&q.ReceivedAt, &q.Deadline, &q.CompletedAt, &receipt); err != nil {
		return nil, err
	}
	if receipt != nil {
		raw := json.RawMessage(receipt)
		q.Receipt = &raw
	}
	left := time.Until(q.Deadline).Hours() / 24
	q.DaysLeft = int(math.Ceil(left))
	return &q, nil
}

func getRequest(ctx context.Context, q querier, where string, arg any) (*Request, error) {
	req, err := scanRequest(q.QueryRow(ctx, `SELECT `+requestColumns+` FROM lethe.request WHERE `+where, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNoRequest
	}
	if err != nil {
		return nil, fmt.Errorf("error reading request: %w", err)
	}
	return req, nil
}

// Get returns the request with id.
func (r *Requests) Get(ctx context.Context, id int64) (*Request, error) {
	return getRequest(ctx, r.pool, `id = $1`, id)
}

// ByTicket returns the request with ticket.
func (r *Requests) ByTicket(ctx context.Context, ticket string) (*Request, error) {
	return getRequest(ctx, r.pool, `ticket = $1`, ticket)
}

// List returns requests, newest first, optionally only in state.
func (r *Requests) List(ctx context.Context, state string, limit int) ([]*Request, error) {
	if state != "" && !slices.Contains(RequestStates, state) {
		return nil, fmt.Errorf("%w: state %q is not one of %s", ErrBadInput, state, strings.Join(RequestStates, ", "))
	}
	rows, err := r.pool.Query(ctx, `SELECT `+requestColumns+` FROM lethe.request
		WHERE ($1 = '' OR state = $1) ORDER BY id DESC LIMIT $2`, state, limit)
	if err != nil {
		return nil, fmt.Errorf("error listing requests: %w", err)
	}
	defer rows.Close()
	var out []*Request
	for rows.Next() {
		q, err := scanRequest(rows)
		if err != nil {
			return nil, fmt.Errorf("error listing requests: %w", err)
		}
		out = append(out, q)
	}
	return out, rows.Err()
}

// Process carries out a request: the subject's rows are deleted from every
// table of the graph, every version of its archive object is deleted, and
// so is its manifest entry; then every open request for the subject is
// completed with a receipt. It returns ErrRetryLater when the subject is
// busy. It is idempotent: a retry after a failure or crash at any step
// finishes the job and writes a whole receipt.
func (r *Requests) Process(ctx context.Context, id int64) error {
	req, err := r.Get(ctx, id)
	if err != nil {
		return err
	}
	if req.State != StateReceived && req.State != StateProcessing {
		return nil // ended, or waiting for a hold to be released
	}
	hmac := req.SubjectHMAC
	// A hold being lifted must finish first; checking before taking the
	// subject's lock leaves the lock to the sync job that needs it.
	if pending, err := syncPending(ctx, r.pool, hmac); err != nil || pending {
		if err != nil {
			return err
		}
		return ErrRetryLater
	}
	sess, err := trySubjectSession(ctx, r.pool, hmac)
	if err != nil {
		return err
	}
	if sess == nil {
		return ErrRetryLater
	}
	defer sess.release(ctx)

	// Holds come first: a held subject is never destroyed.
	matters, err := holdMatters(ctx, sess.conn, hmac)
	if err != nil {
		return err
	}
	if len(matters) > 0 {
		return r.block(ctx, sess.conn, hmac, matters)
	}
	if pending, err := syncPending(ctx, sess.conn, hmac); err != nil || pending {
		if err != nil {
			return err
		}
		return ErrRetryLater // the S3 legal hold is still being lifted
	}

	// The hot tables.
	done, err := r.deleteHot(ctx, sess.conn, req)
	if err != nil || done {
		return err
	}
	if err := r.fault(FaultRequestAfterHot); err != nil {
		return err
	}

	// The archive: every version and delete marker.
	vs, err := r.store.Versions(ctx, hmac)
	if err != nil {
		return err
	}
	if len(vs) > 0 {
		key := r.store.ObjectKey(hmac)
		found := make([]ObjectVersion, len(vs))
		for i, v := range vs {
			found[i] = ObjectVersion{Key: key, VersionID: v.ID}
		}
		b, _ := json.Marshal(found) // plain strings
		if _, err := sess.conn.Exec(ctx, `
			UPDATE lethe.request SET versions_found = coalesce(versions_found, '[]'::jsonb) || (
				SELECT coalesce(jsonb_agg(v), '[]'::jsonb) FROM jsonb_array_elements($2::jsonb) v
				WHERE NOT coalesce(versions_found, '[]'::jsonb) @> jsonb_build_array(v)), updated_at = now()
			WHERE subject_hmac = $1 AND state IN ('received', 'processing')`, hmac, b); err != nil {
			return fmt.Errorf("error recording object versions: %w", err)
		}
		// No version can appear meanwhile: the subject's lock is held, it
		// has no work item, and it is not held. So what was listed is all.
		if _, err := r.store.DeleteVersions(ctx, hmac, vs); err != nil {
			return err
		}
	}
	if err := r.fault(FaultRequestAfterObjects); err != nil {
		return err
	}
	return r.complete(ctx, sess.conn, hmac)
}

// syncPending reports whether the subject's S3 legal hold is not yet what
// its holds say.
func syncPending(ctx context.Context, db querier, hmac string) (bool, error) {
	var pending bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lethe.hold_sync WHERE subject_hmac = $1 AND synced < generation)`, hmac).Scan(&pending)
	if err != nil {
		return false, fmt.Errorf("error reading hold syncs: %w", err)
	}
	return pending, nil
}

func holdMatters(ctx context.Context, db querier, hmac string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT DISTINCT matter FROM lethe.hold WHERE subject_hmac = $1 AND released_at IS NULL ORDER BY matter`, hmac)
	if err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	matters, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	return matters, nil
}

// block parks every open request of the subject until its holds are
// released; the release queues them again.
func (r *Requests) block(ctx context.Context, conn interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}, hmac string, matters []string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("error blocking request: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	reason := "held under matter " + strings.Join(matters, ", ")
	rows, err := tx.Query(ctx, `
		UPDATE lethe.request SET state = 'blocked_by_hold', reason = $2, updated_at = now()
		WHERE subject_hmac = $1 AND state IN ('received', 'processing') RETURNING id`, hmac, reason)
	if err != nil {
		return fmt.Errorf("error blocking request: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("error blocking request: %w", err)
	}
	var entries []audit.Entry
	for _, id := range ids {
		entries = append(entries, audit.Entry{Kind: audit.KindRequestBlocked, Actor: "lethe", SubjectHMAC: hmac,
			Detail: map[string]any{"request_id": id, "matters": matters}})
	}
	if err := audit.Append(ctx, tx, entries...); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("error blocking request: %w", err)
	}
	r.logger.Info("deletion request blocked by a legal hold", "request_ids", ids, "matters", len(matters))
	return nil
}

// deleteHot deletes the subject's rows, unless requests.protect refuses it,
// in one transaction that also records the counts and the suppression. It
// reports done when the requests were rejected.
func (r *Requests) deleteHot(ctx context.Context, conn interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}, req *Request) (done bool, err error) {
	hmac := req.SubjectHMAC
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("error deleting subject: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op

	rows, err := tx.Query(ctx, `
		SELECT id, subject_key, force FROM lethe.request
		WHERE subject_hmac = $1 AND state IN ('received', 'processing') ORDER BY id FOR UPDATE`, hmac)
	if err != nil {
		return false, fmt.Errorf("error reading requests: %w", err)
	}
	type open struct {
		id    int64
		key   string
		force bool
	}
	var opens []open
	for rows.Next() {
		var o open
		if err := rows.Scan(&o.id, &o.key, &o.force); err != nil {
			return false, fmt.Errorf("error reading requests: %w", err)
		}
		opens = append(opens, o)
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("error reading requests: %w", err)
	}
	if len(opens) == 0 {
		return true, nil
	}
	key := opens[0].key
	forced := slices.ContainsFunc(opens, func(o open) bool { return o.force })

	// Lock the subject's root row: a sweep claiming it has committed by
	// the time the lock is granted, so its work item is visible below, and
	// no sweep can claim it after.
	var exists, protected bool
	err = tx.QueryRow(ctx, r.plan.sql.lockProtect, key).Scan(&protected)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return false, fmt.Errorf("error locking subject: %w", err)
	default:
		exists = true
	}
	if exists && protected && !forced {
		var entries []audit.Entry
		for _, o := range opens {
			if _, err := tx.Exec(ctx, `
				UPDATE lethe.request SET state = 'rejected', reason = 'protected', subject_key = NULL, updated_at = now()
				WHERE id = $1`, o.id); err != nil {
				return false, fmt.Errorf("error rejecting request: %w", err)
			}
			entries = append(entries, audit.Entry{Kind: audit.KindRequestRejected, Actor: "lethe", SubjectHMAC: hmac,
				Detail: map[string]any{"request_id": o.id, "reason": "protected"}})
		}
		if err := audit.Append(ctx, tx, entries...); err != nil {
			return false, err
		}
		return true, tx.Commit(ctx)
	}
	var claimed bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lethe.work_item WHERE subject_hmac = $1)`, hmac).Scan(&claimed); err != nil {
		return false, fmt.Errorf("error reading work items: %w", err)
	}
	if claimed {
		return false, ErrRetryLater // a sweep is archiving it: delete the copy once it is made
	}
	del, _, err := r.plan.deleteGraph(ctx, tx, []string{key}, nil)
	if err != nil {
		return false, err
	}
	counts, _ := json.Marshal(r.plan.rowsByTable(del[key]))
	if _, err := tx.Exec(ctx, `
		UPDATE lethe.request SET state = 'processing', updated_at = now(),
			rows_deleted = (SELECT jsonb_object_agg(k, coalesce((rows_deleted ->> k)::bigint, 0) + v::bigint)
			                FROM jsonb_each_text($2::jsonb) AS e (k, v))
		WHERE subject_hmac = $1 AND state IN ('received', 'processing')`, hmac, counts); err != nil {
		return false, fmt.Errorf("error recording deleted rows: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO lethe.suppression (subject_hmac, request_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
		hmac, opens[0].id); err != nil {
		return false, fmt.Errorf("error recording suppression: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("error deleting subject: %w", err)
	}
	return false, nil
}

// complete deletes the manifest entry and completes every open request of
// the subject with its receipt.
func (r *Requests) complete(ctx context.Context, conn interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}, hmac string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("error completing request: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	tag, err := tx.Exec(ctx, `DELETE FROM lethe.manifest WHERE subject_hmac = $1`, hmac)
	if err != nil {
		return fmt.Errorf("error deleting manifest entry: %w", err)
	}
	manifest := tag.RowsAffected() > 0

	type open struct {
		id                int64
		ticket, by        string
		received          time.Time
		rows, versionsRaw []byte
	}
	rows, err := tx.Query(ctx, `
		SELECT id, ticket, requested_by, received_at, rows_deleted, versions_found FROM lethe.request
		WHERE subject_hmac = $1 AND state IN ('received', 'processing') ORDER BY id FOR UPDATE`, hmac)
	if err != nil {
		return fmt.Errorf("error reading requests: %w", err)
	}
	var opens []open
	for rows.Next() {
		var o open
		if err := rows.Scan(&o.id, &o.ticket, &o.by, &o.received, &o.rows, &o.versionsRaw); err != nil {
			return fmt.Errorf("error reading requests: %w", err)
		}
		opens = append(opens, o)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("error reading requests: %w", err)
	}
	if len(opens) == 0 {
		return nil
	}
	// The facts are the lead's (the first request that did the work); a
	// request that arrived while it ran shares them.
	rowsDeleted := r.plan.rowsByTable(nil)
	var versions []ObjectVersion
	for _, o := range opens {
		if o.rows != nil {
			m := map[string]int64{}
			if err := json.Unmarshal(o.rows, &m); err == nil {
				for t, n := range m {
					rowsDeleted[t] = max(rowsDeleted[t], n)
				}
			}
		}
		if o.versionsRaw != nil {
			var vs []ObjectVersion
			if err := json.Unmarshal(o.versionsRaw, &vs); err == nil {
				for _, v := range vs {
					if !slices.Contains(versions, v) {
						versions = append(versions, v)
					}
				}
			}
		}
	}
	var total int64
	for _, n := range rowsDeleted {
		total += n
	}
	found := total > 0 || len(versions) > 0 || manifest
	summary := fmt.Sprintf("deleted %d rows from %d tables, %d archive object versions and the manifest entry", total, len(rowsDeleted), len(versions))
	if !manifest {
		summary = fmt.Sprintf("deleted %d rows from %d tables and %d archive object versions; the manifest named no archived copy", total, len(rowsDeleted), len(versions))
	}
	if !found {
		summary = "lethe held nothing of this subject: no rows in the hot tables and no archived copy; nothing was deleted"
	}
	now := r.Now().UTC().Truncate(time.Microsecond)
	ids := make([]int64, len(opens))
	for i, o := range opens {
		ids[i] = o.id
	}
	var entries []audit.Entry
	for _, o := range opens {
		rc := Receipt{RequestID: o.id, Ticket: o.ticket, SubjectHMAC: hmac, RequestedBy: o.by, ReceivedAt: o.received.UTC(),
			CompletedAt: now, Found: found, RowsDeleted: rowsDeleted, ObjectVersionsDeleted: nonNilVersions(versions),
			ManifestEntryDeleted: manifest, CompletedWith: others(ids, o.id), Summary: summary}
		b, err := json.Marshal(rc)
		if err != nil {
			return fmt.Errorf("error writing receipt: %w", err)
		}
		if _, err := tx.Exec(ctx, `
			UPDATE lethe.request SET state = 'completed', reason = NULL, subject_key = NULL, completed_at = $2,
				receipt = $3, updated_at = now()
			WHERE id = $1`, o.id, now, b); err != nil {
			return fmt.Errorf("error completing request: %w", err)
		}
		entries = append(entries, audit.Entry{Kind: audit.KindRequestCompleted, Actor: "lethe", SubjectHMAC: hmac, Detail: rc})
	}
	if err := audit.Append(ctx, tx, entries...); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("error completing request: %w", err)
	}
	r.logger.Info("deletion request completed", "request_ids", ids, "rows", total, "object_versions", len(versions), "found", found)
	return nil
}

func nonNilVersions(v []ObjectVersion) []ObjectVersion {
	if v == nil {
		return []ObjectVersion{}
	}
	return v
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
func (r *Requests) Fail(ctx context.Context, id int64, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		var hmac string
		err := tx.QueryRow(ctx, `
			UPDATE lethe.request SET state = 'failed', reason = $2, subject_key = NULL, updated_at = now()
			WHERE id = $1 AND state IN ('received', 'processing') RETURNING subject_hmac`, id, cause.Error()).Scan(&hmac)
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

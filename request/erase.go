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

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/retention"
)

// holdReader is what erasure needs to know of legal holds; package hold's
// Checker is one.
type holdReader interface {
	Matters(ctx context.Context, db retention.Querier, subjectHMAC string) ([]string, error)
	SyncPending(ctx context.Context, db retention.Querier, subjectHMAC string) (bool, error)
}

// objectStore is what erasure needs of the bucket; *archive.Archiver is
// one.
type objectStore interface {
	ObjectKey(subjectHMAC string) string
	Versions(ctx context.Context, subjectHMAC string) ([]archive.Version, error)
	DeleteVersions(ctx context.Context, subjectHMAC string, vs []archive.Version) ([]string, error)
}

var _ objectStore = (*archive.Archiver)(nil)

// EraserConfig is what an Eraser needs.
type EraserConfig struct {
	// Pool is lethe's database. Required.
	Pool *pgxpool.Pool
	// Plan deletes the subject's rows. Required.
	Plan *retention.Plan
	// Holds says whether holds cover a subject. Required.
	Holds holdReader
	// Store deletes the subject's archived copy. Required.
	Store objectStore
	// Logger gets the eraser's log lines. Required.
	Logger *slog.Logger
	// Now returns the current time. Default time.Now; tests move it.
	Now func() time.Time
}

// Eraser carries out deletion requests.
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
	if cfg.Pool == nil || cfg.Plan == nil || cfg.Holds == nil || cfg.Store == nil || cfg.Logger == nil {
		return nil, errors.New("error creating the request eraser: Pool, Plan, Holds, Store and Logger are required")
	}
	return &Eraser{EraserConfig: cfg}, nil
}

// Request fault points, at which crash tests stop a request.
const (
	FaultRequestAfterHot     = "request_after_hot"     // hot rows deleted, archive untouched
	FaultRequestAfterObjects = "request_after_objects" // object versions deleted, not yet completed
)

// get reads a request.
func (r *Eraser) get(ctx context.Context, id int64) (*Request, error) {
	return getRequest(ctx, r.Pool, `id = $1`, id)
}

// Process carries out a request: the subject's rows are deleted from every
// table of the graph, every version of its archive object is deleted, and
// so is its manifest entry; then every open request for the subject is
// completed with a receipt. It returns ErrRetryLater when the subject is
// busy. It is idempotent: a retry after a failure or crash at any step
// finishes the job and writes a whole receipt.
func (r *Eraser) Process(ctx context.Context, id int64) error {
	req, err := r.get(ctx, id)
	if err != nil {
		return err
	}
	if req.State != StateReceived && req.State != StateProcessing {
		return nil // ended, or waiting for a hold to be released
	}
	hmac := req.SubjectHMAC
	// A hold being lifted must finish first; checking before taking the
	// subject's lock leaves the lock to the sync job that needs it.
	if pending, err := r.Holds.SyncPending(ctx, r.Pool, hmac); err != nil || pending {
		if err != nil {
			return err
		}
		return ErrRetryLater
	}
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
	if pending, err := r.Holds.SyncPending(ctx, sess.Conn, hmac); err != nil || pending {
		if err != nil {
			return err
		}
		return ErrRetryLater // the S3 legal hold is still being lifted
	}

	// The hot tables.
	done, err := r.deleteHot(ctx, sess.Conn, req)
	if err != nil || done {
		return err
	}
	if err := r.faults.At(FaultRequestAfterHot); err != nil {
		return err
	}

	// The archive: every version and delete marker.
	vs, err := r.Store.Versions(ctx, hmac)
	if err != nil {
		return err
	}
	if len(vs) > 0 {
		key := r.Store.ObjectKey(hmac)
		found := make([]ObjectVersion, len(vs))
		for i, v := range vs {
			found[i] = ObjectVersion{Key: key, VersionID: v.ID}
		}
		b, _ := json.Marshal(found) // plain strings
		if _, err := sess.Conn.Exec(ctx, `
			UPDATE lethe.request SET versions_found = coalesce(versions_found, '[]'::jsonb) || (
				SELECT coalesce(jsonb_agg(v), '[]'::jsonb) FROM jsonb_array_elements($2::jsonb) v
				WHERE NOT coalesce(versions_found, '[]'::jsonb) @> jsonb_build_array(v)), updated_at = now()
			WHERE subject_hmac = $1 AND state IN ($3, $4)`, hmac, b, StateReceived, StateProcessing); err != nil {
			return fmt.Errorf("error recording object versions: %w", err)
		}
		// No version can appear meanwhile: the subject's lock is held, it
		// has no work item, and it is not held. So what was listed is all.
		if _, err := r.Store.DeleteVersions(ctx, hmac, vs); err != nil {
			return err
		}
	}
	if err := r.faults.At(FaultRequestAfterObjects); err != nil {
		return err
	}
	return r.complete(ctx, sess.Conn, hmac)
}

// block parks every open request of the subject until its holds are
// released; the release queues them again.
func (r *Eraser) block(ctx context.Context, conn *pgxpool.Conn, hmac string, matters []string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("error blocking request: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	reason := "held under matter " + strings.Join(matters, ", ")
	rows, err := tx.Query(ctx, `
		UPDATE lethe.request SET state = $3, reason = $2, updated_at = now()
		WHERE subject_hmac = $1 AND state IN ($4, $5) RETURNING id`, hmac, reason, StateBlockedByHold, StateReceived, StateProcessing)
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
	r.Logger.Info("deletion request blocked by a legal hold", "request_ids", ids, "matters", len(matters))
	return nil
}

// deleteHot deletes the subject's rows, unless requests.protect refuses it,
// in one transaction that also records the counts and the suppression. It
// reports done when the requests were rejected.
func (r *Eraser) deleteHot(ctx context.Context, conn *pgxpool.Conn, req *Request) (done bool, err error) {
	hmac := req.SubjectHMAC
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("error deleting subject: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op

	rows, err := tx.Query(ctx, `
		SELECT id, subject_key, force FROM lethe.request
		WHERE subject_hmac = $1 AND state IN ($2, $3) ORDER BY id FOR UPDATE`, hmac, StateReceived, StateProcessing)
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
	exists, protected, err := r.Plan.LockForErasure(ctx, tx, key)
	if err != nil {
		return false, err
	}
	if exists && protected && !forced {
		var entries []audit.Entry
		for _, o := range opens {
			if _, err := tx.Exec(ctx, `
				UPDATE lethe.request SET state = $2, reason = 'protected', subject_key = NULL, updated_at = now()
				WHERE id = $1`, o.id, StateRejected); err != nil {
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
	claimed, err := retention.Claimed(ctx, tx, hmac)
	if err != nil {
		return false, err
	}
	if claimed {
		return false, ErrRetryLater // a sweep is archiving it: delete the copy once it is made
	}
	del, _, err := r.Plan.DeleteGraph(ctx, tx, []string{key}, nil)
	if err != nil {
		return false, err
	}
	counts, _ := json.Marshal(r.Plan.RowsByTable(del[key]))
	if _, err := tx.Exec(ctx, `
		UPDATE lethe.request SET state = $5, updated_at = now(),
			rows_deleted = (SELECT jsonb_object_agg(k, coalesce((rows_deleted ->> k)::bigint, 0) + v::bigint)
			                FROM jsonb_each_text($2::jsonb) AS e (k, v))
		WHERE subject_hmac = $1 AND state IN ($3, $4)`, hmac, counts, StateReceived, StateProcessing, StateProcessing); err != nil {
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
func (r *Eraser) complete(ctx context.Context, conn *pgxpool.Conn, hmac string) error {
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
		WHERE subject_hmac = $1 AND state IN ($2, $3) ORDER BY id FOR UPDATE`, hmac, StateReceived, StateProcessing)
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
	rowsDeleted := r.Plan.RowsByTable(nil)
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
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("error completing request: %w", err)
	}
	r.Logger.Info("deletion request completed", "request_ids", ids, "rows", total, "object_versions", len(versions), "found", found)
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

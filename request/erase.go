package request

import (
	"context"
	"crypto/ed25519"
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
	Matters(ctx context.Context, db retention.Querier, subjectHMACs []string) (map[string][]string, error)
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
	// SigningKey, when set, signs each completed request's receipt, so that
	// whoever holds its public key can check the receipt offline (lethe
	// receipt verify). Optional: without it receipts are stored unsigned.
	SigningKey ed25519.PrivateKey
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

// eraseBatch is the most subjects one request's job erases in one
// transaction: its own, and those of other requests waiting in the queue,
// whose own jobs then find them done. One commit, and one turn at the audit
// log's head, serve them all.
const eraseBatch = 100

// Process carries out a request, and with it other waiting requests whose
// subjects no one else holds. For each subject, unless a hold covers it
// (then its requests wait in blocked_by_hold) or requests.protect refuses
// it (then they are rejected), one transaction deletes its rows from every
// table of the graph, destroys the keys of its archived copies, puts its
// HMAC on the suppression list and completes each of its open requests with
// a receipt. It returns ErrRetryLater while a sweep is archiving the
// request's subject or another job holds it. It is idempotent.
func (r *Eraser) Process(ctx context.Context, id int64) error {
	req, err := getRequest(ctx, r.Pool, `id = $1`, id)
	if err != nil {
		return err
	}
	if req.State != StateReceived && req.State != StateProcessing {
		return nil // ended (perhaps with another request's batch), or waiting for a hold
	}
	err = r.run(ctx, req.SubjectHMAC, eraseBatch)
	if err != nil && !errors.Is(err, ErrRetryLater) && ctx.Err() == nil {
		// Another subject of the batch may be at fault: this one alone, so
		// that one bad subject never holds up the others.
		r.Logger.Warn("erasing a batch of requests failed; trying the request alone", "request_id", id, "error", err)
		err = r.run(ctx, req.SubjectHMAC, 1)
	}
	return err
}

// open is an open request of a subject being erased.
type open struct {
	id         int64
	ticket, by string
	key        string
	force      bool
	received   time.Time
}

// subject is one subject of a batch and its open requests, oldest first.
type subject struct {
	hmac string
	// kind is the subject's kind: kindName, as configured now; nil when
	// the config no longer has it.
	kind     *retention.Kind
	kindName string
	opens    []open
}

func (s *subject) ids() []int64 {
	ids := make([]int64, len(s.opens))
	for i, o := range s.opens {
		ids[i] = o.id
	}
	return ids
}

func (s *subject) forced() bool {
	return slices.ContainsFunc(s.opens, func(o open) bool { return o.force })
}

// run erases, in one transaction, the subject hmac and up to most-1 others
// with open requests. If someone else holds hmac (a hold, a sync, another
// job's batch), it erases the others all the same, and returns
// ErrRetryLater for its own.
func (r *Eraser) run(ctx context.Context, hmac string, most int) error {
	var done []string
	busy := false
	err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		locked, err := retention.TryLockSubjects(ctx, tx, []string{hmac})
		if err != nil {
			return err
		}
		var hmacs []string
		first := ""
		if busy = len(locked) == 0; !busy {
			hmacs, first = []string{hmac}, hmac
		}
		if most > 1 {
			others, err := companions(ctx, tx, hmac, most-1)
			if err != nil {
				return err
			}
			hmacs = append(hmacs, others...)
		}
		if len(hmacs) == 0 {
			return nil
		}
		done, err = r.erase(ctx, tx, first, hmacs)
		return err
	})
	if err != nil {
		return err
	}
	if len(done) > 1 || (busy && len(done) > 0) {
		r.Logger.Debug("deletion requests erased together", "subjects", len(done))
	}
	if busy {
		return ErrRetryLater
	}
	return nil
}

// companions finds, in tx, up to n other subjects with open requests, the
// longest waiting first, and locks those no one else holds.
func companions(ctx context.Context, tx pgx.Tx, hmac string, n int) ([]string, error) {
	// SKIP LOCKED: requests another job's batch has taken are left to it.
	rows, err := tx.Query(ctx, `
		SELECT subject_hmac FROM lethe.request WHERE state IN ($2, $3) AND subject_hmac <> $1
		ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED`, hmac, StateReceived, StateProcessing, n)
	if err != nil {
		return nil, fmt.Errorf("error reading requests: %w", err)
	}
	var waiting []string
	seen := map[string]bool{}
	var h string
	if _, err := pgx.ForEachRow(rows, []any{&h}, func() error {
		if !seen[h] {
			seen[h] = true
			waiting = append(waiting, h)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("error reading requests: %w", err)
	}
	return retention.TryLockSubjects(ctx, tx, waiting)
}

// erase does, in tx, what the open requests of the subjects ask; first is
// the subject of the job at hand. It returns the subjects it erased.
func (r *Eraser) erase(ctx context.Context, tx pgx.Tx, first string, hmacs []string) ([]string, error) {
	subjects, err := openRequests(ctx, tx, hmacs)
	if err != nil || len(subjects) == 0 {
		return nil, err
	}
	var entries []audit.Entry
	// A request of a kind the config no longer has cannot be carried out.
	var known []*subject
	for _, s := range subjects {
		if s.kind, err = r.Plan.Kind(s.kindName); err == nil {
			known = append(known, s)
			continue
		}
		e, err := r.failWith(ctx, tx, s, fmt.Sprintf("kind %q is no longer configured: configure it again and file the request again", s.kindName))
		if err != nil {
			return nil, err
		}
		entries = append(entries, e...)
	}
	subjects = known
	// Holds come first: a held subject is never destroyed.
	matters, err := r.Holds.Matters(ctx, tx, hmacs)
	if err != nil {
		return nil, err
	}
	var free []*subject
	for _, s := range subjects {
		if m := matters[s.hmac]; len(m) > 0 {
			e, err := r.block(ctx, tx, s, m)
			if err != nil {
				return nil, err
			}
			entries = append(entries, e...)
		} else {
			free = append(free, s)
		}
	}
	// Locking the subjects' root rows: a sweep that claimed one has
	// committed its claim once the lock is granted, and none can claim it
	// after.
	protected := map[string]bool{}
	for k, group := range byKind(free) {
		keys := make([]string, len(group))
		for i, s := range group {
			keys[i] = s.opens[0].key
		}
		p, err := k.LockForErasure(ctx, tx, keys)
		if err != nil {
			return nil, err
		}
		for _, s := range group {
			protected[s.hmac] = p[s.opens[0].key]
		}
	}
	claimed, err := retention.ClaimedAmong(ctx, tx, hmacsOf(free))
	if err != nil {
		return nil, err
	}
	var erasing []*subject
	for _, s := range free {
		switch {
		case protected[s.hmac] && !s.forced():
			e, err := r.reject(ctx, tx, s)
			if err != nil {
				return nil, err
			}
			entries = append(entries, e...)
		case claimed[s.hmac]:
			// A sweep is archiving it: erase the copy once it is made.
			if s.hmac == first {
				return nil, ErrRetryLater
			}
		default:
			erasing = append(erasing, s)
		}
	}
	e, err := r.destroy(ctx, tx, erasing)
	if err != nil {
		return nil, err
	}
	entries = append(entries, e...)
	if err := r.faults.At(FaultRequestBeforeCommit); err != nil {
		return nil, err
	}
	// The audit append locks the chain's head until the commit: last.
	if err := audit.Append(ctx, tx, entries...); err != nil {
		return nil, err
	}
	return hmacsOf(erasing), nil
}

func hmacsOf(subjects []*subject) []string {
	out := make([]string, len(subjects))
	for i, s := range subjects {
		out[i] = s.hmac
	}
	return out
}

// openRequests locks, in tx, the open requests of the subjects, and returns
// the subjects that have any, in the order given.
func openRequests(ctx context.Context, tx pgx.Tx, hmacs []string) ([]*subject, error) {
	rows, err := tx.Query(ctx, `
		SELECT subject_hmac, kind, id, ticket, requested_by, subject_key, force, received_at FROM lethe.request
		WHERE subject_hmac = ANY ($1) AND state IN ($2, $3) ORDER BY id FOR UPDATE`, hmacs, StateReceived, StateProcessing)
	if err != nil {
		return nil, fmt.Errorf("error reading requests: %w", err)
	}
	by := map[string]*subject{}
	var h, kind string
	var o open
	if _, err := pgx.ForEachRow(rows, []any{&h, &kind, &o.id, &o.ticket, &o.by, &o.key, &o.force, &o.received}, func() error {
		if by[h] == nil {
			by[h] = &subject{hmac: h, kindName: kind}
		}
		by[h].opens = append(by[h].opens, o)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("error reading requests: %w", err)
	}
	var out []*subject
	for _, h := range hmacs {
		if s := by[h]; s != nil {
			out = append(out, s)
		}
	}
	return out, nil
}

// block parks, in tx, the subject's open requests until its holds are
// released; the release queues them again.
func (r *Eraser) block(ctx context.Context, tx pgx.Tx, s *subject, matters []string) ([]audit.Entry, error) {
	reason := "held under matter " + strings.Join(matters, ", ")
	if _, err := tx.Exec(ctx, `UPDATE lethe.request SET state = $3, reason = $2, updated_at = now() WHERE id = ANY ($1)`,
		s.ids(), reason, StateBlockedByHold); err != nil {
		return nil, fmt.Errorf("error blocking request: %w", err)
	}
	entries := make([]audit.Entry, len(s.opens))
	for i, o := range s.opens {
		entries[i] = audit.Entry{Kind: audit.KindRequestBlocked, Actor: "lethe", SubjectHMAC: s.hmac,
			Detail: map[string]any{"request_id": o.id, "matters": matters}}
	}
	r.Logger.Info("deletion request blocked by a legal hold", "request_ids", s.ids(), "matters", len(matters))
	return entries, nil
}

// reject ends, in tx, the subject's open requests as protected:
// requests.protect matches it, and none was forced.
func (r *Eraser) reject(ctx context.Context, tx pgx.Tx, s *subject) ([]audit.Entry, error) {
	if _, err := tx.Exec(ctx, `
		UPDATE lethe.request SET state = $2, reason = 'protected', subject_key = NULL, updated_at = now()
		WHERE id = ANY ($1)`, s.ids(), StateRejected); err != nil {
		return nil, fmt.Errorf("error rejecting request: %w", err)
	}
	entries := make([]audit.Entry, len(s.opens))
	for i, o := range s.opens {
		entries[i] = audit.Entry{Kind: audit.KindRequestRejected, Actor: "lethe", SubjectHMAC: s.hmac,
			Detail: map[string]any{"request_id": o.id, "reason": "protected"}}
	}
	return entries, nil
}

// failReferenced ends, in tx, the subject's open requests as failed: a
// foreign key from outside the graph still references its rows.
func (r *Eraser) failReferenced(ctx context.Context, tx pgx.Tx, s *subject, b retention.Blocked) ([]audit.Entry, error) {
	r.Logger.Warn("deletion request failed: a foreign key still references the subject", "request_ids", s.ids(), "constraint", b.Constraint, "table", b.Table)
	return r.failWith(ctx, tx, s, fmt.Sprintf("foreign key %s on table %s still references the subject's rows: remove those rows (or make the key ON DELETE CASCADE or SET NULL) and file the request again",
		b.Constraint, b.Table))
}

// failWith ends, in tx, the subject's open requests as failed, for a
// reason retrying cannot help.
func (r *Eraser) failWith(ctx context.Context, tx pgx.Tx, s *subject, reason string) ([]audit.Entry, error) {
	if _, err := tx.Exec(ctx, `
		UPDATE lethe.request SET state = $2, reason = $3, subject_key = NULL, updated_at = now() WHERE id = ANY ($1)`,
		s.ids(), StateFailed, reason); err != nil {
		return nil, fmt.Errorf("error failing request: %w", err)
	}
	entries := make([]audit.Entry, len(s.opens))
	for i, o := range s.opens {
		entries[i] = audit.Entry{Kind: audit.KindRequestFailed, Actor: "lethe", SubjectHMAC: s.hmac,
			Detail: map[string]any{"request_id": o.id, "error": reason}}
	}
	return entries, nil
}

// byKind groups subjects by their kind.
func byKind(subjects []*subject) map[*retention.Kind][]*subject {
	out := map[*retention.Kind][]*subject{}
	for _, s := range subjects {
		out[s.kind] = append(out[s.kind], s)
	}
	return out
}

// destroy erases, in tx, the subjects: their rows, their keys, their place
// on the suppression list, and their requests' receipts.
func (r *Eraser) destroy(ctx context.Context, tx pgx.Tx, subjects []*subject) ([]audit.Entry, error) {
	if len(subjects) == 0 {
		return nil, nil
	}
	// Deleted rows and stopping foreign keys, by subject HMAC.
	del := map[string][]retention.Deleted{}
	stopped := map[string]retention.Blocked{}
	for k, group := range byKind(subjects) {
		keys := make([]string, len(group))
		for i, s := range group {
			keys[i] = s.opens[0].key
		}
		d, _, st, err := k.DeleteSubjects(ctx, tx, keys, nil)
		if err != nil {
			return nil, err
		}
		for _, s := range group {
			del[s.hmac] = d[s.opens[0].key]
			if b, ok := st[s.opens[0].key]; ok {
				stopped[s.hmac] = b
			}
		}
	}
	// A subject a foreign key from outside the graph still references is
	// left in place, and its requests fail now with the constraint's name:
	// retrying cannot help until someone removes those rows.
	var entries []audit.Entry
	var erasing []*subject
	for _, s := range subjects {
		b, ok := stopped[s.hmac]
		if !ok {
			erasing = append(erasing, s)
			continue
		}
		e, err := r.failReferenced(ctx, tx, s, b)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e...)
	}
	subjects = erasing
	if len(subjects) == 0 {
		return entries, nil
	}
	by := make(map[string]string, len(subjects))
	firsts := make([]int64, len(subjects))
	for i, s := range subjects {
		firsts[i] = s.opens[0].id
		by[s.hmac] = fmt.Sprintf("request %d", s.opens[0].id)
	}
	erased, err := retention.EraseCopies(ctx, tx, by)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO lethe.suppression (subject_hmac, request_id) SELECT * FROM unnest($1::text[], $2::bigint[])
		ON CONFLICT DO NOTHING`, hmacsOf(subjects), firsts); err != nil {
		return nil, fmt.Errorf("error recording suppression: %w", err)
	}
	now := r.Now().UTC().Truncate(time.Microsecond)
	var ids []int64
	var receipts, sigs [][]byte
	for _, s := range subjects {
		rc, err := r.receipts(s, del[s.hmac], erased[s.hmac], now)
		if err != nil {
			return nil, err
		}
		for i, o := range s.opens {
			// The receipt column gets the very bytes that are signed, so
			// that receipt shows what the signature covers.
			b, sig, err := signReceipt(r.SigningKey, &rc[i])
			if err != nil {
				return nil, err
			}
			ids, receipts, sigs = append(ids, o.id), append(receipts, b), append(sigs, sig)
			entries = append(entries, audit.Entry{Kind: audit.KindRequestCompleted, Actor: "lethe", SubjectHMAC: s.hmac, Detail: rc[i]})
		}
		r.Logger.Info("deletion request completed", "request_ids", s.ids(), "rows", rc[0].rows(),
			"keys_destroyed", len(erased[s.hmac].Parts), "found", rc[0].Found)
	}
	if _, err := tx.Exec(ctx, `
		UPDATE lethe.request r SET state = $1, reason = NULL, subject_key = NULL, completed_at = $2, receipt = u.receipt,
			receipt_bytes = u.receipt_bytes, signature = u.signature, updated_at = now()
		FROM unnest($3::bigint[], $4::jsonb[], $5::bytea[], $6::bytea[]) AS u (id, receipt, receipt_bytes, signature)
		WHERE r.id = u.id`, StateCompleted, now, ids, receipts, receipts, sigs); err != nil {
		return nil, fmt.Errorf("error completing requests: %w", err)
	}
	return entries, nil
}

// receipts writes the receipt of each of the subject's open requests.
func (r *Eraser) receipts(s *subject, del []retention.Deleted, erased *retention.Erased, now time.Time) ([]Receipt, error) {
	rowsDeleted := s.kind.RowsByTable(del)
	total := (&Receipt{RowsDeleted: rowsDeleted}).rows()
	refs := make([]PartRef, len(erased.Parts))
	for i, p := range erased.Parts {
		refs[i] = PartRef{Segment: p.Segment, VersionID: p.VersionID}
	}
	found := total > 0 || erased.Copies > 0
	summary := fmt.Sprintf("deleted %s from %s and destroyed the keys of %s", count(total, "row", "rows"),
		count(int64(len(rowsDeleted)), "table", "tables"), count(int64(len(refs)), "archived copy", "archived copies"))
	if erased.Copies > len(refs) {
		summary += fmt.Sprintf("; %s had lost their keys before (superseded or expired)", count(int64(erased.Copies-len(refs)), "older copy", "older copies"))
	}
	if !found {
		summary = "lethe held nothing of this subject: no rows in the hot tables and no archived copy; nothing was deleted"
	}
	ids := s.ids()
	out := make([]Receipt, len(s.opens))
	for i, o := range s.opens {
		out[i] = Receipt{RequestID: o.id, Ticket: o.ticket, SubjectHMAC: s.hmac, RequestedBy: o.by, ReceivedAt: o.received.UTC(),
			CompletedAt: now, Found: found, RowsDeleted: rowsDeleted, PartsMadeUnreadable: refs, ArchivedCopies: erased.Copies,
			CompletedWith: others(ids, o.id), Summary: summary}
	}
	return out, nil
}

// rows is the total of the rows the receipt counts.
func (rc *Receipt) rows() int64 {
	var total int64
	for _, n := range rc.RowsDeleted {
		total += n
	}
	return total
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

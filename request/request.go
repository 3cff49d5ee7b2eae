// Package request owns deletion requests: their intake (idempotent per
// ticket), their erasure of a subject, the receipts they leave, and the
// suppression list that erases a subject again if it comes back. Requests
// wait while a legal hold covers their subject (package hold); see
// docs/ARCHITECTURE.md.
package request

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

	"github.com/lethehq/lethe"
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/retention"
)

// Request states: a request moves received -> processing -> completed, or
// ends rejected or failed; it waits in blocked_by_hold while a hold covers
// its subject.
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

// Request is a deletion request as reported by show and list.
type Request struct {
	ID     int64  `json:"id"`
	Ticket string `json:"ticket"`
	// Subject is the subject's key while the request is open. lethe erases
	// it from its own records when the request ends; then it is null and
	// only SubjectHMAC remains.
	Subject *string `json:"subject"`
	// Kind is the kind of subject the request is about.
	Kind        string    `json:"kind"`
	SubjectHMAC string    `json:"subject_hmac"`
	State       string    `json:"state"`
	Reason      *string   `json:"reason"`
	RequestedBy string    `json:"requested_by"`
	Force       bool      `json:"force"`
	ReceivedAt  time.Time `json:"received_at"`
	// Regime is the legal regime the request was received under (see
	// requests.regimes); it set Deadline and AcknowledgeBy.
	Regime string `json:"regime"`
	// Deadline is when the request must be completed: the regime's
	// deadline after ReceivedAt, or later once extended.
	Deadline time.Time `json:"deadline"`
	DaysLeft int       `json:"days_left"`
	// AcknowledgeBy is when the requester must have been told that the
	// request arrived; null when the regime asks for no acknowledgement.
	AcknowledgeBy *time.Time `json:"acknowledge_by"`
	// ExtendedAt, ExtendedBy and ExtensionReason say when, by whom and why
	// the deadline was extended; null until it is.
	ExtendedAt      *time.Time       `json:"extended_at"`
	ExtendedBy      *string          `json:"extended_by"`
	ExtensionReason *string          `json:"extension_reason"`
	CompletedAt     *time.Time       `json:"completed_at"`
	Receipt         *json.RawMessage `json:"receipt"`
	// ReceiptBytes are the exact bytes of the receipt as lethe wrote and
	// signed them: Receipt is the same JSON, but the database keeps it in a
	// form (jsonb) that does not keep bytes. Null for a request without a
	// receipt, or completed before lethe kept them.
	ReceiptBytes []byte `json:"receipt_bytes"`
	// Signature is the Ed25519 signature over ReceiptBytes, made with
	// requests.signing_key_file; null when no key was configured.
	// VerifyReceipt checks it.
	Signature []byte `json:"signature"`
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
	// PartsMadeUnreadable are the archived copies whose key the erasure
	// destroyed: every copy of such a part, in every version, replica and
	// backup of the bucket, can no longer be read.
	PartsMadeUnreadable []PartRef `json:"parts_made_unreadable"`
	// ArchivedCopies counts the subject's archived copies the manifest
	// knew, whether their key was destroyed now or before (superseded,
	// expired).
	ArchivedCopies int `json:"archived_copies"`
	// CompletedWith are the other requests for the same subject that this
	// erasure completed at the same time.
	CompletedWith []int64 `json:"completed_with"`
	// Summary says in words what was done.
	Summary string `json:"summary"`
}

// PartRef names an archived part: its segment and the segment's version.
type PartRef struct {
	Segment   string `json:"segment"`
	VersionID string `json:"version_id"`
}

// ErrRetryLater means the request cannot proceed yet (a sweep is archiving
// the subject, or another job holds it); try again in a few seconds.
var ErrRetryLater = errors.New("subject is busy; retry later")

// ErrTicketReused is returned by Submit when the ticket already names
// another subject, or the same subject under another regime; it comes
// wrapped in a *lethe.InputError.
var ErrTicketReused = errors.New("ticket already names another subject")

// ErrExtended is returned by Extend for a request whose deadline was
// extended already; it comes wrapped in a *lethe.InputError.
var ErrExtended = errors.New("request was extended already")

// ErrNoRequest is returned when no request has the id or ticket.
var ErrNoRequest = errors.New("no such request")

// Queue inserts request jobs inside the caller's transaction, so that a
// request and its job exist together. Package jobs implements it with River.
type Queue interface {
	EnqueueRequest(ctx context.Context, tx pgx.Tx, requestID int64) (jobID int64, err error)
}

// IntakeConfig is what an Intake needs.
type IntakeConfig struct {
	// Pool is lethe's database. Required.
	Pool *pgxpool.Pool
	// Plan turns keys into canonical keys and HMACs. Required.
	Plan *retention.Plan
	// Queue inserts request jobs. Required.
	Queue Queue
	// Logger gets the intake's log lines. Required.
	Logger *slog.Logger
	// Regimes are the regimes a request may name, parsed, built-ins
	// included: config.Requests.Regimes after Load. Required.
	Regimes map[string]config.Regime
	// DefaultRegime is the regime of a request that names none; it must be
	// in Regimes.
	DefaultRegime string
}

// Intake records deletion requests and reads them back. It is all that the
// CLI and the API need; workers carry requests out with an Eraser.
type Intake struct {
	IntakeConfig
}

// NewIntake returns an Intake, or an error naming what is missing.
func NewIntake(cfg IntakeConfig) (*Intake, error) {
	if cfg.Pool == nil || cfg.Plan == nil || cfg.Queue == nil || cfg.Logger == nil || cfg.Regimes == nil {
		return nil, errors.New("error creating the request intake: Pool, Plan, Queue, Logger and Regimes are required")
	}
	if _, ok := cfg.Regimes[cfg.DefaultRegime]; !ok {
		return nil, fmt.Errorf("error creating the request intake: the default regime %q is not among Regimes", cfg.DefaultRegime)
	}
	return &Intake{IntakeConfig: cfg}, nil
}

// Submission is a deletion request as the privacy team files it.
type Submission struct {
	// Key is the subject's key, as text. Required.
	Key string
	// Ticket is the privacy team's ticket; a request is idempotent per
	// ticket. Required.
	Ticket string
	// By is who asks, recorded in the audit log. Required.
	By string
	// Force deletes the subject even if requests.protect matches it.
	Force bool
	// Regime names the legal regime the request falls under; empty means
	// the configured default (requests.default_regime).
	Regime string
	// Kind names the kind of subject Key is a key of; empty means the
	// default kind (the only one, or the one called default).
	Kind string
}

// regime returns the regime called name, or the default one for "", or
// an input error on the field "regime".
func (r *Intake) regime(name string) (string, config.Regime, error) {
	if name == "" {
		name = r.DefaultRegime
	}
	g, ok := r.Regimes[name]
	if !ok {
		// The name is not repeated: like every input, it may be personal
		// data typed into the wrong field.
		return "", config.Regime{}, lethe.Input("regime", "is not a configured regime: use one of %s, or define it under requests.regimes",
			strings.Join(config.RegimeNames(r.Regimes), ", "))
	}
	return name, g, nil
}

// Submit records a deletion request and queues its job in one transaction.
// Its deadline and acknowledge-by date are the regime's periods after the
// moment it was received, in UTC. It is idempotent per ticket: the same
// ticket for the same subject and regime returns the existing request with
// created false.
func (r *Intake) Submit(ctx context.Context, s Submission) (req *Request, created bool, err error) {
	if err := lethe.NonBlank("ticket", s.Ticket, "by", s.By); err != nil {
		return nil, false, err
	}
	regime, g, err := r.regime(s.Regime)
	if err != nil {
		return nil, false, err
	}
	kind, key, err := r.Plan.Subject(ctx, r.Pool, s.Kind, s.Key)
	if err != nil {
		return nil, false, err
	}
	hmac := kind.HMAC(key)
	ticket, by, force := s.Ticket, s.By, s.Force
	err = pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		// now() is the transaction's start: received_at is what the
		// deadlines run from, so they are computed from the same instant.
		var received time.Time
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&received); err != nil {
			return fmt.Errorf("error recording request: %w", err)
		}
		received = received.UTC()
		deadline := g.DeadlinePeriod.AddTo(received)
		var ackBy *time.Time
		if !g.AcknowledgePeriod.IsZero() {
			a := g.AcknowledgePeriod.AddTo(received)
			ackBy = &a
		}
		var id int64
		var existing, existingRegime string
		err := tx.QueryRow(ctx, `
			INSERT INTO lethe.request (ticket, subject_hmac, subject_key, requested_by, force, received_at, regime, deadline, acknowledge_by, kind)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
			ON CONFLICT (ticket) DO NOTHING RETURNING id`,
			ticket, hmac, key, by, force, received, regime, deadline, ackBy, kind.Name).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			if err := tx.QueryRow(ctx, `SELECT id, subject_hmac, regime FROM lethe.request WHERE ticket = $1`, ticket).Scan(&id, &existing, &existingRegime); err != nil {
				return fmt.Errorf("error reading request: %w", err)
			}
			if existing != hmac {
				return &lethe.InputError{Field: "ticket", Index: -1, Err: ErrTicketReused,
					Problem: fmt.Sprintf("%q was used for request %d, for another subject; use a new ticket", ticket, id)}
			}
			if existingRegime != regime {
				return &lethe.InputError{Field: "regime", Index: -1, Err: ErrTicketReused,
					Problem: fmt.Sprintf("ticket %q is request %d under regime %s: a request keeps its regime; ask for %s, or use a new ticket",
						ticket, id, existingRegime, existingRegime)}
			}
			created = false
			req, err = getRequest(ctx, tx, `id = $1`, id)
			return err
		}
		if err != nil {
			return fmt.Errorf("error recording request: %w", err)
		}
		created = true
		if err := enqueue(ctx, tx, r.Queue, id); err != nil {
			return err
		}
		if err := audit.Append(ctx, tx, audit.Entry{Kind: audit.KindRequestReceived, Actor: by, SubjectHMAC: hmac,
			Detail: map[string]any{"request_id": id, "ticket": ticket, "force": force, "regime": regime, "kind": kind.Name,
				"deadline": deadline, "acknowledge_by": ackBy}}); err != nil {
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

const requestColumns = `id, ticket, subject_key, kind, subject_hmac, state, reason, requested_by, force, received_at, regime, deadline,
	acknowledge_by, extended_at, extended_by, extension_reason, completed_at, receipt, receipt_bytes, signature`

func scanRequest(row pgx.Row) (*Request, error) {
	var q Request
	var receipt []byte
	if err := row.Scan(&q.ID, &q.Ticket, &q.Subject, &q.Kind, &q.SubjectHMAC, &q.State, &q.Reason, &q.RequestedBy, &q.Force,
		&q.ReceivedAt, &q.Regime, &q.Deadline, &q.AcknowledgeBy, &q.ExtendedAt, &q.ExtendedBy, &q.ExtensionReason,
		&q.CompletedAt, &receipt, &q.ReceiptBytes, &q.Signature); err != nil {
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

func getRequest(ctx context.Context, q retention.Querier, where string, arg any) (*Request, error) {
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
func (r *Intake) Get(ctx context.Context, id int64) (*Request, error) {
	return getRequest(ctx, r.Pool, `id = $1`, id)
}

// ByTicket returns the request with ticket.
func (r *Intake) ByTicket(ctx context.Context, ticket string) (*Request, error) {
	return getRequest(ctx, r.Pool, `ticket = $1`, ticket)
}

// Erasure returns the request that erased the subject (the one that put
// it on the suppression list), or ErrNoRequest if none did.
func (r *Intake) Erasure(ctx context.Context, subjectHMAC string) (*Request, error) {
	return getRequest(ctx, r.Pool, `id = (SELECT request_id FROM lethe.suppression WHERE subject_hmac = $1)`, subjectHMAC)
}

// List returns requests, newest first, optionally only in state.
func (r *Intake) List(ctx context.Context, state string, limit int) ([]*Request, error) {
	if state != "" && !slices.Contains(RequestStates, state) {
		return nil, lethe.Input("state", "%q is not one of %s", state, strings.Join(RequestStates, ", "))
	}
	rows, err := r.Pool.Query(ctx, `SELECT `+requestColumns+` FROM lethe.request
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

// enqueue queues a request's job in tx and records it on the request, so
// that a job lost with its process can be told from one still queued.
func enqueue(ctx context.Context, tx pgx.Tx, queue Queue, requestID int64) error {
	jobID, err := queue.EnqueueRequest(ctx, tx, requestID)
	if err != nil {
		return fmt.Errorf("error queueing request %d: %w", requestID, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE lethe.request SET job_id = $2 WHERE id = $1`, requestID, jobID); err != nil {
		return fmt.Errorf("error recording request job: %w", err)
	}
	return nil
}

// Requeue queues a new job for an open request whose job was lost, if no
// one holds its subject, and reports whether it did. Package jobs calls it
// when it finds such a request.
func (r *Intake) Requeue(ctx context.Context, requestID int64, subjectHMAC string) (bool, error) {
	done := false
	err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		free, err := retention.TryLockSubject(ctx, tx, subjectHMAC)
		if err != nil || !free {
			return err
		}
		done = true
		return enqueue(ctx, tx, r.Queue, requestID)
	})
	if err != nil {
		return false, fmt.Errorf("error queueing request %d again: %w", requestID, err)
	}
	return done, nil
}

// Lost is an open request and the job that should be working it.
type Lost struct {
	ID          int64
	SubjectHMAC string
	JobID       int64 // 0 when none was recorded
}

// Open returns the requests that a job should be working (received or
// processing), with their jobs, a page at a time after id after.
func (r *Intake) Open(ctx context.Context, after int64, limit int) ([]Lost, error) {
	rows, err := r.Pool.Query(ctx, `
		SELECT id, subject_hmac, coalesce(job_id, 0) FROM lethe.request
		WHERE state IN ($1, $2) AND id > $3 ORDER BY id LIMIT $4`, StateReceived, StateProcessing, after, limit)
	if err != nil {
		return nil, fmt.Errorf("error reading open requests: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Lost, error) {
		var l Lost
		return l, row.Scan(&l.ID, &l.SubjectHMAC, &l.JobID)
	})
	if err != nil {
		return nil, fmt.Errorf("error reading open requests: %w", err)
	}
	return out, nil
}

// Resume queues again, in tx, every request that waited on a subject no
// hold covers any more, and returns how many and their audit entries. It
// makes Intake a hold.Waiting.
func (r *Intake) Resume(ctx context.Context, tx pgx.Tx, subjectHMACs []string, matter, by string) (int, []audit.Entry, error) {
	if len(subjectHMACs) == 0 {
		return 0, nil, nil
	}
	type resumed struct {
		id   int64
		hmac string
	}
	rs, err := retention.Collect(ctx, tx, "resuming requests", `
		UPDATE lethe.request SET state = $2, reason = NULL, updated_at = now()
		WHERE subject_hmac = ANY ($1) AND state = $3
		RETURNING id, subject_hmac`, func(row pgx.CollectableRow) (resumed, error) {
		var x resumed
		return x, row.Scan(&x.id, &x.hmac)
	}, subjectHMACs, StateReceived, StateBlockedByHold)
	if err != nil {
		return 0, nil, err
	}
	entries := make([]audit.Entry, 0, len(rs))
	for _, x := range rs {
		if err := enqueue(ctx, tx, r.Queue, x.id); err != nil {
			return 0, nil, err
		}
		entries = append(entries, audit.Entry{Kind: audit.KindRequestResumed, Actor: by, SubjectHMAC: x.hmac,
			Detail: map[string]any{"request_id": x.id, "matter": matter}})
	}
	return len(rs), entries, nil
}

// StillHeld rewrites, in tx, the reason of the requests that wait on
// subjects some matter still holds, to name the matters left.
func (r *Intake) StillHeld(ctx context.Context, tx pgx.Tx, subjectHMACs []string) error {
	if _, err := tx.Exec(ctx, `
		UPDATE lethe.request r SET reason = 'held under matter ' || m.matters, updated_at = now()
		FROM (SELECT subject_hmac, string_agg(DISTINCT matter, ', ' ORDER BY matter) AS matters
		      FROM lethe.hold WHERE released_at IS NULL AND subject_hmac = ANY ($1) GROUP BY subject_hmac) m
		WHERE r.subject_hmac = m.subject_hmac AND r.state = $2`, subjectHMACs, StateBlockedByHold); err != nil {
		return fmt.Errorf("error updating blocked requests: %w", err)
	}
	return nil
}

// Package audit owns lethe's audit log: an append-only table in which each
// entry carries the SHA-256 of the entry before it, and the check of that
// chain. Entries name subjects only by their HMAC, never by key or content.
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Entry kinds.
const (
	KindArchive = "archive" // a subject moved to the archive
	KindDestroy = "destroy" // a subject destroyed by a then: delete policy
	// KindMinimize is a batch of a then: minimize policy: counts only, no
	// subject.
	KindMinimize = "minimize"
	KindRestore  = "restore" // a subject's bundle decrypted by lethe restore
	KindRun      = "run"     // a sweep finished

	KindRequestReceived  = "request_received"  // a deletion request was queued
	KindRequestBlocked   = "request_blocked"   // a request waits for a hold
	KindRequestResumed   = "request_resumed"   // a hold was released; the request runs again
	KindRequestRejected  = "request_rejected"  // a request was refused (protected)
	KindRequestFailed    = "request_failed"    // a request used up its retries
	KindRequestCompleted = "request_completed" // a request erased its subject; the detail is the receipt
	KindRequestExtended  = "request_extended"  // a request's deadline was moved by its regime's extension
	KindSuppressed       = "suppressed_erase"  // a subject erased on request reappeared and was erased again
	KindHoldPlaced       = "hold_placed"       // a legal hold was placed
	KindHoldReleased     = "hold_released"     // a legal hold was released
	KindHoldSynced       = "hold_synced"       // the S3 legal hold was brought in line
	KindExpire           = "expire"            // an archived copy outlived archive_retain: its key was destroyed
	KindAPICall          = "api_call"          // an API call that changes something, or was refused; the actor is token:NAME
	KindKeyRepaired      = "key_repaired"      // a hold or request stored under another spelling of its key was made canonical
	KindKeyDestroyed     = "key_destroyed"     // an archived copy's key was destroyed: superseded by a newer copy, or freed by a hold's release
	KindKeysRewrapped    = "keys_rewrapped"    // subject keys were wrapped again to the configured master recipients
	KindArchiveVerified  = "archive_verified"  // lethe archive verify read and opened archived parts (a restore drill)
	KindLedgerReplay     = "ledger_replay"     // after a database restore, the erasures of the bucket's anchors were applied again
)

// Entry is one audit record, before it is chained.
type Entry struct {
	// Kind says what happened; see the Kind constants.
	Kind string
	// Actor is who did it: "lethe" for the worker, or a person's name.
	Actor string
	// SubjectHMAC names the subject, if the entry is about one.
	SubjectHMAC string
	// Detail is any JSON-marshalable value: ids, counts, policy names. It must
	// never hold personal data.
	Detail any
}

// LockHead takes the lock of the chain's head that Append takes, for a
// repeatable-read transaction that must append after work of its own: taken
// early, no other append can move the head under its snapshot.
func LockHead(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT FROM lethe.audit_head WHERE id FOR UPDATE`); err != nil {
		return fmt.Errorf("error locking audit head: %w", err)
	}
	return nil
}

// Append adds entries, in order, at the end of the chain. It must run in the
// transaction that records what the entries describe, so that both or
// neither are committed. It locks the chain's head until that transaction
// ends, which orders concurrent appends.
func Append(ctx context.Context, tx pgx.Tx, entries ...Entry) error {
	return AppendAfter(ctx, tx, 0, entries...)
}

// AppendAfter is Append, numbering the entries after floor if the chain's
// head is below it. Only a ledger replay does this: it moves the sequence
// past the anchor it reconciled, so that no anchor name is used twice, and
// Verify accepts that one jump at a ledger_replay entry whose anchor_seq is
// floor.
func AppendAfter(ctx context.Context, tx pgx.Tx, floor int64, entries ...Entry) error {
	if len(entries) == 0 {
		return nil
	}
	// Everything but the chain is ready before the head is locked: the
	// lock is held until the commit, and every appender waits for it.
	details := make([]string, len(entries))
	kinds := make([]string, len(entries))
	actors := make([]string, len(entries))
	subjects := make([]*string, len(entries))
	for i, e := range entries {
		details[i] = "{}"
		if e.Detail != nil {
			b, err := json.Marshal(e.Detail)
			if err != nil {
				return fmt.Errorf("error encoding audit detail: %w", err)
			}
			details[i] = string(b)
		}
		kinds[i], actors[i] = e.Kind, e.Actor
		if e.SubjectHMAC != "" {
			subjects[i] = &entries[i].SubjectHMAC
		}
	}
	var seq int64
	var prev []byte
	err := tx.QueryRow(ctx, `SELECT seq, hash FROM lethe.audit_head WHERE id FOR UPDATE`).Scan(&seq, &prev)
	if err != nil {
		return fmt.Errorf("error locking audit head: %w", err)
	}
	seq = max(seq, floor)
	at := time.Now().UTC().Truncate(time.Microsecond)
	seqs := make([]int64, len(entries))
	prevs := make([][]byte, len(entries))
	hashes := make([][]byte, len(entries))
	for i := range entries {
		seq++
		rec := record{Seq: seq, At: at, Kind: kinds[i], Actor: actors[i], SubjectHMAC: entries[i].SubjectHMAC, Detail: details[i]}
		seqs[i], prevs[i] = seq, prev
		prev = rec.hash(prev)
		hashes[i] = prev
	}
	if _, err := tx.Exec(ctx, `
		WITH appended AS (
			INSERT INTO lethe.audit_log (seq, at, kind, actor, subject_hmac, detail, prev_hash, hash)
			SELECT s, $2, k, a, h, d, p, x FROM unnest($1::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::bytea[])
				AS u (s, k, a, h, d, p, x))
		UPDATE lethe.audit_head SET seq = $9, hash = $10 WHERE id`,
		seqs, at, kinds, actors, subjects, details, prevs, hashes, seq, prev); err != nil {
		return fmt.Errorf("error appending audit entries: %w", err)
	}
	return nil
}

// record is an entry as stored and hashed.
type record struct {
	Seq         int64
	At          time.Time
	Kind        string
	Actor       string
	SubjectHMAC string
	Detail      string
	PrevHash    []byte
	Hash        []byte
}

// hash is SHA-256 over the previous hash and every field of the entry, each
// length-prefixed so that no two entries share an encoding.
func (r *record) hash(prev []byte) []byte {
	h := sha256.New()
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field(prev)
	binary.BigEndian.PutUint64(n[:], uint64(r.Seq))
	h.Write(n[:])
	field([]byte(r.At.UTC().Format(time.RFC3339Nano)))
	field([]byte(r.Kind))
	field([]byte(r.Actor))
	field([]byte(r.SubjectHMAC))
	field([]byte(r.Detail))
	return h.Sum(nil)
}

// Result is what Verify found.
type Result struct {
	// Entries is how many entries were checked.
	Entries int64 `json:"entries"`
	// OK is true when the whole chain holds.
	OK bool `json:"ok"`
	// BadSeq is the first entry at fault when OK is false (0 for the head).
	BadSeq int64 `json:"bad_seq,omitempty"`
	// Problem says what is wrong when OK is false.
	Problem string `json:"problem,omitempty"`
}

// Verify walks the whole chain and checks every link, and that the chain
// ends where the head says. It detects an edited, deleted, reordered or
// inserted entry, and a cut tail. It reads in pages, so memory does not
// grow with the log.
func Verify(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}) (*Result, error) {
	// Read the chain and its head in one snapshot: an append committed
	// between the two reads would otherwise look like a cut tail. A
	// transaction passed in is used as it is.
	if b, ok := db.(interface {
		BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
	}); ok {
		tx, err := b.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return nil, fmt.Errorf("error starting audit verification: %w", err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck // read-only
		db = tx
	}
	res := &Result{OK: true}
	prev := make([]byte, sha256.Size)
	var last int64
	const page = 5000
	for {
		rows, err := db.Query(ctx, `
			SELECT seq, at, kind, actor, coalesce(subject_hmac, ''), detail, prev_hash, hash
			FROM lethe.audit_log WHERE seq > $1 ORDER BY seq LIMIT $2`, last, page)
		if err != nil {
			return nil, fmt.Errorf("error reading audit log: %w", err)
		}
		n := 0
		for rows.Next() {
			var r record
			if err := rows.Scan(&r.Seq, &r.At, &r.Kind, &r.Actor, &r.SubjectHMAC, &r.Detail, &r.PrevHash, &r.Hash); err != nil {
				rows.Close()
				return nil, fmt.Errorf("error reading audit log: %w", err)
			}
			n++
			res.Entries++
			if res.OK {
				switch {
				case r.Seq != last+1 && !skipsToAnchor(&r, last):
					res.fail(r.Seq, fmt.Sprintf("entry %d follows entry %d: entries are missing", r.Seq, last))
				case !bytes.Equal(r.PrevHash, prev):
					res.fail(r.Seq, fmt.Sprintf("entry %d does not link to entry %d: an entry was removed, inserted or reordered", r.Seq, last))
				case !bytes.Equal(r.hash(prev), r.Hash):
					res.fail(r.Seq, fmt.Sprintf("entry %d does not match its hash: it was edited", r.Seq))
				}
			}
			last = r.Seq
			prev = r.Hash
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("error reading audit log: %w", err)
		}
		if n < page {
			break
		}
	}
	var headSeq int64
	var headHash []byte
	if err := db.QueryRow(ctx, `SELECT seq, hash FROM lethe.audit_head WHERE id`).Scan(&headSeq, &headHash); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			res.fail(0, "the chain head is missing")
			return res, nil
		}
		return nil, fmt.Errorf("error reading audit head: %w", err)
	}
	if res.OK && (headSeq != last || !bytes.Equal(headHash, prev)) {
		res.fail(0, fmt.Sprintf("the chain ends at entry %d but its head records entry %d: entries were cut from the end", last, headSeq))
	}
	return res, nil
}

// skipsToAnchor says whether r is a ledger replay that moved the sequence
// past the anchor it reconciled: the one place where seq jumps.
func skipsToAnchor(r *record, last int64) bool {
	if r.Kind != KindLedgerReplay {
		return false
	}
	var d struct {
		AnchorSeq int64 `json:"anchor_seq"`
	}
	return json.Unmarshal([]byte(r.Detail), &d) == nil && d.AnchorSeq > last && r.Seq == d.AnchorSeq+1
}

func (r *Result) fail(seq int64, problem string) {
	r.OK = false
	r.BadSeq = seq
	r.Problem = problem
}

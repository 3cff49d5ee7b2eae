package audit

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/archive"
)

// The chain alone cannot stop someone who can rewrite the whole table, and a
// database restored from a backup takes its own history back with it. So
// the worker anchors the chain in the bucket, under Object Lock: each anchor
// names the chain's head (seq and hash) at the time, links to the previous
// anchor, and lists the subjects erased and the keys expired since then.
// audit verify --anchors checks the chain against them; the worker compares
// its database with the newest before it archives or erases anything, and
// a ledger replay applies again the erasures a restored database lacks.

// AnchorFormat is the format of every anchor.
const AnchorFormat = "lethe.anchor.v1"

// Anchor is one anchor of the chain, as stored in the bucket.
type Anchor struct {
	Format string `json:"format"`
	// Seq and Hash are the chain's head when the anchor was written.
	Seq  int64     `json:"seq"`
	Hash string    `json:"hash"`
	At   time.Time `json:"at"`
	// Previous is the previous anchor's object name; nil for the first.
	Previous *string `json:"previous"`
	// Erased are the subjects erased since the previous anchor (on request,
	// or again when they reappeared); Expired those whose keys expired.
	Erased  []string `json:"erased"`
	Expired []string `json:"expired"`
	// Chain is the hash of the chain's first entry: which database's chain
	// the anchors belong to.
	Chain string `json:"chain"`
}

// AnchorStore is what anchoring needs of the bucket, with the worker's
// credentials; *archive.Archiver is one.
type AnchorStore interface {
	LedgerPrefix() string
	Put(ctx context.Context, name string, body []byte, lock archive.Lock) (*archive.Stored, error)
	PutNewVersion(ctx context.Context, name string, body []byte, lock archive.Lock) (*archive.Stored, error)
	ReadLedger(ctx context.Context, name string) ([]byte, error)
}

var _ AnchorStore = (*archive.Archiver)(nil)

// AnchorName is the object name of the anchor at seq.
func AnchorName(ledgerPrefix string, seq int64) string {
	return fmt.Sprintf("%s%020d.json", ledgerPrefix, seq)
}

// HeadName is the object name of the newest anchor's copy.
func HeadName(ledgerPrefix string) string { return ledgerPrefix + "head.json" }

// ReadAnchor reads and decodes one anchor. A missing one is
// archive.ErrNotFound.
func ReadAnchor(ctx context.Context, store AnchorStore, name string) (*Anchor, error) {
	b, err := store.ReadLedger(ctx, name)
	if err != nil {
		return nil, err
	}
	var a Anchor
	if err := json.Unmarshal(b, &a); err != nil || a.Format != AnchorFormat {
		return nil, fmt.Errorf("error reading %s: not a %s anchor", name, AnchorFormat)
	}
	return &a, nil
}

// Anchors reads the anchors from head.json back through previous, newest
// first. A bucket with no head yet has none.
func Anchors(ctx context.Context, store AnchorStore) ([]Anchor, error) {
	head, err := ReadAnchor(ctx, store, HeadName(store.LedgerPrefix()))
	if errors.Is(err, archive.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := []Anchor{*head}
	for prev := head.Previous; prev != nil; {
		a, err := ReadAnchor(ctx, store, *prev)
		if err != nil {
			return out, fmt.Errorf("error following the anchors back from %s: %w", HeadName(store.LedgerPrefix()), err)
		}
		if a.Seq >= out[len(out)-1].Seq {
			return out, fmt.Errorf("error following the anchors: %s (seq %d) does not come before seq %d", *prev, a.Seq, out[len(out)-1].Seq)
		}
		out = append(out, *a)
		prev = a.Previous
	}
	return out, nil
}

// Anchorer writes anchors of the chain in the bucket.
type Anchorer struct {
	// Pool is lethe's database. Required.
	Pool *pgxpool.Pool
	// Store holds the worker's credentials. Required.
	Store AnchorStore
	// LockMode and Retain are the anchors' Object Lock (archive.lock_mode,
	// audit.anchor_retain).
	LockMode string
	Retain   time.Duration
	// Logger gets a line per anchor. Required.
	Logger *slog.Logger
}

// anchorLock is the advisory lock (one-key space) that one anchoring at a
// time holds.
const anchorLock = 0x4c455441 // "LETA"

// ErrLedger is returned, wrapped with the reason, when the database's chain
// does not match the bucket's anchors: the database was restored from a
// backup, or belongs to another bucket.
var ErrLedger = errors.New("the database does not match the audit anchors in the bucket")

// Anchor writes an anchor of the chain's head, and a new head.json, if
// entries were added since the newest anchor. It returns the anchor, or nil
// when there was nothing to anchor (another process may have just anchored
// it: anchorings take turns). It refuses, with ErrLedger, when the database
// does not match the anchors: an anchor of a restored chain would fork the
// ledger.
func (a *Anchorer) Anchor(ctx context.Context) (*Anchor, error) {
	conn, err := a.Pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("error anchoring: %w", err)
	}
	defer conn.Release()
	lctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err = conn.Exec(lctx, `SELECT pg_advisory_lock($1)`, anchorLock)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("error waiting for another anchoring to finish: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, anchorLock) //nolint:errcheck // released with the session anyway
	anchor, err := a.anchor(ctx, conn)
	a.record(ctx, conn, err)
	return anchor, err
}

func (a *Anchorer) anchor(ctx context.Context, conn *pgxpool.Conn) (*Anchor, error) {
	state, err := CheckLedger(ctx, conn, a.Store)
	if err != nil {
		return nil, err
	}
	if !state.OK {
		return nil, fmt.Errorf("%w: %s", ErrLedger, state.Reason)
	}
	var seq int64
	var hash []byte
	if err := conn.QueryRow(ctx, `SELECT seq, hash FROM lethe.audit_head WHERE id`).Scan(&seq, &hash); err != nil {
		return nil, fmt.Errorf("error reading the chain's head: %w", err)
	}
	var since int64
	var previous *string
	if h := state.Head; h != nil {
		since = h.Seq
		name := AnchorName(a.Store.LedgerPrefix(), h.Seq)
		previous = &name
	}
	if seq <= since {
		return nil, nil // nothing new
	}
	chain, err := chainID(ctx, conn)
	if err != nil {
		return nil, err
	}
	erased, expired, err := changedSince(ctx, conn, since, seq)
	if err != nil {
		return nil, err
	}
	anchor := &Anchor{Format: AnchorFormat, Seq: seq, Hash: hex.EncodeToString(hash), At: time.Now().UTC().Truncate(time.Second),
		Previous: previous, Erased: erased, Expired: expired, Chain: chain}
	body, err := json.Marshal(anchor)
	if err != nil {
		return nil, fmt.Errorf("error writing anchor: %w", err)
	}
	lock := archive.Lock{Mode: a.LockMode, RetainUntil: time.Now().Add(a.Retain)}
	name := AnchorName(a.Store.LedgerPrefix(), seq)
	stored, err := a.Store.Put(ctx, name, body, lock)
	if errors.Is(err, archive.ErrExists) {
		// A crash after this put and before the record: the anchor is
		// there already. It must be this very anchor.
		there, rerr := ReadAnchor(ctx, a.Store, name)
		if rerr != nil {
			return nil, rerr
		}
		if there.Seq != anchor.Seq || there.Hash != anchor.Hash {
			return nil, fmt.Errorf("%w: %s names hash %s, the chain has %s at seq %d", ErrLedger, name, there.Hash, anchor.Hash, seq)
		}
		anchor, body = there, mustJSON(there)
		stored = &archive.Stored{Name: name}
	} else if err != nil {
		return nil, err
	}
	if _, err := a.Store.PutNewVersion(ctx, HeadName(a.Store.LedgerPrefix()), body, lock); err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `
		INSERT INTO lethe.anchor (seq, hash, name, version_id, erased, expired) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (seq) DO NOTHING`, seq, hash, name, stored.VersionID, len(anchor.Erased), len(anchor.Expired)); err != nil {
		return nil, fmt.Errorf("error recording anchor: %w", err)
	}
	a.Logger.Info("audit chain anchored", "seq", seq, "anchor", name, "erased", len(anchor.Erased), "expired", len(anchor.Expired))
	return anchor, nil
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v) // an Anchor always marshals
	return b
}

// record keeps the outcome of an anchoring, for status and metrics.
func (a *Anchorer) record(ctx context.Context, conn *pgxpool.Conn, err error) {
	ctx = context.WithoutCancel(ctx)
	if err == nil {
		_, _ = conn.Exec(ctx, `UPDATE lethe.anchor_state SET last_error = NULL, failing_since = NULL WHERE id`)
		return
	}
	_, _ = conn.Exec(ctx, `UPDATE lethe.anchor_state SET last_error = $1, failures = failures + 1,
		failing_since = coalesce(failing_since, now()) WHERE id`, err.Error())
}

// chainID is the hash of the chain's first entry, in hex; "" for an empty
// chain.
func chainID(ctx context.Context, db querier) (string, error) {
	var h []byte
	err := db.QueryRow(ctx, `SELECT hash FROM lethe.audit_log WHERE seq = 1`).Scan(&h)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("error reading the chain: %w", err)
	}
	return hex.EncodeToString(h), nil
}

// changedSince lists the subjects erased (on request or again when they
// reappeared) and those whose keys expired in entries after since up to seq.
func changedSince(ctx context.Context, db querier, since, seq int64) (erased, expired []string, err error) {
	rows, err := db.Query(ctx, `
		SELECT DISTINCT kind = $4, subject_hmac FROM lethe.audit_log
		WHERE seq > $1 AND seq <= $2 AND subject_hmac IS NOT NULL AND kind IN ($3, $4, $5)
		ORDER BY 1, 2`, since, seq, KindRequestCompleted, KindExpire, KindSuppressed)
	if err != nil {
		return nil, nil, fmt.Errorf("error reading the chain: %w", err)
	}
	erased, expired = []string{}, []string{}
	var isExpiry bool
	var h string
	if _, err := pgx.ForEachRow(rows, []any{&isExpiry, &h}, func() error {
		if isExpiry {
			expired = append(expired, h)
		} else {
			erased = append(erased, h)
		}
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("error reading the chain: %w", err)
	}
	return erased, expired, nil
}

// querier is a pool, a connection or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Ledger states.
const (
	LedgerOK       = "ok"       // the database holds the newest anchor's head (or there is none yet)
	LedgerBehind   = "behind"   // the database's chain ends before the newest anchor: restored from a backup
	LedgerDiverged = "diverged" // the database's chain differs at the newest anchor: restored, then written to
	LedgerForeign  = "foreign"  // the anchors belong to another database's chain
)

// LedgerState is how the database's chain stands against the bucket's
// anchors.
type LedgerState struct {
	OK    bool   `json:"ok"`
	State string `json:"state"`
	// Reason says, in a sentence, what is wrong and what to do.
	Reason string `json:"reason,omitempty"`
	// Head is the newest anchor; nil when the bucket has none.
	Head *Anchor `json:"head,omitempty"`
	// ChainSeq is the database's chain head.
	ChainSeq int64 `json:"chain_seq"`
}

// CheckLedger compares the database's chain with the newest anchor in the
// bucket. A bucket without anchors is fine; so is an unreadable head.json
// while this database has written no anchor (a fresh bucket on AWS answers
// 403 for a missing key to a reader that may not list).
func CheckLedger(ctx context.Context, db querier, store AnchorStore) (*LedgerState, error) {
	st := &LedgerState{OK: true, State: LedgerOK}
	var headHash []byte
	if err := db.QueryRow(ctx, `SELECT seq, hash FROM lethe.audit_head WHERE id`).Scan(&st.ChainSeq, &headHash); err != nil {
		return nil, fmt.Errorf("error reading the chain's head: %w", err)
	}
	head, err := ReadAnchor(ctx, store, HeadName(store.LedgerPrefix()))
	switch {
	case errors.Is(err, archive.ErrNotFound):
		return st, nil
	case errors.Is(err, archive.ErrAccessDenied):
		var wrote bool
		if qerr := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lethe.anchor)`).Scan(&wrote); qerr != nil {
			return nil, fmt.Errorf("error reading anchors: %w", qerr)
		}
		if !wrote {
			return st, nil
		}
		return nil, fmt.Errorf("error reading the newest anchor (this database has written anchors, so it must exist): %w; "+
			"the worker needs s3:GetObject on %s*", err, store.LedgerPrefix())
	case err != nil:
		return nil, err
	}
	st.Head = head
	chain, err := chainID(ctx, db)
	if err != nil {
		return nil, err
	}
	if chain != head.Chain {
		st.OK, st.State = false, LedgerForeign
		if chain == "" {
			st.Reason = fmt.Sprintf("this database's audit log is empty, while the bucket's anchors run to seq %d of another chain: "+
				"lethe is pointed at another database, or at another bucket or prefix, than the ones that wrote them; fix database.url or archive.bucket/prefix", head.Seq)
		} else {
			st.Reason = fmt.Sprintf("the bucket's anchors belong to another audit chain (its first entry differs): lethe is pointed at another database, " +
				"or at another bucket or prefix, than the ones that wrote them; fix database.url or archive.bucket/prefix")
		}
		return st, nil
	}
	var hash []byte
	err = db.QueryRow(ctx, `SELECT hash FROM lethe.audit_log WHERE seq = $1`, head.Seq).Scan(&hash)
	switch {
	case err == nil && hex.EncodeToString(hash) == head.Hash:
		return st, nil
	case err != nil && !errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("error reading the chain: %w", err)
	}
	want, derr := hex.DecodeString(head.Hash)
	if derr != nil {
		return nil, fmt.Errorf("error reading the newest anchor: its hash %q is not hex", head.Hash)
	}
	var replayed bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM lethe.ledger_replay WHERE anchor_seq = $1 AND anchor_hash = $2)`,
		head.Seq, want).Scan(&replayed); err != nil {
		return nil, fmt.Errorf("error reading ledger replays: %w", err)
	}
	if replayed {
		return st, nil
	}
	st.OK = false
	if hash == nil && st.ChainSeq < head.Seq {
		st.State = LedgerBehind
		st.Reason = fmt.Sprintf("the database's audit chain ends at seq %d, but the bucket's newest anchor is at seq %d: "+
			"the database was restored from a backup; run lethe ledger replay, then --confirm, before any work resumes", st.ChainSeq, head.Seq)
	} else {
		st.State = LedgerDiverged
		st.Reason = fmt.Sprintf("the database's audit chain differs from the bucket's newest anchor at seq %d: "+
			"the database was restored from a backup and written to since; run lethe ledger replay, then --confirm, before any work resumes", head.Seq)
	}
	return st, nil
}

// AnchorStatus is how anchoring fares, for lethe status, the API and the
// metrics.
type AnchorStatus struct {
	// Last is the newest anchor this database wrote; nil before the first.
	Last *AnchorRow `json:"last"`
	// Unanchored is how many entries the chain holds past Last.
	Unanchored int64 `json:"unanchored_entries"`
	// LastError, FailingSince and Failures are about the anchoring
	// attempts: the last one's error (empty once one succeeds), since when
	// they fail, and how many ever failed.
	LastError    string     `json:"last_error,omitempty"`
	FailingSince *time.Time `json:"failing_since,omitempty"`
	Failures     int64      `json:"failures"`
	// Ledger is how the database stands against the bucket's newest
	// anchor; LedgerError says why it could not be checked.
	Ledger      *LedgerState `json:"ledger,omitempty"`
	LedgerError string       `json:"ledger_error,omitempty"`
}

// AnchorRow is an anchor this database wrote.
type AnchorRow struct {
	Seq  int64     `json:"seq"`
	Name string    `json:"name"`
	At   time.Time `json:"at"`
}

// Status reads how anchoring fares. It does not read the bucket: the
// caller adds the ledger's state.
func Status(ctx context.Context, db querier) (*AnchorStatus, error) {
	st := &AnchorStatus{}
	var lastErr *string
	var headSeq int64
	if err := db.QueryRow(ctx, `SELECT last_error, failing_since, failures, (SELECT seq FROM lethe.audit_head WHERE id)
		FROM lethe.anchor_state WHERE id`).Scan(&lastErr, &st.FailingSince, &st.Failures, &headSeq); err != nil {
		return nil, fmt.Errorf("error reading anchor state: %w", err)
	}
	if lastErr != nil {
		st.LastError = *lastErr
	}
	var last AnchorRow
	err := db.QueryRow(ctx, `SELECT seq, name, at FROM lethe.anchor ORDER BY seq DESC LIMIT 1`).Scan(&last.Seq, &last.Name, &last.At)
	switch {
	case err == nil:
		st.Last = &last
		st.Unanchored = max(headSeq-last.Seq, 0)
	case errors.Is(err, pgx.ErrNoRows):
		st.Unanchored = headSeq
	default:
		return nil, fmt.Errorf("error reading anchors: %w", err)
	}
	return st, nil
}

// AnchorsResult is what VerifyAnchors found.
type AnchorsResult struct {
	// Anchors is how many anchors were read, from head.json back.
	Anchors int `json:"anchors"`
	// Checked were found in the chain; Reconciled were lost to a database
	// restore and reconciled by a ledger replay.
	Checked    int `json:"checked"`
	Reconciled int `json:"reconciled"`
	// Head is the newest anchor.
	Head *Anchor `json:"head,omitempty"`
	OK   bool    `json:"ok"`
	// BadSeq is the first anchor at fault, and Problem what is wrong.
	BadSeq  int64  `json:"bad_seq,omitempty"`
	Problem string `json:"problem,omitempty"`
}

// VerifyAnchors walks the anchors from head.json back through previous and
// checks each against the database's chain: the entry at its seq must have
// its hash. After a database restore, the anchors between the chain as
// restored and the anchor a replay reconciled are no longer in the chain;
// those are counted as reconciled, and every other anchor is checked in
// full. A rewritten chain, or one whose tail was cut, fails at the first
// anchor it contradicts, oldest first.
func VerifyAnchors(ctx context.Context, db querier, store AnchorStore) (*AnchorsResult, error) {
	res := &AnchorsResult{OK: true}
	anchors, err := Anchors(ctx, store)
	if err != nil {
		return nil, err
	}
	res.Anchors = len(anchors)
	if len(anchors) == 0 {
		return res, nil
	}
	res.Head = &anchors[0]
	chain, err := chainID(ctx, db)
	if err != nil {
		return nil, err
	}
	if chain != anchors[0].Chain {
		res.fail(anchors[0].Seq, "the anchors belong to another audit chain than this database's (their first entries differ)")
		return res, nil
	}
	type replay struct {
		restored, anchor int64
		hash             []byte
	}
	rows, err := db.Query(ctx, `SELECT restored_seq, anchor_seq, anchor_hash FROM lethe.ledger_replay`)
	if err != nil {
		return nil, fmt.Errorf("error reading ledger replays: %w", err)
	}
	var replays []replay
	var rp replay
	if _, err := pgx.ForEachRow(rows, []any{&rp.restored, &rp.anchor, &rp.hash}, func() error { replays = append(replays, rp); return nil }); err != nil {
		return nil, fmt.Errorf("error reading ledger replays: %w", err)
	}
	for i := len(anchors) - 1; i >= 0 && res.OK; i-- {
		a := anchors[i]
		want, err := hex.DecodeString(a.Hash)
		if err != nil {
			res.fail(a.Seq, fmt.Sprintf("the anchor at seq %d holds a hash that is not hex", a.Seq))
			break
		}
		lost := false
		for _, r := range replays {
			if a.Seq > r.restored && a.Seq <= r.anchor {
				lost = true
				if a.Seq == r.anchor && !bytes.Equal(want, r.hash) {
					res.fail(a.Seq, fmt.Sprintf("the anchor at seq %d is not the one the ledger replay reconciled: the ledger was rewritten", a.Seq))
				}
			}
		}
		if lost {
			res.Reconciled++
			continue
		}
		var got []byte
		err = db.QueryRow(ctx, `SELECT hash FROM lethe.audit_log WHERE seq = $1`, a.Seq).Scan(&got)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			res.fail(a.Seq, fmt.Sprintf("the chain has no entry %d, which the anchor %s names: entries were cut from the chain", a.Seq, AnchorName(store.LedgerPrefix(), a.Seq)))
		case err != nil:
			return nil, fmt.Errorf("error reading the chain: %w", err)
		case !bytes.Equal(got, want):
			res.fail(a.Seq, fmt.Sprintf("the chain's entry %d differs from the anchor %s: the chain was rewritten", a.Seq, AnchorName(store.LedgerPrefix(), a.Seq)))
		default:
			res.Checked++
		}
	}
	return res, nil
}

func (r *AnchorsResult) fail(seq int64, problem string) {
	r.OK = false
	r.BadSeq = seq
	r.Problem = problem
}

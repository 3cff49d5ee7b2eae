package retention

import (
	"context"
	"errors"
	"fmt"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/audit"
)

// Manifest states: a subject's archived copy is archived (live: its key is
// stored), superseded (a newer copy replaced it; its key is kept only while
// a hold covers the subject), erased (a deletion request destroyed its key)
// or expired (archive_retain passed and its key was destroyed).
const (
	CopyArchived   = "archived"
	CopySuperseded = "superseded"
	CopyErased     = "erased"
	CopyExpired    = "expired"
)

// Manifest parts: a subject's archived copy, or the original values of
// columns a then: minimize policy changed.
const (
	PartSubject   = "subject"
	PartMinimized = "minimized"
)

// Entry is one manifest entry: where an archived copy of a subject lies, and
// its wrapped key. Its JSON form is what lethe archive locate prints.
type Entry struct {
	ID          int64  `json:"-"`
	SubjectHMAC string `json:"subject_hmac"`
	State       string `json:"state"`
	// Part is PartSubject or PartMinimized.
	Part        string     `json:"part"`
	Policy      string     `json:"policy"`
	ArchivedAt  time.Time  `json:"archived_at"`
	RetainUntil *time.Time `json:"retain_until"`
	Segment     string     `json:"segment"`
	VersionID   string     `json:"version_id"`
	Offset      int64      `json:"offset"`
	Length      int64      `json:"length"`
	SHA256      string     `json:"sha256"`
	// WrappedKey is the age file of the subject's identity, encrypted to
	// the master recipients; JSON gives it in standard base64, and null once
	// the key was destroyed.
	WrappedKey  []byte     `json:"wrapped_key"`
	DestroyedAt *time.Time `json:"destroyed_at,omitempty"`
	DestroyedBy *string    `json:"destroyed_by,omitempty"`
}

// Location is where e's part lies, for archive.Restorer.
func (e *Entry) Location() archive.Location {
	return archive.Location{Segment: e.Segment, VersionID: e.VersionID, Offset: e.Offset, Length: e.Length,
		SHA256: e.SHA256, WrappedKey: e.WrappedKey}
}

const entryColumns = `m.id, m.subject_hmac, m.state, m.part, m.policy, m.archived_at, m.retain_until, s.name, s.version_id,
	m.part_offset, m.part_length, m.part_sha256, m.wrapped_key, m.destroyed_at, m.destroyed_by`

// entries reads the manifest entries that where selects, in order of id.
func entries(ctx context.Context, db Querier, where string, args ...any) ([]Entry, error) {
	return Collect(ctx, db, "reading the manifest", `SELECT `+entryColumns+` FROM lethe.manifest m JOIN lethe.segment s ON s.id = m.segment_id
		WHERE `+where, func(r pgx.CollectableRow) (Entry, error) {
		var e Entry
		return e, r.Scan(&e.ID, &e.SubjectHMAC, &e.State, &e.Part, &e.Policy, &e.ArchivedAt, &e.RetainUntil, &e.Segment, &e.VersionID,
			&e.Offset, &e.Length, &e.SHA256, &e.WrappedKey, &e.DestroyedAt, &e.DestroyedBy)
	}, args...)
}

// ErrNotArchived means the manifest has no entry of the subject.
var ErrNotArchived = errors.New("the subject was never archived")

// Locate returns the subject's newest manifest entry: its live copy, or
// what happened to the last one. An archived copy of the subject comes
// before parts of its minimised values, which LocateAll lists too.
func Locate(ctx context.Context, db Querier, subjectHMAC string) (*Entry, error) {
	found, err := entries(ctx, db, `m.subject_hmac = $1 ORDER BY m.part = 'subject' DESC, m.id DESC LIMIT 1`, subjectHMAC)
	if err != nil {
		return nil, err
	}
	if len(found) == 0 {
		return nil, ErrNotArchived
	}
	return &found[0], nil
}

// LocateAll returns every manifest entry of the subject, oldest first.
func LocateAll(ctx context.Context, db Querier, subjectHMAC string) ([]Entry, error) {
	return entries(ctx, db, `m.subject_hmac = $1 ORDER BY m.id`, subjectHMAC)
}

// Entries returns manifest entries in order of id after after, at most
// limit of them; with live, only those whose key is stored.
func Entries(ctx context.Context, db Querier, after int64, limit int, live bool) ([]Entry, error) {
	return entries(ctx, db, `m.id > $1 AND (NOT $3 OR m.wrapped_key IS NOT NULL) ORDER BY m.id LIMIT $2`, after, limit, live)
}

// ErasedPart is an archived copy whose key an erasure destroyed.
type ErasedPart struct {
	Segment, VersionID string
}

// Erased is what EraseCopies did to one subject's copies.
type Erased struct {
	// Parts are the copies whose keys it destroyed.
	Parts []ErasedPart
	// Copies counts the entries it marked erased: Parts, and copies
	// superseded or expired before, which had no key left.
	Copies int
}

// EraseCopies marks, in tx, every manifest entry of the subjects that is
// not erased yet as erased, destroying the keys still stored. by gives each
// subject's cause (such as "request 12"). The caller holds the subjects'
// locks and has checked that no hold covers them.
func EraseCopies(ctx context.Context, tx pgx.Tx, by map[string]string) (map[string]*Erased, error) {
	hmacs := make([]string, 0, len(by))
	causes := make([]string, 0, len(by))
	for h, c := range by {
		hmacs, causes = append(hmacs, h), append(causes, c)
	}
	rows, err := tx.Query(ctx, `
		WITH old AS (
			SELECT m.id, m.subject_hmac, s.name, s.version_id, m.wrapped_key IS NOT NULL AS had_key
			FROM lethe.manifest m JOIN lethe.segment s ON s.id = m.segment_id
			WHERE m.subject_hmac = ANY ($1) AND m.state <> 'erased' FOR UPDATE OF m),
		done AS (
			UPDATE lethe.manifest m SET state = 'erased', wrapped_key = NULL,
				destroyed_at = coalesce(m.destroyed_at, now()), destroyed_by = coalesce(m.destroyed_by, c.by)
			FROM old JOIN unnest($1::text[], $2::text[]) AS c (h, by) ON c.h = old.subject_hmac
			WHERE m.id = old.id)
		SELECT subject_hmac, name, version_id, had_key FROM old ORDER BY id`, hmacs, causes)
	if err != nil {
		return nil, fmt.Errorf("error destroying keys: %w", err)
	}
	out := make(map[string]*Erased, len(by))
	for h := range by {
		out[h] = &Erased{}
	}
	var h string
	var p ErasedPart
	var hadKey bool
	if _, err := pgx.ForEachRow(rows, []any{&h, &p.Segment, &p.VersionID, &hadKey}, func() error {
		out[h].Copies++
		if hadKey {
			out[h].Parts = append(out[h].Parts, p)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("error destroying keys: %w", err)
	}
	return out, nil
}

// DestroySuperseded destroys, in tx, the keys that superseded copies of the
// subjects kept while a hold covered them, and returns their audit
// entries. A hold's release calls it for the subjects it frees.
func DestroySuperseded(ctx context.Context, tx pgx.Tx, subjectHMACs []string, by string) ([]audit.Entry, error) {
	rows, err := tx.Query(ctx, `
		UPDATE lethe.manifest SET wrapped_key = NULL, destroyed_at = now(), destroyed_by = 'superseded'
		WHERE subject_hmac = ANY ($1) AND state = 'superseded' AND wrapped_key IS NOT NULL
		RETURNING id, subject_hmac`, subjectHMACs)
	if err != nil {
		return nil, fmt.Errorf("error destroying superseded keys: %w", err)
	}
	var entries []audit.Entry
	var id int64
	var h string
	if _, err := pgx.ForEachRow(rows, []any{&id, &h}, func() error {
		entries = append(entries, audit.Entry{Kind: audit.KindKeyDestroyed, Actor: by, SubjectHMAC: h,
			Detail: map[string]any{"manifest_id": id, "reason": "superseded; the hold that kept it was released"}})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("error destroying superseded keys: %w", err)
	}
	return entries, nil
}

// RewrapResult counts what Rewrap did.
type RewrapResult struct {
	// Rewrapped keys are wrapped to the configured recipients now.
	Rewrapped int `json:"rewrapped"`
	// Unopened keys could not be opened with the identity given; they are
	// left as they were.
	Unopened int `json:"unopened"`
	// Left are the keys still not wrapped to the configured recipients.
	Left int `json:"left"`
}

// ErrNoKeyOpened is returned by Rewrap when the identity opened none of the
// keys that need rewrapping: it changed nothing.
var ErrNoKeyOpened = errors.New("the identity opens none of the keys to rewrap")

// Rewrap wraps again, to masters (named by fingerprint), every stored key
// not yet wrapped to them, opening each with identities: master-key
// rotation. It works a page of keys per transaction, so that an interrupted
// rotation resumes where it stopped, and touches no object. progress, if
// set, is called after each page.
func Rewrap(ctx context.Context, pool *pgxpool.Pool, identities []age.Identity, masters []age.Recipient, fingerprint string,
	page int, progress func(RewrapResult)) (*RewrapResult, error) {
	res := &RewrapResult{}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM lethe.manifest WHERE wrapped_key IS NOT NULL AND wrapped_to IS DISTINCT FROM $1`,
		fingerprint).Scan(&res.Left); err != nil {
		return nil, fmt.Errorf("error counting keys: %w", err)
	}
	for after := int64(0); ; {
		n, last, err := rewrapPage(ctx, pool, identities, masters, fingerprint, after, page, res)
		if err != nil {
			return res, err
		}
		if progress != nil {
			progress(*res)
		}
		if n < page {
			break
		}
		after = last
	}
	if res.Rewrapped == 0 && res.Unopened > 0 {
		return res, fmt.Errorf("%w: %d keys need it and none was changed", ErrNoKeyOpened, res.Unopened)
	}
	return res, nil
}

func rewrapPage(ctx context.Context, pool *pgxpool.Pool, identities []age.Identity, masters []age.Recipient, fingerprint string,
	after int64, page int, res *RewrapResult) (n int, last int64, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			SELECT id, wrapped_key FROM lethe.manifest
			WHERE wrapped_key IS NOT NULL AND wrapped_to IS DISTINCT FROM $1 AND id > $2
			ORDER BY id LIMIT $3 FOR UPDATE`, fingerprint, after, page)
		if err != nil {
			return err
		}
		type key struct {
			id      int64
			wrapped []byte
		}
		keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (key, error) {
			var k key
			return k, r.Scan(&k.id, &k.wrapped)
		})
		if err != nil {
			return err
		}
		n = len(keys)
		var ids []int64
		var rewrapped [][]byte
		for _, k := range keys {
			last = k.id
			id, err := archive.UnwrapKey(k.wrapped, identities)
			if errors.Is(err, archive.ErrWrongIdentity) {
				res.Unopened++
				continue
			}
			if err != nil {
				return fmt.Errorf("error opening the key of manifest entry %d: %w", k.id, err)
			}
			w, err := archive.WrapKey(id, masters)
			if err != nil {
				return err
			}
			ids, rewrapped = append(ids, k.id), append(rewrapped, w)
		}
		if len(ids) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `
			UPDATE lethe.manifest m SET wrapped_key = u.k, wrapped_to = $3
			FROM unnest($1::bigint[], $2::bytea[]) AS u (id, k) WHERE m.id = u.id`, ids, rewrapped, fingerprint); err != nil {
			return err
		}
		res.Rewrapped += len(ids)
		res.Left -= len(ids)
		return audit.Append(ctx, tx, audit.Entry{Kind: audit.KindKeysRewrapped, Actor: "lethe", Detail: map[string]any{
			"keys": len(ids), "first_manifest_id": ids[0], "last_manifest_id": ids[len(ids)-1], "masters": fingerprint,
		}})
	})
	if err != nil {
		return 0, 0, fmt.Errorf("error rewrapping keys: %w", err)
	}
	return n, last, nil
}

package retention

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/audit"
)

// VerifyResult is what a restore drill found.
type VerifyResult struct {
	// Live is how many archived copies have a stored key.
	Live int `json:"live"`
	// Checked parts were read, opened and checked; OK of them passed.
	Checked int `json:"checked"`
	OK      int `json:"ok"`
	// Segments is how many segments the checked parts lie in.
	Segments int `json:"segments"`
	// Failed are the parts that did not restore.
	Failed []VerifyFailure `json:"failed"`
	// unopened counts the failures whose key the identities did not open.
	unopened int
}

// VerifyFailure is a part that did not restore, and why. It names no
// subject, only its HMAC.
type VerifyFailure struct {
	SubjectHMAC string `json:"subject_hmac"`
	Segment     string `json:"segment"`
	VersionID   string `json:"version_id"`
	Offset      int64  `json:"offset"`
	Error       string `json:"error"`
}

// verifyPage is how many manifest entries a drill reads at a time, and
// verifyReaders how many parts it reads at once.
const (
	verifyPage    = 500
	verifyReaders = 4
)

// Verify is a restore drill: it reads every live part (or sample random
// ones, if sample > 0) with r, checks its SHA-256, opens its key with
// masters, decrypts it and checks that it is a whole bundle of the subject
// and policy its entry names. It stops early, with an error, when the
// bucket refuses the reader or cannot be reached, and when masters open
// none of the first keys; a part that fails is counted in Failed. progress,
// if set, is called after each page. The drill is recorded in the audit
// log.
func (p *Plan) Verify(ctx context.Context, db *pgxpool.Pool, r *archive.Restorer, masters []age.Identity, sample int,
	progress func(VerifyResult)) (*VerifyResult, error) {
	res := &VerifyResult{Failed: []VerifyFailure{}}
	if err := db.QueryRow(ctx, `SELECT count(*) FROM lethe.manifest WHERE wrapped_key IS NOT NULL`).Scan(&res.Live); err != nil {
		return nil, fmt.Errorf("error reading the manifest: %w", err)
	}
	segments := map[string]bool{}
	var after int64
	for {
		var page []Entry
		var err error
		if sample > 0 {
			page, err = sampleEntries(ctx, db, sample)
		} else {
			page, err = Entries(ctx, db, after, verifyPage, true)
		}
		if err != nil {
			return res, err
		}
		if err := p.verifyEntries(ctx, r, masters, page, res); err != nil {
			return res, err
		}
		for _, e := range page {
			segments[e.Segment] = true
		}
		res.Segments = len(segments)
		if progress != nil {
			progress(*res)
		}
		if sample > 0 || len(page) < verifyPage {
			break
		}
		after = page[len(page)-1].ID
	}
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		return audit.Append(ctx, tx, audit.Entry{Kind: audit.KindArchiveVerified, Actor: "lethe", Detail: map[string]any{
			"checked": res.Checked, "ok": res.OK, "failed": len(res.Failed), "segments": res.Segments, "sample": sample > 0,
		}})
	})
	if err != nil {
		return res, fmt.Errorf("error auditing the drill: %w", err)
	}
	return res, nil
}

func sampleEntries(ctx context.Context, db Querier, n int) ([]Entry, error) {
	return entries(ctx, db, `m.wrapped_key IS NOT NULL ORDER BY random() LIMIT $1`, n)
}

// verifyEntries checks entries, verifyReaders at a time, into res.
func (p *Plan) verifyEntries(ctx context.Context, r *archive.Restorer, masters []age.Identity, entries []Entry, res *VerifyResult) error {
	var (
		mu    sync.Mutex
		fatal error
		wg    sync.WaitGroup
		next  = make(chan Entry)
	)
	for range verifyReaders {
		wg.Go(func() {
			for e := range next {
				err := p.verifyEntry(ctx, r, masters, &e)
				mu.Lock()
				switch {
				case err == nil:
					res.Checked++
					res.OK++
				case errors.Is(err, archive.ErrAccessDenied), errors.Is(err, archive.ErrUnreachable), errors.Is(err, archive.ErrNoBucket),
					ctx.Err() != nil:
					if fatal == nil {
						fatal = err
					}
				default:
					res.Checked++
					if errors.Is(err, archive.ErrWrongIdentity) {
						res.unopened++
					}
					res.Failed = append(res.Failed, VerifyFailure{SubjectHMAC: e.SubjectHMAC, Segment: e.Segment,
						VersionID: e.VersionID, Offset: e.Offset, Error: err.Error()})
				}
				mu.Unlock()
			}
		})
	}
	for _, e := range entries {
		mu.Lock()
		stop := fatal != nil || res.openedNone(20)
		mu.Unlock()
		if stop {
			break
		}
		next <- e
	}
	close(next)
	wg.Wait()
	if fatal != nil {
		return fatal
	}
	if res.openedNone(1) {
		return fmt.Errorf("%w: it opened none of the %d keys tried", archive.ErrWrongIdentity, len(res.Failed))
	}
	return nil
}

// openedNone says whether the identities have failed to open at least n
// keys and opened none.
func (res *VerifyResult) openedNone(n int) bool {
	return res.OK == 0 && res.unopened >= n && res.unopened == len(res.Failed)
}

// verifyEntry restores one part: the key first, so that a wrong identity
// costs no read.
func (p *Plan) verifyEntry(ctx context.Context, r *archive.Restorer, masters []age.Identity, e *Entry) error {
	id, err := archive.UnwrapKey(e.WrappedKey, masters)
	if err != nil {
		return err
	}
	part, err := r.ReadPart(ctx, e.Location())
	if err != nil {
		return err
	}
	res, err := archive.OpenPart(part, id, nil)
	if err != nil {
		return err
	}
	// The kind whose HMAC of the bundle's subject is the entry's says
	// which tables the bundle must hold.
	var kind *Kind
	for _, k := range p.Kinds {
		if k.HMAC(res.Bundle.Subject) == e.SubjectHMAC {
			kind = k
		}
	}
	if kind == nil {
		return fmt.Errorf("%w: the part holds another subject than its entry names (or one of a kind no longer configured)", archive.ErrCorrupt)
	}
	switch {
	case e.Part == PartMinimized && res.Bundle.Kind != archive.KindMinimized, e.Part != PartMinimized && res.Bundle.Kind != "":
		return fmt.Errorf("%w: the part holds a bundle of kind %q, its entry is a %s part", archive.ErrCorrupt, res.Bundle.Kind, e.Part)
	case e.Part == PartMinimized && len(res.Bundle.Rows) != 1:
		return fmt.Errorf("%w: a part of minimised values holds %d tables, not one", archive.ErrCorrupt, len(res.Bundle.Rows))
	case e.Part != PartMinimized:
		if err := res.Bundle.CheckTables(kind.Tables()); err != nil {
			return fmt.Errorf("%w: %w", archive.ErrCorrupt, err)
		}
	}
	if res.Bundle.Policy != e.Policy {
		return fmt.Errorf("%w: the part was archived by policy %q, its entry says %q", archive.ErrCorrupt, res.Bundle.Policy, e.Policy)
	}
	return nil
}

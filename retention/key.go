package retention

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lethehq/lethe"
)

// A subject key has one canonical form: the text PostgreSQL prints for it
// once it is cast to the key column's type. "0111", "+111" and " 111 " are
// all bigint subject 111, and "{A0EEBC99-...}" is the uuid a0eebc99-....
// Every key that enters lethe is turned into that form before it is hashed,
// looked up, stored or compared, so that a hold placed under one spelling
// covers every other. See docs/ARCHITECTURE.md, "Subject keys".

// keyTypes are the base types a subject key may have: those whose text form,
// as keyText writes it, is one per value, so that two spellings of one row
// always get one HMAC. Floating point (-0 = 0), money and the date and time
// types (their text depends on session settings), and citext and
// nondeterministic collations (equal values that print differently) are
// refused when lethe starts.
var keyTypes = map[string]bool{
	"int2": true, "int4": true, "int8": true, "numeric": true,
	"uuid": true, "text": true, "varchar": true, "bpchar": true,
}

// keyTypeNames is keyTypes for people, in config errors.
const keyTypeNames = "smallint, integer, bigint, numeric, uuid, text, varchar or char"

// keyText is the SQL expression of the canonical text of a key-typed
// expression. numeric keeps its scale when printed (1.50 and 1.5 are one
// value), so its trailing zeros are trimmed first.
func (k *Kind) keyText(expr string) string {
	if k.keyBase == "numeric" {
		return "trim_scale(" + expr + ")::text"
	}
	return expr + "::text"
}

// canonicalBatch is how many keys one canonicalising query casts.
const canonicalBatch = 5000

// Subject resolves a subject given by kind name (empty: the only kind, or
// default) and key as typed: its Kind, and its key in canonical form.
func (p *Plan) Subject(ctx context.Context, db Querier, kind, key string) (*Kind, string, error) {
	k, err := p.Kind(kind)
	if err != nil {
		return nil, "", err
	}
	if key, err = k.CanonicalKey(ctx, db, key); err != nil {
		return nil, "", err
	}
	return k, key, nil
}

// CanonicalKey returns key in its canonical form, or a *lethe.InputError
// when it is not a key of the subject table: blank, not text,
// or refused by the cast to the key column's type. The error never repeats
// the key, which may be personal data typed by mistake.
func (k *Kind) CanonicalKey(ctx context.Context, db Querier, key string) (string, error) {
	keys, err := k.CanonicalKeys(ctx, db, []string{key})
	if err != nil {
		return "", err
	}
	return keys[0], nil
}

// CanonicalKeys returns keys in their canonical form, in order, with one
// query per few thousand keys. Two spellings of one subject come back equal;
// the caller removes repeats. The first key that is not a key of the subject
// table fails the whole call, naming its position.
func (k *Kind) CanonicalKeys(ctx context.Context, db Querier, keys []string) ([]string, error) {
	for i, key := range keys {
		if err := checkKeyText(key, i, len(keys)); err != nil {
			return nil, err
		}
	}
	q := fmt.Sprintf("SELECT %s FROM unnest($1::text[]) WITH ORDINALITY AS u (k, i) ORDER BY i", k.keyText("k::"+k.KeyType))
	out := make([]string, 0, len(keys))
	for start := 0; start < len(keys); start += canonicalBatch {
		page := keys[start:min(start+canonicalBatch, len(keys))]
		got, err := k.castKeys(ctx, db, q, page)
		if isCastError(err) {
			// Find the first key the cast refuses, halving the page each
			// time: a handful of queries, and only on this path.
			lo, hi := 0, len(page)
			for hi-lo > 1 {
				mid := (lo + hi) / 2
				if _, err := k.castKeys(ctx, db, q, page[lo:mid]); isCastError(err) {
					hi = mid
				} else if err != nil {
					return nil, err
				} else {
					lo = mid
				}
			}
			return nil, keyError(start+lo, len(keys), "not a valid %s, the type of %s.%s", k.KeyType, k.Root.Name, k.keyCol)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

func (k *Kind) castKeys(ctx context.Context, db Querier, q string, keys []string) ([]string, error) {
	rows, err := db.Query(ctx, q, keys)
	if err != nil {
		return nil, err
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	if len(got) != len(keys) {
		return nil, fmt.Errorf("error checking subject keys: %d keys in, %d out", len(keys), len(got))
	}
	return got, nil
}

// checkKeyText refuses what is not a key of any type, before asking the
// database: blank text, and text that is not UTF-8 or holds NUL.
func checkKeyText(k string, i, n int) error {
	switch {
	case strings.TrimSpace(k) == "":
		return keyError(i, n, "a subject key cannot be empty or only whitespace")
	case !utf8.ValidString(k) || strings.ContainsRune(k, 0):
		return keyError(i, n, "a subject key must be valid UTF-8 text without NUL")
	}
	return nil
}

// keyError refuses the ith of n keys; it never quotes the key.
func keyError(i, n int, format string, args ...any) error {
	e := lethe.Input("subject", format, args...)
	if n > 1 {
		e.Index, e.Of = i, n
	}
	return e
}

// isCastError reports whether err is PostgreSQL refusing a value for a type:
// a data exception (class 22) or a domain's check (23514).
func isCastError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return strings.HasPrefix(pgErr.Code, "22") || pgErr.Code == "23514" || pgErr.Code == "23502"
}

// Unique returns keys without repeats, in order of first appearance.
func Unique(keys []string) []string {
	seen := make(map[string]bool, len(keys))
	out := keys[:0:0]
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// CanonicalKeysLenient is CanonicalKeys for keys lethe stored earlier, in tx:
// a key the cast refuses now (the key column's type changed) comes back as
// "" instead of failing the call. Each attempt runs in a savepoint, so a
// refusal does not end tx.
func (k *Kind) CanonicalKeysLenient(ctx context.Context, tx pgx.Tx, keys []string) ([]string, error) {
	canonical := func(keys []string) ([]string, error) {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return nil, err
		}
		defer sp.Rollback(ctx) //nolint:errcheck // read only
		return k.CanonicalKeys(ctx, sp, keys)
	}
	out, err := canonical(keys)
	if err == nil || !errors.Is(err, lethe.ErrBadInput) {
		return out, err
	}
	out = make([]string, len(keys))
	for i, key := range keys {
		c, err := canonical([]string{key})
		switch {
		case err == nil:
			out[i] = c[0]
		case !errors.Is(err, lethe.ErrBadInput):
			return nil, err
		}
	}
	return out, nil
}

// StaleKey is a key lethe stored earlier that is not in canonical form.
type StaleKey struct {
	// ID and Group are the row's id and its matter or state.
	ID    int64
	Group string
	// Key and HMAC are as stored.
	Key, HMAC string
	// Canonical and CanonicalHMAC are what lethe stores now.
	Canonical, CanonicalHMAC string
}

// StaleKeys reads, in tx, the rows of query (columns: id, group, key, HMAC),
// keys that versions of lethe stored as they were typed, and returns those
// whose key or HMAC differs from what lethe would store now, and how many
// keys the key column's type refuses now.
func (k *Kind) StaleKeys(ctx context.Context, tx pgx.Tx, query string, args ...any) (stale []StaleKey, invalid int, err error) {
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("error reading stored keys: %w", err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (StaleKey, error) {
		var sk StaleKey
		return sk, r.Scan(&sk.ID, &sk.Group, &sk.Key, &sk.HMAC)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("error reading stored keys: %w", err)
	}
	keys := make([]string, len(all))
	for i, sk := range all {
		keys[i] = sk.Key
	}
	canon, err := k.CanonicalKeysLenient(ctx, tx, keys)
	if err != nil {
		return nil, 0, err
	}
	for i, sk := range all {
		if canon[i] == "" {
			invalid++
			continue
		}
		sk.Canonical, sk.CanonicalHMAC = canon[i], k.HMAC(canon[i])
		if sk.Canonical != sk.Key || sk.CanonicalHMAC != sk.HMAC {
			stale = append(stale, sk)
		}
	}
	return stale, invalid, nil
}

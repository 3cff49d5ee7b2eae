package retention_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/retention"
)

// keyCase is one key type with several spellings of one subject.
type keyCase struct {
	typ       string   // the key column's type
	stored    string   // the key as inserted
	canonical string   // what lethe must call it
	spellings []string // other ways a caller may type it
	others    []string // keys of other subjects that look alike
	invalid   []string // not keys of this type at all
}

var keyCases = []keyCase{
	{typ: "bigint", stored: "111", canonical: "111",
		spellings: []string{"0111", "+111", " 111 ", "\t111\n", "00000111"},
		others:    []string{"1111", "-111"},
		invalid:   []string{"1.5", "111a", "1e3", "99999999999999999999"}},
	{typ: "numeric(10,2)", stored: "1.50", canonical: "1.5",
		spellings: []string{"1.5", "1.50", " +1.500 ", "01.5", "0.15e1"},
		others:    []string{"1.05", "15"},
		invalid:   []string{"one", "1,5"}},
	{typ: "uuid", stored: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", canonical: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		spellings: []string{"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
			"a0eebc999c0b4ef8bb6d6bb9bd380a11", "{A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11}"},
		others:  []string{"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12"},
		invalid: []string{"a0eebc99", "not-a-uuid"}},
	// A text key is the key itself: no trimming, no folding; composed and
	// decomposed forms are two subjects.
	{typ: "text", stored: "Zoë 111", canonical: "Zoë 111",
		spellings: []string{"Zoë 111"},
		others:    []string{" Zoë 111", "Zoë 111 ", "zoë 111", "Zoe\u0308 111", "0111"},
		invalid:   nil},
}

// setupKeys gives t a subject table whose key has type typ, one due subject
// stored under stored, and the request and hold services.
func setupKeys(t *testing.T, typ, stored string) *privacy {
	t.Helper()
	schema := fmt.Sprintf(`
CREATE SCHEMA k;
CREATE TABLE k.subjects (id %s PRIMARY KEY, status text NOT NULL, closed_at timestamptz);
CREATE TABLE k.notes (subject_id %s NOT NULL REFERENCES k.subjects (id), body text);
INSERT INTO k.subjects VALUES ('%s', 'closed', now() - interval '800 days');
INSERT INTO k.notes VALUES ('%s', 'a note');`, typ, typ, stored, stored)
	e := setup(t, withSQL(t, schema), `
subject:
  table: k.subjects
  key: id
  related:
    - table: k.notes
      join: subject_id = id
policies:
  - name: former
    where: "status = 'closed'"
    clock: closed_at
    retain: 730d
`)
	logger := slog.New(slog.NewTextHandler(e.logs, nil))
	return &privacy{env: e, q: &recorder{},
		requests: retention.NewRequests(e.db.Pool, e.plan, e.arch, logger),
		holds:    retention.NewHolds(e.db.Pool, e.plan, e.arch, logger),
		expirer:  retention.NewExpirer(e.db.Pool, e.plan, e.arch, logger),
	}
}

func (p *privacy) subjectRows(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, p.db.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM k.subjects) + (SELECT count(*) FROM k.notes)`).Scan(&n))
	return n
}

func TestEverySpellingOfAKeyIsOneSubject(t *testing.T) {
	t.Parallel()
	for _, kc := range keyCases {
		t.Run(kc.typ, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := setupKeys(t, kc.typ, kc.stored)
			all := append([]string{kc.stored, kc.canonical}, kc.spellings...)

			got, err := p.plan.CanonicalKeys(ctx, p.db.Pool, all)
			require.NoError(t, err)
			for i, k := range got {
				require.Equal(t, kc.canonical, k, "spelling %q", all[i])
			}
			others, err := p.plan.CanonicalKeys(ctx, p.db.Pool, kc.others)
			require.NoError(t, err)
			for i, k := range others {
				require.NotEqual(t, kc.canonical, k, "%q is another subject", kc.others[i])
			}
			for _, bad := range append([]string{"", "   ", "\t\n", "a\x00b", "\xff\xfe"}, kc.invalid...) {
				_, err := p.plan.CanonicalKey(ctx, p.db.Pool, bad)
				require.ErrorIs(t, err, retention.ErrBadInput, "%q is not a %s key", bad, kc.typ)
				if strings.TrimSpace(bad) != "" {
					require.NotContains(t, err.Error(), bad, "the error must not repeat what was typed")
				}
			}
			// With many keys, the error names the one at fault.
			many := append(append([]string{}, all...), "x\x00")
			_, err = p.plan.CanonicalKeys(ctx, p.db.Pool, many)
			require.ErrorContains(t, err, fmt.Sprintf("number %d of %d", len(many), len(many)))
			if len(kc.invalid) > 0 {
				many = append(append([]string{}, all...), kc.invalid[0], kc.stored)
				_, err = p.plan.CanonicalKeys(ctx, p.db.Pool, many)
				require.ErrorContains(t, err, fmt.Sprintf("number %d of %d", len(all)+1, len(many)))
			}
		})
	}
}

// A hold placed under any spelling blocks a request under any other, lookups
// under any spelling find it, and what lethe shows is the canonical form.
func TestAHoldUnderOneSpellingBlocksARequestUnderAnother(t *testing.T) {
	t.Parallel()
	for _, kc := range keyCases {
		t.Run(kc.typ, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := setupKeys(t, kc.typ, kc.stored)
			spellings := append([]string{kc.stored}, kc.spellings...)
			placeAs := spellings[len(spellings)-1]
			rows := p.subjectRows(t)

			placed, err := p.holds.Place(ctx, p.q, "M-1", []string{placeAs}, "litigation", "legal")
			require.NoError(t, err)
			require.Len(t, placed.Placed, 1)
			require.Equal(t, kc.canonical, placed.Placed[0].Subject)
			require.Equal(t, p.plan.Hasher().HMAC(kc.canonical), placed.Placed[0].SubjectHMAC)

			// Placing it again under every other spelling is one hold.
			again, err := p.holds.Place(ctx, p.q, "M-1", spellings, "litigation", "legal")
			require.NoError(t, err)
			require.Empty(t, again.Placed)
			require.Equal(t, 1, again.Already)

			for i, s := range spellings {
				list, err := p.holds.List(ctx, "", s)
				require.NoError(t, err)
				require.Len(t, list, 1, "hold list under %q", s)
				require.Equal(t, kc.canonical, list[0].Subject)

				req := p.submit(t, s, fmt.Sprintf("T-%d", i), true)
				require.Equal(t, kc.canonical, *req.Subject, "a request shows the canonical key")
				p.work(t)
				req = p.get(t, req.ID)
				require.Equal(t, retention.StateBlockedByHold, req.State, "request under %q", s)
				require.Equal(t, rows, p.subjectRows(t), "a held subject is never destroyed")
			}
			// Other subjects that look alike are not held.
			for _, o := range kc.others {
				list, err := p.holds.List(ctx, "", o)
				require.NoError(t, err)
				require.Empty(t, list, "%q is another subject", o)
			}

			// Released under yet another spelling, the requests resume and
			// erase the subject: what they erase is the stored row.
			rel, err := p.holds.Release(ctx, p.q, "M-1", []string{spellings[0]}, "legal")
			require.NoError(t, err)
			require.Equal(t, 1, rel.Released)
			require.Equal(t, len(spellings), rel.Resumed)
			p.work(t)
			require.Zero(t, p.subjectRows(t))
			list, err := p.requests.List(ctx, retention.StateCompleted, 100)
			require.NoError(t, err)
			require.Len(t, list, len(spellings))
			rc := receiptOf(t, list[len(list)-1])
			require.True(t, rc.Found, rc.Summary)
			require.Equal(t, map[string]int64{"k.subjects": 1, "k.notes": 1}, rc.RowsDeleted)
			var suppressed string
			require.NoError(t, p.db.Pool.QueryRow(ctx, `SELECT subject_hmac FROM lethe.suppression`).Scan(&suppressed))
			require.Equal(t, p.plan.Hasher().HMAC(kc.canonical), suppressed)
		})
	}
}

// An archived subject is named by its canonical key, so a request under
// another spelling finds and erases its archived copy.
func TestARequestUnderAnotherSpellingErasesTheArchivedCopy(t *testing.T) {
	t.Parallel()
	for _, kc := range keyCases {
		t.Run(kc.typ, func(t *testing.T) {
			t.Parallel()
			p := setupKeys(t, kc.typ, kc.stored)
			p.mustSweep(t)
			hmac := p.plan.Hasher().HMAC(kc.canonical)
			require.Contains(t, p.manifest(t), hmac, "archived under the canonical key")
			bundle := p.restore(t, kc.canonical)
			require.Len(t, bundle["k.notes"], 1)

			req := p.submit(t, kc.spellings[len(kc.spellings)-1], "T-1", false)
			p.work(t)
			rc := receiptOf(t, p.get(t, req.ID))
			require.True(t, rc.Found, rc.Summary)
			require.True(t, rc.ManifestEntryDeleted)
			require.NotContains(t, p.manifest(t), hmac)
		})
	}
}

// Rows an earlier version stored under the spelling a caller typed are made
// canonical; ended requests, whose key is gone, are reported.
func TestRepairKeysMakesStoredKeysCanonical(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := setupKeys(t, "bigint", "111")
	h := p.plan.Hasher()
	// As the earlier version stored them: the key as typed, hashed as typed.
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO lethe.hold (matter, subject_hmac, subject_key, reason, placed_by) VALUES
			('M-1', $1, '0111', 'litigation', 'legal'), ('M-1', $2, '111', 'litigation', 'legal'),
			('M-2', $3, ' +83 ', 'audit', 'legal')`, []any{h.HMAC("0111"), h.HMAC("111"), h.HMAC(" +83 ")}},
		{`INSERT INTO lethe.request (ticket, subject_hmac, subject_key, requested_by, state, reason, deadline) VALUES
			('T-1', $1, '00111', 'privacy', 'blocked_by_hold', 'held under matter M-9', now() + interval '45 days')`, []any{h.HMAC("00111")}},
		{`INSERT INTO lethe.request (ticket, subject_hmac, requested_by, state, deadline, completed_at, receipt) VALUES
			('T-2', $1, 'privacy', 'completed', now(), now(), '{"found": false}'),
			('T-3', $1, 'privacy', 'completed', now(), now(), '{"found": true}')`, []any{h.HMAC("anything")}},
	} {
		_, err := p.db.Pool.Exec(ctx, q.sql, q.args...)
		require.NoError(t, err)
	}

	rep, err := retention.RepairKeys(ctx, p.db.Pool, p.plan, p.q)
	require.NoError(t, err)
	require.Equal(t, 1, rep.Holds, "' +83 ' becomes 83")
	require.Equal(t, 1, rep.HoldsMerged, "0111 is the subject M-1 already holds as 111")
	require.Equal(t, 1, rep.Requests)
	require.Equal(t, 1, rep.Resumed, "it waited on a hold of another spelling")
	require.Equal(t, 2, rep.Unverifiable)
	require.Len(t, rep.FoundNothing, 1)

	list, err := p.holds.List(ctx, "", "111")
	require.NoError(t, err)
	require.Len(t, list, 1)
	list, err = p.holds.List(ctx, "M-2", "83")
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "83", list[0].Subject)

	req, err := p.requests.ByTicket(ctx, "T-1")
	require.NoError(t, err)
	require.Equal(t, "111", *req.Subject)
	require.Equal(t, h.HMAC("111"), req.SubjectHMAC)
	require.Equal(t, retention.StateReceived, req.State)
	// The request is queued again, and the canonical hold blocks it now.
	p.work(t)
	req, err = p.requests.ByTicket(ctx, "T-1")
	require.NoError(t, err)
	require.Equal(t, retention.StateBlockedByHold, req.State)
	require.Equal(t, 2, p.subjectRows(t))
	require.Contains(t, p.auditKinds(t), "key_repaired")
	p.requireAuditIntact(t)

	again, err := retention.RepairKeys(ctx, p.db.Pool, p.plan, p.q)
	require.NoError(t, err)
	require.False(t, again.Changed(), "a second repair finds nothing to do")
}

func TestCompileRefusesKeysWithoutOneTextForm(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{"double precision", "real", "timestamptz", "citext_like"} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			col := typ
			prep := ""
			if typ == "citext_like" {
				// A nondeterministic collation makes different text equal.
				prep = `CREATE COLLATION k.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);`
				col = "text COLLATE k.ci"
			}
			ctx := context.Background()
			db := testenv.NewDB(t)
			_, err := db.Pool.Exec(ctx, fmt.Sprintf(`CREATE SCHEMA k; %s CREATE TABLE k.subjects (id %s PRIMARY KEY, closed_at timestamptz);`, prep, col))
			require.NoError(t, err)
			fragment := `
subject:
  table: k.subjects
  key: id
policies:
  - name: p
    clock: closed_at
    retain: 1d
`
			cfg := testenv.Config(t, db, testenv.NewBucket(t), testenv.NewIdentity(t).Recipient().String(), fragment)
			_, err = retention.Compile(ctx, db.Pool, cfg)
			require.Error(t, err)
			require.True(t, config.IsConfigError(err), "want a config error, got %v", err)
			require.ErrorContains(t, err, "subject.key:")
		})
	}
}

package request_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/internal/lethetest"
	"github.com/lethehq/lethe/request"
)

// An archived subject is named by its canonical key, so a request under
// another spelling finds and erases its archived copy.
func TestARequestUnderAnotherSpellingErasesTheArchivedCopy(t *testing.T) {
	t.Parallel()
	for _, kc := range lethetest.KeyCases {
		t.Run(kc.Type, func(t *testing.T) {
			t.Parallel()
			p := lethetest.NewKeys(t, kc.Type, kc.Stored)
			p.MustSweep(t)
			hmac := p.Plan.HMAC(kc.Canonical)
			require.Contains(t, p.Manifest(t), hmac, "archived under the canonical key")
			bundle := p.Restore(t, kc.Canonical)
			require.Len(t, bundle["k.notes"], 1)

			req := p.Submit(t, kc.Spellings[len(kc.Spellings)-1], "T-1", false)
			p.Work(t)
			rc := lethetest.ReceiptOf(t, p.Get(t, req.ID))
			require.True(t, rc.Found, rc.Summary)
			require.True(t, rc.ManifestEntryDeleted)
			require.NotContains(t, p.Manifest(t), hmac)
		})
	}
}

// Rows an earlier version stored under the spelling a caller typed are made
// canonical; ended requests, whose key is gone, are reported.
func TestRepairKeysMakesStoredKeysCanonical(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := lethetest.NewKeys(t, "bigint", "111")
	h := p.Plan.Hasher()
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
		_, err := p.DB.Pool.Exec(ctx, q.sql, q.args...)
		require.NoError(t, err)
	}

	repair := func() (*hold.KeyRepair, *request.KeyRepair) {
		var hr *hold.KeyRepair
		var rr *request.KeyRepair
		require.NoError(t, pgx.BeginFunc(ctx, p.DB.Pool, func(tx pgx.Tx) error {
			var err error
			if hr, err = hold.RepairKeys(ctx, tx, p.Plan, p.Queue); err != nil {
				return err
			}
			rr, err = request.RepairKeys(ctx, tx, p.Plan, p.Queue)
			return err
		}))
		return hr, rr
	}
	hr, rr := repair()
	require.Equal(t, 1, hr.Rewritten, "' +83 ' becomes 83")
	require.Equal(t, 1, hr.Merged, "0111 is the subject M-1 already holds as 111")
	require.Equal(t, 1, rr.Rewritten)
	require.Equal(t, 1, rr.Resumed, "it waited on a hold of another spelling")
	require.Equal(t, 2, rr.Unverifiable)
	require.Len(t, rr.FoundNothing, 1)

	list, err := p.Holds.List(ctx, "", "111")
	require.NoError(t, err)
	require.Len(t, list, 1)
	list, err = p.Holds.List(ctx, "M-2", "83")
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "83", list[0].Subject)

	req, err := p.Intake.ByTicket(ctx, "T-1")
	require.NoError(t, err)
	require.Equal(t, "111", *req.Subject)
	require.Equal(t, h.HMAC("111"), req.SubjectHMAC)
	require.Equal(t, request.StateReceived, req.State)
	// The request is queued again, and the canonical hold blocks it now.
	p.Work(t)
	req, err = p.Intake.ByTicket(ctx, "T-1")
	require.NoError(t, err)
	require.Equal(t, request.StateBlockedByHold, req.State)
	require.Equal(t, 2, p.SubjectRows(t))
	require.Contains(t, p.AuditKinds(t), "key_repaired")
	p.RequireAuditIntact(t)

	hr, rr = repair()
	require.Zero(t, hr.Rewritten+hr.Merged+rr.Rewritten, "a second repair finds nothing to do")
}

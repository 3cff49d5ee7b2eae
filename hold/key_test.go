package hold_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/lethetest"
	"github.com/lethehq/lethe/request"
)

// A hold placed under any spelling blocks a request under any other, lookups
// under any spelling find it, and what lethe shows is the canonical form.
func TestAHoldUnderOneSpellingBlocksARequestUnderAnother(t *testing.T) {
	t.Parallel()
	for _, kc := range lethetest.KeyCases {
		t.Run(kc.Type, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := lethetest.NewKeys(t, kc.Type, kc.Stored)
			spellings := append([]string{kc.Stored}, kc.Spellings...)
			placeAs := spellings[len(spellings)-1]
			rows := p.SubjectRows(t)

			placed, err := p.Holds.Place(ctx, "M-1", []string{placeAs}, "litigation", "legal")
			require.NoError(t, err)
			require.Len(t, placed.Placed, 1)
			require.Equal(t, kc.Canonical, placed.Placed[0].Subject)
			require.Equal(t, p.Plan.HMAC(kc.Canonical), placed.Placed[0].SubjectHMAC)

			// Placing it again under every other spelling is one hold.
			again, err := p.Holds.Place(ctx, "M-1", spellings, "litigation", "legal")
			require.NoError(t, err)
			require.Empty(t, again.Placed)
			require.Equal(t, 1, again.Already)

			for i, s := range spellings {
				list, err := p.Holds.List(ctx, "", s)
				require.NoError(t, err)
				require.Len(t, list, 1, "hold list under %q", s)
				require.Equal(t, kc.Canonical, list[0].Subject)

				req := p.Submit(t, s, fmt.Sprintf("T-%d", i), true)
				require.Equal(t, kc.Canonical, *req.Subject, "a request shows the canonical key")
				p.Work(t)
				req = p.Get(t, req.ID)
				require.Equal(t, request.StateBlockedByHold, req.State, "request under %q", s)
				require.Equal(t, rows, p.SubjectRows(t), "a held subject is never destroyed")
			}
			// Other subjects that look alike are not held.
			for _, o := range kc.Others {
				list, err := p.Holds.List(ctx, "", o)
				require.NoError(t, err)
				require.Empty(t, list, "%q is another subject", o)
			}

			// Released under yet another spelling, the requests resume and
			// erase the subject: what they erase is the stored row.
			rel, err := p.Holds.Release(ctx, "M-1", []string{spellings[0]}, "legal")
			require.NoError(t, err)
			require.Equal(t, 1, rel.Released)
			require.Equal(t, len(spellings), rel.Resumed)
			p.Work(t)
			require.Zero(t, p.SubjectRows(t))
			list, err := p.Intake.List(ctx, request.StateCompleted, 100)
			require.NoError(t, err)
			require.Len(t, list, len(spellings))
			rc := lethetest.ReceiptOf(t, list[len(list)-1])
			require.True(t, rc.Found, rc.Summary)
			require.Equal(t, map[string]int64{"k.subjects": 1, "k.notes": 1}, rc.RowsDeleted)
			var suppressed string
			require.NoError(t, p.DB.Pool.QueryRow(ctx, `SELECT subject_hmac FROM lethe.suppression`).Scan(&suppressed))
			require.Equal(t, p.Plan.HMAC(kc.Canonical), suppressed)
		})
	}
}

package hold_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/internal/lethetest"
	"github.com/lethehq/lethe/request"
	"github.com/lethehq/lethe/retention"
)

func TestHeldSubjectIsNeverDestroyed(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := p.SeedCRM(t, 3)
	p.MustSweep(t)
	held := groups["due"][0]
	free := groups["due"][1]
	version := p.ObjectVersions(t, held)[0]

	// Placing the hold locks the archived object, through the sync job. A
	// subject named twice is held once.
	res, err := p.Holds.Place(ctx, "Doe v. Carrier", []string{held, held}, "litigation", "legal")
	require.NoError(t, err)
	require.Len(t, res.Placed, 1)
	require.Zero(t, res.Already)
	p.Work(t)
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, p.LegalHold(t, held, version))
	// The lock is real: the worker's own credentials cannot delete it.
	_, err = p.Bucket.Server.Client(p.Bucket.Server.Writer).DeleteObject(ctx, &s3.DeleteObjectInput{
		Bucket: aws.String(p.Bucket.Name), Key: aws.String(p.Arch.ObjectKey(p.Plan.HMAC(held))), VersionId: aws.String(version)})
	require.Error(t, err, "deleting a held version must be refused")

	// A deletion request waits.
	r := p.Submit(t, held, "T-1", false)
	p.Work(t)
	require.Equal(t, request.StateBlockedByHold, p.Get(t, r.ID).State)
	require.Contains(t, *p.Get(t, r.ID).Reason, "Doe v. Carrier")
	require.Equal(t, []string{version}, p.ObjectVersions(t, held))

	// Archive expiry skips it, and expires the unheld copy.
	p.Expirer.Now = func() time.Time { return time.Now().Add(8 * 365 * 24 * time.Hour) }
	exp, err := p.Expirer.Expire(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, exp.Held)
	require.Equal(t, len(groups["due"])-1, exp.Expired)
	require.Equal(t, []string{version}, p.ObjectVersions(t, held))
	require.Empty(t, p.ObjectVersions(t, free))
	require.NotContains(t, p.Manifest(t), p.Plan.HMAC(free))
	require.Equal(t, len(groups["due"])-1, p.AuditKinds(t)[audit.KindExpire])

	// A then: delete policy skips a held subject.
	spam := groups["spam"][0]
	_, err = p.Holds.Place(ctx, "Spam probe", []string{spam}, "investigation", "legal")
	require.NoError(t, err)
	_, err = p.DB.Pool.Exec(ctx, lethetest.CRMInsertSpam, spam)
	require.NoError(t, err)
	p.MustSweep(t)
	require.Contains(t, p.CRMSnapshot(t), spam)

	// Overlapping holds: releasing one matter leaves the other.
	_, err = p.Holds.Place(ctx, "Second matter", []string{held}, "another", "legal")
	require.NoError(t, err)
	rel, err := p.Holds.Release(ctx, "Doe v. Carrier", nil, "legal")
	require.NoError(t, err)
	require.Equal(t, 1, rel.Released)
	require.Zero(t, rel.Freed)
	require.Zero(t, rel.Resumed)
	p.Work(t)
	require.Equal(t, request.StateBlockedByHold, p.Get(t, r.ID).State)
	require.Equal(t, "held under matter Second matter", *p.Get(t, r.ID).Reason, "the reason names the matters left")
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, p.LegalHold(t, held, version))

	// Bad releases change nothing.
	_, err = p.Holds.Release(ctx, "No such matter", nil, "legal")
	require.ErrorIs(t, err, hold.ErrNoSuchMatter)
	_, err = p.Holds.Release(ctx, "Second matter", []string{free}, "legal")
	require.ErrorIs(t, err, hold.ErrNotHeld)
	holds, err := p.Holds.List(ctx, "", "")
	require.NoError(t, err)
	require.Len(t, holds, 2)

	// Releasing the last hold unlocks the object and the request resumes
	// by itself.
	rel, err = p.Holds.Release(ctx, "Second matter", []string{held}, "legal")
	require.NoError(t, err)
	require.Equal(t, 1, rel.Freed)
	require.Equal(t, 1, rel.Resumed)
	require.Equal(t, []int64{r.ID}, p.Queue.Requests)
	p.Work(t)
	done := p.Get(t, r.ID)
	require.Equal(t, request.StateCompleted, done.State)
	require.Empty(t, p.ObjectVersions(t, held))
	rc := lethetest.ReceiptOf(t, done)
	require.Len(t, rc.ObjectVersionsDeleted, 1)
	require.True(t, rc.ManifestEntryDeleted)
	kinds := p.AuditKinds(t)
	require.Equal(t, 3, kinds[audit.KindHoldPlaced])
	require.Equal(t, 2, kinds[audit.KindHoldReleased])
	require.Equal(t, 1, kinds[audit.KindRequestBlocked])
	require.Equal(t, 1, kinds[audit.KindRequestResumed])
	p.RequireAuditIntact(t)
}

func TestHoldPlacedBeforeTheSubjectExistsLocksItsArchive(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	key := `future O'Neil "x"`
	_, err := p.Holds.Place(ctx, "Early matter", []string{key}, "preservation notice", "legal")
	require.NoError(t, err)
	p.Work(t) // the sync finds nothing to lock yet
	_, err = p.DB.Pool.Exec(ctx, `INSERT INTO crm.customers (code, status, closed_at, created_at) VALUES ($1, 'closed', now() - interval '800 days', now() - interval '3000 days')`, key)
	require.NoError(t, err)
	p.MustSweep(t) // archiving still moves a held subject
	vs := p.ObjectVersions(t, key)
	require.Len(t, vs, 1)
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, p.LegalHold(t, key, vs[0]))
	holds, err := p.Holds.List(ctx, "", key)
	require.NoError(t, err)
	require.Len(t, holds, 1)
	require.Equal(t, key, holds[0].Subject)
}

func TestHoldPlacedAfterTheClaimStillSavesTheSubject(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := p.SeedCRM(t, 3)
	run, err := p.Sweeper.StartRun(ctx, retention.TriggerCLI, 0)
	require.NoError(t, err)
	_, err = p.Sweeper.Sweep(ctx, run, p.Queue)
	require.NoError(t, err)
	spam := groups["spam"][1]
	_, err = p.Holds.Place(ctx, "Late matter", []string{spam}, "late", "legal")
	require.NoError(t, err)
	p.Work(t)
	hot := p.CRMSnapshot(t)
	require.Contains(t, hot, spam, "a held subject must survive its then: delete batch")
	for _, k := range groups["spam"] {
		if k != spam {
			require.NotContains(t, hot, k)
		}
	}
	var held int
	require.NoError(t, p.DB.Pool.QueryRow(ctx, `SELECT sum(held) FROM lethe.batch WHERE run_id = $1`, run).Scan(&held))
	require.Equal(t, 1, held)
}

// A hold placed under any spelling blocks a request under any other, lookups
// under any spelling find it, and what lethe shows is the canonical form.
func TestAHoldUnderOneSpellingBlocksARequestUnderAnother(t *testing.T) {
	lethetest.EachKeyCase(t, func(t *testing.T, kc lethetest.KeyCase, p *lethetest.Env) {
		ctx := context.Background()
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

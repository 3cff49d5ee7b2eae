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
	entry := p.Locate(t, held)
	require.Equal(t, entry.Segment, p.Locate(t, free).Segment, "one batch, one segment")
	segment, version := entry.Segment, entry.VersionID
	require.Equal(t, types.ObjectLockLegalHoldStatusOff, p.LegalHold(t, segment, version))

	// Placing the hold locks the segment holding the subject's part,
	// through the sync job. A subject named twice is held once.
	res, err := p.Holds.Place(ctx, "", "Doe v. Carrier", []string{held, held}, "litigation", "legal")
	require.NoError(t, err)
	require.Len(t, res.Placed, 1)
	require.Zero(t, res.Already)
	p.Work(t)
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, p.LegalHold(t, segment, version))
	// The lock is real: not even the bucket's owner can delete the segment.
	_, err = p.Root.DeleteObject(ctx, &s3.DeleteObjectInput{
		Bucket: aws.String(p.Bucket.Name), Key: aws.String(segment), VersionId: aws.String(version)})
	require.Error(t, err, "deleting a held segment must be refused")

	// A deletion request waits.
	r := p.Submit(t, held, "T-1", false)
	p.Work(t)
	require.Equal(t, request.StateBlockedByHold, p.Get(t, r.ID).State)
	require.Contains(t, *p.Get(t, r.ID).Reason, "Doe v. Carrier")
	require.NotNil(t, p.Locate(t, held).WrappedKey, "its key is kept")

	// Archive expiry keeps its key, and destroys the unheld copies' keys.
	p.Expirer.Now = func() time.Time { return time.Now().Add(8 * 365 * 24 * time.Hour) }
	exp, err := p.Expirer.Expire(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, exp.Held)
	require.Equal(t, len(groups["due"])-1, exp.Expired)
	require.Equal(t, retention.CopyArchived, p.Locate(t, held).State)
	p.Restore(t, held)
	require.Equal(t, retention.CopyExpired, p.Locate(t, free).State)
	require.Nil(t, p.Locate(t, free).WrappedKey)
	_, err = p.TryRestore(free)
	require.Error(t, err)
	require.Equal(t, len(groups["due"])-1, p.AuditKinds(t)[audit.KindExpire])
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, p.LegalHold(t, segment, version), "a held subject's part is still in it")

	// A then: delete policy skips a held subject.
	spam := groups["spam"][0]
	_, err = p.Holds.Place(ctx, "", "Spam probe", []string{spam}, "investigation", "legal")
	require.NoError(t, err)
	_, err = p.DB.Pool.Exec(ctx, lethetest.CRMInsertSpam, spam)
	require.NoError(t, err)
	p.MustSweep(t)
	require.Contains(t, p.CRMSnapshot(t), spam)

	// Overlapping holds: releasing one matter leaves the other.
	_, err = p.Holds.Place(ctx, "", "Second matter", []string{held}, "another", "legal")
	require.NoError(t, err)
	rel, err := p.Holds.Release(ctx, "", "Doe v. Carrier", nil, "legal")
	require.NoError(t, err)
	require.Equal(t, 1, rel.Released)
	require.Zero(t, rel.Freed)
	require.Zero(t, rel.Resumed)
	p.Work(t)
	require.Equal(t, request.StateBlockedByHold, p.Get(t, r.ID).State)
	require.Equal(t, "held under matter Second matter", *p.Get(t, r.ID).Reason, "the reason names the matters left")
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, p.LegalHold(t, segment, version))

	// Bad releases change nothing.
	_, err = p.Holds.Release(ctx, "", "No such matter", nil, "legal")
	require.ErrorIs(t, err, hold.ErrNoSuchMatter)
	_, err = p.Holds.Release(ctx, "", "Second matter", []string{free}, "legal")
	require.ErrorIs(t, err, hold.ErrNotHeld)
	holds, err := p.Holds.List(ctx, "", "", "")
	require.NoError(t, err)
	require.Len(t, holds, 2)

	// Releasing the last hold unlocks the segment and the request resumes
	// by itself.
	rel, err = p.Holds.Release(ctx, "", "Second matter", []string{held}, "legal")
	require.NoError(t, err)
	require.Equal(t, 1, rel.Freed)
	require.Equal(t, 1, rel.Resumed)
	require.Equal(t, []int64{r.ID}, p.Queue.Requests)
	p.Work(t)
	done := p.Get(t, r.ID)
	require.Equal(t, request.StateCompleted, done.State)
	require.Equal(t, retention.CopyErased, p.Locate(t, held).State)
	require.Equal(t, types.ObjectLockLegalHoldStatusOff, p.LegalHold(t, segment, version))
	rc := lethetest.ReceiptOf(t, done)
	require.Equal(t, []request.PartRef{{Segment: segment, VersionID: version}}, rc.PartsMadeUnreadable)
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
	_, err := p.Holds.Place(ctx, "", "Early matter", []string{key}, "preservation notice", "legal")
	require.NoError(t, err)
	p.Work(t) // the sync finds nothing to lock yet
	_, err = p.DB.Pool.Exec(ctx, `INSERT INTO crm.customers (code, status, closed_at, created_at) VALUES ($1, 'closed', now() - interval '800 days', now() - interval '3000 days')`, key)
	require.NoError(t, err)
	p.MustSweep(t) // archiving still moves a held subject
	require.Equal(t, retention.CopyArchived, p.Locate(t, key).State)
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, p.SubjectLegalHold(t, key), "the segment is put under a legal hold")
	holds, err := p.Holds.List(ctx, "", "", key)
	require.NoError(t, err)
	require.Len(t, holds, 1)
	require.Equal(t, key, holds[0].Subject)
}

// A held subject archived again keeps its older copy's key until the hold
// is released; the segments of both stay under a legal hold meanwhile.
func TestReArchivingAHeldSubjectKeepsItsOlderKey(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := p.SeedCRM(t, 2)
	p.MustSweep(t)
	key := groups["due"][0]
	first := p.Locate(t, key)
	_, err := p.Holds.Place(ctx, "", "M-1", []string{key}, "litigation", "legal")
	require.NoError(t, err)
	p.Work(t)

	// The customer reappears, closed long ago, and is archived again.
	_, err = p.DB.Pool.Exec(ctx, `INSERT INTO crm.customers (code, status, closed_at, created_at)
		VALUES ($1, 'closed', now() - interval '800 days', now() - interval '3000 days')`, key)
	require.NoError(t, err)
	p.MustSweep(t)
	p.Work(t)
	second := p.Locate(t, key)
	require.NotEqual(t, first.Segment, second.Segment)
	require.Equal(t, retention.CopyArchived, second.State)
	var state string
	var kept bool
	require.NoError(t, p.DB.Pool.QueryRow(ctx, `SELECT state, wrapped_key IS NOT NULL FROM lethe.manifest WHERE id = $1`, first.ID).Scan(&state, &kept))
	require.Equal(t, retention.CopySuperseded, state)
	require.True(t, kept, "a held subject's older key is kept")
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, p.LegalHold(t, second.Segment, second.VersionID))
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, p.LegalHold(t, first.Segment, first.VersionID))

	// Released, the older key goes and the segments are unlocked.
	_, err = p.Holds.Release(ctx, "", "M-1", nil, "legal")
	require.NoError(t, err)
	p.Work(t)
	require.NoError(t, p.DB.Pool.QueryRow(ctx, `SELECT state, wrapped_key IS NOT NULL FROM lethe.manifest WHERE id = $1`, first.ID).Scan(&state, &kept))
	require.Equal(t, retention.CopySuperseded, state)
	require.False(t, kept, "the release destroys the superseded key")
	require.Equal(t, types.ObjectLockLegalHoldStatusOff, p.LegalHold(t, first.Segment, first.VersionID))
	require.Equal(t, types.ObjectLockLegalHoldStatusOff, p.LegalHold(t, second.Segment, second.VersionID))
	p.Restore(t, key)
	require.Equal(t, 1, p.AuditKinds(t)[audit.KindKeyDestroyed])
	p.RequireAuditIntact(t)
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
	_, err = p.Holds.Place(ctx, "", "Late matter", []string{spam}, "late", "legal")
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

		placed, err := p.Holds.Place(ctx, "", "M-1", []string{placeAs}, "litigation", "legal")
		require.NoError(t, err)
		require.Len(t, placed.Placed, 1)
		require.Equal(t, kc.Canonical, placed.Placed[0].Subject)
		require.Equal(t, p.Kind.HMAC(kc.Canonical), placed.Placed[0].SubjectHMAC)

		// Placing it again under every other spelling is one hold.
		again, err := p.Holds.Place(ctx, "", "M-1", spellings, "litigation", "legal")
		require.NoError(t, err)
		require.Empty(t, again.Placed)
		require.Equal(t, 1, again.Already)

		for i, s := range spellings {
			list, err := p.Holds.List(ctx, "", "", s)
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
			list, err := p.Holds.List(ctx, "", "", o)
			require.NoError(t, err)
			require.Empty(t, list, "%q is another subject", o)
		}

		// Released under yet another spelling, the requests resume and
		// erase the subject: what they erase is the stored row.
		rel, err := p.Holds.Release(ctx, "", "M-1", []string{spellings[0]}, "legal")
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
		require.Equal(t, p.Kind.HMAC(kc.Canonical), suppressed)
	})
}

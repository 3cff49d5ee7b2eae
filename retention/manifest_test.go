package retention_test

import (
	"context"
	"testing"

	"filippo.io/age"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/internal/lethetest"
	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/retention"
)

// A subject archived again replaces its older copy, whose key is destroyed
// in the same transaction: one live copy per subject.
func TestReArchivingDestroysTheOlderKey(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	e := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := e.SeedCRM(t, 2)
	e.MustSweep(t)
	key := groups["due"][0]
	first := e.Locate(t, key)

	_, err := e.DB.Pool.Exec(ctx, `INSERT INTO crm.customers (code, status, closed_at, created_at)
		VALUES ($1, 'closed', now() - interval '800 days', now() - interval '3000 days')`, key)
	require.NoError(t, err)
	_, err = e.DB.Pool.Exec(ctx, `INSERT INTO crm.notes (customer_code, body) VALUES ($1, 'came back')`, key)
	require.NoError(t, err)
	e.MustSweep(t)

	second := e.Locate(t, key)
	require.NotEqual(t, first.ID, second.ID)
	require.NotEqual(t, first.Segment, second.Segment)
	require.Equal(t, retention.CopyArchived, second.State)
	notes := e.Restore(t, key)["crm.notes"]
	require.Len(t, notes, 1, "the new copy holds the rows it came back with")
	require.Contains(t, notes[0], "came back")

	entries, err := retention.Entries(ctx, e.DB.Pool, 0, 100, false)
	require.NoError(t, err)
	var older *retention.Entry
	for i := range entries {
		if entries[i].ID == first.ID {
			older = &entries[i]
		}
	}
	require.NotNil(t, older)
	require.Equal(t, retention.CopySuperseded, older.State)
	require.Nil(t, older.WrappedKey, "the older copy's key is destroyed")
	require.Equal(t, "superseded", *older.DestroyedBy)
	require.Equal(t, 1, e.AuditKinds(t)[audit.KindKeyDestroyed])
	require.Equal(t, 1, e.Count(t, `SELECT count(*) FROM lethe.manifest WHERE subject_hmac = $1 AND wrapped_key IS NOT NULL`, e.Kind.HMAC(key)))
	e.RequireNothingUnnamedReadable(t)
	e.RequireAuditIntact(t)
}

func TestVerifyDrill(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	e := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := e.SeedCRM(t, 6)
	e.Sweeper.BatchSize = 4
	e.MustSweep(t)
	srv := e.Bucket.Server
	reader := archive.NewRestorer(srv.Client(srv.Reader), e.Bucket.Name)
	masters := []age.Identity{e.Identity}

	res, err := e.Plan.Verify(ctx, e.DB.Pool, reader, masters, 0, nil)
	require.NoError(t, err)
	require.Equal(t, 6, res.Live)
	require.Equal(t, 6, res.Checked)
	require.Equal(t, 6, res.OK)
	require.Equal(t, 2, res.Segments)
	require.Empty(t, res.Failed)

	res, err = e.Plan.Verify(ctx, e.DB.Pool, reader, masters, 2, nil)
	require.NoError(t, err)
	require.Equal(t, 2, res.Checked)
	require.Equal(t, 2, res.OK)

	// A part that is not what the manifest says fails, and only it.
	bad := groups["due"][2]
	_, err = e.DB.Pool.Exec(ctx, `UPDATE lethe.manifest SET part_offset = part_offset + 1 WHERE subject_hmac = $1`, e.Kind.HMAC(bad))
	require.NoError(t, err)
	res, err = e.Plan.Verify(ctx, e.DB.Pool, reader, masters, 0, nil)
	require.NoError(t, err)
	require.Equal(t, 5, res.OK)
	require.Len(t, res.Failed, 1)
	require.Equal(t, e.Kind.HMAC(bad), res.Failed[0].SubjectHMAC)
	require.Contains(t, res.Failed[0].Error, "SHA-256")

	// Erased copies are not read.
	erased := groups["due"][3]
	e.Submit(t, erased, "T-1", false)
	e.Work(t)
	res, err = e.Plan.Verify(ctx, e.DB.Pool, reader, masters, 0, nil)
	require.NoError(t, err)
	require.Equal(t, 5, res.Live)
	require.Equal(t, 5, res.Checked)

	// An identity that opens nothing stops the drill, reading nothing.
	_, err = e.Plan.Verify(ctx, e.DB.Pool, reader, []age.Identity{testenv.NewIdentity(t)}, 0, nil)
	require.ErrorIs(t, err, archive.ErrWrongIdentity)
	// So do credentials the bucket refuses: the worker's.
	writer := archive.NewRestorer(srv.Client(srv.Writer), e.Bucket.Name)
	_, err = e.Plan.Verify(ctx, e.DB.Pool, writer, masters, 0, nil)
	require.ErrorIs(t, err, archive.ErrAccessDenied)
	require.Equal(t, 4, e.AuditKinds(t)[audit.KindArchiveVerified], "each drill that ran to its end is audited")
}

func TestRewrapRotatesMasterKeys(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	e := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := e.SeedCRM(t, 5)
	e.MustSweep(t)
	bucket := e.Versions(t)
	next := testenv.NewIdentity(t)
	nextFP := archive.MastersFingerprint([]string{next.Recipient().String()})
	oldFP := archive.MastersFingerprint([]string{e.Identity.Recipient().String()})
	require.Equal(t, 5, e.Count(t, `SELECT count(*) FROM lethe.manifest WHERE wrapped_to = $1`, oldFP), "new keys record their masters")
	masters := []age.Recipient{next.Recipient()}

	// An identity that opens none of the keys changes nothing.
	stranger := testenv.NewIdentity(t)
	res, err := retention.Rewrap(ctx, e.DB.Pool, []age.Identity{stranger}, masters, nextFP, 2, nil)
	require.ErrorIs(t, err, retention.ErrNoKeyOpened)
	require.Zero(t, res.Rewrapped)
	require.Equal(t, 5, res.Unopened)
	require.Equal(t, 5, e.Count(t, `SELECT count(*) FROM lethe.manifest WHERE wrapped_to = $1`, oldFP))

	// Interrupted after its first page, it resumes where it stopped.
	cctx, cancel := context.WithCancel(ctx)
	res, err = retention.Rewrap(cctx, e.DB.Pool, []age.Identity{e.Identity}, masters, nextFP, 2, func(r retention.RewrapResult) {
		if r.Rewrapped >= 2 {
			cancel()
		}
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 2, res.Rewrapped)
	require.Equal(t, 2, e.Count(t, `SELECT count(*) FROM lethe.manifest WHERE wrapped_to = $1`, nextFP))
	var pages []retention.RewrapResult
	res, err = retention.Rewrap(ctx, e.DB.Pool, []age.Identity{e.Identity}, masters, nextFP, 2, func(r retention.RewrapResult) { pages = append(pages, r) })
	require.NoError(t, err)
	require.Equal(t, 3, res.Rewrapped)
	require.Zero(t, res.Left)
	require.Len(t, pages, 2, "progress after each page")

	// The new master opens every key, the old one none; no object changed.
	srv := e.Bucket.Server
	reader := archive.NewRestorer(srv.Client(srv.Reader), e.Bucket.Name)
	for _, k := range groups["due"] {
		loc := e.Locate(t, k).Location()
		_, err := reader.Restore(ctx, loc, k, e.Kind.Tables(), []age.Identity{next})
		require.NoError(t, err)
		_, err = reader.Restore(ctx, loc, k, e.Kind.Tables(), []age.Identity{e.Identity})
		require.ErrorIs(t, err, archive.ErrWrongIdentity)
	}
	require.Equal(t, bucket, e.Versions(t))

	// Nothing left to do is not an error.
	res, err = retention.Rewrap(ctx, e.DB.Pool, []age.Identity{stranger}, masters, nextFP, 2, nil)
	require.NoError(t, err)
	require.Zero(t, res.Rewrapped+res.Unopened+res.Left)
	require.Equal(t, 3, e.AuditKinds(t)[audit.KindKeysRewrapped], "one entry per page rewrapped")
	e.RequireAuditIntact(t)
}

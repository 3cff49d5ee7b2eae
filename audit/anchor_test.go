package audit

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/internal/testenv"
)

// anchorBundle is a database and a bucket, and an Anchorer over both with
// the worker's credentials.
type anchorBundle struct {
	*testBundle
	bucket   *testenv.Bucket
	store    *archive.Archiver
	anchorer *Anchorer
}

func setupAnchors(t *testing.T) *anchorBundle {
	t.Helper()
	b := &anchorBundle{testBundle: setup(t), bucket: testenv.NewBucket(t)}
	b.store = b.storeOn(b.bucket)
	b.anchorer = &Anchorer{Pool: b.pool, Store: b.store, LockMode: archive.LockGovernance, Retain: 24 * time.Hour,
		Logger: slog.New(slog.DiscardHandler)}
	return b
}

func (b *anchorBundle) storeOn(bucket *testenv.Bucket) *archive.Archiver {
	srv := bucket.Server
	return archive.NewArchiver(srv.Client(srv.Writer), bucket.Name, "v1/", []age.Recipient{})
}

func hmacOf(i int) string { return fmt.Sprintf("%064x", 0xabc0000+i) }

// history appends what a day of work leaves: archives, erasures (on
// request, and of a subject that reappeared), an expiry, a hold.
func (b *anchorBundle) history(t *testing.T, from int) (erased, expired []string) {
	t.Helper()
	b.appendTx(t,
		Entry{Kind: KindArchive, Actor: "lethe", SubjectHMAC: hmacOf(from), Detail: map[string]any{"policy": "former"}},
		Entry{Kind: KindRequestCompleted, Actor: "lethe", SubjectHMAC: hmacOf(from + 1), Detail: map[string]any{"request_id": from}},
		Entry{Kind: KindSuppressed, Actor: "lethe", SubjectHMAC: hmacOf(from + 2)},
		Entry{Kind: KindExpire, Actor: "lethe", SubjectHMAC: hmacOf(from + 3)},
		Entry{Kind: KindHoldPlaced, Actor: "legal", SubjectHMAC: hmacOf(from + 4)},
		Entry{Kind: KindRequestCompleted, Actor: "lethe", SubjectHMAC: hmacOf(from + 1), Detail: map[string]any{"request_id": from + 1}},
	)
	return []string{hmacOf(from + 1), hmacOf(from + 2)}, []string{hmacOf(from + 3)}
}

func (b *anchorBundle) head(t *testing.T) (int64, string) {
	t.Helper()
	var seq int64
	var h []byte
	require.NoError(t, b.pool.QueryRow(t.Context(), `SELECT seq, hash FROM lethe.audit_head WHERE id`).Scan(&seq, &h))
	return seq, hex.EncodeToString(h)
}

// rootGet reads an object as the bucket's owner.
func (b *anchorBundle) rootGet(t *testing.T, name string) []byte {
	t.Helper()
	out, err := b.bucket.Server.Client(b.bucket.Server.Root).GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(b.bucket.Name), Key: aws.String(name)})
	require.NoError(t, err)
	defer out.Body.Close()
	body, err := io.ReadAll(out.Body)
	require.NoError(t, err)
	return body
}

func TestAnchors(t *testing.T) {
	t.Parallel()
	b := setupAnchors(t)
	ctx := t.Context()

	// A fresh bucket: no anchor, and that is fine.
	st, err := CheckLedger(ctx, b.pool, b.store)
	require.NoError(t, err)
	require.True(t, st.OK)
	require.Nil(t, st.Head)
	res, err := VerifyAnchors(ctx, b.pool, b.store)
	require.NoError(t, err)
	require.True(t, res.OK)
	require.Zero(t, res.Anchors)

	erased, expired := b.history(t, 1)
	seq, hash := b.head(t)
	first, err := b.anchorer.Anchor(ctx)
	require.NoError(t, err)
	require.NotNil(t, first)
	require.Equal(t, seq, first.Seq)
	require.Equal(t, hash, first.Hash)
	require.Nil(t, first.Previous)
	require.Equal(t, erased, first.Erased)
	require.Equal(t, expired, first.Expired)
	require.Equal(t, AnchorFormat, first.Format)

	// The anchor and head.json are in the bucket, the same JSON, locked.
	name := fmt.Sprintf("v1/ledger/%020d.json", seq)
	require.Equal(t, name, AnchorName(b.store.LedgerPrefix(), seq))
	body := b.rootGet(t, name)
	require.JSONEq(t, string(body), string(b.rootGet(t, "v1/ledger/head.json")))
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &raw))
	for _, k := range []string{"format", "seq", "hash", "at", "previous", "erased", "expired"} {
		require.Contains(t, raw, k, "the anchor lacks %s: %s", k, body)
	}
	ret, err := b.bucket.Server.Client(b.bucket.Server.Root).GetObjectRetention(ctx, &s3.GetObjectRetentionInput{
		Bucket: aws.String(b.bucket.Name), Key: aws.String(name)})
	require.NoError(t, err)
	require.Equal(t, types.ObjectLockRetentionModeGovernance, ret.Retention.Mode)
	// An anchor names subjects only by HMAC, and nothing else about them.
	require.NotContains(t, string(body), "former")
	require.NotContains(t, string(body), "legal")

	// Nothing new: no anchor.
	again, err := b.anchorer.Anchor(ctx)
	require.NoError(t, err)
	require.Nil(t, again)

	// More entries: the next anchor links to the first, and lists only
	// what happened since.
	erased2, _ := b.history(t, 100)
	second, err := b.anchorer.Anchor(ctx)
	require.NoError(t, err)
	require.NotNil(t, second)
	require.Equal(t, name, *second.Previous)
	require.Equal(t, erased2, second.Erased)

	all, err := Anchors(ctx, b.store)
	require.NoError(t, err)
	require.Len(t, all, 2)
	require.Equal(t, second.Seq, all[0].Seq)
	st, err = CheckLedger(ctx, b.pool, b.store)
	require.NoError(t, err)
	require.True(t, st.OK, st.Reason)
	res, err = VerifyAnchors(ctx, b.pool, b.store)
	require.NoError(t, err)
	require.True(t, res.OK, res.Problem)
	require.Equal(t, 2, res.Checked)

	// The database records what it anchored, for status.
	as, err := Status(ctx, b.pool)
	require.NoError(t, err)
	require.Equal(t, second.Seq, as.Last.Seq)
	require.Zero(t, as.Unanchored)
	require.Empty(t, as.LastError)
}

// rewrite edits the chain behind the append-only trigger, as someone who
// owns the database could.
func (b *anchorBundle) rewrite(t *testing.T, sql string, args ...any) {
	t.Helper()
	_, err := b.pool.Exec(t.Context(), `ALTER TABLE lethe.audit_log DISABLE TRIGGER audit_log_append_only`)
	require.NoError(t, err)
	_, err = b.pool.Exec(t.Context(), sql, args...)
	require.NoError(t, err)
	_, err = b.pool.Exec(t.Context(), `ALTER TABLE lethe.audit_log ENABLE TRIGGER audit_log_append_only`)
	require.NoError(t, err)
}

// rechain edits entry seq's actor and computes every hash again, so that
// the chain alone verifies: only the anchors can tell.
func (b *anchorBundle) rechain(t *testing.T, seq int64) {
	t.Helper()
	ctx := t.Context()
	rows, err := b.pool.Query(ctx, `SELECT seq, at, kind, actor, coalesce(subject_hmac, ''), detail FROM lethe.audit_log ORDER BY seq`)
	require.NoError(t, err)
	recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (record, error) {
		var x record
		return x, r.Scan(&x.Seq, &x.At, &x.Kind, &x.Actor, &x.SubjectHMAC, &x.Detail)
	})
	require.NoError(t, err)
	prev := make([]byte, 32)
	for _, r := range recs {
		if r.Seq == seq {
			r.Actor = "mallory"
		}
		h := r.hash(prev)
		b.rewrite(t, `UPDATE lethe.audit_log SET actor = $2, prev_hash = $3, hash = $4 WHERE seq = $1`, r.Seq, r.Actor, prev, h)
		prev = h
	}
	_, err = b.pool.Exec(ctx, `UPDATE lethe.audit_head SET hash = $1 WHERE id`, prev)
	require.NoError(t, err)
}

func TestVerifyAnchorsCatchesWhatTheChainCannot(t *testing.T) {
	t.Parallel()

	t.Run("every hash rewritten", func(t *testing.T) {
		t.Parallel()
		b := setupAnchors(t)
		b.history(t, 1)
		first, err := b.anchorer.Anchor(t.Context())
		require.NoError(t, err)
		b.history(t, 100)
		_, err = b.anchorer.Anchor(t.Context())
		require.NoError(t, err)
		b.rechain(t, 2)
		v, err := Verify(t.Context(), b.pool)
		require.NoError(t, err)
		require.True(t, v.OK, "the rewritten chain holds together by itself: %s", v.Problem)
		res, err := VerifyAnchors(t.Context(), b.pool, b.store)
		require.NoError(t, err)
		require.False(t, res.OK)
		require.Equal(t, first.Seq, res.BadSeq, "the oldest anchor it contradicts")
		require.Contains(t, res.Problem, "rewritten")
		st, err := CheckLedger(t.Context(), b.pool, b.store)
		require.NoError(t, err)
		require.False(t, st.OK)
		require.Equal(t, LedgerDiverged, st.State)
	})

	t.Run("tail cut", func(t *testing.T) {
		t.Parallel()
		b := setupAnchors(t)
		b.history(t, 1)
		_, err := b.anchorer.Anchor(t.Context())
		require.NoError(t, err)
		b.history(t, 100)
		second, err := b.anchorer.Anchor(t.Context())
		require.NoError(t, err)
		// Cut the last three entries and move the head back, so that the
		// chain verifies by itself.
		b.rewrite(t, `DELETE FROM lethe.audit_log WHERE seq > $1`, second.Seq-3)
		_, err = b.pool.Exec(t.Context(), `UPDATE lethe.audit_head SET seq = $1, hash = (SELECT hash FROM lethe.audit_log WHERE seq = $1) WHERE id`, second.Seq-3)
		require.NoError(t, err)
		v, err := Verify(t.Context(), b.pool)
		require.NoError(t, err)
		require.True(t, v.OK, v.Problem)
		res, err := VerifyAnchors(t.Context(), b.pool, b.store)
		require.NoError(t, err)
		require.False(t, res.OK)
		require.Equal(t, second.Seq, res.BadSeq)
		require.Contains(t, res.Problem, "cut")
		st, err := CheckLedger(t.Context(), b.pool, b.store)
		require.NoError(t, err)
		require.Equal(t, LedgerBehind, st.State)
		require.Contains(t, st.Reason, "lethe ledger replay")
		// And no anchor is written over the ledger meanwhile.
		_, err = b.anchorer.Anchor(t.Context())
		require.ErrorIs(t, err, ErrLedger)
		as, err := Status(t.Context(), b.pool)
		require.NoError(t, err)
		require.Contains(t, as.LastError, "restored from a backup")
		require.NotNil(t, as.FailingSince)
	})

	t.Run("another database", func(t *testing.T) {
		t.Parallel()
		b := setupAnchors(t)
		b.history(t, 1)
		_, err := b.anchorer.Anchor(t.Context())
		require.NoError(t, err)
		other := setup(t)
		for _, db := range []*testBundle{other, {pool: other.pool}} {
			st, err := CheckLedger(t.Context(), db.pool, b.store)
			require.NoError(t, err)
			require.Equal(t, LedgerForeign, st.State)
			require.Contains(t, st.Reason, "another database")
			other.appendTx(t, Entry{Kind: KindRun, Actor: "lethe"})
		}
	})
}

// TestWorkerReadsOnlyTheLedger: with the worker's credentials the archiver
// reads anchors, and refuses (in code, before any call) any other name.
func TestWorkerReadsOnlyTheLedger(t *testing.T) {
	t.Parallel()
	b := setupAnchors(t)
	_, err := b.store.ReadLedger(context.Background(), "v1/segments/2026-01-01/x.seg")
	require.ErrorContains(t, err, "reads only the ledger")
	_, err = b.store.ReadLedger(context.Background(), "v1/ledger/head.json")
	require.ErrorIs(t, err, archive.ErrNotFound)
	require.True(t, strings.HasSuffix(HeadName(b.store.LedgerPrefix()), "ledger/head.json"))
}

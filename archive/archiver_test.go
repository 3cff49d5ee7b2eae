package archive_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/internal/s3dev"
	"github.com/lethehq/lethe/internal/testenv"
)

const prefix = "v1/"

// testBundle is what the archive tests need: a bucket of their own on the
// shared versitygw, clients for each account, an archiver with the
// worker's credentials and a restorer with the reader's.
type testBundle struct {
	srv      *s3dev.Server
	bucket   string
	id       *age.X25519Identity
	root     *s3.Client
	writer   *s3.Client
	reader   *s3.Client
	archiver *archive.Archiver
	restorer *archive.Restorer
	secret   []byte
}

func client(srv *s3dev.Server, c s3dev.Credentials) *s3.Client {
	return archive.NewClient(archive.ClientConfig{
		Endpoint:        srv.Endpoint,
		Region:          "us-east-1",
		PathStyle:       true,
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey,
	})
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	b := testenv.NewBucket(t)
	id := testenv.NewIdentity(t)
	writer := client(b.Server, b.Server.Writer)
	reader := client(b.Server, b.Server.Reader)
	return &testBundle{
		srv:      b.Server,
		bucket:   b.Name,
		id:       id,
		root:     client(b.Server, b.Server.Root),
		writer:   writer,
		reader:   reader,
		archiver: archive.NewArchiver(writer, b.Name, prefix, []age.Recipient{id.Recipient()}),
		restorer: archive.NewRestorer(reader, b.Name, prefix),
		secret:   []byte("0123456789abcdef0123456789abcdef"),
	}
}

// hmacOf is the subject's HMAC as lethe names objects: HMAC-SHA256 of
// table "/" key.
func (tb *testBundle) hmacOf(key string) string {
	m := hmac.New(sha256.New, tb.secret)
	m.Write([]byte("crm.customers/" + key))
	return hex.EncodeToString(m.Sum(nil))
}

func bundleOf(subject string) *archive.Bundle {
	b := sampleBundle()
	b.Subject = subject
	b.Tables[0].Rows = []byte(`[{"id":"` + subject + `","name":"Ada Lovelace","status":"closed"}]`)
	return b
}

func (tb *testBundle) getObject(t *testing.T, c *s3.Client, key, version string) []byte {
	t.Helper()
	in := &s3.GetObjectInput{Bucket: aws.String(tb.bucket), Key: aws.String(key)}
	if version != "" {
		in.VersionId = aws.String(version)
	}
	out, err := c.GetObject(t.Context(), in)
	require.NoError(t, err)
	defer out.Body.Close()
	body, err := io.ReadAll(out.Body)
	require.NoError(t, err)
	return body
}

func (tb *testBundle) rootPut(t *testing.T, key string, body []byte) string {
	t.Helper()
	out, err := tb.root.PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(tb.bucket),
		Key:    aws.String(key),
		Body:   bytes.NewReader(body),
	})
	require.NoError(t, err)
	return aws.ToString(out.VersionId)
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

var hexKey = regexp.MustCompile(`^v1/[0-9a-f]{64}\.age$`)

func TestPut(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()

	subject := "customer-4711"
	h := tb.hmacOf(subject)
	b := bundleOf(subject)
	stored, err := tb.archiver.Put(ctx, h, b, false)
	require.NoError(t, err)

	// The name is the prefix, the HMAC and .age: nothing of the subject.
	require.Equal(t, "v1/"+h+".age", stored.Key)
	require.Equal(t, stored.Key, tb.archiver.ObjectKey(h))
	require.Equal(t, stored.Key, archive.ObjectKey(prefix, h))
	require.Regexp(t, hexKey, stored.Key)
	require.NotContains(t, stored.Key, subject)
	require.NotContains(t, stored.Key, "4711")

	require.NotEmpty(t, stored.VersionID)
	require.NotEqual(t, "null", stored.VersionID)
	require.Regexp(t, `^[0-9a-f]{64}$`, stored.SHA256)

	// What the server holds is what Put reported.
	body := tb.getObject(t, tb.reader, stored.Key, stored.VersionID)
	sum := sha256.Sum256(body)
	require.Equal(t, hex.EncodeToString(sum[:]), stored.SHA256)
	require.Equal(t, int64(len(body)), stored.Size)
	require.Equal(t, body, tb.getObject(t, tb.root, stored.Key, ""), "the latest version is the one put")

	// The server recorded the same checksum, and nothing else about it.
	head, err := tb.reader.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: aws.String(tb.bucket), Key: aws.String(stored.Key), VersionId: aws.String(stored.VersionID),
		ChecksumMode: types.ChecksumModeEnabled,
	})
	require.NoError(t, err)
	require.Equal(t, base64.StdEncoding.EncodeToString(sum[:]), aws.ToString(head.ChecksumSHA256))
	require.Equal(t, stored.Size, aws.ToInt64(head.ContentLength))
	require.Empty(t, head.Metadata, "no user metadata")
	require.Equal(t, "application/octet-stream", aws.ToString(head.ContentType))
	require.Equal(t, types.ObjectLockLegalHoldStatus(""), head.ObjectLockLegalHoldStatus)

	// The object is an age file: it names no subject and no row in clear.
	require.True(t, bytes.HasPrefix(body, []byte("age-encryption.org/v1\n")))
	for _, clear := range []string{subject, "Ada Lovelace", "former-customers", "crm.customers", "lethe.bundle"} {
		require.NotContains(t, string(body), clear)
	}

	// It decrypts with the identity to exactly the encoded bundle.
	plain, err := archive.Decrypt(body, []age.Identity{tb.id})
	require.NoError(t, err)
	require.Equal(t, encode(t, b), plain)
	d, err := archive.Decode(plain, graphTables)
	require.NoError(t, err)
	require.Equal(t, subject, d.Subject)
}

func TestPutEachTimeANewVersion(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	h := tb.hmacOf("7")
	s1, err := tb.archiver.Put(t.Context(), h, bundleOf("7"), false)
	require.NoError(t, err)
	s2, err := tb.archiver.Put(t.Context(), h, bundleOf("7"), false)
	require.NoError(t, err)
	require.Equal(t, s1.Key, s2.Key)
	require.NotEqual(t, s1.VersionID, s2.VersionID)
	require.NotEqual(t, s1.SHA256, s2.SHA256, "age encrypts with a fresh file key each time")

	vs, err := tb.archiver.Versions(t.Context(), h)
	require.NoError(t, err)
	require.ElementsMatch(t, []archive.Version{{ID: s1.VersionID}, {ID: s2.VersionID}}, vs)
}

func TestPutConcurrent(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	// The archiver reuses buffers: concurrent puts must not mix bodies.
	const n = 16
	stored := make([]*archive.Stored, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			subject := fmt.Sprintf("subject-%d", i)
			b := bundleOf(subject)
			// Different sizes, so that a reused buffer shows.
			b.Tables[1].Rows = []byte("[" + string(bytes.Repeat([]byte(`{"pad":"xxxxxxxxxxxxxxxxxxxxxxxx"},`), i*50)) + "{}]")
			stored[i], errs[i] = tb.archiver.Put(t.Context(), tb.hmacOf(subject), b, false)
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		subject := fmt.Sprintf("subject-%d", i)
		r, err := tb.restorer.Restore(t.Context(), tb.hmacOf(subject), subject, stored[i].VersionID, stored[i].SHA256, graphTables, []age.Identity{tb.id})
		require.NoError(t, err, "subject %d", i)
		require.Equal(t, subject, r.Bundle.Subject)
		require.Len(t, r.Bundle.Rows["crm.accounts"], i*50+1)
		require.Equal(t, stored[i].Size, int64(len(tb.getObject(t, tb.reader, stored[i].Key, stored[i].VersionID))))
	}
}

func TestPutErrors(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()

	// The reader may not write.
	ro := archive.NewArchiver(tb.reader, tb.bucket, prefix, []age.Recipient{tb.id.Recipient()})
	_, err := ro.Put(ctx, tb.hmacOf("1"), bundleOf("1"), false)
	require.ErrorIs(t, err, archive.ErrAccessDenied)
	require.ErrorContains(t, err, "error putting object")

	// No such bucket.
	nb := archive.NewArchiver(tb.root, "no-such-bucket-"+tb.bucket, prefix, []age.Recipient{tb.id.Recipient()})
	_, err = nb.Put(ctx, tb.hmacOf("1"), bundleOf("1"), false)
	require.ErrorIs(t, err, archive.ErrNoBucket)

	// A bucket without versioning gives no version id: Put refuses to
	// call that verified.
	plain := "plain-" + tb.bucket
	_, err = tb.root.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(plain)})
	require.NoError(t, err)
	pa := archive.NewArchiver(tb.root, plain, prefix, []age.Recipient{tb.id.Recipient()})
	_, err = pa.Put(ctx, tb.hmacOf("1"), bundleOf("1"), false)
	require.ErrorContains(t, err, "no version id")

	// Nothing to encrypt to.
	none := archive.NewArchiver(tb.writer, tb.bucket, prefix, nil)
	_, err = none.Put(ctx, tb.hmacOf("1"), bundleOf("1"), false)
	require.ErrorContains(t, err, "error encrypting bundle")

	// A cancelled context stops the put.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = tb.archiver.Put(cctx, tb.hmacOf("1"), bundleOf("1"), false)
	require.ErrorIs(t, err, context.Canceled)

	vs, err := tb.archiver.Versions(ctx, tb.hmacOf("1"))
	require.NoError(t, err)
	require.Empty(t, vs, "no failed put left an object")
}

func TestWorkerCannotRead(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()

	stored, err := tb.archiver.Put(ctx, tb.hmacOf("1"), bundleOf("1"), false)
	require.NoError(t, err)

	_, err = tb.writer.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(tb.bucket), Key: aws.String(stored.Key)})
	require.Error(t, err)
	require.Equal(t, http.StatusForbidden, httpStatus(err), "%v", err)
	_, err = tb.writer.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(tb.bucket), Key: aws.String(stored.Key), VersionId: aws.String(stored.VersionID)})
	require.Equal(t, http.StatusForbidden, httpStatus(err), "%v", err)
	_, err = tb.writer.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(tb.bucket), Key: aws.String(stored.Key)})
	require.Equal(t, http.StatusForbidden, httpStatus(err), "%v", err)

	// Through the restorer, with the worker's client, the denial is named.
	wr := archive.NewRestorer(tb.writer, tb.bucket, prefix)
	r, err := wr.Restore(ctx, tb.hmacOf("1"), "1", "", "", graphTables, []age.Identity{tb.id})
	require.ErrorIs(t, err, archive.ErrAccessDenied)
	require.Nil(t, r)
}

func TestLegalHold(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	h := tb.hmacOf("held")

	stored, err := tb.archiver.Put(ctx, h, bundleOf("held"), true)
	require.NoError(t, err)

	lh, err := tb.root.GetObjectLegalHold(ctx, &s3.GetObjectLegalHoldInput{Bucket: aws.String(tb.bucket), Key: aws.String(stored.Key), VersionId: aws.String(stored.VersionID)})
	require.NoError(t, err)
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, lh.LegalHold.Status)

	// Not even root can delete a held version.
	_, err = tb.root.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(tb.bucket), Key: aws.String(stored.Key), VersionId: aws.String(stored.VersionID)})
	require.Error(t, err)
	// Nor can Prune: it stops with an error and the version stays.
	_, err = tb.archiver.Prune(ctx, h, "")
	require.Error(t, err)
	require.ErrorContains(t, err, "error deleting object version")
	require.Equal(t, stored.SHA256, sha256Hex(tb.getObject(t, tb.reader, stored.Key, stored.VersionID)))

	// Released, it goes.
	n, err := tb.archiver.SetLegalHold(ctx, h, false)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	lh, err = tb.root.GetObjectLegalHold(ctx, &s3.GetObjectLegalHoldInput{Bucket: aws.String(tb.bucket), Key: aws.String(stored.Key), VersionId: aws.String(stored.VersionID)})
	require.NoError(t, err)
	require.Equal(t, types.ObjectLockLegalHoldStatusOff, lh.LegalHold.Status)
	deleted, err := tb.archiver.Prune(ctx, h, "")
	require.NoError(t, err)
	require.Equal(t, []string{stored.VersionID}, deleted)
	vs, err := tb.archiver.Versions(ctx, h)
	require.NoError(t, err)
	require.Empty(t, vs)
}

func TestSetLegalHoldOnEveryVersion(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	h := tb.hmacOf("s")

	s1, err := tb.archiver.Put(ctx, h, bundleOf("s"), false)
	require.NoError(t, err)
	s2, err := tb.archiver.Put(ctx, h, bundleOf("s"), false)
	require.NoError(t, err)
	// A delete marker has no legal hold to set; it is skipped.
	_, err = tb.writer.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(tb.bucket), Key: aws.String(s1.Key)})
	require.NoError(t, err)

	n, err := tb.archiver.SetLegalHold(ctx, h, true)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	for _, v := range []string{s1.VersionID, s2.VersionID} {
		_, err := tb.root.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(tb.bucket), Key: aws.String(s1.Key), VersionId: aws.String(v)})
		require.Error(t, err, "version %s is held", v)
	}
	// Pruning everything but s2 removes the delete marker, stops at s1.
	_, err = tb.archiver.Prune(ctx, h, s2.VersionID)
	require.Error(t, err)
	vs, err := tb.archiver.Versions(ctx, h)
	require.NoError(t, err)
	var ids []string
	for _, v := range vs {
		if !v.DeleteMarker {
			ids = append(ids, v.ID)
		}
	}
	require.ElementsMatch(t, []string{s1.VersionID, s2.VersionID}, ids)

	n, err = tb.archiver.SetLegalHold(ctx, h, false)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	_, err = tb.archiver.Prune(ctx, h, "")
	require.NoError(t, err)

	// Holding a subject without an object is a no-op.
	n, err = tb.archiver.SetLegalHold(ctx, tb.hmacOf("none"), true)
	require.NoError(t, err)
	require.Zero(t, n)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestVersionsAndPrune(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	h := tb.hmacOf("p")

	var stored []*archive.Stored
	for range 3 {
		s, err := tb.archiver.Put(ctx, h, bundleOf("p"), false)
		require.NoError(t, err)
		stored = append(stored, s)
	}
	dm, err := tb.writer.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(tb.bucket), Key: aws.String(stored[0].Key)})
	require.NoError(t, err)
	require.True(t, aws.ToBool(dm.DeleteMarker))
	marker := aws.ToString(dm.VersionId)
	require.NotEmpty(t, marker)

	// Neighbours whose names share the prefix are not this subject's.
	neighbour := stored[0].Key + ".bak"
	tb.rootPut(t, neighbour, []byte("x"))
	other, err := tb.archiver.Put(ctx, tb.hmacOf("q"), bundleOf("q"), false)
	require.NoError(t, err)

	vs, err := tb.archiver.Versions(ctx, h)
	require.NoError(t, err)
	require.ElementsMatch(t, []archive.Version{
		{ID: stored[0].VersionID}, {ID: stored[1].VersionID}, {ID: stored[2].VersionID},
		{ID: marker, DeleteMarker: true},
	}, vs)

	// Keep the middle version: the others and the marker go.
	deleted, err := tb.archiver.Prune(ctx, h, stored[1].VersionID)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{stored[0].VersionID, stored[2].VersionID, marker}, deleted)
	vs, err = tb.archiver.Versions(ctx, h)
	require.NoError(t, err)
	require.Equal(t, []archive.Version{{ID: stored[1].VersionID}}, vs)
	// With the marker gone, the kept version is the object again.
	r, err := tb.restorer.Restore(ctx, h, "p", "", stored[1].SHA256, graphTables, []age.Identity{tb.id})
	require.NoError(t, err)
	require.Equal(t, stored[1].VersionID, r.VersionID)

	// Pruning again deletes nothing.
	deleted, err = tb.archiver.Prune(ctx, h, stored[1].VersionID)
	require.NoError(t, err)
	require.Empty(t, deleted)

	// Prune("") removes everything.
	deleted, err = tb.archiver.Prune(ctx, h, "")
	require.NoError(t, err)
	require.Equal(t, []string{stored[1].VersionID}, deleted)
	vs, err = tb.archiver.Versions(ctx, h)
	require.NoError(t, err)
	require.Empty(t, vs)
	_, err = tb.restorer.Restore(ctx, h, "p", "", "", graphTables, []age.Identity{tb.id})
	require.ErrorIs(t, err, archive.ErrNotFound)

	// The neighbours are untouched.
	require.Equal(t, []byte("x"), tb.getObject(t, tb.root, neighbour, ""))
	ovs, err := tb.archiver.Versions(ctx, tb.hmacOf("q"))
	require.NoError(t, err)
	require.Equal(t, []archive.Version{{ID: other.VersionID}}, ovs)

	// A missing object is a no-op.
	deleted, err = tb.archiver.Prune(ctx, tb.hmacOf("never archived"), "")
	require.NoError(t, err)
	require.Empty(t, deleted)
	vs, err = tb.archiver.Versions(ctx, tb.hmacOf("never archived"))
	require.NoError(t, err)
	require.Empty(t, vs)
}

func TestVersionsReaderDenied(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	ra := archive.NewArchiver(tb.reader, tb.bucket, prefix, []age.Recipient{tb.id.Recipient()})
	_, err := ra.Versions(t.Context(), tb.hmacOf("1"))
	require.ErrorIs(t, err, archive.ErrAccessDenied)
	_, err = ra.Prune(t.Context(), tb.hmacOf("1"), "")
	require.ErrorIs(t, err, archive.ErrAccessDenied)
}

func TestProbe(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	recipients := []age.Recipient{tb.id.Recipient()}

	require.NoError(t, tb.archiver.Probe(ctx))

	wrong := client(tb.srv, s3dev.Credentials{AccessKeyID: tb.srv.Writer.AccessKeyID, SecretAccessKey: "not-the-secret"})
	err := archive.NewArchiver(wrong, tb.bucket, prefix, recipients).Probe(ctx)
	require.ErrorIs(t, err, archive.ErrAccessDenied)
	require.ErrorContains(t, err, tb.bucket)

	unknown := client(tb.srv, s3dev.Credentials{AccessKeyID: "nobody", SecretAccessKey: "nothing"})
	err = archive.NewArchiver(unknown, tb.bucket, prefix, recipients).Probe(ctx)
	require.ErrorIs(t, err, archive.ErrAccessDenied)

	// The reader has no right to list.
	err = archive.NewArchiver(tb.reader, tb.bucket, prefix, recipients).Probe(ctx)
	require.ErrorIs(t, err, archive.ErrAccessDenied)

	err = archive.NewArchiver(tb.root, "no-such-"+tb.bucket, prefix, recipients).Probe(ctx)
	require.ErrorIs(t, err, archive.ErrNoBucket)
	require.NotErrorIs(t, err, archive.ErrAccessDenied)
}

func TestProbeUnreachable(t *testing.T) {
	t.Parallel()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	c := archive.NewClient(archive.ClientConfig{Endpoint: "http://" + addr, Region: "us-east-1", PathStyle: true, AccessKeyID: "a", SecretAccessKey: "b"})
	start := time.Now()
	err = archive.NewArchiver(c, "lethe-archive", prefix, nil).Probe(t.Context())
	require.ErrorIs(t, err, archive.ErrUnreachable)
	require.NotErrorIs(t, err, archive.ErrAccessDenied)
	require.Less(t, time.Since(start), 8*time.Second)
}

func TestRestore(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	ids := []age.Identity{tb.id}
	h := tb.hmacOf("r")

	b := bundleOf("r")
	stored, err := tb.archiver.Put(ctx, h, b, false)
	require.NoError(t, err)

	t.Run("round trip", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		r, err := tb.restorer.Restore(ctx, h, "r", stored.VersionID, stored.SHA256, graphTables, ids)
		require.NoError(t, err)
		require.Equal(t, encode(t, b), r.Plaintext)
		require.Equal(t, stored.VersionID, r.VersionID)
		require.Equal(t, stored.SHA256, r.SHA256)
		require.Equal(t, "r", r.Bundle.Subject)
		require.Equal(t, "former-customers", r.Bundle.Policy)
		require.Len(t, r.Bundle.Rows, len(graphTables))

		// The latest version, without a checksum to compare or tables to check.
		r, err = tb.restorer.Restore(ctx, h, "r", "", "", nil, ids)
		require.NoError(t, err)
		require.Equal(t, stored.VersionID, r.VersionID)
	})

	t.Run("wrong identity", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		other := testenv.NewIdentity(t)
		r, err := tb.restorer.Restore(ctx, h, "r", stored.VersionID, stored.SHA256, graphTables, []age.Identity{other})
		require.ErrorIs(t, err, archive.ErrWrongIdentity)
		require.NotErrorIs(t, err, archive.ErrCorrupt)
		require.Nil(t, r)
		// One right identity among wrong ones is enough.
		_, err = tb.restorer.Restore(ctx, h, "r", stored.VersionID, stored.SHA256, graphTables, []age.Identity{other, tb.id})
		require.NoError(t, err)
	})

	t.Run("wrong sha256", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		bad := sha256Hex([]byte("something else"))
		r, err := tb.restorer.Restore(ctx, h, "r", stored.VersionID, bad, graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.ErrorContains(t, err, bad)
		require.Nil(t, r)
		// Upper case is not what lethe records: it does not match either.
		_, err = tb.restorer.Restore(ctx, h, "r", stored.VersionID, "X"+stored.SHA256[1:], graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
	})

	t.Run("other subject", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		r, err := tb.restorer.Restore(ctx, h, "r2", stored.VersionID, stored.SHA256, graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.Nil(t, r)
	})

	t.Run("other tables", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		r, err := tb.restorer.Restore(ctx, h, "r", stored.VersionID, stored.SHA256, append([]string{"crm.notes"}, graphTables...), ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.ErrorIs(t, err, archive.ErrMalformedBundle)
		require.Nil(t, r)
	})

	t.Run("missing version", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		// A version that existed and was pruned.
		hm := tb.hmacOf("m")
		gone, err := tb.archiver.Put(ctx, hm, bundleOf("m"), false)
		require.NoError(t, err)
		kept, err := tb.archiver.Put(ctx, hm, bundleOf("m"), false)
		require.NoError(t, err)
		_, err = tb.archiver.Prune(ctx, hm, kept.VersionID)
		require.NoError(t, err)
		r, err := tb.restorer.Restore(ctx, hm, "m", gone.VersionID, "", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrNotFound)
		require.Nil(t, r)
		_, err = tb.restorer.Restore(ctx, hm, "m", kept.VersionID, kept.SHA256, graphTables, ids)
		require.NoError(t, err)

		_, err = tb.restorer.Restore(ctx, tb.hmacOf("never"), "never", "", "", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrNotFound)
	})
}

func TestRestoreDamagedObjects(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ids := []age.Identity{tb.id}

	put := func(t *testing.T, subject string) (*archive.Stored, []byte) {
		s, err := tb.archiver.Put(t.Context(), tb.hmacOf(subject), bundleOf(subject), false)
		require.NoError(t, err)
		return s, tb.getObject(t, tb.reader, s.Key, s.VersionID)
	}

	t.Run("truncated", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		s, body := put(t, "t")
		v := tb.rootPut(t, s.Key, body[:len(body)-10])
		r, err := tb.restorer.Restore(ctx, tb.hmacOf("t"), "t", "", "", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.Nil(t, r, "no plaintext from a truncated object")
		r, err = tb.restorer.Restore(ctx, tb.hmacOf("t"), "t", v, "", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.Nil(t, r)
		// Checked against the manifest's checksum it fails before decrypting.
		_, err = tb.restorer.Restore(ctx, tb.hmacOf("t"), "t", "", s.SHA256, graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.ErrorContains(t, err, "SHA-256")
		// The version the manifest names is still whole.
		r, err = tb.restorer.Restore(ctx, tb.hmacOf("t"), "t", s.VersionID, s.SHA256, graphTables, ids)
		require.NoError(t, err)
		require.Equal(t, "t", r.Bundle.Subject)
	})

	t.Run("flipped byte", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		s, body := put(t, "f")
		bad := bytes.Clone(body)
		bad[len(bad)-1] ^= 0x01
		tb.rootPut(t, s.Key, bad)
		r, err := tb.restorer.Restore(ctx, tb.hmacOf("f"), "f", "", "", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.Nil(t, r)
	})

	t.Run("another subject's bundle", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		s, _ := put(t, "a")
		_, other := put(t, "b")
		// b's object copied over a's name: it decrypts, but it is not a.
		tb.rootPut(t, s.Key, other)
		r, err := tb.restorer.Restore(ctx, tb.hmacOf("a"), "a", "", "", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.ErrorContains(t, err, "another subject")
		require.Nil(t, r)
	})

	t.Run("encrypted garbage", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		var ct bytes.Buffer
		w, err := age.Encrypt(&ct, tb.id.Recipient())
		require.NoError(t, err)
		_, err = w.Write([]byte(`{"format":"lethe.bundle.v1","subject":"g"`))
		require.NoError(t, err)
		require.NoError(t, w.Close())
		tb.rootPut(t, archive.ObjectKey(prefix, tb.hmacOf("g")), ct.Bytes())
		r, err := tb.restorer.Restore(ctx, tb.hmacOf("g"), "g", "", "", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.ErrorIs(t, err, archive.ErrMalformedBundle)
		require.Nil(t, r, "a partial bundle is never presented as whole")
	})

	t.Run("not age", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		tb.rootPut(t, archive.ObjectKey(prefix, tb.hmacOf("n")), []byte(`{"format":"lethe.bundle.v1"}`))
		r, err := tb.restorer.Restore(ctx, tb.hmacOf("n"), "n", "", "", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.Nil(t, r)
	})
}

func encryptTo(t *testing.T, plain []byte, recipients ...age.Recipient) []byte {
	t.Helper()
	var ct bytes.Buffer
	w, err := age.Encrypt(&ct, recipients...)
	require.NoError(t, err)
	_, err = w.Write(plain)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return ct.Bytes()
}

func TestDecryptTruncated(t *testing.T) {
	t.Parallel()

	id := testenv.NewIdentity(t)
	// Over one age chunk (64 KiB), so that truncation at a chunk boundary
	// is tried too.
	plain := bytes.Repeat([]byte("0123456789abcdef"), 5000)
	ct := encryptTo(t, plain, id.Recipient())

	got, err := archive.Decrypt(ct, []age.Identity{id})
	require.NoError(t, err)
	require.Equal(t, plain, got)

	headerEnd := bytes.Index(ct, []byte("\n---"))
	require.Positive(t, headerEnd)
	cuts := []int{0, 1, headerEnd, headerEnd + 50, headerEnd + 60, len(ct) - 1, len(ct) - 16, len(ct) - 17}
	// Every length through the header and the first chunk's start, then
	// around the end of the first chunk (64 KiB + 16 bytes of tag).
	for n := 0; n < headerEnd+120; n++ {
		cuts = append(cuts, n)
	}
	payloadStart := bytes.IndexByte(ct[headerEnd+1:], '\n') + headerEnd + 2 + 16 // header MAC line, nonce
	for n := payloadStart + 65536 + 16 - 20; n < payloadStart+65536+16+20 && n < len(ct); n++ {
		cuts = append(cuts, n)
	}
	for _, n := range cuts {
		got, err := archive.Decrypt(ct[:n], []age.Identity{id})
		require.Error(t, err, "truncated to %d of %d bytes", n, len(ct))
		require.ErrorIs(t, err, archive.ErrCorrupt, "truncated to %d of %d bytes", n, len(ct))
		require.Nil(t, got, "truncated to %d of %d bytes", n, len(ct))
	}
}

func TestDecryptFlippedBytes(t *testing.T) {
	t.Parallel()

	id := testenv.NewIdentity(t)
	ct := encryptTo(t, encode(t, sampleBundle()), id.Recipient())
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x20
		got, err := archive.Decrypt(bad, []age.Identity{id})
		require.Error(t, err, "byte %d flipped", i)
		require.Nil(t, got, "byte %d flipped", i)
		// A damaged recipient stanza reads as another recipient's; the
		// rest is corruption.
		require.True(t, errors.Is(err, archive.ErrCorrupt) || errors.Is(err, archive.ErrWrongIdentity), "byte %d: %v", i, err)
	}
	// Damage in the payload is always corruption.
	headerEnd := bytes.Index(ct, []byte("\n---"))
	for i := headerEnd + 1; i < len(ct); i++ {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01
		_, err := archive.Decrypt(bad, []age.Identity{id})
		require.ErrorIs(t, err, archive.ErrCorrupt, "byte %d flipped", i)
	}
}

func TestTwoRecipients(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()

	escrow := testenv.NewIdentity(t)
	stranger := testenv.NewIdentity(t)
	a := archive.NewArchiver(tb.writer, tb.bucket, prefix, []age.Recipient{tb.id.Recipient(), escrow.Recipient()})
	h := tb.hmacOf("two")
	b := bundleOf("two")
	stored, err := a.Put(ctx, h, b, false)
	require.NoError(t, err)

	for name, id := range map[string]*age.X25519Identity{"first": tb.id, "escrow": escrow} {
		r, err := tb.restorer.Restore(ctx, h, "two", stored.VersionID, stored.SHA256, graphTables, []age.Identity{id})
		require.NoError(t, err, name)
		require.Equal(t, encode(t, b), r.Plaintext, name)
	}
	_, err = tb.restorer.Restore(ctx, h, "two", stored.VersionID, stored.SHA256, graphTables, []age.Identity{stranger})
	require.ErrorIs(t, err, archive.ErrWrongIdentity)

	body := tb.getObject(t, tb.reader, stored.Key, stored.VersionID)
	require.Equal(t, 2, bytes.Count(body, []byte("\n-> X25519 ")), "one stanza per recipient")
}

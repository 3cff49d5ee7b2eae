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
	"strings"
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
		restorer: archive.NewRestorer(reader, b.Name),
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

var segmentName = regexp.MustCompile(`^v1/segments/\d{4}-\d{2}-\d{2}/[0-9a-f]{32}\.seg$`)

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// put is a segment the test put, and what it holds.
type put struct {
	stored   *archive.Stored
	subjects []string
	bundles  []*archive.Bundle
	parts    []archive.Part
}

// loc is where the ith subject's part lies.
func (p *put) loc(i int) archive.Location {
	pt := p.parts[i]
	return archive.Location{Segment: p.stored.Name, VersionID: p.stored.VersionID, Offset: pt.Offset, Length: pt.Length,
		SHA256: pt.SHA256, WrappedKey: pt.WrappedKey}
}

// putSegment writes one segment of subjects' bundles with a.
func (tb *testBundle) putSegment(t *testing.T, a *archive.Archiver, lock archive.Lock, subjects ...string) *put {
	t.Helper()
	p := &put{subjects: subjects}
	seg := a.NewSegment()
	for _, s := range subjects {
		b := bundleOf(s)
		part, err := seg.Add(b)
		require.NoError(t, err)
		p.bundles, p.parts = append(p.bundles, b), append(p.parts, part)
	}
	var err error
	p.stored, err = a.Put(t.Context(), archive.SegmentName(prefix, time.Now()), seg.Bytes(), lock)
	require.NoError(t, err)
	require.Equal(t, seg.Size(), p.stored.Size)
	require.Equal(t, seg.SHA256(), p.stored.SHA256)
	return p
}

func TestSegment(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()

	subjects := []string{"customer-4711", "customer-4712", "customer-4713"}
	p := tb.putSegment(t, tb.archiver, archive.Lock{}, subjects...)

	// The name is the prefix, the day and a random id: nothing of the
	// subjects.
	require.Regexp(t, segmentName, p.stored.Name)
	for _, s := range subjects {
		require.NotContains(t, p.stored.Name, s)
		require.NotContains(t, p.stored.Name, tb.hmacOf(s)[:16])
	}
	require.NotEqual(t, archive.SegmentName(prefix, time.Now()), archive.SegmentName(prefix, time.Now()), "a name is never made twice")
	require.NotEmpty(t, p.stored.VersionID)
	require.NotEqual(t, "null", p.stored.VersionID)

	// The object is the concatenation of the parts, nothing else.
	body := tb.getObject(t, tb.reader, p.stored.Name, p.stored.VersionID)
	require.Equal(t, p.stored.SHA256, sha256Hex(body))
	var at int64
	for i, pt := range p.parts {
		require.Equal(t, at, pt.Offset, "part %d follows the one before", i)
		part := body[pt.Offset : pt.Offset+pt.Length]
		require.Equal(t, pt.SHA256, sha256Hex(part))
		require.True(t, bytes.HasPrefix(part, []byte("age-encryption.org/v1\n")), "part %d is a whole age file", i)
		require.Equal(t, 1, bytes.Count(part, []byte("\n-> X25519 ")), "part %d has one recipient: its subject's own", i)
		at += pt.Length
	}
	require.Equal(t, int64(len(body)), at)

	// The server recorded the same checksum, and nothing else about it.
	head, err := tb.reader.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: aws.String(tb.bucket), Key: aws.String(p.stored.Name), VersionId: aws.String(p.stored.VersionID),
		ChecksumMode: types.ChecksumModeEnabled,
	})
	require.NoError(t, err)
	sum := sha256.Sum256(body)
	require.Equal(t, base64.StdEncoding.EncodeToString(sum[:]), aws.ToString(head.ChecksumSHA256))
	require.Empty(t, head.Metadata, "no user metadata")
	require.Equal(t, "application/octet-stream", aws.ToString(head.ContentType))
	require.Equal(t, types.ObjectLockLegalHoldStatus(""), head.ObjectLockLegalHoldStatus)

	// Nothing in the segment is in clear.
	for _, clear := range append(subjects, "Ada Lovelace", "former-customers", "crm.customers", "lethe.bundle") {
		require.NotContains(t, string(body), clear)
	}

	for i, pt := range p.parts {
		part := body[pt.Offset : pt.Offset+pt.Length]
		// The master cannot read a part: only the subject's own key can.
		_, err := archive.Decrypt(part, []age.Identity{tb.id})
		require.ErrorIs(t, err, archive.ErrWrongIdentity)
		// The wrapped key is an age file to the master holding the
		// subject's identity, which opens the part.
		require.True(t, bytes.HasPrefix(pt.WrappedKey, []byte("age-encryption.org/v1\n")))
		id, err := archive.UnwrapKey(pt.WrappedKey, []age.Identity{tb.id})
		require.NoError(t, err)
		plain, err := archive.Decrypt(part, []age.Identity{id})
		require.NoError(t, err)
		require.Equal(t, encode(t, p.bundles[i]), plain)
		// Every subject has a key of its own.
		for j, other := range p.parts {
			if j != i {
				_, err := archive.OpenPart(body[other.Offset:other.Offset+other.Length], id, graphTables)
				require.ErrorIs(t, err, archive.ErrCorrupt, "subject %d's key opens subject %d's part", i, j)
			}
		}
	}
}

func TestPutOnce(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()

	p := tb.putSegment(t, tb.archiver, archive.Lock{}, "1")
	// A name is written once: a second put of it is refused and changes
	// nothing.
	_, err := tb.archiver.Put(ctx, p.stored.Name, []byte("something else"), archive.Lock{})
	require.ErrorIs(t, err, archive.ErrExists)
	require.Equal(t, p.stored.SHA256, sha256Hex(tb.getObject(t, tb.reader, p.stored.Name, "")))
}

func TestPutLocks(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	until := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)

	retention := func(p *put) *s3.GetObjectRetentionOutput {
		out, err := tb.root.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: aws.String(tb.bucket),
			Key: aws.String(p.stored.Name), VersionId: aws.String(p.stored.VersionID)})
		if err != nil {
			return nil
		}
		return out
	}
	legalHold := func(p *put) types.ObjectLockLegalHoldStatus {
		out, err := tb.root.GetObjectLegalHold(ctx, &s3.GetObjectLegalHoldInput{Bucket: aws.String(tb.bucket),
			Key: aws.String(p.stored.Name), VersionId: aws.String(p.stored.VersionID)})
		require.NoError(t, err)
		return out.LegalHold.Status
	}
	deleteVersion := func(p *put) error {
		_, err := tb.root.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(tb.bucket), Key: aws.String(p.stored.Name),
			VersionId: aws.String(p.stored.VersionID)})
		return err
	}

	for _, mode := range []struct {
		name string
		want types.ObjectLockRetentionMode
	}{{archive.LockGovernance, types.ObjectLockRetentionModeGovernance}, {archive.LockCompliance, types.ObjectLockRetentionModeCompliance}} {
		p := tb.putSegment(t, tb.archiver, archive.Lock{Mode: mode.name, RetainUntil: until}, "locked-"+mode.name)
		r := retention(p)
		require.NotNil(t, r, mode.name)
		require.Equal(t, mode.want, r.Retention.Mode, mode.name)
		require.True(t, until.Equal(aws.ToTime(r.Retention.RetainUntilDate)), "%s: retained until %v", mode.name, r.Retention.RetainUntilDate)
		require.Error(t, deleteVersion(p), "%s: not even root deletes a retained segment", mode.name)
	}

	// Without a date, the put carries no retention of its own: the
	// bucket's default applies (here none), and the owner can delete it.
	p := tb.putSegment(t, tb.archiver, archive.Lock{Mode: archive.LockGovernance}, "no-date")
	require.Nil(t, retention(p))
	// lock_mode none puts no retention either.
	none := tb.putSegment(t, tb.archiver, archive.Lock{Mode: archive.LockNone, RetainUntil: until}, "none")
	require.Nil(t, retention(none))
	require.NoError(t, deleteVersion(none))

	// A legal hold keeps even an unretained segment, until it is lifted.
	held := tb.putSegment(t, tb.archiver, archive.Lock{LegalHold: true}, "held")
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, legalHold(held))
	require.Error(t, deleteVersion(held))
	require.NoError(t, tb.archiver.SetLegalHold(ctx, held.stored.Name, held.stored.VersionID, false))
	require.Equal(t, types.ObjectLockLegalHoldStatusOff, legalHold(held))
	require.NoError(t, tb.archiver.SetLegalHold(ctx, held.stored.Name, held.stored.VersionID, true))
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, legalHold(held))
	require.Error(t, deleteVersion(held))
	require.NoError(t, tb.archiver.SetLegalHold(ctx, held.stored.Name, held.stored.VersionID, false))
	require.NoError(t, deleteVersion(held))

	// A legal hold of a missing version is an error that says so.
	err := tb.archiver.SetLegalHold(ctx, held.stored.Name, held.stored.VersionID, true)
	require.ErrorIs(t, err, archive.ErrNotFound)
}

// TestLockModeNone: with lock_mode none, a bucket without Object Lock is
// accepted, and segments go without legal holds; a bucket with it keeps
// them.
func TestLockModeNone(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := testenv.NewBucketWithoutLock(t)
	id := testenv.NewIdentity(t)
	a := archive.NewArchiver(client(b.Server, b.Server.Writer), b.Name, prefix, []age.Recipient{id.Recipient()})
	require.True(t, a.LegalHolds(), "until probed")
	require.ErrorIs(t, a.ProbeLock(ctx, archive.LockGovernance), archive.ErrNoObjectLock)
	require.NoError(t, a.ProbeLock(ctx, archive.LockNone))
	require.False(t, a.LegalHolds())
	seg := a.NewSegment()
	_, err := seg.Add(bundleOf("held"))
	require.NoError(t, err)
	stored, err := a.Put(ctx, archive.SegmentName(prefix, time.Now()), seg.Bytes(), archive.Lock{Mode: archive.LockNone, LegalHold: true})
	require.NoError(t, err, "a held subject's segment is put without the hold the bucket cannot keep")
	require.ErrorIs(t, a.SetLegalHold(ctx, stored.Name, stored.VersionID, true), archive.ErrNoObjectLock)

	tb := setup(t)
	require.NoError(t, tb.archiver.ProbeLock(ctx, archive.LockNone))
	require.True(t, tb.archiver.LegalHolds(), "a bucket with Object Lock keeps legal holds under lock_mode none")
}

func TestPutConcurrent(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	const n = 8
	puts := make([]*put, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			subjects := make([]string, i+1)
			for j := range subjects {
				subjects[j] = fmt.Sprintf("subject-%d-%d", i, j)
			}
			puts[i] = tb.putSegment(t, tb.archiver, archive.Lock{}, subjects...)
		})
	}
	wg.Wait()
	for i, p := range puts {
		require.Len(t, p.parts, i+1)
		for j := range p.parts {
			r, err := tb.restorer.Restore(t.Context(), p.loc(j), p.subjects[j], graphTables, []age.Identity{tb.id})
			require.NoError(t, err, "segment %d part %d", i, j)
			require.Equal(t, encode(t, p.bundles[j]), r.Plaintext)
		}
	}
}

func TestPutErrors(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	name := archive.SegmentName(prefix, time.Now())
	body := []byte("a segment")

	// The reader may not write.
	ro := archive.NewArchiver(tb.reader, tb.bucket, prefix, []age.Recipient{tb.id.Recipient()})
	_, err := ro.Put(ctx, name, body, archive.Lock{})
	require.ErrorIs(t, err, archive.ErrAccessDenied)
	require.ErrorContains(t, err, "error putting "+name)

	// No such bucket.
	nb := archive.NewArchiver(tb.root, "no-such-bucket-"+tb.bucket, prefix, nil)
	_, err = nb.Put(ctx, name, body, archive.Lock{})
	require.ErrorIs(t, err, archive.ErrNoBucket)

	// A bucket without versioning gives no version id: Put refuses to call
	// that verified. Without Object Lock it refuses a lock.
	plain := "plain-" + tb.bucket
	_, err = tb.root.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(plain)})
	require.NoError(t, err)
	pa := archive.NewArchiver(tb.root, plain, prefix, nil)
	_, err = pa.Put(ctx, name, body, archive.Lock{})
	require.ErrorContains(t, err, "no version id")
	_, err = pa.Put(ctx, archive.SegmentName(prefix, time.Now()), body, archive.Lock{Mode: archive.LockGovernance, RetainUntil: time.Now().Add(time.Hour)})
	require.ErrorIs(t, err, archive.ErrNoObjectLock)
	require.ErrorIs(t, pa.ProbeLock(ctx, archive.LockCompliance), archive.ErrNoObjectLock)
	require.ErrorContains(t, pa.ProbeLock(ctx, archive.LockNone), "no version id")

	// Nothing to wrap the keys to.
	_, err = archive.NewArchiver(tb.writer, tb.bucket, prefix, nil).NewSegment().Add(bundleOf("1"))
	require.ErrorContains(t, err, "error wrapping a subject key")

	// A cancelled context stops the put.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = tb.archiver.Put(cctx, name, body, archive.Lock{})
	require.ErrorIs(t, err, context.Canceled)

	_, err = tb.root.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(tb.bucket), Key: aws.String(name)})
	require.Equal(t, http.StatusNotFound, httpStatus(err), "no failed put left an object: %v", err)
}

// TestWorkerCannotReadOrDelete: the worker's credentials put segments and
// set their locks, and nothing else.
func TestWorkerCannotReadOrDelete(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()

	p := tb.putSegment(t, tb.archiver, archive.Lock{}, "1")
	name, version := aws.String(p.stored.Name), aws.String(p.stored.VersionID)
	forbidden := func(what string, err error) {
		t.Helper()
		require.Equal(t, http.StatusForbidden, httpStatus(err), "%s: %v", what, err)
	}
	_, err := tb.writer.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(tb.bucket), Key: name})
	forbidden("get", err)
	_, err = tb.writer.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(tb.bucket), Key: name, VersionId: version, Range: aws.String("bytes=0-9")})
	forbidden("ranged get of a version", err)
	_, err = tb.writer.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(tb.bucket), Key: name})
	forbidden("head", err)
	_, err = tb.writer.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(tb.bucket)})
	forbidden("list", err)
	_, err = tb.writer.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: aws.String(tb.bucket)})
	forbidden("list versions", err)
	_, err = tb.writer.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(tb.bucket), Key: name, VersionId: version})
	forbidden("delete a version", err)
	_, err = tb.writer.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(tb.bucket), Key: name})
	forbidden("delete (marker)", err)

	// Through a restorer with the worker's client, the denial is named.
	r, err := archive.NewRestorer(tb.writer, tb.bucket).Restore(ctx, p.loc(0), "1", graphTables, []age.Identity{tb.id})
	require.ErrorIs(t, err, archive.ErrAccessDenied)
	require.Nil(t, r)
	require.Equal(t, p.stored.SHA256, sha256Hex(tb.getObject(t, tb.root, p.stored.Name, "")), "the segment is whole")
}

func TestProbe(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	recipients := []age.Recipient{tb.id.Recipient()}

	require.NoError(t, tb.archiver.Probe(ctx))
	require.NoError(t, tb.archiver.ProbeLock(ctx, archive.LockGovernance))
	require.NoError(t, tb.archiver.ProbeLock(ctx, archive.LockCompliance))

	wrong := client(tb.srv, s3dev.Credentials{AccessKeyID: tb.srv.Writer.AccessKeyID, SecretAccessKey: "not-the-secret"})
	err := archive.NewArchiver(wrong, tb.bucket, prefix, recipients).Probe(ctx)
	require.ErrorIs(t, err, archive.ErrAccessDenied)
	require.ErrorContains(t, err, tb.bucket)

	unknown := client(tb.srv, s3dev.Credentials{AccessKeyID: "nobody", SecretAccessKey: "nothing"})
	err = archive.NewArchiver(unknown, tb.bucket, prefix, recipients).Probe(ctx)
	require.ErrorIs(t, err, archive.ErrAccessDenied)

	// The reader may not set locks.
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
	ids := []age.Identity{tb.id}
	p := tb.putSegment(t, tb.archiver, archive.Lock{}, "q", "r", "s")

	t.Run("round trip", func(t *testing.T) {
		t.Parallel()
		for i, s := range p.subjects {
			r, err := tb.restorer.Restore(t.Context(), p.loc(i), s, graphTables, ids)
			require.NoError(t, err)
			require.Equal(t, encode(t, p.bundles[i]), r.Plaintext)
			require.Equal(t, s, r.Bundle.Subject)
			require.Equal(t, "former-customers", r.Bundle.Policy)
			require.Len(t, r.Bundle.Rows, len(graphTables))
		}
	})

	t.Run("wrong identity", func(t *testing.T) {
		t.Parallel()
		other := testenv.NewIdentity(t)
		r, err := tb.restorer.Restore(t.Context(), p.loc(1), "r", graphTables, []age.Identity{other})
		require.ErrorIs(t, err, archive.ErrWrongIdentity)
		require.NotErrorIs(t, err, archive.ErrCorrupt)
		require.Nil(t, r)
		// One right identity among wrong ones is enough.
		_, err = tb.restorer.Restore(t.Context(), p.loc(1), "r", graphTables, []age.Identity{other, tb.id})
		require.NoError(t, err)
	})

	t.Run("wrong sha256", func(t *testing.T) {
		t.Parallel()
		loc := p.loc(1)
		loc.SHA256 = sha256Hex([]byte("something else"))
		r, err := tb.restorer.Restore(t.Context(), loc, "r", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.ErrorContains(t, err, loc.SHA256)
		require.Nil(t, r)
		// Upper case is not what lethe records: it does not match either.
		loc.SHA256 = strings.ToUpper(p.loc(1).SHA256)
		_, err = tb.restorer.Restore(t.Context(), loc, "r", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
	})

	t.Run("wrong range", func(t *testing.T) {
		t.Parallel()
		for _, shift := range []struct{ offset, length int64 }{{1, 0}, {-1, 0}, {0, -1}, {0, 1}} {
			loc := p.loc(1)
			loc.Offset += shift.offset
			loc.Length += shift.length
			r, err := tb.restorer.Restore(t.Context(), loc, "r", graphTables, ids)
			require.ErrorIs(t, err, archive.ErrCorrupt, "%+v", shift)
			require.Nil(t, r)
		}
		// Past the end of the segment.
		loc := p.loc(2)
		loc.Length += 100
		_, err := tb.restorer.Restore(t.Context(), loc, "s", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		loc.Length = 0
		_, err = tb.restorer.Restore(t.Context(), loc, "s", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
	})

	t.Run("another subject's key", func(t *testing.T) {
		t.Parallel()
		loc := p.loc(1)
		loc.WrappedKey = p.parts[0].WrappedKey
		r, err := tb.restorer.Restore(t.Context(), loc, "r", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.NotErrorIs(t, err, archive.ErrWrongIdentity, "the master did open the key: it is the part that is not its")
		require.Nil(t, r)
	})

	t.Run("other subject", func(t *testing.T) {
		t.Parallel()
		r, err := tb.restorer.Restore(t.Context(), p.loc(1), "q", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.ErrorContains(t, err, "another subject")
		require.Nil(t, r)
	})

	t.Run("other tables", func(t *testing.T) {
		t.Parallel()
		r, err := tb.restorer.Restore(t.Context(), p.loc(1), "r", append([]string{"crm.notes"}, graphTables...), ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.ErrorIs(t, err, archive.ErrMalformedBundle)
		require.Nil(t, r)
	})

	t.Run("missing version", func(t *testing.T) {
		t.Parallel()
		loc := p.loc(1)
		loc.VersionID = "no-such-version"
		_, err := tb.restorer.Restore(t.Context(), loc, "r", graphTables, ids)
		require.Error(t, err)
		loc = p.loc(1)
		loc.Segment = archive.SegmentName(prefix, time.Now())
		_, err = tb.restorer.Restore(t.Context(), loc, "r", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrNotFound)
	})
}

// TestRestoreDamagedParts: a part that is not what was put never restores.
func TestRestoreDamagedParts(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ids := []age.Identity{tb.id}
	p := tb.putSegment(t, tb.archiver, archive.Lock{}, "a", "b")
	body := tb.getObject(t, tb.reader, p.stored.Name, p.stored.VersionID)

	// The owner rewrites the segment under its name: a new version, which
	// the manifest does not name. Its damaged parts do not open, even at
	// their right offsets and with the right checksum skipped.
	rewrite := func(t *testing.T, b []byte) archive.Location {
		v := tb.rootPut(t, p.stored.Name, b)
		loc := p.loc(0)
		loc.VersionID = v
		return loc
	}

	t.Run("flipped byte", func(t *testing.T) {
		bad := bytes.Clone(body)
		bad[p.parts[0].Length-1] ^= 0x01
		loc := rewrite(t, bad)
		r, err := tb.restorer.Restore(t.Context(), loc, "a", graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.ErrorContains(t, err, "SHA-256")
		require.Nil(t, r)
		// Even had the manifest recorded the damaged part's checksum, it
		// would not decrypt.
		_, err = archive.Open(bad[:p.parts[0].Length], p.parts[0].WrappedKey, graphTables, ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
	})

	t.Run("swapped parts", func(t *testing.T) {
		a, b := body[:p.parts[0].Length], body[p.parts[0].Length:]
		swapped := append(bytes.Clone(b), a...)
		loc := rewrite(t, swapped)
		loc.SHA256 = sha256Hex(swapped[:p.parts[0].Length])
		_, err := tb.restorer.Restore(t.Context(), loc, "a", graphTables, ids)
		require.Error(t, err)
	})

	t.Run("encrypted garbage", func(t *testing.T) {
		id, err := archive.UnwrapKey(p.parts[0].WrappedKey, ids)
		require.NoError(t, err)
		garbage := encryptTo(t, []byte(`{"format":"lethe.bundle.v1","subject":"a"`), id.Recipient())
		r, err := archive.OpenPart(garbage, id, graphTables)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		require.ErrorIs(t, err, archive.ErrMalformedBundle)
		require.Nil(t, r, "a partial bundle is never presented as whole")
	})

	t.Run("not age", func(t *testing.T) {
		id, err := archive.UnwrapKey(p.parts[0].WrappedKey, ids)
		require.NoError(t, err)
		_, err = archive.OpenPart([]byte(`{"format":"lethe.bundle.v1"}`), id, graphTables)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		_, err = archive.UnwrapKey([]byte("not a wrapped key"), ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
		_, err = archive.UnwrapKey(encryptTo(t, []byte("not an identity"), tb.id.Recipient()), ids)
		require.ErrorIs(t, err, archive.ErrCorrupt)
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

func TestTwoMasters(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	escrow := testenv.NewIdentity(t)
	stranger := testenv.NewIdentity(t)
	a := archive.NewArchiver(tb.writer, tb.bucket, prefix, []age.Recipient{tb.id.Recipient(), escrow.Recipient()})
	p := tb.putSegment(t, a, archive.Lock{}, "two")

	for name, id := range map[string]*age.X25519Identity{"first": tb.id, "escrow": escrow} {
		r, err := tb.restorer.Restore(t.Context(), p.loc(0), "two", graphTables, []age.Identity{id})
		require.NoError(t, err, name)
		require.Equal(t, encode(t, p.bundles[0]), r.Plaintext, name)
	}
	_, err := tb.restorer.Restore(t.Context(), p.loc(0), "two", graphTables, []age.Identity{stranger})
	require.ErrorIs(t, err, archive.ErrWrongIdentity)
	require.Equal(t, 2, bytes.Count(p.parts[0].WrappedKey, []byte("\n-> X25519 ")), "the key is wrapped to each master")
}

func TestWrapKey(t *testing.T) {
	t.Parallel()
	master, next := testenv.NewIdentity(t), testenv.NewIdentity(t)
	id := testenv.NewIdentity(t)

	w, err := archive.WrapKey(id, []age.Recipient{master.Recipient()})
	require.NoError(t, err)
	require.NotContains(t, string(w), id.String(), "the wrapped key does not hold the identity in clear")
	got, err := archive.UnwrapKey(w, []age.Identity{master})
	require.NoError(t, err)
	require.Equal(t, id.String(), got.String())
	_, err = archive.UnwrapKey(w, []age.Identity{next})
	require.ErrorIs(t, err, archive.ErrWrongIdentity)

	// Rewrapping to a new master: the same identity, openable by it alone.
	w2, err := archive.WrapKey(got, []age.Recipient{next.Recipient()})
	require.NoError(t, err)
	got2, err := archive.UnwrapKey(w2, []age.Identity{next})
	require.NoError(t, err)
	require.Equal(t, id.String(), got2.String())
	_, err = archive.UnwrapKey(w2, []age.Identity{master})
	require.ErrorIs(t, err, archive.ErrWrongIdentity)

	// The masters' fingerprint ignores their order and repeats.
	a, b := master.Recipient().String(), next.Recipient().String()
	require.Equal(t, archive.MastersFingerprint([]string{a, b}), archive.MastersFingerprint([]string{b, a, b}))
	require.NotEqual(t, archive.MastersFingerprint([]string{a}), archive.MastersFingerprint([]string{a, b}))
}

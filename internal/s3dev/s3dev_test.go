package s3dev_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/s3dev"
)

type testBundle struct {
	srv    *s3dev.Server
	bucket string
	root   *s3.Client
	writer *s3.Client
	reader *s3.Client
}

// setup starts a server of its own with one archive bucket.
func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx := t.Context()
	srv, err := s3dev.Start(ctx, s3dev.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Stop()) })

	bucket := "archive-" + randomHex(t, 4)
	require.NoError(t, srv.CreateBucket(ctx, bucket))
	return &testBundle{
		srv:    srv,
		bucket: bucket,
		root:   srv.Client(srv.Root),
		writer: srv.Client(srv.Writer),
		reader: srv.Client(srv.Reader),
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

func sha256Base64(body []byte) string {
	sum := sha256.Sum256(body)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// put writes body under key with an explicit SHA-256, which the server
// checks. A bytes.Reader body is seekable, so it works over plain http.
func (b *testBundle) put(t *testing.T, c *s3.Client, key string, body []byte) (*s3.PutObjectOutput, error) {
	t.Helper()
	return c.PutObject(t.Context(), &s3.PutObjectInput{
		Bucket:         aws.String(b.bucket),
		Key:            aws.String(key),
		Body:           bytes.NewReader(body),
		ChecksumSHA256: aws.String(sha256Base64(body)),
	})
}

// mustPut is put as the writer, which must succeed and return a version id.
func (b *testBundle) mustPut(t *testing.T, key string, body []byte) string {
	t.Helper()
	out, err := b.put(t, b.writer, key, body)
	require.NoError(t, err)
	require.NotEmpty(t, aws.ToString(out.VersionId))
	return aws.ToString(out.VersionId)
}

func (b *testBundle) hold(t *testing.T, c *s3.Client, key, versionID string, status types.ObjectLockLegalHoldStatus) error {
	t.Helper()
	_, err := c.PutObjectLegalHold(t.Context(), &s3.PutObjectLegalHoldInput{
		Bucket:    aws.String(b.bucket),
		Key:       aws.String(key),
		VersionId: aws.String(versionID),
		LegalHold: &types.ObjectLockLegalHold{Status: status},
	})
	return err
}

func (b *testBundle) deleteVersion(t *testing.T, c *s3.Client, key, versionID string) error {
	t.Helper()
	_, err := c.DeleteObject(t.Context(), &s3.DeleteObjectInput{
		Bucket:    aws.String(b.bucket),
		Key:       aws.String(key),
		VersionId: aws.String(versionID),
	})
	return err
}

// requireAPIError checks the HTTP status and the S3 error code of err.
// Answers to HEAD have no body, so their code is the status text.
func requireAPIError(t *testing.T, err error, status int, code string) {
	t.Helper()
	require.Error(t, err)
	var re *awshttp.ResponseError
	require.ErrorAs(t, err, &re)
	require.Equal(t, status, re.HTTPStatusCode(), "%v", err)
	var ae smithy.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, code, ae.ErrorCode(), "%v", err)
}

func TestPermissions(t *testing.T) {
	t.Parallel()
	b := setup(t)

	t.Run("BucketIsVersionedAndLocked", func(t *testing.T) {
		t.Parallel()
		v, err := b.root.GetBucketVersioning(t.Context(), &s3.GetBucketVersioningInput{Bucket: aws.String(b.bucket)})
		require.NoError(t, err)
		require.Equal(t, types.BucketVersioningStatusEnabled, v.Status)
		lock, err := b.root.GetObjectLockConfiguration(t.Context(), &s3.GetObjectLockConfigurationInput{Bucket: aws.String(b.bucket)})
		require.NoError(t, err)
		require.Equal(t, types.ObjectLockEnabledEnabled, lock.ObjectLockConfiguration.ObjectLockEnabled)
	})

	t.Run("WriterPutsWithChecksum", func(t *testing.T) {
		t.Parallel()
		body := []byte("customer 42, archived")
		out, err := b.put(t, b.writer, "put/1", body)
		require.NoError(t, err)
		require.NotEmpty(t, aws.ToString(out.VersionId))
		require.Equal(t, sha256Base64(body), aws.ToString(out.ChecksumSHA256))

		_, err = b.writer.PutObject(t.Context(), &s3.PutObjectInput{
			Bucket:         aws.String(b.bucket),
			Key:            aws.String("put/1"),
			Body:           bytes.NewReader(body),
			ChecksumSHA256: aws.String(sha256Base64(body)),
			IfNoneMatch:    aws.String("*"),
		})
		requireAPIError(t, err, http.StatusPreconditionFailed, "PreconditionFailed")
	})

	t.Run("WrongChecksumIsRejected", func(t *testing.T) {
		t.Parallel()
		_, err := b.writer.PutObject(t.Context(), &s3.PutObjectInput{
			Bucket:         aws.String(b.bucket),
			Key:            aws.String("bad-digest"),
			Body:           bytes.NewReader([]byte("what was sent")),
			ChecksumSHA256: aws.String(sha256Base64([]byte("what was meant"))),
		})
		requireAPIError(t, err, http.StatusBadRequest, "BadDigest")

		_, err = b.root.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(b.bucket), Key: aws.String("bad-digest")})
		requireAPIError(t, err, http.StatusNotFound, "NotFound")
	})

	t.Run("WriterCannotRead", func(t *testing.T) {
		t.Parallel()
		versionID := b.mustPut(t, "secret", []byte("not for the writer"))

		_, err := b.writer.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String("secret")})
		requireAPIError(t, err, http.StatusForbidden, "AccessDenied")
		_, err = b.writer.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String("secret"), VersionId: aws.String(versionID)})
		requireAPIError(t, err, http.StatusForbidden, "AccessDenied")
		_, err = b.writer.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(b.bucket), Key: aws.String("secret")})
		requireAPIError(t, err, http.StatusForbidden, "Forbidden")
		_, err = b.writer.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(b.bucket)})
		requireAPIError(t, err, http.StatusForbidden, "AccessDenied")
		_, err = b.writer.ListObjectVersions(t.Context(), &s3.ListObjectVersionsInput{Bucket: aws.String(b.bucket)})
		requireAPIError(t, err, http.StatusForbidden, "AccessDenied")
	})

	t.Run("WriterHoldsButNeverListsOrDeletes", func(t *testing.T) {
		t.Parallel()
		first := b.mustPut(t, "versions/a", []byte("one"))
		second := b.mustPut(t, "versions/a", []byte("two"))
		require.NoError(t, b.hold(t, b.writer, "versions/a", second, types.ObjectLockLegalHoldStatusOn))
		require.NoError(t, b.hold(t, b.writer, "versions/a", second, types.ObjectLockLegalHoldStatusOff))

		_, err := b.writer.ListObjectVersions(t.Context(), &s3.ListObjectVersionsInput{Bucket: aws.String(b.bucket), Prefix: aws.String("versions/")})
		requireAPIError(t, err, http.StatusForbidden, "AccessDenied")
		requireAPIError(t, b.deleteVersion(t, b.writer, "versions/a", first), http.StatusForbidden, "AccessDenied")
		_, err = b.writer.DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String("versions/a")})
		requireAPIError(t, err, http.StatusForbidden, "AccessDenied")

		// Only the bucket's owner removes versions.
		require.NoError(t, b.deleteVersion(t, b.root, "versions/a", first))
		require.NoError(t, b.deleteVersion(t, b.root, "versions/a", second))
		list, err := b.root.ListObjectVersions(t.Context(), &s3.ListObjectVersionsInput{Bucket: aws.String(b.bucket), Prefix: aws.String("versions/")})
		require.NoError(t, err)
		require.Empty(t, list.Versions)
	})

	t.Run("HeldVersionCannotBeDeleted", func(t *testing.T) {
		t.Parallel()
		versionID := b.mustPut(t, "held", []byte("under legal hold"))
		require.NoError(t, b.hold(t, b.writer, "held", versionID, types.ObjectLockLegalHoldStatusOn))

		requireAPIError(t, b.deleteVersion(t, b.writer, "held", versionID), http.StatusForbidden, "AccessDenied")
		requireAPIError(t, b.deleteVersion(t, b.root, "held", versionID), http.StatusForbidden, "AccessDenied")
		_, err := b.root.DeleteObject(t.Context(), &s3.DeleteObjectInput{
			Bucket:                    aws.String(b.bucket),
			Key:                       aws.String("held"),
			VersionId:                 aws.String(versionID),
			BypassGovernanceRetention: aws.Bool(true),
		})
		requireAPIError(t, err, http.StatusForbidden, "AccessDenied")

		got, err := b.reader.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String("held"), VersionId: aws.String(versionID)})
		require.NoError(t, err)
		require.NoError(t, got.Body.Close())

		require.NoError(t, b.hold(t, b.writer, "held", versionID, types.ObjectLockLegalHoldStatusOff))
		require.NoError(t, b.deleteVersion(t, b.root, "held", versionID))
	})

	t.Run("WriterPutsHeld", func(t *testing.T) {
		t.Parallel()
		body := []byte("held from the start")
		out, err := b.writer.PutObject(t.Context(), &s3.PutObjectInput{
			Bucket:                    aws.String(b.bucket),
			Key:                       aws.String("held-at-put"),
			Body:                      bytes.NewReader(body),
			ChecksumSHA256:            aws.String(sha256Base64(body)),
			ObjectLockLegalHoldStatus: types.ObjectLockLegalHoldStatusOn,
		})
		require.NoError(t, err)
		versionID := aws.ToString(out.VersionId)
		requireAPIError(t, b.deleteVersion(t, b.writer, "held-at-put", versionID), http.StatusForbidden, "AccessDenied")
		require.NoError(t, b.hold(t, b.writer, "held-at-put", versionID, types.ObjectLockLegalHoldStatusOff))
		require.NoError(t, b.deleteVersion(t, b.root, "held-at-put", versionID))
	})

	t.Run("ReaderReads", func(t *testing.T) {
		t.Parallel()
		body := []byte("restore me")
		versionID := b.mustPut(t, "restore", body)
		b.mustPut(t, "restore", []byte("a later version"))

		got, err := b.reader.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String("restore"), VersionId: aws.String(versionID)})
		require.NoError(t, err)
		data, err := io.ReadAll(got.Body)
		require.NoError(t, err)
		require.NoError(t, got.Body.Close())
		require.Equal(t, body, data)

		got, err = b.reader.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String("restore")})
		require.NoError(t, err)
		data, err = io.ReadAll(got.Body)
		require.NoError(t, err)
		require.NoError(t, got.Body.Close())
		require.Equal(t, "a later version", string(data))

		head, err := b.reader.HeadObject(t.Context(), &s3.HeadObjectInput{
			Bucket:       aws.String(b.bucket),
			Key:          aws.String("restore"),
			VersionId:    aws.String(versionID),
			ChecksumMode: types.ChecksumModeEnabled,
		})
		require.NoError(t, err)
		require.Equal(t, sha256Base64(body), aws.ToString(head.ChecksumSHA256))
	})

	t.Run("ReaderCannotWriteOrDelete", func(t *testing.T) {
		t.Parallel()
		versionID := b.mustPut(t, "keep", []byte("keep"))

		_, err := b.put(t, b.reader, "keep", []byte("overwrite"))
		requireAPIError(t, err, http.StatusForbidden, "AccessDenied")
		_, err = b.reader.DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String("keep")})
		requireAPIError(t, err, http.StatusForbidden, "AccessDenied")
		requireAPIError(t, b.deleteVersion(t, b.reader, "keep", versionID), http.StatusForbidden, "AccessDenied")
		requireAPIError(t, b.hold(t, b.reader, "keep", versionID, types.ObjectLockLegalHoldStatusOn), http.StatusForbidden, "AccessDenied")
		_, err = b.reader.ListObjectVersions(t.Context(), &s3.ListObjectVersionsInput{Bucket: aws.String(b.bucket)})
		requireAPIError(t, err, http.StatusForbidden, "AccessDenied")
	})

	t.Run("EnsureBucket", func(t *testing.T) {
		t.Parallel()
		created, err := b.srv.EnsureBucket(t.Context(), b.bucket)
		require.NoError(t, err)
		require.False(t, created)

		other := "other-" + randomHex(t, 4)
		created, err = b.srv.EnsureBucket(t.Context(), other)
		require.NoError(t, err)
		require.True(t, created)

		var owned *types.BucketAlreadyOwnedByYou
		require.ErrorAs(t, b.srv.CreateBucket(t.Context(), other), &owned)
	})
}

func TestBucketPolicy(t *testing.T) {
	t.Parallel()
	var doc struct {
		Statement []struct {
			Effect    string
			Principal struct{ AWS []string }
			Action    []string
			Resource  []string
		}
	}
	require.NoError(t, json.Unmarshal([]byte(s3dev.BucketPolicy("b", "v1/", "W", "R")), &doc))

	granted := map[string][]string{} // principal → "action on resource"
	for _, st := range doc.Statement {
		require.Equal(t, "Allow", st.Effect)
		for _, p := range st.Principal.AWS {
			for _, a := range st.Action {
				for _, r := range st.Resource {
					granted[p] = append(granted[p], a+" "+r)
				}
			}
		}
	}
	require.ElementsMatch(t, []string{
		"s3:PutObject arn:aws:s3:::b/*",
		"s3:PutObjectRetention arn:aws:s3:::b/*",
		"s3:PutObjectLegalHold arn:aws:s3:::b/*",
		"s3:GetObject arn:aws:s3:::b/v1/ledger/*",
	}, granted["W"])
	require.ElementsMatch(t, []string{
		"s3:GetObject arn:aws:s3:::b/*",
		"s3:GetObjectVersion arn:aws:s3:::b/*",
	}, granted["R"])
	require.Len(t, granted, 2)
}

func TestKillRestartKeepsData(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	versionID := b.mustPut(t, "survivor", []byte("still here"))
	endpoint := b.srv.Endpoint

	require.NoError(t, b.srv.Kill())
	require.NoError(t, b.srv.Kill()) // idempotent
	require.Zero(t, b.srv.PID())
	require.Error(t, b.srv.Ready(ctx))
	_, err := b.reader.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String("survivor")}, func(o *s3.Options) {
		o.RetryMaxAttempts = 1
	})
	require.Error(t, err)

	require.NoError(t, b.srv.Restart(ctx))
	require.Equal(t, endpoint, b.srv.Endpoint)
	got, err := b.reader.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String("survivor"), VersionId: aws.String(versionID)})
	require.NoError(t, err)
	data, err := io.ReadAll(got.Body)
	require.NoError(t, err)
	require.NoError(t, got.Body.Close())
	require.Equal(t, "still here", string(data))

	// A graceful restart keeps the data too.
	require.NoError(t, b.srv.Restart(ctx))
	head, err := b.reader.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.bucket), Key: aws.String("survivor")})
	require.NoError(t, err)
	require.Equal(t, versionID, aws.ToString(head.VersionId))
}

func TestStopRemovesCreatedDir(t *testing.T) {
	t.Parallel()
	srv, err := s3dev.Start(t.Context(), s3dev.Options{})
	require.NoError(t, err)
	require.DirExists(t, srv.Dir)

	require.NoError(t, srv.Stop())
	require.NoError(t, srv.Stop()) // idempotent
	require.NoDirExists(t, srv.Dir)
	require.Error(t, srv.Restart(t.Context()))
}

func TestGivenDirKeepsKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := s3dev.Start(t.Context(), s3dev.Options{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, first.CreateBucket(t.Context(), "kept"))
	require.NoError(t, first.Stop())
	require.DirExists(t, dir)

	second, err := s3dev.Start(t.Context(), s3dev.Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, second.Stop()) })
	require.Equal(t, first.Root, second.Root)
	require.Equal(t, first.Writer, second.Writer)
	require.Equal(t, first.Reader, second.Reader)
	created, err := second.EnsureBucket(t.Context(), "kept")
	require.NoError(t, err)
	require.False(t, created)
}

func TestDetachAndAttach(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := s3dev.Attach(dir)
	require.ErrorIs(t, err, s3dev.ErrNotRunning)

	srv, err := s3dev.Start(t.Context(), s3dev.Options{Dir: dir, Detach: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Stop()) })
	require.FileExists(t, filepath.Join(dir, s3dev.PIDFile))
	require.FileExists(t, filepath.Join(dir, s3dev.LogFile))

	_, err = s3dev.Start(t.Context(), s3dev.Options{Dir: dir, Detach: true})
	require.ErrorIs(t, err, s3dev.ErrRunning)

	attached, err := s3dev.Attach(dir)
	require.NoError(t, err)
	require.Equal(t, srv.PID(), attached.PID())
	require.Equal(t, srv.Endpoint, attached.Endpoint)
	require.Equal(t, srv.Writer, attached.Writer)
	require.NoError(t, attached.Ready(t.Context()))
	require.NoError(t, attached.CreateBucket(t.Context(), "attached"))

	require.NoError(t, attached.Stop())
	require.NoFileExists(t, filepath.Join(dir, s3dev.PIDFile))
	require.DirExists(t, dir)
	_, err = s3dev.Attach(dir)
	require.ErrorIs(t, err, s3dev.ErrNotRunning)
}

func TestStartErrors(t *testing.T) {
	t.Parallel()

	t.Run("MissingBinary", func(t *testing.T) {
		t.Parallel()
		_, err := s3dev.Start(t.Context(), s3dev.Options{Binary: filepath.Join(t.TempDir(), "versitygw")})
		require.ErrorIs(t, err, os.ErrNotExist)
	})

	t.Run("NotLoopback", func(t *testing.T) {
		t.Parallel()
		_, err := s3dev.Start(t.Context(), s3dev.Options{Addr: "0.0.0.0:0"})
		require.ErrorContains(t, err, "loopback")
	})

	t.Run("AddressInUse", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		_, err = s3dev.Start(t.Context(), s3dev.Options{Addr: l.Addr().String()})
		require.ErrorContains(t, err, "not free")
	})

	t.Run("ServerExitsEarly", func(t *testing.T) {
		t.Parallel()
		// A binary that fails at once: its stderr ends up in the error.
		script := filepath.Join(t.TempDir(), "versitygw")
		require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho 'boom: no backend' >&2\nexit 3\n"), 0o700))
		var stderr bytes.Buffer
		_, err := s3dev.Start(t.Context(), s3dev.Options{Binary: script, Stderr: &stderr})
		require.ErrorContains(t, err, "boom: no backend")
		require.Equal(t, "boom: no backend\n", stderr.String())
		var exitErr interface{ ExitCode() int }
		require.True(t, errors.As(err, &exitErr))
		require.Equal(t, 3, exitErr.ExitCode())
	})

	t.Run("CanceledContext", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := s3dev.Start(ctx, s3dev.Options{})
		require.ErrorIs(t, err, context.Canceled)
	})
}

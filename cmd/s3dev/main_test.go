package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/s3dev"
)

// buildS3dev builds this command into a temporary directory.
func buildS3dev(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "s3dev")
	out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// runS3dev runs the command and returns its stdout, stderr and exit code.
// It does not use t.Context(), so that it works in cleanups too.
func runS3dev(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.WaitDelay = time.Minute
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return out.String(), errOut.String(), exitErr.ExitCode()
	}
	require.NoError(t, err)
	return out.String(), errOut.String(), 0
}

func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		require.True(t, ok, line)
		vars[name] = value
	}
	require.NoError(t, sc.Err())
	return vars
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestStartStop(t *testing.T) {
	t.Parallel()
	bin := buildS3dev(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	t.Cleanup(func() { _, _, _ = runS3dev(t, bin, "stop", "--dir", dir) })

	out, errOut, code := runS3dev(t, bin, "start", "--dir", dir, "--addr", addr, "--bucket", "archive", "--bucket", "bench")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^started versitygw: pid \d+, http://`+regexp.QuoteMeta(addr)+`, log `, out)
	require.Contains(t, out, "created bucket archive, policy for prefix \"v1/\"\n")
	require.Contains(t, out, "created bucket bench, policy for prefix \"v1/\"\n")

	env := readEnvFile(t, filepath.Join(dir, "env"))
	require.Equal(t, "http://"+addr, env["LETHE_S3_ENDPOINT"])
	shellSafe := regexp.MustCompile(`^[A-Za-z0-9]+$`)
	for _, name := range []string{
		"LETHE_ARCHIVE_ACCESS_KEY_ID", "LETHE_ARCHIVE_SECRET_ACCESS_KEY",
		"LETHE_RESTORE_ACCESS_KEY_ID", "LETHE_RESTORE_SECRET_ACCESS_KEY",
		"LETHE_S3_ROOT_ACCESS_KEY_ID", "LETHE_S3_ROOT_SECRET_ACCESS_KEY",
	} {
		require.Regexp(t, shellSafe, env[name], name)
	}
	require.Len(t, env, 7)

	// The server outlived the command; the keys work.
	srv, err := s3dev.Attach(dir)
	require.NoError(t, err)
	_, err = srv.Client(srv.Writer).PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String("archive"),
		Key:    aws.String("k"),
		Body:   strings.NewReader("kept across starts"),
	})
	require.NoError(t, err)

	out, errOut, code = runS3dev(t, bin, "start", "--dir", dir, "--addr", addr, "--bucket", "archive")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^reusing versitygw already running: pid \d+, http://`+regexp.QuoteMeta(addr)+`$`, out)
	require.Contains(t, out, "bucket archive exists, policy for prefix \"v1/\"\n")
	require.Equal(t, env, readEnvFile(t, filepath.Join(dir, "env")))
	requirePolicy(t, srv, "archive", s3dev.DefaultPrefix)

	// --prefix sets the policy for another archive prefix, on an existing
	// bucket too.
	out, errOut, code = runS3dev(t, bin, "start", "--dir", dir, "--addr", addr, "--prefix", "lethe/prod/", "--bucket", "archive", "--bucket", "other")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "bucket archive exists, policy for prefix \"lethe/prod/\"\n")
	require.Contains(t, out, "created bucket other, policy for prefix \"lethe/prod/\"\n")
	requirePolicy(t, srv, "archive", "lethe/prod/")
	requirePolicy(t, srv, "other", "lethe/prod/")
	_, err = srv.Client(srv.Writer).GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String("archive"), Key: aws.String("v1/ledger/head.json")})
	require.Error(t, err, "the writer may read only lethe/prod/ledger/ now")

	out, errOut, code = runS3dev(t, bin, "stop", "--dir", dir)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `^stopped versitygw: pid \d+\n$`, out)
	require.NoFileExists(t, filepath.Join(dir, "pid"))
	require.Error(t, srv.Ready(t.Context()))

	// A later start keeps the keys, so the data stays readable.
	out, errOut, code = runS3dev(t, bin, "start", "--dir", dir, "--addr", addr)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "started versitygw")
	require.Equal(t, env, readEnvFile(t, filepath.Join(dir, "env")))
	got, err := srv.Client(srv.Reader).GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String("archive"), Key: aws.String("k")})
	require.NoError(t, err)
	data, err := io.ReadAll(got.Body)
	require.NoError(t, err)
	require.NoError(t, got.Body.Close())
	require.Equal(t, "kept across starts", string(data))

	out, _, code = runS3dev(t, bin, "stop", "--dir", dir)
	require.Equal(t, 0, code)
	require.Contains(t, out, "stopped versitygw")
	out, _, code = runS3dev(t, bin, "stop", "--dir", dir)
	require.Equal(t, 0, code)
	require.Contains(t, out, "not running")
}

// requirePolicy requires bucket's policy to be the one s3dev installs for
// prefix.
func requirePolicy(t *testing.T, srv *s3dev.Server, bucket, prefix string) {
	t.Helper()
	out, err := srv.Client(srv.Root).GetBucketPolicy(t.Context(), &s3.GetBucketPolicyInput{Bucket: aws.String(bucket)})
	require.NoError(t, err)
	require.JSONEq(t, s3dev.BucketPolicy(bucket, prefix, srv.Writer.AccessKeyID, srv.Reader.AccessKeyID), aws.ToString(out.Policy))
}

func TestUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, exitUsage, "missing command"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"start"}, exitUsage, "--dir is required"},
		{[]string{"stop", "--dir", "d", "extra"}, exitUsage, `unexpected argument "extra"`},
		{[]string{"start", "--nope"}, exitUsage, "flag provided but not defined"},
		{[]string{"start", "--dir", t.TempDir(), "--addr", "0.0.0.0:7070"}, exitError, "loopback"},
		{[]string{"start", "--dir", t.TempDir(), "--prefix", "/v1/"}, exitUsage, "must not start with /"},
		{[]string{"start", "--dir", t.TempDir(), "--prefix", "v1/*"}, exitUsage, "wildcard"},
		{[]string{"-h"}, exitOK, ""},
	} {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), tc.args, &stdout, &stderr)
		require.Equal(t, tc.code, code, "%v: %s", tc.args, stderr.String())
		if tc.code == exitOK {
			require.Contains(t, stdout.String(), "usage:")
			continue
		}
		require.Contains(t, stderr.String(), tc.want)
		require.Equal(t, 1, strings.Count(stderr.String(), "\n"), "one line: %q", stderr.String())
	}
}

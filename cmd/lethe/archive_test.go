package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"
)

// TestArchiveLocateVerifyRewrap runs the archive's reading commands on an
// archived shop: archive locate, archive verify (a restore drill) and keys
// rewrap (a master-key rotation), with what an operator gets wrong.
func TestArchiveLocateVerifyRewrap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShop(t, 0)
	requireOK(t, lethe(t, "sweep", "--wait", "--config", s.cfgPath))
	goneDue := s.keys(catGoneDue)
	cfg := []string{"--config", s.cfgPath}
	run := func(args ...string) result { return lethe(t, append(args, cfg...)...) }

	// locate, as text and JSON.
	k := goneDue[0]
	l := s.locate(t, k)
	r := run("archive", "locate", "--subject", k)
	requireOK(t, r)
	for _, want := range []string{"archived", l.Segment, l.VersionID, l.SHA256, "wrapped key:   stored"} {
		require.Contains(t, r.stdout, want, "%s", r)
	}
	requireOneLineError(t, run("archive", "locate", "--subject", "never-a-client"), 1, "never archived")
	requireOneLineError(t, run("archive", "locate"), 2, "--subject KEY or --all")
	requireOneLineError(t, run("archive", "locate", "--all", "--subject", k), 2, "--subject KEY or --all")
	requireOneLineError(t, run("archive", "locate", "--subject", " "), 2, "--subject")
	r = run("archive", "locate", "--all")
	requireOK(t, r)
	require.Len(t, strings.Split(strings.TrimSpace(r.stdout), "\n"), len(goneDue)+1, "a header and a line per entry\n%s", r)

	// verify: every live part restores.
	r = run("archive", "verify", "--identity", s.idPath)
	requireOK(t, r)
	require.Contains(t, r.stdout, "archive verified (every live part)", "%s", r)
	var v struct {
		Live, Checked, OK, Segments int
		Failed                      []json.RawMessage
	}
	r = run("archive", "verify", "--identity", s.idPath, "--json")
	requireOK(t, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v), "%s", r)
	require.Equal(t, len(goneDue), v.Live)
	require.Equal(t, len(goneDue), v.Checked)
	require.Equal(t, len(goneDue), v.OK)
	require.Equal(t, 1, v.Segments)
	require.Empty(t, v.Failed)
	r = run("archive", "verify", "--identity", s.idPath, "--sample", "3", "--json")
	requireOK(t, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v), "%s", r)
	require.Equal(t, 3, v.Checked)
	requireOneLineError(t, run("archive", "verify", "--identity", s.idPath, "--sample", "0"), 2, "--sample")
	requireOneLineError(t, run("archive", "verify"), 2, "--identity")
	stranger := filepath.Join(t.TempDir(), "stranger.txt")
	require.NoError(t, os.WriteFile(stranger, []byte(testenv.NewIdentity(t).String()+"\n"), 0o600))
	requireOneLineError(t, run("archive", "verify", "--identity", stranger), 1, "opened none")
	// With the worker's credentials for the reader's, the drill names the key.
	swapped := strings.Replace(s.yaml, "restore:\n  credentials:\n    access_key_id: "+s.bucket.Server.Reader.AccessKeyID,
		"restore:\n  credentials:\n    access_key_id: "+s.bucket.Server.Writer.AccessKeyID, 1)
	swapped = strings.Replace(swapped, "secret_access_key: "+s.bucket.Server.Reader.SecretAccessKey, "secret_access_key: "+s.bucket.Server.Writer.SecretAccessKey, 1)
	require.NotEqual(t, s.yaml, swapped)
	requireOneLineError(t, lethe(t, "archive", "verify", "--identity", s.idPath, "--config", s.writeConfig(t, "swapped.yaml", swapped)), 2, "restore.credentials")
	// A part that is not what its entry says fails the drill, by name.
	bad := s.hmacOf(goneDue[1])
	good := s.locate(t, goneDue[1]).SHA256
	_, err := s.db.Pool.Exec(ctx, `UPDATE lethe.manifest SET part_sha256 = repeat('0', 64) WHERE subject_hmac = $1`, bad)
	require.NoError(t, err)
	r = run("archive", "verify", "--identity", s.idPath)
	require.Equal(t, 1, r.code, "%s", r)
	require.Contains(t, r.stdout, fmt.Sprintf("archive verify FAILED (every live part): 1 of %d parts", len(goneDue)), "%s", r)
	require.Contains(t, r.stdout, bad[:16], "%s", r)
	_, err = s.db.Pool.Exec(ctx, `UPDATE lethe.manifest SET part_sha256 = $2 WHERE subject_hmac = $1`, bad, good)
	require.NoError(t, err)
	requireOK(t, run("archive", "verify", "--identity", s.idPath))

	// keys rewrap: the masters change to a new key.
	next := testenv.NewIdentity(t)
	nextPath := filepath.Join(t.TempDir(), "next.txt")
	require.NoError(t, os.WriteFile(nextPath, []byte(next.String()+"\n"), 0o600))
	rotated := s.writeConfig(t, "rotated.yaml", strings.Replace(s.yaml, s.identity.Recipient().String(), next.Recipient().String(), 1))
	manifest := tableDump(t, s, "lethe.manifest")
	bucket := listVersions(t, s.bucket)
	// An identity that opens none of the keys changes nothing.
	requireOneLineError(t, lethe(t, "keys", "rewrap", "--identity", stranger, "--config", rotated), 1, fmt.Sprintf("opens none of the %d keys", len(goneDue)), "nothing was changed")
	require.Equal(t, manifest, tableDump(t, s, "lethe.manifest"))
	requireOneLineError(t, lethe(t, "keys", "rewrap", "--config", rotated), 2, "--identity")
	// With the old master's identity, every key is wrapped to the new one.
	r = lethe(t, "keys", "rewrap", "--identity", s.idPath, "--config", rotated)
	requireOK(t, r)
	require.Contains(t, r.stdout, fmt.Sprintf("rewrapped %d subject keys to archive.recipients", len(goneDue)), "%s", r)
	require.Equal(t, bucket, listVersions(t, s.bucket), "a rotation touched the bucket")
	r = lethe(t, "keys", "rewrap", "--identity", s.idPath, "--config", rotated)
	requireOK(t, r)
	require.Contains(t, r.stdout, "nothing to do", "%s", r)
	// The new master restores; the old one no longer can.
	out := filepath.Join(t.TempDir(), "bundle.json")
	requireOK(t, lethe(t, "restore", "--subject", k, "--identity", nextPath, "--out", out, "--config", rotated))
	requireOneLineError(t, lethe(t, "restore", "--subject", k, "--identity", s.idPath, "--config", rotated), 1, "cannot open this subject's key")
	requireOK(t, lethe(t, "archive", "verify", "--identity", nextPath, "--config", rotated))
	r = lethe(t, "audit", "verify", "--config", rotated)
	requireOK(t, r)
}

// TestBucketWithoutObjectLock checks lock_mode against a bucket whose owner
// did not turn Object Lock on: governance (the default) and compliance
// stop every command that would write with exit 2 and a line naming
// archive.lock_mode, and change nothing; lock_mode none archives, without
// retention or legal holds.
func TestBucketWithoutObjectLock(t *testing.T) {
	t.Parallel()
	s := newShopOn(t, 0, testenv.NewBucketWithoutLock(t))
	start := time.Now()
	before := dumpShop(t, s.db.Pool)
	state := letheState(t, s.db.Pool)
	for _, mode := range []string{"", "  lock_mode: compliance\n"} {
		cfg := s.writeConfig(t, "lock.yaml", strings.Replace(s.yaml, "  prefix: v1/\n", "  prefix: v1/\n"+mode, 1))
		for _, args := range [][]string{{"sweep", "--wait"}, {"worker"}} {
			r := letheWith(t, 45*time.Second, nil, append(args, "--config", cfg)...)
			requireOneLineError(t, r, 2, "archive.lock_mode", "has no Object Lock", "lock_mode: none")
		}
	}
	require.Equal(t, before, dumpShop(t, s.db.Pool))
	require.Equal(t, state, letheState(t, s.db.Pool))
	require.Empty(t, listVersions(t, s.bucket))

	none := s.writeConfig(t, "none.yaml", strings.Replace(s.yaml, "  prefix: v1/\n", "  prefix: v1/\n  lock_mode: none\n", 1))
	r := lethe(t, "hold", "place", "--matter", "M-1", "--subject", s.keys(catGoneDue)[0], "--reason", "r", "--by", "legal", "--config", none)
	requireOK(t, r)
	r = lethe(t, "sweep", "--wait", "--config", none)
	requireOK(t, r)
	require.Contains(t, r.stderr, "the bucket has no Object Lock", "%s", r)
	versions := listVersions(t, s.bucket)
	require.Len(t, versions, 1)
	root := s.bucket.Server.Client(s.bucket.Server.Root)
	head, err := root.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(s.bucket.Name), Key: aws.String(versions[0].key)})
	require.NoError(t, err)
	require.Empty(t, head.ObjectLockMode)
	require.Empty(t, head.ObjectLockLegalHoldStatus)
	for _, k := range s.keys(catGoneDue) {
		require.Equal(t, "archived", locate(t, none, k).State)
	}
	plaintext := restoreWithoutLethe(t, &shop{db: s.db, bucket: s.bucket, cfgPath: none, idPath: s.idPath}, s.keys(catGoneDue)[1])
	checkBundle(t, plaintext, s.keys(catGoneDue)[1], "gone", before, start)
}

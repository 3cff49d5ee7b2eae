package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"
)

// readmeRestoreBlock is the README's procedure for restoring a subject
// without lethe: the shell block after the restore-without-lethe marker.
func readmeRestoreBlock(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	m := regexp.MustCompile("(?s)<!-- restore-without-lethe:[^>]*-->\n```sh\n(.*?)```").FindSubmatch(readme)
	require.NotNil(t, m, "README.md has no restore-without-lethe block")
	return string(m[1])
}

// restoreWithoutLethe runs the README's procedure as an outside client
// would: bash, curl's SigV4 with the reader's credentials, jq, base64 and
// the stock age CLI; lethe only for archive locate. It returns the bundle.
func restoreWithoutLethe(t *testing.T, s *shop, key string) []byte {
	t.Helper()
	for _, tool := range []string{"bash", "curl", "jq", "base64", "sha256sum"} {
		_, err := exec.LookPath(tool)
		require.NoError(t, err, "the outside-client restore needs %s (apt-get install curl jq)", tool)
	}
	dir := t.TempDir()
	srv := s.bucket.Server
	path := filepath.Dir(letheBin) + string(os.PathListSeparator) + filepath.Dir(ageBin(t)) + string(os.PathListSeparator) + os.Getenv("PATH")
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", readmeRestoreBlock(t))
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), "PATH="+path, "SUBJECT="+key, "MASTER="+s.idPath, "LETHE_CONFIG="+s.cfgPath,
		"S3_ENDPOINT="+srv.Endpoint, "BUCKET="+s.bucket.Name, "AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID="+srv.Reader.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+srv.Reader.SecretAccessKey)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the README's restore without lethe failed for %q:\n%s", key, out)
	bundle, err := os.ReadFile(filepath.Join(dir, "bundle.json"))
	require.NoError(t, err)
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{"entry.json", "bundle.json"}, names, "the procedure cleans up its key material")
	require.NotContains(t, strings.ToUpper(string(out)), "AGE-SECRET-KEY", "the procedure printed a key")
	return bundle
}

// openEntryWithAge runs the README's procedure from step 1 on, on one
// manifest entry as archive locate --all --json prints it (a minimised
// record's original values, say): curl, jq and the stock age CLI, no lethe.
// It returns the bundle.
func openEntryWithAge(t *testing.T, bucket *testenv.Bucket, masterPath string, entry []byte) []byte {
	t.Helper()
	block := readmeRestoreBlock(t)
	var steps []string
	for _, l := range strings.Split(block, "\n") {
		if !strings.HasPrefix(l, "lethe archive locate") {
			steps = append(steps, l)
		}
	}
	require.Len(t, steps, len(strings.Split(block, "\n"))-1, "the README's block has one archive locate line")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "entry.json"), entry, 0o600))
	srv := bucket.Server
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", strings.Join(steps, "\n"))
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), "PATH="+filepath.Dir(ageBin(t))+string(os.PathListSeparator)+os.Getenv("PATH"), "MASTER="+masterPath,
		"S3_ENDPOINT="+srv.Endpoint, "BUCKET="+bucket.Name, "AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID="+srv.Reader.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+srv.Reader.SecretAccessKey)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the README's steps failed on entry %s:\n%s", entry, out)
	bundle, err := os.ReadFile(filepath.Join(dir, "bundle.json"))
	require.NoError(t, err)
	return bundle
}

package s3dev

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEnvRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := &Server{
		Endpoint: "http://127.0.0.1:7070",
		Dir:      dir,
		Root:     randomCredentials(),
		Writer:   randomCredentials(),
		Reader:   randomCredentials(),
	}
	require.NoError(t, writeEnv(s))
	fi, err := os.Stat(filepath.Join(dir, EnvFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	st, err := readEnv(dir)
	require.NoError(t, err)
	require.Equal(t, envState{endpoint: s.Endpoint, addr: "127.0.0.1:7070", root: s.Root, writer: s.Writer, reader: s.Reader}, st)

	_, err = readEnv(t.TempDir())
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestWriteIAMKeepsOtherAccounts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	other := `{"accessAccounts":{"someone":{"access":"someone","secret":"s","role":"admin","userID":7,"groupID":0,"projectID":0}}}`
	require.NoError(t, os.WriteFile(filepath.Join(dir, iamUsersFile), []byte(other), 0o600))

	writer, reader := randomCredentials(), randomCredentials()
	require.NoError(t, writeIAM(dir, writer, reader))
	require.NoError(t, writeIAM(dir, writer, reader)) // idempotent

	b, err := os.ReadFile(filepath.Join(dir, iamUsersFile))
	require.NoError(t, err)
	var conf struct {
		AccessAccounts map[string]iamAccount `json:"accessAccounts"`
	}
	require.NoError(t, json.Unmarshal(b, &conf))
	require.Equal(t, map[string]iamAccount{
		"someone":          {Access: "someone", Secret: "s", Role: "admin", UserID: 7},
		writer.AccessKeyID: {Access: writer.AccessKeyID, Secret: writer.SecretAccessKey, Role: "user"},
		reader.AccessKeyID: {Access: reader.AccessKeyID, Secret: reader.SecretAccessKey, Role: "user"},
	}, conf.AccessAccounts)
}

func TestDeclaresModule(t *testing.T) {
	t.Parallel()
	require.True(t, declaresModule([]byte("// c\nmodule github.com/lethehq/lethe\n\ngo 1.26\n"), modulePath))
	require.True(t, declaresModule([]byte("module \"github.com/lethehq/lethe\"\n"), modulePath))
	require.False(t, declaresModule([]byte("module github.com/lethehq/lethe/tools\n"), modulePath))
	require.False(t, declaresModule([]byte("go 1.26\n"), modulePath))
}

func TestServesDir(t *testing.T) {
	t.Parallel()
	args := func(s ...string) [][]byte {
		out := make([][]byte, len(s))
		for i := range s {
			out[i] = []byte(s[i])
		}
		return out
	}
	require.True(t, servesDir(args("versitygw", "--iam-dir", "/d/iam", "posix"), "/d"))
	require.False(t, servesDir(args("versitygw", "--iam-dir", "/other/iam", "posix"), "/d"))
	require.False(t, servesDir(args("sleep", "/d/iam"), "/d"))
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	valid := func() Options {
		return Options{Addr: "127.0.0.1:0", Root: randomCredentials(), Writer: randomCredentials(), Reader: randomCredentials()}
	}
	o := valid()
	require.NoError(t, o.validate())

	o = valid()
	o.Addr = "[::1]:0"
	require.NoError(t, o.validate())

	o = valid()
	o.Addr = "localhost:0"
	require.ErrorContains(t, o.validate(), "loopback")

	o = valid()
	o.Writer.SecretAccessKey = "has space"
	require.ErrorContains(t, o.validate(), "Writer")

	o = valid()
	o.Reader.AccessKeyID = o.Writer.AccessKeyID
	require.ErrorContains(t, o.validate(), "share access key id")
}

package s3dev

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Variables of the env file, as the demo and benchmarks read them.
const (
	EnvEndpoint          = "LETHE_S3_ENDPOINT"
	EnvWriterAccessKeyID = "LETHE_ARCHIVE_ACCESS_KEY_ID"
	EnvWriterSecretKey   = "LETHE_ARCHIVE_SECRET_ACCESS_KEY"
	EnvReaderAccessKeyID = "LETHE_RESTORE_ACCESS_KEY_ID"
	EnvReaderSecretKey   = "LETHE_RESTORE_SECRET_ACCESS_KEY"
	EnvRootAccessKeyID   = "LETHE_S3_ROOT_ACCESS_KEY_ID"
	EnvRootSecretKey     = "LETHE_S3_ROOT_SECRET_ACCESS_KEY"
)

const (
	envFileHeader        = "# Written by s3dev: the local versitygw and its accounts. Source it from a shell.\n"
	iamUsersFile         = "users.json"
	iamRoleUser          = "user"
	stateFilePermissions = 0o600
	maxEnvFileLine       = 4096
)

// Env returns the contents of the env file for s: one VAR=value line per
// variable, values unquoted (they are shell-safe).
func (s *Server) Env() string {
	var b strings.Builder
	b.WriteString(envFileHeader)
	for _, kv := range [][2]string{
		{EnvEndpoint, s.Endpoint},
		{EnvWriterAccessKeyID, s.Writer.AccessKeyID},
		{EnvWriterSecretKey, s.Writer.SecretAccessKey},
		{EnvReaderAccessKeyID, s.Reader.AccessKeyID},
		{EnvReaderSecretKey, s.Reader.SecretAccessKey},
		{EnvRootAccessKeyID, s.Root.AccessKeyID},
		{EnvRootSecretKey, s.Root.SecretAccessKey},
	} {
		b.WriteString(kv[0] + "=" + kv[1] + "\n")
	}
	return b.String()
}

func writeEnv(s *Server) error {
	if err := writeFileAtomic(filepath.Join(s.Dir, EnvFile), []byte(s.Env())); err != nil {
		return fmt.Errorf("error writing env file: %w", err)
	}
	return nil
}

// envState is what an env file records.
type envState struct {
	endpoint             string
	addr                 string // host:port of endpoint
	root, writer, reader Credentials
}

// readEnv parses dir/env. A missing file yields an error wrapping
// os.ErrNotExist.
func readEnv(dir string) (envState, error) {
	f, err := os.Open(filepath.Join(dir, EnvFile))
	if err != nil {
		return envState{}, fmt.Errorf("error reading env file: %w", err)
	}
	defer f.Close()

	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, maxEnvFileLine)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			return envState{}, fmt.Errorf("error reading env file: bad line %q", line)
		}
		vars[name] = strings.Trim(value, `'"`)
	}
	if err := sc.Err(); err != nil {
		return envState{}, fmt.Errorf("error reading env file: %w", err)
	}

	st := envState{
		endpoint: vars[EnvEndpoint],
		root:     Credentials{vars[EnvRootAccessKeyID], vars[EnvRootSecretKey]},
		writer:   Credentials{vars[EnvWriterAccessKeyID], vars[EnvWriterSecretKey]},
		reader:   Credentials{vars[EnvReaderAccessKeyID], vars[EnvReaderSecretKey]},
	}
	if st.endpoint != "" {
		u, err := url.Parse(st.endpoint)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return envState{}, fmt.Errorf("error reading env file: bad %s %q", EnvEndpoint, st.endpoint)
		}
		st.addr = u.Host
	}
	return st, nil
}

func readPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, PIDFile))
	if err != nil {
		return 0, fmt.Errorf("error reading pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("error reading pid file: bad pid %q", bytes.TrimSpace(b))
	}
	return pid, nil
}

// iamAccount is one entry of versitygw's internal IAM file
// (iam/users.json), as versitygw v1.8.0 writes it.
type iamAccount struct {
	Access    string `json:"access"`
	Secret    string `json:"secret"`
	Role      string `json:"role"`
	UserID    int    `json:"userID"`
	GroupID   int    `json:"groupID"`
	ProjectID int    `json:"projectID"`
}

// writeIAM adds or replaces the writer and reader accounts (role "user")
// in dir/users.json, keeping any other accounts. The server must not be
// running: versitygw reads the file on demand but caches accounts.
func writeIAM(dir string, writer, reader Credentials) error {
	path := filepath.Join(dir, iamUsersFile)
	conf := struct {
		AccessAccounts map[string]json.RawMessage `json:"accessAccounts"`
	}{}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &conf); err != nil {
			return fmt.Errorf("error parsing %s: %w", path, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("error reading iam file: %w", err)
	}
	if conf.AccessAccounts == nil {
		conf.AccessAccounts = map[string]json.RawMessage{}
	}
	for _, c := range []Credentials{writer, reader} {
		acc, err := json.Marshal(iamAccount{Access: c.AccessKeyID, Secret: c.SecretAccessKey, Role: iamRoleUser})
		if err != nil {
			return fmt.Errorf("error encoding iam account: %w", err)
		}
		conf.AccessAccounts[c.AccessKeyID] = acc
	}
	out, err := json.Marshal(conf)
	if err != nil {
		return fmt.Errorf("error encoding iam file: %w", err)
	}
	if err := writeFileAtomic(path, out); err != nil {
		return fmt.Errorf("error writing iam file: %w", err)
	}
	return nil
}

// writeFileAtomic writes b to path through a temporary file and a rename,
// with mode 0600 (the files hold secrets).
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if err := f.Chmod(stateFilePermissions); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

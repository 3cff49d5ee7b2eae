// Package s3dev starts and provisions a local S3 server for tests, the demo
// and benchmarks.
//
// The server is Versity S3 Gateway (versitygw) with its posix backend, bound
// to loopback. It owns a state directory holding the objects (data/), the
// object versions (versions/) and the accounts (iam/users.json), so data
// survives a restart. Start creates three accounts: the root account that
// owns buckets, a writer for the archive worker and a reader for restores.
// CreateBucket makes an object-locked, versioned bucket whose policy
// (BucketPolicy) gives the writer and the reader least privilege.
//
// Tests run the server as a child of the test process. The s3dev command
// uses Options.Detach so that the server outlives it, and Attach to find it
// again from the state directory.
package s3dev

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"
)

// Credentials is one S3 access key pair.
type Credentials struct {
	// AccessKeyID names the account. Bucket policies name it as principal.
	AccessKeyID string
	// SecretAccessKey signs the account's requests.
	SecretAccessKey string
}

// IsZero reports whether both halves of c are empty.
func (c Credentials) IsZero() bool { return c == Credentials{} }

// ErrNotRunning is returned by Attach when no server is running for a
// state directory.
var ErrNotRunning = errors.New("versitygw is not running")

// ErrRunning is returned by Start when a detached server is already running
// for the state directory.
var ErrRunning = errors.New("versitygw is already running")

// Names of the files and directories inside a server's state directory.
const (
	// EnvFile is the shell-sourceable file with the endpoint and the keys.
	EnvFile = "env"
	// PIDFile holds the process id of a detached server.
	PIDFile = "pid"
	// LogFile receives the output of a detached server.
	LogFile = "versitygw.log"

	dataDir     = "data"
	versionsDir = "versions"
	iamDir      = "iam"
)

const (
	defaultAddr         = "127.0.0.1:0"
	defaultStartTimeout = 15 * time.Second
	stopGrace           = 5 * time.Second
	stderrTailSize      = 4 << 10
	startAttempts       = 3
)

// Options configures Start. Zero values pick defaults.
type Options struct {
	// Binary is the versitygw executable. Default: $LETHE_VERSITYGW, else
	// bin/versitygw in the lethe module root found by walking up from the
	// working directory.
	Binary string

	// Dir is the state directory (data, versions, iam, env). Default: a new
	// temporary directory, which Stop removes. A directory given here is
	// never removed.
	Dir string

	// Addr is the S3 listen address. It must be a loopback IP with a port;
	// port 0 picks a free port. Default: "127.0.0.1:0".
	Addr string

	// Root owns the buckets. Writer is the archive worker's account and
	// Reader the restore account; both get role "user". Zero credentials
	// are taken from Dir/env when it exists (so that a reused directory keeps
	// its keys), else generated at random.
	Root, Writer, Reader Credentials

	// Stdout and Stderr receive the server's output. Default: discarded,
	// though the last 4 KiB of stderr are kept for start errors. Ignored
	// when Detach is set.
	Stdout, Stderr io.Writer

	// Detach starts the server in its own session with its output appended
	// to Dir/versitygw.log and its process id in Dir/pid, so that it keeps
	// running after this process exits. Detach requires Dir.
	Detach bool

	// StartTimeout bounds the wait for /health after each launch.
	// Default: 15s.
	StartTimeout time.Duration
}

// keyPattern is what Credentials may contain: it keeps Dir/env
// shell-sourceable without quoting.
var keyPattern = regexp.MustCompile(`^[A-Za-z0-9+/=._-]+$`)

func (o *Options) validate() error {
	if o.StartTimeout < 0 {
		return fmt.Errorf("invalid options: StartTimeout %s is negative", o.StartTimeout)
	}
	if err := checkLoopback(o.Addr); err != nil {
		return err
	}
	creds := map[string]Credentials{"Root": o.Root, "Writer": o.Writer, "Reader": o.Reader}
	seen := map[string]string{}
	for _, name := range []string{"Root", "Writer", "Reader"} {
		c := creds[name]
		if !keyPattern.MatchString(c.AccessKeyID) || !keyPattern.MatchString(c.SecretAccessKey) {
			return fmt.Errorf("invalid options: %s: keys must be non-empty and match %s", name, keyPattern)
		}
		if other, ok := seen[c.AccessKeyID]; ok {
			return fmt.Errorf("invalid options: %s and %s share access key id %q", other, name, c.AccessKeyID)
		}
		seen[c.AccessKeyID] = name
	}
	return nil
}

func checkLoopback(addr string) error {
	host, _, err := splitAddr(addr)
	if err != nil {
		return fmt.Errorf("invalid options: Addr: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("invalid options: Addr %q: host must be a loopback IP", addr)
	}
	return nil
}

func splitAddr(addr string) (host string, port int, err error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return h, n, nil
}

// Server is a running (or stopped) versitygw. Its methods are safe for
// concurrent use.
type Server struct {
	// Endpoint is the S3 URL, e.g. http://127.0.0.1:41234. It stays the
	// same across Restart.
	Endpoint string
	// Root, Writer and Reader are the accounts' keys.
	Root, Writer, Reader Credentials
	// Dir is the absolute state directory.
	Dir string

	binary     string
	addr       string
	detach     bool
	createdDir bool
	stdout     io.Writer
	stderr     io.Writer
	timeout    time.Duration

	mu      sync.Mutex
	pid     int    // 0 when stopped
	proc    *child // nil when attached or stopped
	removed bool   // Stop removed a directory Start created
}

// Start provisions the state directory, starts versitygw and waits until it
// answers /health.
func Start(ctx context.Context, opts Options) (*Server, error) {
	s, err := newServer(opts)
	if err != nil {
		return nil, err
	}
	if err := s.launch(ctx); err != nil {
		if s.createdDir {
			_ = os.RemoveAll(s.Dir)
		}
		return nil, err
	}
	if err := writeEnv(s); err != nil {
		_ = s.Kill()
		if s.createdDir {
			_ = os.RemoveAll(s.Dir)
		}
		return nil, err
	}
	return s, nil
}

func newServer(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = defaultAddr
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = defaultStartTimeout
	}
	if opts.Detach && opts.Dir == "" {
		return nil, errors.New("invalid options: Detach requires Dir")
	}
	if err := checkLoopback(opts.Addr); err != nil {
		return nil, err
	}
	binary, err := resolveBinary(opts.Binary)
	if err != nil {
		return nil, err
	}

	created := false
	if opts.Dir == "" {
		opts.Dir, err = os.MkdirTemp("", "s3dev-")
		if err != nil {
			return nil, fmt.Errorf("error creating state directory: %w", err)
		}
		created = true
	}
	fail := func(err error) (*Server, error) {
		if created {
			_ = os.RemoveAll(opts.Dir)
		}
		return nil, err
	}
	for _, d := range []string{dataDir, versionsDir, iamDir} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, d), 0o700); err != nil {
			return fail(fmt.Errorf("error creating state directory: %w", err))
		}
	}
	if opts.Dir, err = canonicalDir(opts.Dir); err != nil {
		return fail(err)
	}
	if pid, err := readPID(opts.Dir); err == nil && processServes(pid, opts.Dir) {
		return fail(fmt.Errorf("error starting versitygw in %s: %w (pid %d)", opts.Dir, ErrRunning, pid))
	}

	if env, err := readEnv(opts.Dir); err == nil {
		fillZero(&opts.Root, env.root)
		fillZero(&opts.Writer, env.writer)
		fillZero(&opts.Reader, env.reader)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fail(err)
	}
	for _, c := range []*Credentials{&opts.Root, &opts.Writer, &opts.Reader} {
		if c.IsZero() {
			*c = randomCredentials()
		}
	}
	if err := opts.validate(); err != nil {
		return fail(err)
	}
	if err := writeIAM(filepath.Join(opts.Dir, iamDir), opts.Writer, opts.Reader); err != nil {
		return fail(err)
	}

	s := &Server{
		Root:       opts.Root,
		Writer:     opts.Writer,
		Reader:     opts.Reader,
		Dir:        opts.Dir,
		binary:     binary,
		addr:       opts.Addr,
		detach:     opts.Detach,
		createdDir: created,
		stdout:     opts.Stdout,
		stderr:     opts.Stderr,
		timeout:    opts.StartTimeout,
	}
	return s, nil
}

func fillZero(dst *Credentials, src Credentials) {
	if dst.IsZero() {
		*dst = src
	}
}

// randomCredentials returns hex keys: 20 characters for the access key id
// (like AWS) and 40 for the secret.
func randomCredentials() Credentials {
	return Credentials{AccessKeyID: "AK" + randomHex(9), SecretAccessKey: randomHex(20)}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand documents it panics instead)
	return hex.EncodeToString(b)
}

// Attach returns the detached server running for the state directory dir,
// as recorded in dir/pid and dir/env. It returns an error wrapping
// ErrNotRunning when there is no such process. It does not check health;
// call Ready for that.
func Attach(dir string) (*Server, error) {
	dir, err := canonicalDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("error attaching: %w (%w)", ErrNotRunning, err)
		}
		return nil, err
	}
	pid, err := readPID(dir)
	if err != nil {
		return nil, fmt.Errorf("error attaching to %s: %w (%w)", dir, ErrNotRunning, err)
	}
	if !processServes(pid, dir) {
		return nil, fmt.Errorf("error attaching to %s: %w (no versitygw with pid %d)", dir, ErrNotRunning, pid)
	}
	env, err := readEnv(dir)
	if err != nil {
		return nil, fmt.Errorf("error attaching to %s: %w", dir, err)
	}
	return &Server{
		Endpoint: env.endpoint,
		Root:     env.root,
		Writer:   env.writer,
		Reader:   env.reader,
		Dir:      dir,
		addr:     env.addr,
		detach:   true,
		timeout:  defaultStartTimeout,
		pid:      pid,
	}, nil
}

// canonicalDir returns the absolute path of dir with symbolic links
// resolved: a detached server is recognised by the path on its command line.
func canonicalDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("error resolving state directory: %w", err)
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("error resolving state directory: %w", err)
	}
	return resolved, nil
}

// PID returns the server's process id, or 0 when it is stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid
}

// Stop terminates the server: SIGTERM, then SIGKILL after 5s, and waits for
// it to exit. It removes the state directory if Start created it, so
// Restart works after Stop only when Options.Dir was given. Stop is
// idempotent.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.terminate(false)
	if s.createdDir && !s.removed {
		if rmErr := os.RemoveAll(s.Dir); rmErr != nil && err == nil {
			err = fmt.Errorf("error removing state directory: %w", rmErr)
		}
		s.removed = true
	}
	return err
}

// Kill sends SIGKILL to the server at once, as an outage would, and waits
// for it to exit. The state directory stays for Restart.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.terminate(true)
}

// Restart starts the server again on the same address and state
// directory, with the same accounts, after Stop or Kill; the data persists.
// A running server is stopped first.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.prepareRestart(); err != nil {
		return fmt.Errorf("error restarting versitygw: %w", err)
	}
	return s.launch(ctx)
}

func (s *Server) prepareRestart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return errors.New("the temporary state directory was removed by Stop; use Kill, or give Options.Dir")
	}
	if err := s.terminate(false); err != nil {
		return err
	}
	if s.binary == "" {
		binary, err := resolveBinary("")
		if err != nil {
			return err
		}
		s.binary = binary
	}
	return writeIAM(filepath.Join(s.Dir, iamDir), s.Writer, s.Reader)
}

package testenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/migrations"
)

// Postgres is a PostgreSQL cluster of a test's own, for tests that stop,
// kill or restart the database under lethe. The shared server at AdminURL
// must never be stopped; this one may be.
//
// NewPostgres runs initdb (trust authentication, superuser postgres) into
// a fresh directory and starts the postgres server as a child of the test
// process, listening on a free loopback port and on a Unix socket in that
// directory, with fsync off. When the test process runs as root, initdb and
// postgres run as the "postgres" user (initdb refuses root). The server
// receives SIGQUIT if the test process dies, so a crashed test leaves no
// cluster behind.
type Postgres struct {
	// URL connects to the cluster's "postgres" database as the superuser.
	// It stays the same across Stop, Start and Restart.
	URL string
	// Port is the TCP port on 127.0.0.1.
	Port int
	// Dir holds the data directory (data/), the socket and the server log
	// (postgres.log).
	Dir string

	bin  string
	cred *syscall.Credential // nil when not root

	mu   sync.Mutex
	proc *exec.Cmd     // nil while stopped
	done chan struct{} // closed when proc has exited
}

// pgBinEnv tells NewPostgres where the server binaries are; otherwise pg_config --bindir, then the newest
// /usr/lib/postgresql/*/bin, then PATH.
const pgBinEnv = "LETHE_PG_BINDIR"

// NewPostgres creates and starts a cluster for t, stopped (immediately)
// and removed when t ends.
func NewPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin, err := pgBinDir()
	require.NoError(t, err)
	p := &Postgres{bin: bin}

	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		require.NoError(t, err, "running as root: initdb and postgres need the unprivileged user postgres")
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}}
	}

	// Not t.TempDir(): its path can be too long for a Unix socket
	// (107 bytes), and its parent is not searchable by another user.
	removeStaleClusters()
	p.Dir, err = os.MkdirTemp("", pgDirPrefix)
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(p.Dir) })
	if p.cred != nil {
		require.NoError(t, os.Chown(p.Dir, int(p.cred.Uid), int(p.cred.Gid)))
	}

	start := time.Now()
	initdb := p.command(filepath.Join(bin, "initdb"), "-D", p.dataDir(), "-A", "trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	out, err := initdb.CombinedOutput()
	require.NoError(t, err, "initdb: %s", out)

	p.Port = freeLoopbackPort(t)
	p.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.Port)
	t.Cleanup(func() { _ = p.Kill() })
	require.NoError(t, p.Start())
	t.Logf("private PostgreSQL on port %d ready in %s", p.Port, time.Since(start).Round(time.Millisecond))
	return p
}

func (p *Postgres) dataDir() string { return filepath.Join(p.Dir, "data") }

// LogFile is the server's log: what it said across every start.
func (p *Postgres) LogFile() string { return filepath.Join(p.Dir, "postgres.log") }

func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = p.Dir
	cmd.Env = pgEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	return cmd
}

// pgEnv is the environment without libpq's and the locale's variables.
func pgEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// Start starts the server if it is stopped and waits until it accepts
// connections. Crash recovery after Kill happens here.
func (p *Postgres) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil {
		return nil
	}
	logf, err := os.OpenFile(p.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("error opening the server log: %w", err)
	}
	defer logf.Close()
	offset, _ := logf.Seek(0, 2)
	cmd := p.command(filepath.Join(p.bin, "postgres"), "-D", p.dataDir(),
		"-c", "listen_addresses=127.0.0.1", "-p", strconv.Itoa(p.Port), "-k", p.Dir,
		// fsync off: WAL still reaches the kernel at each commit, so a
		// killed server (not a crashed machine) loses no committed
		// transaction. synchronous_commit stays on for that reason.
		"-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "shared_buffers=32MB", "-c", "max_connections=200",
		"-c", "logging_collector=off", "-c", "log_min_messages=warning")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT // immediate shutdown if the test process dies
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("error starting postgres: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.proc, p.done = cmd, done

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, p.URL)
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-done:
			p.proc, p.done = nil, nil
			return fmt.Errorf("postgres exited while starting: %s", readFrom(p.LogFile(), offset))
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGQUIT)
			<-done
			p.proc, p.done = nil, nil
			return fmt.Errorf("postgres did not accept connections within 30s: %w; log: %s", err, readFrom(p.LogFile(), offset))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop shuts the server down cleanly, as pg_ctl stop -m fast does
// (SIGINT: sessions are disconnected, open transactions roll back, a
// checkpoint is written), and waits for it to exit.
func (p *Postgres) Stop() error { return p.signal(syscall.SIGINT) }

// Kill stops the server at once, as pg_ctl stop -m immediate does
// (SIGQUIT: no checkpoint; the next Start recovers from the WAL), and
// waits for it to exit: the database "crashes".
func (p *Postgres) Kill() error { return p.signal(syscall.SIGQUIT) }

// Restart stops the server cleanly and starts it again.
func (p *Postgres) Restart() error {
	if err := p.Stop(); err != nil {
		return err
	}
	return p.Start()
}

// Running reports whether the server process runs.
func (p *Postgres) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc != nil
}

func (p *Postgres) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return nil
	}
	if err := p.proc.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("error stopping postgres: %w", err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.proc.Process.Kill()
		<-p.done
		return errors.New("error stopping postgres: it did not exit within 30s and was killed")
	}
	p.proc, p.done = nil, nil
	return nil
}

// NewDB creates a database on the cluster, migrated with lethe's and
// River's migrations, for t. The cluster must be running. Its pool is
// closed when t ends; the database goes with the cluster.
func (p *Postgres) NewDB(t testing.TB) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "lethe_" + randomHex(4)
	admin, err := pgx.Connect(ctx, p.URL)
	require.NoError(t, err)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	admin.Close(ctx)
	require.NoError(t, err)
	u, err := url.Parse(p.URL)
	require.NoError(t, err)
	u.Path = "/" + name
	pool, err := pgxpool.New(ctx, u.String())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = migrations.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
	require.NoError(t, err, "migrating %s", name)
	return &DB{URL: u.String(), Name: name, Pool: pool}
}

const pgDirPrefix = "lethe-pg-"

// removeStaleClusters removes the directories of clusters left by killed
// test processes: older than two hours, with no postmaster running. (The
// server itself died with the test process.)
func removeStaleClusters() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), pgDirPrefix+"*"))
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < 2*time.Hour {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
			if pid > 0 && syscall.Kill(pid, 0) == nil {
				continue
			}
		}
		_ = os.RemoveAll(d)
	}
}

// pgBinDir finds initdb and postgres.
func pgBinDir() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if d := os.Getenv(pgBinEnv); d != "" {
		if !has(d) {
			return "", fmt.Errorf("$%s=%s has no initdb and postgres", pgBinEnv, d)
		}
		return d, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); has(d) {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	if initdb, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(initdb)) {
		return filepath.Dir(initdb), nil
	}
	return "", fmt.Errorf("the PostgreSQL server binaries (initdb, postgres) are not installed: install the postgresql package or set $%s", pgBinEnv)
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// readFrom returns the end of a file from offset on, at most 4 KiB, on one line.
func readFrom(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || offset > int64(len(b)) {
		return ""
	}
	b = b[offset:]
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

package s3dev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// errAddrInUse marks a start that failed because a port was taken between
// picking it and versitygw binding it.
var errAddrInUse = errors.New("address already in use")

// child is a versitygw process started by this process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status; valid once done is closed
}

// launch starts versitygw and waits for /health. A port picked at random is
// picked again if something else took it meanwhile.
func (s *Server) launch(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pid != 0 {
		return fmt.Errorf("error starting versitygw: %w (pid %d)", ErrRunning, s.pid)
	}
	host, port, err := splitAddr(s.addr)
	if err != nil {
		return fmt.Errorf("error starting versitygw: %w", err)
	}
	var lastErr error
	for range startAttempts {
		addr := s.addr
		if port == 0 {
			if addr, err = freeAddr(host); err != nil {
				return err
			}
		} else if err := checkFree(addr); err != nil {
			return err
		}
		adminAddr, err := freeAddr(host)
		if err != nil {
			return err
		}
		c, err := s.spawn(ctx, addr, adminAddr)
		if err == nil {
			s.addr = addr
			if endpoint := "http://" + addr; s.Endpoint != endpoint {
				s.Endpoint = endpoint // set once: later launches reuse addr
			}
			s.proc = c
			s.pid = c.cmd.Process.Pid
			if s.detach {
				if err := writeFileAtomic(filepath.Join(s.Dir, PIDFile), fmt.Appendf(nil, "%d\n", s.pid)); err != nil {
					_ = s.terminate(true)
					return fmt.Errorf("error writing pid file: %w", err)
				}
			}
			return nil
		}
		lastErr = err
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	return lastErr
}

// freeAddr returns host:port with a port that was free a moment ago.
func freeAddr(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("error picking a free port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("error picking a free port: %w", err)
	}
	return addr, nil
}

// checkFree fails if addr cannot be bound, so that start does not mistake
// another server on that address for its own.
func checkFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("error starting versitygw: %s is not free: %w", addr, err)
	}
	if err := l.Close(); err != nil {
		return fmt.Errorf("error starting versitygw: %w", err)
	}
	return nil
}

// spawn starts one versitygw process and waits until it is healthy. On
// failure the process is gone.
func (s *Server) spawn(ctx context.Context, addr, adminAddr string) (*child, error) {
	cmd := exec.Command(s.binary,
		"--port", addr,
		"--admin-port", adminAddr,
		"--iam-dir", filepath.Join(s.Dir, iamDir),
		"--keep-alive",
		"--quiet",
		"--health", "/health",
		"posix",
		"--versioning-dir", filepath.Join(s.Dir, versionsDir),
		filepath.Join(s.Dir, dataDir),
	)
	cmd.Dir = s.Dir
	cmd.Env = childEnv(os.Environ(), s.Root)

	// output returns the last few KiB the process wrote to stderr.
	var output func() string
	if s.detach {
		logPath := filepath.Join(s.Dir, LogFile)
		f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("error opening versitygw log: %w", err)
		}
		defer f.Close() // the child has its own descriptor
		offset, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return nil, fmt.Errorf("error opening versitygw log: %w", err)
		}
		cmd.Stdout, cmd.Stderr = f, f
		cmd.SysProcAttr = detachedSysProcAttr()
		output = func() string { return readTail(logPath, offset) }
	} else {
		tail := &tailBuffer{}
		cmd.Stdout = s.stdout // nil means /dev/null
		cmd.Stderr = tail
		if s.stderr != nil {
			cmd.Stderr = io.MultiWriter(tail, s.stderr)
		}
		cmd.SysProcAttr = childSysProcAttr()
		output = tail.String
	}

	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("error starting versitygw: %w", err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()

	stop := func() {
		_ = cmd.Process.Kill()
		<-c.done
	}
	startErr := func(msg string, err error) error {
		out := strings.TrimSpace(output())
		if strings.Contains(out, "address already in use") {
			err = fmt.Errorf("%w: %w", err, errAddrInUse)
		}
		if out == "" {
			return fmt.Errorf("error starting versitygw: %s: %w", msg, err)
		}
		return fmt.Errorf("error starting versitygw: %s: %w; output: %s", msg, err, oneLine(out))
	}

	timer := time.NewTimer(s.timeout)
	defer timer.Stop()
	url := "http://" + addr + "/health"
	client := &http.Client{Timeout: time.Second}
	for {
		if healthy(ctx, client, url) {
			select {
			case <-c.done:
				return nil, startErr("exited", c.err)
			default:
				return c, nil
			}
		}
		select {
		case <-c.done:
			return nil, startErr("exited", c.err)
		case <-ctx.Done():
			stop()
			return nil, startErr("waiting for /health", ctx.Err())
		case <-timer.C:
			stop()
			return nil, startErr("waiting for /health", fmt.Errorf("no answer within %s", s.timeout))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func healthy(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Ready returns nil if the server answers /health now.
func (s *Server) Ready(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	if !healthy(ctx, client, s.Endpoint+"/health") {
		return fmt.Errorf("error checking health of versitygw at %s: no healthy answer", s.Endpoint)
	}
	return nil
}

// childEnv is env without the variables versitygw reads as defaults for its
// flags, plus the root keys (kept out of the command line, which other
// users can see).
func childEnv(env []string, root Credentials) []string {
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "VGW_"), strings.HasPrefix(name, "ROOT_"),
			strings.HasPrefix(name, "AWS_"), name == "LOGFILE", name == "WEBHOOK":
			continue
		}
		out = append(out, kv)
	}
	return append(out,
		"ROOT_ACCESS_KEY_ID="+root.AccessKeyID,
		"ROOT_SECRET_ACCESS_KEY="+root.SecretAccessKey,
	)
}

// terminate signals the process and waits for it to exit: SIGKILL at once
// if kill is set, else SIGTERM and SIGKILL after stopGrace. s.mu is held.
func (s *Server) terminate(kill bool) error {
	if s.pid == 0 {
		return nil
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	if s.proc != nil {
		c := s.proc
		_ = c.cmd.Process.Signal(sig)
		select {
		case <-c.done:
		case <-time.After(stopGrace):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	} else if processServes(s.pid, s.Dir) {
		// Attached: not our child, so poll until it is gone.
		_ = syscall.Kill(s.pid, sig)
		if !waitGone(s.pid, s.Dir, stopGrace) {
			_ = syscall.Kill(s.pid, syscall.SIGKILL)
			if !waitGone(s.pid, s.Dir, stopGrace) {
				return fmt.Errorf("error stopping versitygw: pid %d did not exit after SIGKILL", s.pid)
			}
		}
	}
	if s.detach {
		pidPath := filepath.Join(s.Dir, PIDFile)
		if pid, err := readPID(s.Dir); err == nil && pid == s.pid {
			if err := os.Remove(pidPath); err != nil {
				return fmt.Errorf("error removing pid file: %w", err)
			}
		}
	}
	s.pid = 0
	s.proc = nil
	return nil
}

func waitGone(pid int, dir string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for processServes(pid, dir) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// tailBuffer keeps the last stderrTailSize bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > stderrTailSize {
		t.buf = append(t.buf[:0:0], t.buf[len(t.buf)-stderrTailSize:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// readTail returns at most stderrTailSize bytes of path from offset on.
func readTail(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	b = b[offset:]
	if len(b) > stderrTailSize {
		b = b[len(b)-stderrTailSize:]
	}
	return string(b)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// servesDir reports whether a command line has --iam-dir DIR/iam.
func servesDir(args [][]byte, dir string) bool {
	want := []byte(filepath.Join(dir, iamDir))
	for i := 0; i+1 < len(args); i++ {
		if string(args[i]) == "--iam-dir" && bytes.Equal(args[i+1], want) {
			return true
		}
	}
	return false
}

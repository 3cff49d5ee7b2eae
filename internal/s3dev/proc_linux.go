package s3dev

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// childSysProcAttr makes a non-detached server die with the thread that
// started it, so a crashed test does not leave it running.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// detachedSysProcAttr puts a detached server in its own session, away from
// the terminal's signals.
func detachedSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true}
}

// processServes reports whether pid is a live (not zombie) versitygw
// serving the state directory dir. Checking the command line guards
// against a reused pid.
func processServes(pid int, dir string) bool {
	if pid <= 0 {
		return false
	}
	proc := filepath.Join("/proc", strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(proc, "stat"))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	cmdline, err := os.ReadFile(filepath.Join(proc, "cmdline"))
	if err != nil {
		return false
	}
	return servesDir(bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0}), dir)
}

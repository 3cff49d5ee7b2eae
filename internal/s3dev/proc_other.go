//go:build unix && !linux

package s3dev

import (
	"bytes"
	"os/exec"
	"strconv"
	"syscall"
)

// childSysProcAttr puts a non-detached server in its own process group.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// detachedSysProcAttr puts a detached server in its own session, away from
// the terminal's signals.
func detachedSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true}
}

// processServes reports whether pid is a live (not zombie) versitygw
// serving the state directory dir, as ps(1) shows it.
func processServes(pid int, dir string) bool {
	if pid <= 0 {
		return false
	}
	out, err := exec.Command("ps", "-ww", "-o", "stat=,command=", "-p", strconv.Itoa(pid)).Output()
	if err != nil {
		return false
	}
	fields := bytes.Fields(out)
	if len(fields) < 2 || fields[0][0] == 'Z' {
		return false
	}
	return servesDir(fields[1:], dir)
}

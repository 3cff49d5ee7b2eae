//go:build lethefault

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/lethehq/lethe/jobs"
	"github.com/lethehq/lethe/request"
	"github.com/lethehq/lethe/retention"
)

// This file is compiled only into the crash tests' build of lethe (go build
// -tags lethefault): the shipped binary has no switch that kills it.

// faultEnv names the crash-injection variable of the process-level crash
// tests: LETHE_FAULT_KILL_AT=POINT[:N] makes the process kill itself with
// SIGKILL the Nth time (default 1) it reaches POINT, one of the fault points
// of packages retention and request (before_put, after_put, during_delete,
// before_commit, after_commit, request_before_commit).
const faultEnv = "LETHE_FAULT_KILL_AT"

// installFault wires LETHE_FAULT_KILL_AT into the services, if set.
func installFault(getenv func(string) string, svc *jobs.Services) error {
	spec := getenv(faultEnv)
	if spec == "" {
		return nil
	}
	point, nth, ok := strings.Cut(spec, ":")
	n := 1
	if ok {
		var err error
		if n, err = strconv.Atoi(nth); err != nil || n < 1 {
			return usagef("%s=%q: write POINT or POINT:N with N >= 1", faultEnv, spec)
		}
	}
	var mu sync.Mutex
	hits := 0
	kill := func(p string) error {
		if p != point {
			return nil
		}
		mu.Lock()
		hits++
		h := hits
		mu.Unlock()
		if h == n {
			fmt.Fprintf(os.Stderr, "lethe: %s: killing this process at %s (hit %d)\n", faultEnv, p, h)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL is not caught; wait for it
		}
		return nil
	}
	retention.InjectFault(svc.Mover, kill)
	request.InjectFault(svc.Eraser, kill)
	return nil
}

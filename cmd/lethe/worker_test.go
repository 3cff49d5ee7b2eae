package main_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// worker is a running `lethe worker`.
type worker struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	stdout bytes.Buffer
	done   chan struct{}
	err    error
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// startWorker starts `lethe worker --config cfg` and waits until it says
// it started. The worker is killed when t ends if it still runs.
func startWorker(t *testing.T, cfg string) *worker {
	t.Helper()
	return startWorkerEnv(t, cfg)
}

func (w *worker) output() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stdout.String() + w.stderr.String()
}

// stop sends sig and requires a clean exit within 15 seconds.
func (w *worker) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	require.NoError(t, w.cmd.Process.Signal(sig))
	start := time.Now()
	select {
	case <-w.done:
	case <-time.After(15 * time.Second):
		require.FailNow(t, "lethe worker did not stop within 15s", "%s", w.output())
	}
	var exitErr *exec.ExitError
	if errors.As(w.err, &exitErr) {
		require.FailNow(t, "lethe worker did not exit 0", "exit %d after %s\n%s", exitErr.ExitCode(), time.Since(start), w.output())
	}
	require.NoError(t, w.err)
}

// TestWorkerStopsOnSignal checks that an idle worker stops cleanly, exit 0,
// on SIGTERM and on SIGINT, without starting a sweep of its own.
func TestWorkerStopsOnSignal(t *testing.T) {
	t.Parallel()
	s := newShop(t, 0)
	before := dumpShop(t, s.db.Pool)
	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGINT} {
		w := startWorker(t, s.cfgPath)
		time.Sleep(500 * time.Millisecond)
		w.stop(t, sig)
		require.Contains(t, w.output(), "stopped")
	}
	require.Equal(t, before, dumpShop(t, s.db.Pool), "an idle worker changed the shop")
	state := letheState(t, s.db.Pool)
	delete(state, "river_job") // periodic jobs other than the sweep may be scheduled
	require.Equal(t, map[string]int64{"run": 0, "batch": 0, "work_item": 0, "manifest": 0, "audit_log": 0}, state, "an idle worker did something")
	var sweeps int
	require.NoError(t, s.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM lethe.river_job WHERE kind = 'lethe.sweep'`).Scan(&sweeps))
	require.Zero(t, sweeps, "the worker queued a sweep far from its schedule")
}

// TestSweepQueuedForWorkers checks that `lethe sweep` queues a sweep that
// running workers then work: two workers share it, every due subject is
// archived once or destroyed, and both stop cleanly afterwards.
func TestSweepQueuedForWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShop(t, 5)
	before := dumpShop(t, s.db.Pool)
	w1 := startWorker(t, s.cfgPath)
	w2 := startWorker(t, s.cfgPath)

	r := lethe(t, "sweep", "--config", s.cfgPath)
	requireOK(t, r)
	require.Regexp(t, regexp.MustCompile(`sweep queued as job \d+`), r.stdout)

	goneDue, spamDue := s.keys(catGoneDue), s.keys(catSpamDue)
	deadline := time.Now().Add(90 * time.Second)
	for {
		var state string
		var manifest int
		err := s.db.Pool.QueryRow(ctx, `SELECT coalesce((SELECT state FROM lethe.run ORDER BY id DESC LIMIT 1), 'none'), (SELECT count(*) FROM lethe.manifest)`).Scan(&state, &manifest)
		require.NoError(t, err)
		if state == "done" && manifest == len(goneDue) {
			break
		}
		require.NotEqual(t, "failed", state, "the run failed\n%s\n%s", w1.output(), w2.output())
		if time.Now().After(deadline) {
			require.FailNow(t, "the queued sweep was not worked in time", "run state %s, %d archived\n%s\n%s", state, manifest, w1.output(), w2.output())
		}
		time.Sleep(200 * time.Millisecond)
	}

	require.Equal(t, before.without(append(goneDue, spamDue...)), dumpShop(t, s.db.Pool))
	// One segment per batch of 5, each named by the manifest.
	segments := map[string]bool{}
	for _, k := range goneDue {
		l := s.locate(t, k)
		require.Equal(t, "archived", l.State)
		segments[l.Segment] = true
	}
	var gotObjects []string
	for _, v := range listVersions(t, s.bucket) {
		gotObjects = append(gotObjects, v.key)
	}
	require.ElementsMatch(t, slices.Collect(maps.Keys(segments)), gotObjects, "one version of each segment, and nothing else")
	require.Len(t, segments, (len(goneDue)+4)/5)
	var trigger string
	require.NoError(t, s.db.Pool.QueryRow(ctx, `SELECT trigger FROM lethe.run`).Scan(&trigger))
	require.Equal(t, "cli", trigger)

	w1.stop(t, syscall.SIGTERM)
	w2.stop(t, syscall.SIGTERM)
	for _, row := range tableDump(t, s, "lethe.river_job") {
		requireNoNeedles(t, s, "lethe.river_job", row)
	}
	requireNoNeedles(t, s, "the first worker's output", w1.output())
	requireNoNeedles(t, s, "the second worker's output", w2.output())
}

package main_test

// What a new operator meets in the first hour: waits that end, attempts
// numbered as they happened, errors one per line, a port in use named by
// its config key, the version, and counts in the right number.

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// failDeletes makes every DELETE statement on shop.clients fail the way
// raise does, for as long as the sequence shop.failures has values left
// (the first n statements; n < 0: all of them). A sequence is not rolled
// back with the failed statement, so each attempt uses one up.
func failDeletes(t *testing.T, s *shop, n int, raise string) {
	t.Helper()
	limit := "NULL"
	if n >= 0 {
		limit = strconv.Itoa(n)
	}
	_, err := s.db.Pool.Exec(context.Background(), `
		CREATE SEQUENCE shop.failures;
		CREATE FUNCTION shop.fail_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF `+limit+` IS NULL OR nextval('shop.failures') <= `+limit+`::bigint THEN
				`+raise+`;
			END IF;
			RETURN NULL;
		END $$;
		CREATE TRIGGER fail_deletes BEFORE DELETE ON shop.clients FOR EACH STATEMENT EXECUTE FUNCTION shop.fail_deletes();`)
	require.NoError(t, err)
}

// TestSweepWaitAttempts checks that a failed attempt is reported once, as
// the attempt it was, and that the retry's success is not reported as a
// failure.
func TestSweepWaitAttempts(t *testing.T) {
	t.Parallel()
	s := newShop(t, 0)
	failDeletes(t, s, 1, "RAISE EXCEPTION 'synthetic failure of the first delete'")
	r := letheWith(t, 2*time.Minute, nil, "sweep", "--wait", "--config", s.cfgPath)
	requireOK(t, r)
	out := r.stdout + r.stderr
	require.Regexp(t, `batch \d+ \(policy (gone|spam)\): attempt 1 of 10 failed; it is retried with backoff: .*synthetic failure of the first delete`, out)
	require.NotContains(t, out, "attempt 2 of", "the second attempt succeeded:\n%s", out)
	require.Equal(t, 1, strings.Count(out, "failed; it is retried"), "%s", out)
}

// TestSweepWaitStuckBatch checks that sweep --wait stops waiting on a
// batch that fails the same way attempt after attempt, naming the batch,
// the error and what to do, well before its attempts are used up.
func TestSweepWaitStuckBatch(t *testing.T) {
	t.Parallel()
	s := newShop(t, 0)
	failDeletes(t, s, -1, "RAISE EXCEPTION 'synthetic failure of every delete'")
	before := dumpShop(t, s.db.Pool)
	r := letheWith(t, 3*time.Minute, nil, "sweep", "--wait", "--config", s.cfgPath)
	require.Equal(t, 1, r.code, "%s", r)
	last := strings.TrimSpace(r.stderr[strings.LastIndex(strings.TrimSpace(r.stderr), "\n")+1:])
	require.Regexp(t, `^lethe: batch \d+ \(policy (gone|spam)\) failed 3 attempts in a row the same way, so this run waits no longer: .*synthetic failure of every delete.*; fix the cause and run lethe sweep --wait again`, last)
	require.Less(t, r.took, 90*time.Second, "it stopped long before 10 attempts")
	require.Equal(t, before, dumpShop(t, s.db.Pool), "nothing was deleted")
}

// TestSweepWaitRefused checks that a statement the database refuses
// outright (SQLSTATE class 42) ends its batch at the first attempt, and
// that the run's failure names the batch and the cause.
func TestSweepWaitRefused(t *testing.T) {
	t.Parallel()
	s := newShop(t, 0)
	failDeletes(t, s, -1, "RAISE EXCEPTION 'synthetic refusal' USING ERRCODE = 'insufficient_privilege'")
	r := letheWith(t, 2*time.Minute, nil, "sweep", "--wait", "--config", s.cfgPath)
	require.Equal(t, 1, r.code, "%s", r)
	require.Regexp(t, `batch \d+ \(policy (gone|spam)\): attempt 1 of 10 failed, and retrying cannot help: .*synthetic refusal`, r.stdout+r.stderr)
	require.Regexp(t, `lethe: run \d+ failed: batch \d+ \(policy (gone|spam)\) gave up after attempt 1: .*synthetic refusal.*; fix the cause and run lethe sweep --wait again, which requeues it`, r.stderr)
	require.Less(t, r.took, time.Minute)
}

// TestRequestWaitTimeout checks that request delete --wait without a
// worker gives up after --timeout, with the hint, and the request stays.
func TestRequestWaitTimeout(t *testing.T) {
	t.Parallel()
	s := newShop(t, 0)
	key := s.keys(catGoneRecent)[0]
	r := letheWith(t, time.Minute, nil, "request", "delete", "--subject", key, "--ticket", "T-1", "--by", "privacy",
		"--wait", "--timeout", "2s", "--config", s.cfgPath)
	require.Equal(t, 1, r.code, "%s", r)
	require.Regexp(t, `(?m)^lethe: request 1 is still received after 2s: no worker has picked it up; is lethe worker running\? The request stays queued`, r.stderr)
	require.Less(t, r.took, 20*time.Second)
	r = lethe(t, "request", "show", "1", "--config", s.cfgPath)
	requireOK(t, r)
	require.Contains(t, r.stdout, "state received")
	r = lethe(t, "request", "delete", "--subject", key, "--ticket", "T-1", "--by", "privacy", "--timeout", "2s", "--config", s.cfgPath)
	requireOneLineError(t, r, 2, "--timeout goes with --wait")
}

// TestManyConfigProblems checks that a config with several mistakes gets
// a count, then one problem per line.
func TestManyConfigProblems(t *testing.T) {
	t.Parallel()
	s := newShop(t, 0)
	bad := s.yaml
	for _, c := range [][2]string{{"retain: 730d", "retain: 730x"}, {"retain: 30d", "retain: 30q"}, {"batch_size: 50", "batch_size: -1"}} {
		require.Contains(t, bad, c[0])
		bad = strings.Replace(bad, c[0], c[1], 1)
	}
	cfg := s.writeConfig(t, "bad.yaml", bad)
	r := lethe(t, "sweep", "--dry-run", "--config", cfg)
	require.Equal(t, 2, r.code, "%s", r)
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	require.Equal(t, "lethe: 3 problems:", lines[0], "%s", r)
	require.Len(t, lines, 4, "%s", r)
	for i, key := range []string{"policies[0].retain", "policies[1].retain", "archive.batch_size"} {
		require.True(t, strings.HasPrefix(lines[i+1], "  config: "+key+": "), "line %d: %q", i+1, lines[i+1])
	}
}

// TestListenInUse checks that a port in use names http.listen and what to
// do.
func TestListenInUse(t *testing.T) {
	t.Parallel()
	s := newShop(t, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	cfg := s.writeConfig(t, "port.yaml", strings.Replace(s.yaml, "listen: 127.0.0.1:0", "listen: "+ln.Addr().String(), 1))
	for _, cmd := range []string{"serve", "worker"} {
		r := letheWith(t, 30*time.Second, nil, cmd, "--log-level", "error", "--config", cfg)
		requireOneLineError(t, r, 2, "config: http.listen: "+ln.Addr().String()+" is in use", "set http.listen to a free address", `"off"`)
	}
}

// TestVersion checks lethe version, in text and JSON: the commit is the
// checkout's.
func TestVersion(t *testing.T) {
	t.Parallel()
	r := lethe(t, "version")
	requireOK(t, r)
	require.Regexp(t, `^lethe \S+\ncommit \S+( \(with uncommitted changes\))?\ngo1\.\d+`, r.stdout)
	r = lethe(t, "version", "--json")
	requireOK(t, r)
	var v struct {
		Version, Commit, Go string
		Modified            bool
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v))
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Logf("no git checkout here: the commit is not compared (%v)", err)
		return
	}
	require.Equal(t, strings.TrimSpace(string(head)), v.Commit)
	require.Regexp(t, `^v\d+\.\d+\.\d+`, v.Version, "a pseudo-version derived from the commit")
}

// TestPluralsAndRelease checks counts of one and the release of a matter
// whose holds were released already (a no-op that succeeds) against one
// that never was (exit 2).
func TestPluralsAndRelease(t *testing.T) {
	t.Parallel()
	s := newShop(t, 0)
	key := s.keys(catGoneRecent)[0]
	run := func(args ...string) result { return lethe(t, append(args, "--config", s.cfgPath)...) }
	r := run("hold", "place", "--matter", "M-1", "--subject", key, "--reason", "r", "--by", "legal")
	requireOK(t, r)
	require.Contains(t, r.stdout, "matter M-1: 1 hold placed, 0 subjects already held under it")
	r = run("status")
	requireOK(t, r)
	require.Contains(t, r.stdout, "matter M-1: 1 subject, since")
	require.Contains(t, r.stdout, "UNSETTLED: 0 subjects claimed")
	r = run("hold", "release", "--matter", "M-1", "--by", "legal")
	requireOK(t, r)
	require.Contains(t, r.stdout, "matter M-1: 1 hold released; 1 subject no longer held; 0 waiting deletion requests resumed")
	for _, args := range [][]string{{"hold", "release", "--matter", "M-1", "--by", "legal"}, {"hold", "release", "--matter", "M-1", "--subject", key, "--by", "legal"}} {
		r = run(args...)
		requireOK(t, r)
		require.Equal(t, "matter M-1: nothing left to release (released already)\n", r.stdout)
	}
	r = run("hold", "release", "--matter", "M-2", "--by", "legal")
	requireOneLineError(t, r, 2, "--matter", `no hold was ever placed under matter "M-2"`)
	r = run("audit", "verify")
	requireOK(t, r)
	require.Regexp(t, regexp.MustCompile(`audit log intact: \d+ entries`), r.stdout)
}

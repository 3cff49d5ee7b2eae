package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// pgTool runs a PostgreSQL client tool and requires it to succeed.
func pgTool(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
}

// readyz gets the worker's /readyz.
func readyz(t *testing.T, w *worker) (int, map[string]any) {
	t.Helper()
	m := regexp.MustCompile(`msg="http server listening" addr=(\S+)`).FindStringSubmatch(w.output())
	require.NotNil(t, m, "the worker's address:\n%s", w.output())
	resp, err := http.Get("http://" + m[1] + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(body, &out), "%s", body)
	return resp.StatusCode, out
}

// TestLedgerReplayAfterADatabaseRestore backs the database up with pg_dump,
// erases subjects (archived, hot, unknown, one later held), restores the
// backup with pg_restore, and checks that lethe refuses to work until
// lethe ledger replay --confirm has erased them again, and then resumes.
func TestLedgerReplayAfterADatabaseRestore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShop(t, 0)
	cfg := []string{"--config", s.cfgPath}
	run := func(args ...string) result { return lethe(t, append(args, cfg...)...) }

	r := run("sweep", "--wait")
	requireOK(t, r)
	require.Regexp(t, `audit chain anchored at seq \d+ in the bucket`, r.stdout)
	goneDue, active := s.keys(catGoneDue), s.keys(catActive)
	archived, archived2, hot, unknown := goneDue[0], goneDue[1], active[0], "never-a-client 7"

	// The backup, before the erasures.
	backup := filepath.Join(t.TempDir(), "lethe.dump")
	pgTool(t, "pg_dump", "--format=custom", "--file", backup, s.db.URL)

	w := startWorker(t, s.cfgPath)
	p := &privacy{shop: s, w: w}
	for i, k := range []string{archived, archived2, unknown} {
		require.Equal(t, "completed", p.deleteRequest(t, k, fmt.Sprintf("B-%d", i)).State)
	}
	require.Equal(t, "completed", p.deleteRequest(t, hot, "B-hot", "--force").State)
	w.stop(t, syscall.SIGTERM)
	r = run("sweep", "--wait") // nothing due: the run ends and anchors the erasures
	requireOK(t, r)
	require.Contains(t, r.stdout, "audit chain anchored")
	requireOK(t, run("audit", "verify", "--anchors"))

	// The database is restored from the backup: the erasures are undone.
	admin := strings.Replace(s.db.URL, "/"+s.db.Name, "/postgres", 1)
	pgTool(t, "psql", admin, "-qc", fmt.Sprintf("DROP DATABASE %q WITH (FORCE)", s.db.Name))
	pgTool(t, "psql", admin, "-qc", fmt.Sprintf("CREATE DATABASE %q", s.db.Name))
	pgTool(t, "pg_restore", "--no-owner", "--dbname", s.db.URL, backup)
	s.db.Pool.Reset()
	require.Equal(t, "archived", s.locate(t, archived).State, "the restore brought the key back")
	require.Positive(t, dumpShop(t, s.db.Pool).count("shop.clients", hot), "the restore brought the rows back")

	// lethe refuses to work: sweep, worker jobs, readiness; status says why.
	r = run("sweep", "--wait")
	requireOneLineError(t, r, 1, "restored from a backup", "lethe ledger replay")
	r = run("sweep")
	requireOneLineError(t, r, 1, "lethe ledger replay")
	r = run("status")
	requireOK(t, r)
	require.Regexp(t, `ledger: (BEHIND|DIVERGED): `, r.stdout)
	w = startWorker(t, s.cfgPath)
	w.waitOutput(t, "does not match the audit anchors", 30*time.Second)
	code, ready := readyz(t, w)
	require.Equal(t, http.StatusServiceUnavailable, code, "%v", ready)
	// Holds and requests are still recorded; the request waits.
	later := goneDue[2]
	requireOK(t, run("hold", "place", "--matter", "M-RESTORE", "--subject", archived2, "--reason", "litigation", "--by", "legal"))
	waiting := decodeRequest(t, run("request", "delete", "--subject", later, "--ticket", "B-later", "--by", "privacy", "--json"))
	time.Sleep(2 * time.Second)
	require.Equal(t, "received", p.showRequest(t, waiting.ID).State, "a request was worked before the replay")

	// The replay lists, then applies.
	before := letheState(t, s.db.Pool)
	r = run("ledger", "replay", "--json")
	requireOK(t, r)
	var plan struct {
		Anchors      int      `json:"anchors"`
		Erased       []string `json:"erased"`
		Held         []string `json:"held"`
		Keys         int      `json:"keys_to_destroy"`
		HotSubjects  int      `json:"hot_subjects"`
		Unsuppressed int      `json:"unsuppressed"`
		Applied      bool     `json:"applied"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &plan), "%s", r)
	require.False(t, plan.Applied)
	require.Positive(t, plan.Anchors)
	require.ElementsMatch(t, []string{s.hmacOf(archived), s.hmacOf(unknown), s.hmacOf(hot)}, plan.Erased)
	require.Equal(t, []string{s.hmacOf(archived2)}, plan.Held, "a subject held now is reported, not erased")
	require.Equal(t, 1, plan.Keys)
	require.Equal(t, 1, plan.HotSubjects)
	require.Equal(t, 3, plan.Unsuppressed)
	require.Equal(t, before, letheState(t, s.db.Pool), "ledger replay without --confirm changed something")
	r = run("ledger", "replay")
	requireOK(t, r)
	require.Contains(t, r.stdout, "nothing was changed: run lethe ledger replay --confirm")
	t.Logf("transcript: $ lethe ledger replay\n%s", r.stdout)

	r = run("ledger", "replay", "--confirm")
	requireOK(t, r)
	require.Contains(t, r.stdout, "replayed:")
	t.Logf("transcript: $ lethe ledger replay --confirm\n%s", r.stdout)
	require.Equal(t, "erased", s.locate(t, archived).State)
	require.Nil(t, s.locate(t, archived).WrappedKey)
	require.Equal(t, "archived", s.locate(t, archived2).State, "the held subject keeps its key")
	require.Zero(t, dumpShop(t, s.db.Pool).count("shop.clients", hot), "the hot subject is gone again")
	requireOneLineError(t, run("restore", "--subject", archived, "--identity", s.idPath), 1, "was erased")
	var suppressed int
	require.NoError(t, s.db.Pool.QueryRow(ctx, `SELECT count(*) FROM lethe.suppression WHERE subject_hmac = ANY ($1)`,
		[]string{s.hmacOf(archived), s.hmacOf(hot), s.hmacOf(unknown)}).Scan(&suppressed))
	require.Equal(t, 3, suppressed)

	// Work resumes: the waiting request completes, readiness returns, and
	// the anchors check out (those lost to the restore as reconciled).
	p.w = w
	p.waitState(t, waiting.ID, "completed")
	require.Eventually(t, func() bool { code, _ := readyz(t, w); return code == http.StatusOK }, 30*time.Second, 500*time.Millisecond)
	r = run("ledger", "replay")
	requireOK(t, r)
	require.Contains(t, r.stdout, "nothing to replay")
	w.stop(t, syscall.SIGTERM)
	requireOK(t, run("sweep", "--wait"))
	r = run("audit", "verify", "--anchors")
	requireOK(t, r)
	require.Contains(t, r.stdout, "audit log intact")
	require.Regexp(t, `anchors match: \d+ anchors? checked against the chain, \d+ anchors? lost to a database restore and reconciled by a ledger replay`, r.stdout)
	t.Logf("transcript: $ lethe audit verify --anchors\n%s", r.stdout)
}

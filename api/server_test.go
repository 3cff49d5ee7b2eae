package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/api"
	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/jobs"
	"github.com/lethehq/lethe/request"
)

// readyWait and readyPoll bound waiting for /readyz's cached answer to
// expire.
const (
	readyWait = 10 * time.Second
	readyPoll = 100 * time.Millisecond
)

// tokens are the test's bearer tokens, one per role.
var tokens = map[string]string{
	"privacy": "tok-privacy-0123456789abcdef",
	"legal":   "tok-legal-0123456789abcdef",
	"auditor": "tok-auditor-0123456789abcdef",
	"ops":     "tok-ops-0123456789abcdef",
}

const schema = `
CREATE SCHEMA s;
CREATE TABLE s.subjects (id bigint PRIMARY KEY, status text NOT NULL, closed_at timestamptz);
INSERT INTO s.subjects SELECT i, 'closed', now() - interval '800 days' FROM generate_series(1, 200) AS i;
`

const fragment = `
subject:
  table: s.subjects
  key: id
policies:
  - name: former
    where: "status = 'closed'"
    clock: closed_at
    retain: 730d
`

// bundle is one test's server over its own database.
type bundle struct {
	db     *testenv.DB
	app    *app.App
	svc    *jobs.Services
	client *river.Client[pgx.Tx]
	srv    *httptest.Server
	ready  atomic.Pointer[error] // what the "archive" check returns
}

// setup serves lethe's API, River UI included, over a database of 200
// due subjects, with one token per role. Nothing works the jobs: a test
// works a request with process.
func setup(t *testing.T) *bundle {
	t.Helper()
	ctx := context.Background()
	b := &bundle{db: testenv.NewDB(t)}
	_, err := b.db.Pool.Exec(ctx, schema)
	require.NoError(t, err)
	bucket := testenv.NewBucket(t)
	yaml := testenv.ConfigYAML(b.db, bucket, testenv.NewIdentity(t).Recipient().String(), fragment)
	var tok strings.Builder
	tok.WriteString("http:\n  listen: 127.0.0.1:0\n  max_body_bytes: 4096\n  tokens:\n")
	for _, role := range []string{"privacy", "legal", "auditor", "ops"} {
		sum := sha256.Sum256([]byte(tokens[role]))
		fmt.Fprintf(&tok, "    - {name: %s-token, role: %s, sha256: %s}\n", role, role, hex.EncodeToString(sum[:]))
	}
	yaml = strings.Replace(yaml, "http:\n  listen: 127.0.0.1:0\n", tok.String(), 1)
	cfg, err := config.Load(strings.NewReader(yaml), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	logger := slog.New(slog.DiscardHandler)
	b.app, err = app.Open(ctx, cfg, logger, app.Options{})
	require.NoError(t, err)
	t.Cleanup(b.app.Close)
	b.client = b.app.Queue.Client
	uictx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	ui, err := api.NewRiverUI(uictx, b.client, logger)
	require.NoError(t, err)
	store, err := b.app.Store(ctx, false)
	require.NoError(t, err)
	b.svc, err = b.app.Services(store, nil)
	require.NoError(t, err)
	holds, err := b.app.Holds()
	require.NoError(t, err)
	s, err := api.New(api.Options{Config: cfg, Pool: b.db.Pool, Intake: b.svc.Intake, Holds: holds,
		Status:  func(ctx context.Context, runs int) (any, error) { return b.app.Status(ctx, runs) },
		RiverUI: ui, Logger: logger, Ready: []api.Check{
			{Name: "database", Fn: func(ctx context.Context) error { return b.db.Pool.Ping(ctx) }},
			{Name: "archive", Fn: func(ctx context.Context) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				if p := b.ready.Load(); p != nil {
					return *p
				}
				return nil
			}},
		}})
	require.NoError(t, err)
	b.srv = httptest.NewServer(s.Handler())
	t.Cleanup(b.srv.Close)
	return b
}

// do sends a request with the role's token as a bearer token ("" for
// none); headers are set after.
func (b *bundle) do(t *testing.T, method, path, role, body string, headers ...string) apiResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, b.srv.URL+path, rd)
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if role != "" {
		req.Header.Set("Authorization", "Bearer "+tokens[role])
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := b.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return apiResponse{status: resp.StatusCode, header: resp.Header, body: out}
}

func (b *bundle) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, b.db.Pool.QueryRow(context.Background(), q, args...).Scan(&n))
	return n
}

// process works a deletion request as its job would, bringing the
// object-store locks of holds in line first when it must wait for them.
func (b *bundle) process(t *testing.T, id int64) {
	t.Helper()
	ctx := context.Background()
	for range 20 {
		err := b.svc.Eraser.Process(ctx, id)
		if !errors.Is(err, request.ErrRetryLater) {
			require.NoError(t, err)
			return
		}
		rows, err := b.db.Pool.Query(ctx, `SELECT subject_hmac FROM lethe.hold_sync WHERE synced < generation`)
		require.NoError(t, err)
		pending, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		for _, h := range pending {
			require.NoError(t, b.svc.Syncer.Sync(ctx, h))
		}
	}
	t.Fatalf("request %d stayed busy", id)
}

// A hold placed under one spelling of a key blocks a request filed under
// another; every answer shows the canonical key.
func TestAHoldUnderOneSpellingBlocksARequestUnderAnother(t *testing.T) {
	t.Parallel()
	b := setup(t)

	r := b.do(t, "POST", "/api/v1/holds", "legal", `{"matter": "M-1", "subjects": ["0111", " +83 "], "reason": "litigation", "by": "counsel"}`)
	require.Equal(t, 201, r.status, "%s", r.body)
	var placed struct {
		Placed []struct {
			Subject string `json:"subject"`
		} `json:"placed"`
	}
	r.json(t, &placed)
	require.Len(t, placed.Placed, 2)
	require.Equal(t, "111", placed.Placed[0].Subject)
	require.Equal(t, "83", placed.Placed[1].Subject)

	for _, s := range []string{"111", "0111", "%2B111", "%20111%20"} {
		var holds []map[string]any
		b.do(t, "GET", "/api/v1/holds?subject="+s, "legal", "").json(t, &holds)
		require.Len(t, holds, 1, "hold list under %q", s)
		require.Equal(t, "111", holds[0]["subject"])
	}
	b.do(t, "GET", "/api/v1/holds?subject=1.5", "legal", "").problem(t, 400)

	for i, s := range []string{"0111", "+111", " 111 ", "83", "0083"} {
		r := b.do(t, "POST", "/api/v1/requests", "privacy", fmt.Sprintf(`{"subject": %q, "ticket": "T-%d", "by": "desk"}`, s, i))
		require.Equal(t, 201, r.status, "%s", r.body)
		var req request.Request
		r.json(t, &req)
		require.Contains(t, []string{"111", "83"}, *req.Subject, "the answer shows the canonical key, not %q", s)
		b.process(t, req.ID)
		r = b.do(t, "GET", fmt.Sprintf("/api/v1/requests/%d", req.ID), "privacy", "")
		r.json(t, &req)
		require.Equal(t, request.StateBlockedByHold, req.State, "request under %q", s)
	}
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM s.subjects WHERE id = 111`), "a held subject is never deleted")
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM s.subjects WHERE id = 83`))
}

// River UI changes only from its own page or from scripts that send JSON;
// a form posted from another site with saved credentials is refused, and
// every change, made or refused, is audited under the token.
func TestRiverUIRefusesCrossSiteChangesAndAuditsEveryChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	var ids []int64
	for range 4 {
		res, err := b.client.Insert(ctx, jobs.RequestArgs{RequestID: 1_000_000}, &river.InsertOpts{Queue: "parked"})
		require.NoError(t, err)
		ids = append(ids, res.Job.ID)
	}
	_, err := b.db.Pool.Exec(ctx, `INSERT INTO lethe.river_queue (name) VALUES ('parked')`)
	require.NoError(t, err)
	jobCount := func() int { return b.count(t, `SELECT count(*) FROM lethe.river_job WHERE queue = 'parked'`) }
	require.Equal(t, 4, jobCount())
	body := func(id int64) string { return fmt.Sprintf(`{"ids": ["%d"]}`, id) }

	// A cross-site form post, with the browser's saved basic auth.
	form := b.do(t, "POST", "/riverui/api/jobs/delete", "", body(ids[0]),
		"Authorization", "Basic "+basicAuth("ops", tokens["ops"]),
		"Content-Type", "text/plain", "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")
	require.Contains(t, form.problem(t, 403), "another site")
	// An older browser that sends only Origin.
	b.do(t, "POST", "/riverui/api/jobs/delete", "", body(ids[0]),
		"Authorization", "Basic "+basicAuth("ops", tokens["ops"]),
		"Content-Type", "application/x-www-form-urlencoded", "Origin", "https://evil.example").problem(t, 403)
	// Neither header and not JSON: refused.
	b.do(t, "POST", "/riverui/api/jobs/delete", "ops", body(ids[0]), "Content-Type", "text/plain").problem(t, 415)
	require.Equal(t, 4, jobCount(), "no refused call deleted a job")

	// River UI's own page: same origin, its JSON sent as text/plain.
	r := b.do(t, "POST", "/riverui/api/jobs/delete", "", body(ids[1]),
		"Authorization", "Basic "+basicAuth("ops", tokens["ops"]),
		"Content-Type", "text/plain;charset=UTF-8", "Sec-Fetch-Site", "same-origin")
	require.Equal(t, 200, r.status, "%s", r.body)
	// A script: no browser headers, JSON.
	r = b.do(t, "POST", "/riverui/api/jobs/cancel", "ops", body(ids[2]))
	require.Equal(t, 200, r.status, "%s", r.body)
	r = b.do(t, "PUT", "/riverui/api/queues/parked/pause", "ops", "{}")
	require.Equal(t, 200, r.status, "%s", r.body)
	require.Equal(t, 3, jobCount())
	// Another role may not, and that is audited too.
	b.do(t, "POST", "/riverui/api/jobs/delete", "auditor", body(ids[3])).problem(t, 403)

	rows, err := b.db.Pool.Query(ctx, `
		SELECT actor, detail::jsonb ->> 'route', (detail::jsonb ->> 'status')::int, coalesce(detail::jsonb -> 'job_ids', '[]')::text
		FROM lethe.audit_log WHERE kind = 'api_call' ORDER BY seq`)
	require.NoError(t, err)
	type call struct {
		Actor, Route string
		Status       int
		Jobs         string
	}
	calls, err := pgx.CollectRows(rows, pgx.RowToStructByPos[call])
	require.NoError(t, err)
	del := "POST /riverui/api/jobs/delete"
	require.Equal(t, []call{
		{"token:ops-token", del, 403, "[]"},
		{"token:ops-token", del, 403, "[]"},
		{"token:ops-token", del, 415, "[]"},
		{"token:ops-token", del, 200, fmt.Sprintf("[%d]", ids[1])},
		{"token:ops-token", "POST /riverui/api/jobs/cancel", 200, fmt.Sprintf("[%d]", ids[2])},
		{"token:ops-token", "PUT /riverui/api/queues/parked/pause", 200, "[]"},
		{"token:auditor-token", "/riverui/", 403, "[]"},
	}, calls)
}

func basicAuth(user, pw string) string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, pw)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// /readyz runs its checks on its own context, and tells a caller without a
// token only which checks fail.
func TestReadyzOwnContextAndNoDetailForAnonymousCallers(t *testing.T) {
	t.Parallel()
	b := setup(t)

	// A caller that hangs up at once does not make the instance not ready.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequestWithContext(ctx, "GET", "/readyz", nil)
	rec := httptest.NewRecorder()
	b.srv.Config.Handler.ServeHTTP(rec, req)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	require.Equal(t, 200, b.do(t, "GET", "/readyz", "", "").status)

	failure := errors.New(`error probing bucket "secret-bucket-name": access denied: pq: password authentication failed`)
	b.ready.Store(&failure)
	// Let the cached answer expire.
	require.Eventually(t, func() bool { return b.do(t, "GET", "/readyz", "", "").status == 503 }, readyWait, readyPoll)

	var v struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	r := b.do(t, "GET", "/readyz", "", "")
	r.json(t, &v)
	require.False(t, v.Ready)
	require.Equal(t, map[string]string{"database": "ok", "archive": "failing"}, v.Checks)
	require.NotContains(t, string(r.body), "secret-bucket-name")
	b.do(t, "GET", "/readyz", "auditor", "").json(t, &v)
	require.Equal(t, failure.Error(), v.Checks["archive"], "a caller with a token gets the cause")
}

// Input that no field can hold is refused before it reaches the database.
func TestBadInputIsRefusedAsAProblem(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, q := range []string{"/api/v1/holds?subject=%00", "/api/v1/holds?subject=%ff", "/api/v1/holds?matter=a%00b",
		"/api/v1/requests?ticket=%c3%28", "/api/v1/requests?state=%00", "/api/v1/holds?%ff=1", "/api/v1/holds?subject=%zz"} {
		b.do(t, "GET", q, "legal", "").problem(t, 400)
	}
	b.do(t, "GET", "/api/v1/requests/%00", "privacy", "").problem(t, 400)

	before := b.count(t, `SELECT count(*) FROM lethe.request`)
	for body, want := range map[string]string{
		`{"subject": "1", "subject": "2", "ticket": "T-1", "by": "a"}`: `"subject" appears twice`,
		`{"subject": "1", "Subject": "2", "ticket": "T-2", "by": "a"}`: "differ only in case",
		`{"SUBJECT": "2", "ticket": "T-3", "by": "a"}`:                 `names are case-sensitive: "subject"`,
		`{"subject": "1", "ticket": "T-4", "by": "a", "BY": "b"}`:      "differ only in case",
	} {
		require.Contains(t, b.do(t, "POST", "/api/v1/requests", "privacy", body).problem(t, 400), want, body)
	}
	require.Contains(t, b.do(t, "POST", "/api/v1/holds", "legal",
		`{"matter": "M", "matter": "N", "subjects": ["1"], "reason": "r", "by": "a"}`).problem(t, 400), "twice")
	require.Equal(t, before, b.count(t, `SELECT count(*) FROM lethe.request`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM lethe.hold`))
}

// A known path asked with a method it does not take is 405 with Allow.
func TestWrongMethodIs405WithAllow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct{ method, path, allow string }{
		{"DELETE", "/api/v1/requests", "POST, GET, HEAD"},
		{"PUT", "/api/v1/requests/7", "GET, HEAD"},
		{"GET", "/api/v1/holds/release", "POST"},
		{"PATCH", "/api/v1/holds", "POST, GET, HEAD"},
		{"POST", "/healthz", "GET, HEAD"},
		{"POST", "/readyz", "GET, HEAD"},
		{"DELETE", "/api/v1/status", "GET, HEAD"},
	} {
		r := b.do(t, tc.method, tc.path, "ops", "")
		r.problem(t, 405)
		require.Equal(t, tc.allow, r.header.Get("Allow"), "%s %s", tc.method, tc.path)
	}
	b.do(t, "GET", "/api/v1/nothing", "ops", "").problem(t, 404)
}

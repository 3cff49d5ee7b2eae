package api_test

// Tests of lethe's API as lethe worker and lethe serve run it, built
// in-process: a real listener over the CRM's database, the bucket, and
// (for the worker) a River client working the jobs. Every answer under
// /api/v1, /healthz and /readyz is held to the OpenAPI document.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/api"
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/internal/lethetest"
	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/jobs"
	"github.com/lethehq/lethe/retention"
)

// ---------------------------------------------------------------------------
// The server, as lethe worker and lethe serve build it.

// apiTokenNames are the names the config gives the tokens of tokens.
var apiTokenNames = map[string]string{"privacy": "intake", "legal": "legal-team", "auditor": "audit", "ops": "sre"}

// withHTTP replaces the config's http section with one holding the test
// tokens (by their SHA-256 only) and a small body limit; extra adds lines
// to the section.
func withHTTP(t *testing.T, yaml, extra string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("http:\n  listen: 127.0.0.1:0\n  max_body_bytes: 2048\n" + extra + "  tokens:\n")
	for _, role := range []string{"privacy", "legal", "auditor", "ops"} {
		sum := sha256.Sum256([]byte(tokens[role]))
		fmt.Fprintf(&b, "    - {name: %s, role: %s, sha256: %s}\n", apiTokenNames[role], role, hex.EncodeToString(sum[:]))
	}
	const plain = "http:\n  listen: 127.0.0.1:0\n"
	require.Contains(t, yaml, plain)
	return strings.Replace(yaml, plain, b.String(), 1)
}

// liveOptions say what startLive runs.
type liveOptions struct {
	// bucket is the archive; nil for a new bucket on the shared server.
	bucket *testenv.Bucket
	// httpExtra is more lines of the config's http section.
	httpExtra string
	// worker works the jobs in-process, as lethe worker does; without it
	// the server is lethe serve's, and nothing works the jobs.
	worker bool
}

// live is one test's server, listening, over a CRM of its own.
type live struct {
	db   *testenv.DB
	app  *app.App
	svc  *jobs.Services      // what the worker calls into; nil without one
	keys map[string][]string // the CRM's keys by group
	log  *lethetest.SyncBuffer
	addr string
}

// startLive serves lethe's API over a new CRM on a real listener, with
// the readiness checks, metrics and River UI of lethe worker and lethe
// serve, logging at debug level into l.log. Everything stops when t ends.
func startLive(t *testing.T, opts liveOptions) *live {
	t.Helper()
	ctx := context.Background()
	l := &live{db: testenv.NewDB(t), log: &lethetest.SyncBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the server's log:\n%s", l.log)
		}
	})
	_, err := l.db.Pool.Exec(ctx, lethetest.CRMSchema)
	require.NoError(t, err)
	l.keys = lethetest.SeedCRM(t, l.db.Pool, 12)
	bucket := opts.bucket
	if bucket == nil {
		bucket = testenv.NewBucket(t)
	}
	yaml := testenv.ConfigYAML(l.db, bucket, testenv.NewIdentity(t).Recipient().String(), lethetest.CRMConfig)
	cfg, err := config.Load(strings.NewReader(withHTTP(t, yaml, opts.httpExtra)), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	logger := slog.New(slog.NewTextHandler(l.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l.app, err = app.Open(ctx, cfg, logger, app.Options{})
	require.NoError(t, err)
	t.Cleanup(l.app.Close)
	a := l.app

	// lethe worker checks the bucket before it starts; lethe serve leaves
	// it to /readyz.
	store, err := a.Store(ctx, opts.worker)
	require.NoError(t, err)
	m := a.Metrics()
	srvctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	srv, err := a.Server(srvctx, store, m)
	require.NoError(t, err)
	ln, err := srv.Listen()
	require.NoError(t, err)
	l.addr = ln.Addr().String()

	if opts.worker {
		// The worker counts into the metrics the server serves.
		l.svc, err = a.Services(store, m)
		require.NoError(t, err)
		client, err := a.Worker(l.svc, false)
		require.NoError(t, err)
		require.NoError(t, client.Start(ctx))
		t.Cleanup(func() {
			sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
			defer scancel()
			require.NoError(t, client.Stop(sctx))
		})
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(srvctx, ln) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-served)
	})
	return l
}

// sweep starts a sweep as lethe sweep does, and waits until the worker has
// worked its batches.
func (l *live) sweep(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	require.NotNil(t, l.svc, "a sweep needs a worker")
	runID, err := l.svc.Sweeper.StartRun(ctx, retention.TriggerCLI, 0)
	require.NoError(t, err)
	_, err = l.svc.Sweeper.Sweep(ctx, runID, l.app.Queue)
	require.NoError(t, err)
	deadline := time.Now().Add(60 * time.Second)
	for l.count(t, `SELECT count(*) FROM lethe.run WHERE state IN ('selecting', 'working')`) > 0 ||
		l.count(t, `SELECT count(*) FROM lethe.run`) == 0 {
		require.True(t, time.Now().Before(deadline), "the sweep did not finish\n%s", l.log)
		time.Sleep(200 * time.Millisecond)
	}
}

// count runs a count query on the CRM's database.
func (l *live) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, l.db.Pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

// clientRows is how many rows subject key has in the CRM's tables.
func (l *live) clientRows(t *testing.T, key string) int {
	t.Helper()
	return l.count(t, `SELECT (SELECT count(*) FROM crm.customers WHERE code = $1) + (SELECT count(*) FROM crm.notes WHERE customer_code = $1)
		+ (SELECT count(*) FROM crm.accounts WHERE customer_code = $1)`, key)
}

// ---------------------------------------------------------------------------
// The client, holding every answer to the OpenAPI document.

// apiClient calls a running server and holds every answer under
// /api/v1, /healthz and /readyz to the OpenAPI document.
type apiClient struct {
	t      *testing.T
	base   string
	hc     *http.Client
	doc    *openapi3.T
	router routers.Router
	mu     sync.Mutex
	seen   map[string]bool // operation ids called
}

func newAPIClient(t *testing.T, base string, hc *http.Client) *apiClient {
	t.Helper()
	ctx := context.Background()
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI)
	require.NoError(t, err)
	require.NoError(t, doc.Validate(ctx), "the OpenAPI document is valid")
	doc.Servers = openapi3.Servers{{URL: base}}
	router, err := legacy.NewRouter(doc)
	require.NoError(t, err)
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &apiClient{t: t, base: base, hc: hc, doc: doc, router: router, seen: map[string]bool{}}
}

type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

func (r apiResponse) json(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.body, v), "%d %s", r.status, r.body)
}

// problem checks that r is an application/problem+json of status and
// returns its detail.
func (r apiResponse) problem(t *testing.T, status int) string {
	t.Helper()
	require.Equal(t, status, r.status, "%s", r.body)
	require.Equal(t, "application/problem+json", r.header.Get("Content-Type"))
	var p struct {
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	r.json(t, &p)
	require.Equal(t, status, p.Status)
	require.NotEmpty(t, p.Title)
	return p.Detail
}

// call sends body (a string is sent as is, anything else as JSON) with
// the role's token ("" for none, "bad" for an unknown one).
func (c *apiClient) call(method, path, role string, body any) apiResponse {
	c.t.Helper()
	var rd io.Reader
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	default:
		var err error
		raw, err = json.Marshal(b)
		require.NoError(c.t, err)
	}
	if raw != nil {
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	require.NoError(c.t, err)
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch role {
	case "":
	case "bad":
		req.Header.Set("Authorization", "Bearer not-a-token-of-ours")
	default:
		req.Header.Set("Authorization", "Bearer "+tokens[role])
	}
	return c.send(req, raw)
}

func (c *apiClient) send(req *http.Request, raw []byte) apiResponse {
	c.t.Helper()
	resp, err := c.hc.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	r := apiResponse{status: resp.StatusCode, header: resp.Header, body: out}
	require.NotEmpty(c.t, resp.Header.Get("X-Request-Id"), "every answer carries a request id")

	// Hold the answer to the document.
	vreq := req.Clone(context.Background())
	if raw != nil {
		vreq.Body = io.NopCloser(bytes.NewReader(raw))
	}
	route, params, err := c.router.FindRoute(vreq)
	if err != nil {
		return r // not in the document: River UI, /metrics, unknown paths
	}
	c.mu.Lock()
	c.seen[route.Operation.OperationID] = true
	c.mu.Unlock()
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	err = openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: r.status, Header: r.header, Body: io.NopCloser(bytes.NewReader(out)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	})
	require.NoError(c.t, err, "%s %s answered %d, which the OpenAPI document does not allow:\n%s", req.Method, req.URL.Path, r.status, out)
	return r
}

// waitRequestState polls GET /api/v1/requests/{id} until the request is in
// state want.
func (c *apiClient) waitRequestState(id int64, want string) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		var v map[string]any
		r := c.call("GET", fmt.Sprintf("/api/v1/requests/%d", id), "privacy", nil)
		require.Equal(c.t, 200, r.status, "%s", r.body)
		r.json(c.t, &v)
		if v["state"] == want {
			return v
		}
		require.True(c.t, time.Now().Before(deadline), "request %d is %v, want %s", id, v["state"], want)
		time.Sleep(200 * time.Millisecond)
	}
}

// metrics reads /metrics, which any caller may read.
func (c *apiClient) metrics(t *testing.T) (map[string]*dto.MetricFamily, []byte) {
	t.Helper()
	r := c.call("GET", "/metrics", "", nil)
	require.Equal(t, 200, r.status)
	return testenv.ParseMetrics(t, string(r.body)), r.body
}

// ---------------------------------------------------------------------------

// TestAPI drives every endpoint through a worker's real listening server:
// each role's allowed and denied calls, bad bodies, idempotent POSTs, a
// request from POST to completed, holds blocking and releasing it, River UI
// behind auth, /metrics after a sweep, and the audit log of the calls.
// Every answer is checked against the OpenAPI document.
func TestAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := startLive(t, liveOptions{worker: true})
	c := newAPIClient(t, "http://"+l.addr, nil)
	gone := l.keys["due"][0]
	held := l.keys["due"][1]
	active := l.keys["active"][0]
	require.Greater(t, l.clientRows(t, gone), 1, "the subject has rows in several tables")
	require.Greater(t, l.clientRows(t, held), 1, "the subject has rows in several tables")

	t.Run("health", func(t *testing.T) {
		r := c.call("GET", "/healthz", "", nil)
		require.Equal(t, 200, r.status)
		var health struct {
			Status, Version, Commit, Go string
		}
		r.json(t, &health)
		require.Equal(t, "ok", health.Status)
		require.Equal(t, runtime.Version(), health.Go)
		require.NotEmpty(t, health.Version)
		require.NotEmpty(t, health.Commit)
		r = c.call("GET", "/readyz", "", nil)
		require.Equal(t, 200, r.status, "%s", r.body)
		var ready struct {
			Ready  bool              `json:"ready"`
			Checks map[string]string `json:"checks"`
		}
		r.json(t, &ready)
		require.True(t, ready.Ready)
		require.Equal(t, map[string]string{"database": "ok", "migrations": "ok", "archive": "ok", "ledger": "ok"}, ready.Checks)
		r = c.call("GET", "/api/v1/openapi.json", "", nil)
		require.Equal(t, 200, r.status)
		require.JSONEq(t, string(api.OpenAPI), string(r.body))
	})

	t.Run("authentication", func(t *testing.T) {
		for _, role := range []string{"", "bad"} {
			r := c.call("GET", "/api/v1/status", role, nil)
			r.problem(t, 401)
			require.Equal(t, `Bearer realm="lethe"`, r.header.Get("WWW-Authenticate"))
		}
		// A token is not accepted in another scheme or with a prefix.
		req, _ := http.NewRequest("GET", c.base+"/api/v1/status", nil)
		req.Header.Set("Authorization", "Token "+tokens["auditor"])
		c.send(req, nil).problem(t, 401)
		req, _ = http.NewRequest("GET", c.base+"/api/v1/status", nil)
		req.Header.Set("Authorization", "Bearer x"+tokens["auditor"])
		c.send(req, nil).problem(t, 401)
	})

	t.Run("roles", func(t *testing.T) {
		reqBody := map[string]any{"subject": active, "ticket": "T-ROLE", "by": "someone"}
		holdBody := map[string]any{"matter": "M-ROLE", "subjects": []string{active}, "reason": "r", "by": "someone"}
		relBody := map[string]any{"matter": "M-ROLE", "by": "someone"}
		cases := []struct {
			method, path string
			body         any
			allowed      []string
		}{
			{"GET", "/api/v1/status", nil, []string{"privacy", "legal", "auditor", "ops"}},
			{"GET", "/api/v1/requests", nil, []string{"privacy", "auditor", "ops"}},
			{"GET", "/api/v1/requests/999999", nil, []string{"privacy", "auditor", "ops"}},
			{"GET", "/api/v1/holds", nil, []string{"legal", "auditor", "ops"}},
			{"POST", "/api/v1/requests", reqBody, []string{"privacy"}},
			{"POST", "/api/v1/holds", holdBody, []string{"legal"}},
			{"POST", "/api/v1/holds/release", relBody, []string{"legal"}},
		}
		for _, tc := range cases {
			for _, role := range []string{"privacy", "legal", "auditor", "ops"} {
				if slices.Contains(tc.allowed, role) {
					continue // the allowed calls are made below, with their effects checked
				}
				r := c.call(tc.method, tc.path, role, tc.body)
				detail := r.problem(t, 403)
				require.Contains(t, detail, "role "+role, "%s %s as %s", tc.method, tc.path, role)
			}
		}
		for _, role := range []string{"privacy", "legal", "auditor", "ops"} {
			require.Equal(t, 200, c.call("GET", "/api/v1/status", role, nil).status)
		}
		require.Equal(t, 200, c.call("GET", "/api/v1/requests", "auditor", nil).status)
		require.Equal(t, 200, c.call("GET", "/api/v1/holds", "ops", nil).status)
		c.call("GET", "/api/v1/requests/999999", "auditor", nil).problem(t, 404)
		// Nothing the refused calls asked for happened.
		require.Equal(t, 0, l.count(t, `SELECT count(*) FROM lethe.request WHERE ticket = 'T-ROLE'`))
		require.Equal(t, 0, l.count(t, `SELECT count(*) FROM lethe.hold WHERE matter = 'M-ROLE'`))
	})

	t.Run("bad bodies", func(t *testing.T) {
		before := l.count(t, `SELECT count(*) FROM lethe.request`)
		cases := []struct {
			body   any
			status int
			want   string
		}{
			{`{"subject": "x", "ticket": `, 400, "not valid JSON"},
			{`{"subject": "x", "ticket": "T-B1", "by": "a", "admin": true}`, 400, `unknown field "admin"`},
			{`{"subject": "x", "ticket": "T-B2", "by": "a"} {"again": 1}`, 400, "more than one JSON value"},
			{`{"subject": 7, "ticket": "T-B3", "by": "a"}`, 400, `"subject" must be a JSON string`},
			{`[]`, 400, "JSON"},
			{``, 400, "empty"},
			{`{"subject": "` + strings.Repeat("a", 3000) + `", "ticket": "T-B4", "by": "a"}`, 413, "larger than 2048 bytes"},
			{map[string]any{"ticket": "T-B5", "by": "a"}, 422, "subject is required"},
			{map[string]any{"subject": "   ", "ticket": "T-B6", "by": "a"}, 422, "subject key cannot be empty or only whitespace"},
			{map[string]any{"subject": gone, "ticket": " ", "by": "a"}, 422, "ticket is required"},
			{map[string]any{"subject": gone, "ticket": "T-B7", "by": ""}, 422, "by is required"},
		}
		for _, tc := range cases {
			r := c.call("POST", "/api/v1/requests", "privacy", tc.body)
			require.Contains(t, r.problem(t, tc.status), tc.want, "%v", tc.body)
		}
		req, _ := http.NewRequest("POST", c.base+"/api/v1/requests", strings.NewReader(`subject=x`))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+tokens["privacy"])
		require.Contains(t, c.send(req, []byte(`subject=x`)).problem(t, 415), "application/json")
		c.call("POST", "/api/v1/holds/release", "legal", map[string]any{"matter": "NO-SUCH", "by": "a"}).problem(t, 404)
		c.call("POST", "/api/v1/holds", "legal", map[string]any{"matter": "M", "subjects": []string{}, "reason": "r", "by": "a"}).problem(t, 422)
		c.call("GET", "/api/v1/requests?state=lost", "privacy", nil).problem(t, 400)
		c.call("GET", "/api/v1/requests?limit=0", "privacy", nil).problem(t, 400)
		c.call("GET", "/api/v1/requests/abc", "privacy", nil).problem(t, 400)
		c.call("GET", "/api/v1/nothing", "privacy", nil).problem(t, 404)
		require.Equal(t, before, l.count(t, `SELECT count(*) FROM lethe.request`), "no bad body made a request")
	})

	t.Run("request from POST to completed", func(t *testing.T) {
		body := map[string]any{"subject": gone, "ticket": "T-100", "by": "privacy desk"}
		r := c.call("POST", "/api/v1/requests", "privacy", body)
		require.Equal(t, 201, r.status, "%s", r.body)
		var v struct {
			ID    int64  `json:"id"`
			State string `json:"state"`
		}
		r.json(t, &v)
		require.Equal(t, fmt.Sprintf("/api/v1/requests/%d", v.ID), r.header.Get("Location"))

		// The same ticket again is the same request.
		r = c.call("POST", "/api/v1/requests", "privacy", body)
		require.Equal(t, 200, r.status, "%s", r.body)
		var again struct {
			ID int64 `json:"id"`
		}
		r.json(t, &again)
		require.Equal(t, v.ID, again.ID)
		// The ticket cannot name another subject.
		c.call("POST", "/api/v1/requests", "privacy", map[string]any{"subject": held, "ticket": "T-100", "by": "x"}).problem(t, 409)

		done := c.waitRequestState(v.ID, "completed")
		require.Nil(t, done["subject"], "the key is erased from lethe's records once the request ends")
		receipt, ok := done["receipt"].(map[string]any)
		require.True(t, ok, "%v", done)
		require.Equal(t, true, receipt["found"])
		require.Equal(t, float64(v.ID), receipt["request_id"])
		require.Zero(t, l.count(t, `SELECT count(*) FROM crm.customers WHERE code = $1`, gone), "the subject is gone from the hot tables")
		require.Zero(t, l.clientRows(t, gone), "its accounts and notes too")

		var list []map[string]any
		c.call("GET", "/api/v1/requests?state=completed", "auditor", nil).json(t, &list)
		require.Len(t, list, 1)
		require.Equal(t, float64(v.ID), list[0]["id"])
		c.call("GET", "/api/v1/requests?ticket=T-100", "privacy", nil).json(t, &list)
		require.Len(t, list, 1)
		c.call("GET", "/api/v1/requests?ticket=T-NONE", "privacy", nil).json(t, &list)
		require.Empty(t, list)
	})

	t.Run("protected", func(t *testing.T) {
		r := c.call("POST", "/api/v1/requests", "privacy", map[string]any{"subject": active, "ticket": "T-200", "by": "desk"})
		require.Equal(t, 201, r.status, "%s", r.body)
		var v struct {
			ID int64 `json:"id"`
		}
		r.json(t, &v)
		rej := c.waitRequestState(v.ID, "rejected")
		require.Equal(t, "protected", rej["reason"])
		require.NotZero(t, l.count(t, `SELECT count(*) FROM crm.customers WHERE code = $1`, active), "an active client is not deleted")
	})

	t.Run("holds", func(t *testing.T) {
		hold := map[string]any{"matter": "M-1", "subjects": []string{held}, "reason": "litigation", "by": "counsel"}
		r := c.call("POST", "/api/v1/holds", "legal", hold)
		require.Equal(t, 201, r.status, "%s", r.body)
		var placed struct {
			Placed  []map[string]any `json:"placed"`
			Already int              `json:"already_held"`
		}
		r.json(t, &placed)
		require.Len(t, placed.Placed, 1)
		r = c.call("POST", "/api/v1/holds", "legal", hold)
		require.Equal(t, 200, r.status, "placing it again changes nothing")
		r.json(t, &placed)
		require.Empty(t, placed.Placed)
		require.Equal(t, 1, placed.Already)

		var holds []map[string]any
		c.call("GET", "/api/v1/holds?matter=M-1", "legal", nil).json(t, &holds)
		require.Len(t, holds, 1)
		require.Equal(t, held, holds[0]["subject"])
		c.call("GET", "/api/v1/holds?subject=%20", "legal", nil).problem(t, 400)

		r = c.call("POST", "/api/v1/requests", "privacy", map[string]any{"subject": held, "ticket": "T-300", "by": "desk"})
		require.Equal(t, 201, r.status, "%s", r.body)
		var v struct {
			ID int64 `json:"id"`
		}
		r.json(t, &v)
		c.waitRequestState(v.ID, "blocked_by_hold")
		require.NotZero(t, l.count(t, `SELECT count(*) FROM crm.customers WHERE code = $1`, held), "a held subject is not deleted")

		r = c.call("POST", "/api/v1/holds/release", "legal", map[string]any{"matter": "M-1", "by": "counsel"})
		require.Equal(t, 200, r.status, "%s", r.body)
		var rel struct {
			Released, Freed, Resumed int
		}
		r.json(t, &rel)
		require.Equal(t, struct{ Released, Freed, Resumed int }{1, 1, 1}, rel)
		c.waitRequestState(v.ID, "completed")
		require.Zero(t, l.count(t, `SELECT count(*) FROM crm.customers WHERE code = $1`, held))
		require.Zero(t, l.clientRows(t, held))
	})

	t.Run("river ui", func(t *testing.T) {
		r := c.call("GET", "/riverui/", "", nil)
		r.problem(t, 401)
		require.True(t, strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic "), "a browser is asked for the token")
		for _, role := range []string{"privacy", "legal", "auditor"} {
			c.call("GET", "/riverui/", role, nil).problem(t, 403)
		}
		req, _ := http.NewRequest("GET", c.base+"/riverui/", nil)
		req.SetBasicAuth("ops", tokens["ops"])
		r = c.send(req, nil)
		require.Equal(t, 200, r.status, "%s", r.body)
		require.Contains(t, r.header.Get("Content-Type"), "text/html")
		r = c.call("GET", "/riverui/api/jobs?state=completed&limit=5", "ops", nil)
		require.Equal(t, 200, r.status, "%s", r.body)
		require.Contains(t, string(r.body), "lethe.request", "River UI's API lists lethe's jobs")
		c.call("GET", "/riverui/api/jobs?state=completed&limit=5", "auditor", nil).problem(t, 403)
	})

	t.Run("metrics after a sweep", func(t *testing.T) {
		l.sweep(t)
		families, body := c.metrics(t)
		value := func(name string, labels ...string) float64 {
			t.Helper()
			return testenv.MetricValue(t, families, name, labels...)
		}
		archived := l.count(t, `SELECT count(*) FROM lethe.manifest WHERE policy = 'former'`)
		require.NotZero(t, archived)
		require.Equal(t, float64(archived), value("lethe_subjects_archived_total", "policy", "former"))
		var destroyed int
		require.NoError(t, l.db.Pool.QueryRow(ctx, `SELECT coalesce(sum(destroyed), 0)::int FROM lethe.batch WHERE policy = 'spam'`).Scan(&destroyed))
		require.NotZero(t, destroyed)
		require.Equal(t, float64(destroyed), value("lethe_subjects_destroyed_total", "policy", "spam"))
		var bytesPut int
		require.NoError(t, l.db.Pool.QueryRow(ctx, `SELECT coalesce(sum(bytes), 0)::int FROM lethe.batch WHERE policy = 'former'`).Scan(&bytesPut))
		require.Equal(t, float64(bytesPut), value("lethe_archive_bytes_total", "policy", "former"))
		require.Equal(t, float64(l.count(t, `SELECT count(*) FROM lethe.batch WHERE policy = 'former'`)),
			value("lethe_batch_duration_seconds", "policy", "former"))
		require.Equal(t, 2.0, value("lethe_requests", "state", "completed"))
		require.Equal(t, 1.0, value("lethe_requests", "state", "rejected"))
		require.Equal(t, 0.0, value("lethe_holds_active"))
		require.Equal(t, 1.0, value("lethe_database_up"))
		for _, k := range slices.Concat(l.keys["due"], l.keys["active"]) {
			require.NotContains(t, string(body), k, "metrics carry no subject key")
		}
	})

	t.Run("audit and logs", func(t *testing.T) {
		rows, err := l.db.Pool.Query(ctx, `SELECT actor, detail::jsonb ->> 'route', (detail::jsonb ->> 'status')::int FROM lethe.audit_log WHERE kind = 'api_call' ORDER BY seq`)
		require.NoError(t, err)
		type call struct {
			Actor, Route string
			Status       int
		}
		var calls []call
		for rows.Next() {
			var c call
			require.NoError(t, rows.Scan(&c.Actor, &c.Route, &c.Status))
			calls = append(calls, c)
		}
		require.NoError(t, rows.Err())
		require.Contains(t, calls, call{"token:intake", "POST /api/v1/requests", 201})
		require.Contains(t, calls, call{"token:intake", "POST /api/v1/requests", 200})
		require.Contains(t, calls, call{"token:legal-team", "POST /api/v1/holds", 201})
		require.Contains(t, calls, call{"token:legal-team", "POST /api/v1/holds/release", 200})
		require.Contains(t, calls, call{"token:audit", "POST /api/v1/requests", 403}, "refused changes are audited too")
		res, err := audit.Verify(ctx, l.db.Pool)
		require.NoError(t, err)
		require.True(t, res.OK, "the audit chain holds: %s", res.Problem)
		require.NotZero(t, res.Entries)

		out := l.log.String()
		require.Contains(t, out, `msg="http request"`)
		require.Contains(t, out, `route="POST /api/v1/requests" status=201`)
		require.Contains(t, out, "token=intake")
		require.Regexp(t, `msg=job .*kind=lethe.request .*outcome=completed`, out, "each job has its line")
		for _, k := range []string{gone, held, active} {
			require.NotContains(t, out, k, "the log never names a subject")
		}
		for _, tok := range tokens {
			require.NotContains(t, out, tok, "the log never holds a token")
		}
	})

	// Every operation of the document was called and checked.
	for _, path := range []string{"/api/v1/requests", "/api/v1/requests/{id}", "/api/v1/holds", "/api/v1/holds/release", "/api/v1/status", "/api/v1/openapi.json", "/healthz", "/readyz"} {
		for _, op := range c.doc.Paths.Find(path).Operations() {
			require.True(t, c.seen[op.OperationID], "operation %s was never called", op.OperationID)
		}
	}
}

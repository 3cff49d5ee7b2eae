package main_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
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
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/api"
	"github.com/lethehq/lethe/internal/testenv"
)

// apiTokens are the tokens of the API tests, one per role.
var apiTokens = map[string]string{
	"privacy": "tok-privacy-0123456789abcdef",
	"legal":   "tok-legal-0123456789abcdef",
	"auditor": "tok-auditor-0123456789abcdef",
	"ops":     "tok-ops-0123456789abcdef",
}

// apiTokenNames are the names the config gives them.
var apiTokenNames = map[string]string{"privacy": "intake", "legal": "legal-team", "auditor": "audit", "ops": "sre"}

// withHTTP replaces the config's http section with one holding the test
// tokens (by their SHA-256 only) and a small body limit.
func withHTTP(t *testing.T, yaml, extra string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("http:\n  listen: 127.0.0.1:0\n  max_body_bytes: 2048\n" + extra + "  tokens:\n")
	for _, role := range []string{"privacy", "legal", "auditor", "ops"} {
		sum := sha256.Sum256([]byte(apiTokens[role]))
		fmt.Fprintf(&b, "    - {name: %s, role: %s, sha256: %s}\n", apiTokenNames[role], role, hex.EncodeToString(sum[:]))
	}
	const plain = "http:\n  listen: 127.0.0.1:0\n"
	require.Contains(t, yaml, plain)
	return strings.Replace(yaml, plain, b.String(), 1)
}

var listenLine = regexp.MustCompile(`msg="http server listening" addr=(\S+)`)

// httpAddr waits for the process to say where it listens.
func (w *worker) httpAddr(t *testing.T) string {
	t.Helper()
	w.waitOutput(t, "http server listening", 30*time.Second)
	m := listenLine.FindStringSubmatch(w.output())
	require.NotNil(t, m, w.output())
	return m[1]
}

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
		req.Header.Set("Authorization", "Bearer "+apiTokens[role])
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

// TestAPI drives every endpoint through a worker's real listening server:
// each role's allowed and denied calls, bad bodies, idempotent POSTs, a
// request from POST to completed, holds blocking and releasing it, River UI
// behind auth, /metrics after a sweep, and the audit log of the calls.
// Every answer is checked against the OpenAPI document.
func TestAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := &privacy{shop: newShop(t, 0)}
	p.cfgPath = p.writeConfig(t, "api.yaml", withHTTP(t, p.yaml, ""))
	p.w = startWorker(t, p.cfgPath)
	c := newAPIClient(t, "http://"+p.w.httpAddr(t), nil)
	d := dumpShop(t, p.db.Pool)
	gone := p.richest(d, catGoneDue)
	held := p.richest(d, catGoneDue, gone)
	active := p.keys(catActive)[0]

	t.Run("health", func(t *testing.T) {
		r := c.call("GET", "/healthz", "", nil)
		require.Equal(t, 200, r.status)
		r = c.call("GET", "/readyz", "", nil)
		require.Equal(t, 200, r.status, "%s", r.body)
		var ready struct {
			Ready  bool              `json:"ready"`
			Checks map[string]string `json:"checks"`
		}
		r.json(t, &ready)
		require.True(t, ready.Ready)
		require.Equal(t, map[string]string{"database": "ok", "migrations": "ok", "archive": "ok"}, ready.Checks)
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
		req.Header.Set("Authorization", "Token "+apiTokens["auditor"])
		c.send(req, nil).problem(t, 401)
		req, _ = http.NewRequest("GET", c.base+"/api/v1/status", nil)
		req.Header.Set("Authorization", "Bearer x"+apiTokens["auditor"])
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
		require.Equal(t, 0, p.count(t, `SELECT count(*) FROM lethe.request WHERE ticket = 'T-ROLE'`))
		require.Equal(t, 0, p.count(t, `SELECT count(*) FROM lethe.hold WHERE matter = 'M-ROLE'`))
	})

	t.Run("bad bodies", func(t *testing.T) {
		before := p.count(t, `SELECT count(*) FROM lethe.request`)
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
		req.Header.Set("Authorization", "Bearer "+apiTokens["privacy"])
		require.Contains(t, c.send(req, []byte(`subject=x`)).problem(t, 415), "application/json")
		c.call("POST", "/api/v1/holds/release", "legal", map[string]any{"matter": "NO-SUCH", "by": "a"}).problem(t, 404)
		c.call("POST", "/api/v1/holds", "legal", map[string]any{"matter": "M", "subjects": []string{}, "reason": "r", "by": "a"}).problem(t, 422)
		c.call("GET", "/api/v1/requests?state=lost", "privacy", nil).problem(t, 400)
		c.call("GET", "/api/v1/requests?limit=0", "privacy", nil).problem(t, 400)
		c.call("GET", "/api/v1/requests/abc", "privacy", nil).problem(t, 400)
		c.call("GET", "/api/v1/nothing", "privacy", nil).problem(t, 404)
		require.Equal(t, before, p.count(t, `SELECT count(*) FROM lethe.request`), "no bad body made a request")
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
		require.Zero(t, dumpShop(t, p.db.Pool).count("shop.clients", gone), "the subject is gone from the hot tables")

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
		require.NotZero(t, dumpShop(t, p.db.Pool).count("shop.clients", held), "a held subject is not deleted")

		r = c.call("POST", "/api/v1/holds/release", "legal", map[string]any{"matter": "M-1", "by": "counsel"})
		require.Equal(t, 200, r.status, "%s", r.body)
		var rel struct {
			Released, Freed, Resumed int
		}
		r.json(t, &rel)
		require.Equal(t, struct{ Released, Freed, Resumed int }{1, 1, 1}, rel)
		c.waitRequestState(v.ID, "completed")
		require.Zero(t, dumpShop(t, p.db.Pool).count("shop.clients", held))
	})

	t.Run("river ui", func(t *testing.T) {
		r := c.call("GET", "/riverui/", "", nil)
		r.problem(t, 401)
		require.True(t, strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic "), "a browser is asked for the token")
		for _, role := range []string{"privacy", "legal", "auditor"} {
			c.call("GET", "/riverui/", role, nil).problem(t, 403)
		}
		req, _ := http.NewRequest("GET", c.base+"/riverui/", nil)
		req.SetBasicAuth("ops", apiTokens["ops"])
		r = c.send(req, nil)
		require.Equal(t, 200, r.status, "%s", r.body)
		require.Contains(t, r.header.Get("Content-Type"), "text/html")
		r = c.call("GET", "/riverui/api/jobs?state=completed&limit=5", "ops", nil)
		require.Equal(t, 200, r.status, "%s", r.body)
		require.Contains(t, string(r.body), "lethe.request", "River UI's API lists lethe's jobs")
		c.call("GET", "/riverui/api/jobs?state=completed&limit=5", "auditor", nil).problem(t, 403)
	})

	t.Run("metrics after a sweep", func(t *testing.T) {
		requireOK(t, p.run(t, "sweep"))
		deadline := time.Now().Add(60 * time.Second)
		for p.count(t, `SELECT count(*) FROM lethe.run WHERE state IN ('selecting', 'working')`) > 0 ||
			p.count(t, `SELECT count(*) FROM lethe.run`) == 0 {
			require.True(t, time.Now().Before(deadline), "the sweep did not finish\n%s", p.w.output())
			time.Sleep(200 * time.Millisecond)
		}
		r := c.call("GET", "/metrics", "", nil)
		require.Equal(t, 200, r.status)
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(bytes.NewReader(r.body))
		require.NoError(t, err)
		value := func(name string, labels ...string) float64 {
			t.Helper()
			return metricValue(t, families, name, labels...)
		}
		archived := p.count(t, `SELECT count(*) FROM lethe.manifest WHERE policy = 'gone'`)
		require.NotZero(t, archived)
		require.Equal(t, float64(archived), value("lethe_subjects_archived_total", "policy", "gone"))
		var destroyed int
		require.NoError(t, p.db.Pool.QueryRow(ctx, `SELECT coalesce(sum(destroyed), 0)::int FROM lethe.batch WHERE policy = 'spam'`).Scan(&destroyed))
		require.NotZero(t, destroyed)
		require.Equal(t, float64(destroyed), value("lethe_subjects_destroyed_total", "policy", "spam"))
		var bytesPut int
		require.NoError(t, p.db.Pool.QueryRow(ctx, `SELECT coalesce(sum(bytes), 0)::int FROM lethe.batch WHERE policy = 'gone'`).Scan(&bytesPut))
		require.Equal(t, float64(bytesPut), value("lethe_archive_bytes_total", "policy", "gone"))
		require.Equal(t, float64(p.count(t, `SELECT count(*) FROM lethe.batch WHERE policy = 'gone'`)),
			value("lethe_batch_duration_seconds", "policy", "gone"))
		require.Equal(t, 2.0, value("lethe_requests", "state", "completed"))
		require.Equal(t, 1.0, value("lethe_requests", "state", "rejected"))
		require.Equal(t, 0.0, value("lethe_holds_active"))
		require.Equal(t, 1.0, value("lethe_database_up"))
		for _, k := range p.keys(catGoneDue, catActive) {
			require.NotContains(t, string(r.body), k, "metrics carry no subject key")
		}
	})

	t.Run("audit and logs", func(t *testing.T) {
		rows, err := p.db.Pool.Query(ctx, `SELECT actor, detail::jsonb ->> 'route', (detail::jsonb ->> 'status')::int FROM lethe.audit_log WHERE kind = 'api_call' ORDER BY seq`)
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
		requireOK(t, p.run(t, "audit", "verify"))

		out := p.w.output()
		require.Contains(t, out, `msg="http request"`)
		require.Contains(t, out, `route="POST /api/v1/requests" status=201`)
		require.Contains(t, out, "token=intake")
		require.Regexp(t, `msg=job .*kind=lethe.request .*outcome=completed`, out, "each job has its line")
		for _, k := range []string{gone, held, active} {
			require.NotContains(t, out, k, "the log never names a subject")
		}
		for _, tok := range apiTokens {
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

// TestAPIReadyzFollowsTheObjectStore stops the S3 server under a worker:
// /readyz turns 503 and names the archive, and is ready again once the
// server is back. /healthz stays 200 throughout.
func TestAPIReadyzFollowsTheObjectStore(t *testing.T) {
	t.Parallel()
	srv := testenv.NewS3Server(t)
	s := newShopOn(t, 0, testenv.NewBucketOn(t, srv))
	cfg := s.writeConfig(t, "api.yaml", withHTTP(t, s.yaml, ""))
	w := startWorker(t, cfg)
	c := newAPIClient(t, "http://"+w.httpAddr(t), nil)

	waitReady := func(want int) map[string]string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := c.call("GET", "/readyz", "", nil)
			if r.status == want {
				var v struct {
					Checks map[string]string `json:"checks"`
				}
				r.json(t, &v)
				return v.Checks
			}
			require.True(t, time.Now().Before(deadline), "/readyz stayed %d: %s", r.status, r.body)
			time.Sleep(250 * time.Millisecond)
		}
	}
	waitReady(200)
	require.NoError(t, srv.Kill())
	checks := waitReady(503)
	require.Equal(t, "ok", checks["database"])
	require.Equal(t, "ok", checks["migrations"])
	require.Equal(t, "failing", checks["archive"], "a caller without a token learns only what fails")
	var detail struct {
		Checks map[string]string `json:"checks"`
	}
	c.call("GET", "/readyz", "ops", nil).json(t, &detail)
	require.Contains(t, detail.Checks["archive"], "error probing bucket", "a caller with a token learns why")
	require.Equal(t, 200, c.call("GET", "/healthz", "", nil).status, "the process is alive")
	require.NoError(t, srv.Restart(context.Background()))
	require.Equal(t, map[string]string{"database": "ok", "migrations": "ok", "archive": "ok"}, waitReady(200))
}

// count runs a count query on the shop's database.
func (s *shop) count(t *testing.T, query string) int {
	t.Helper()
	var n int
	require.NoError(t, s.db.Pool.QueryRow(context.Background(), query).Scan(&n))
	return n
}

// selfSigned writes a certificate for 127.0.0.1 and its key into dir and
// returns their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "lethe test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	require.NoError(t, os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// TestAPIServeTLS runs lethe serve, the API without a worker, over TLS. A
// request it takes waits, received, for a worker; a hold's object-store lock
// waits as a pending sync; the database gauges of /metrics say both.
func TestAPIServeTLS(t *testing.T) {
	t.Parallel()
	s := newShop(t, 0)
	certPath, keyPath, pool := selfSigned(t, s.dir)
	cfg := s.writeConfig(t, "serve.yaml", withHTTP(t, s.yaml, fmt.Sprintf("  tls_cert: %s\n  tls_key: %s\n", certPath, keyPath)))
	w := spawn(t, nil, "serve", "--config", cfg, "--log-level", "info")
	addr := w.httpAddr(t)
	require.Contains(t, w.output(), "tls=true")

	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		require.NotEqual(t, 200, resp.StatusCode, "plain HTTP is not served on a TLS port")
	}
	c := newAPIClient(t, "https://"+addr, &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}})
	require.Equal(t, 200, c.call("GET", "/healthz", "", nil).status)
	require.Equal(t, 200, c.call("GET", "/readyz", "", nil).status)

	key := s.keys(catGoneDue)[0]
	r := c.call("POST", "/api/v1/requests", "privacy", map[string]any{"subject": key, "ticket": "T-TLS", "by": "desk"})
	require.Equal(t, 201, r.status, "%s", r.body)
	var req struct {
		ID       int64  `json:"id"`
		State    string `json:"state"`
		DaysLeft int    `json:"days_left"`
	}
	r.json(t, &req)
	require.Equal(t, "received", req.State, "no worker: the request waits for one")
	require.Equal(t, 45, req.DaysLeft)
	r = c.call("POST", "/api/v1/holds", "legal", map[string]any{"matter": "M-TLS", "subjects": []string{s.keys(catGoneDue)[1], "not-yet-a-customer"}, "reason": "r", "by": "counsel"})
	require.Equal(t, 201, r.status, "%s", r.body)

	r = c.call("GET", "/metrics", "", nil)
	require.Equal(t, 200, r.status)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(r.body))
	require.NoError(t, err)
	gauge := func(name string, labels ...string) float64 {
		t.Helper()
		return metricValue(t, families, name, labels...)
	}
	require.Equal(t, 1.0, gauge("lethe_requests", "state", "received"))
	require.Equal(t, 0.0, gauge("lethe_requests", "state", "completed"))
	require.InDelta(t, 45.0, gauge("lethe_open_request_min_days_left"), 0.01)
	require.InDelta(t, 0, gauge("lethe_oldest_open_request_age_seconds"), 60)
	require.Equal(t, 2.0, gauge("lethe_holds_active"))
	require.Equal(t, 2.0, gauge("lethe_held_subjects"))
	require.Equal(t, 2.0, gauge("lethe_hold_syncs_pending"), "no worker has synced the locks")
	require.Equal(t, 1.0, gauge("lethe_database_up"))
	require.NotContains(t, string(r.body), "not-yet-a-customer")

	var st map[string]json.RawMessage
	c.call("GET", "/api/v1/status?runs=1", "auditor", nil).json(t, &st)
	require.Contains(t, string(st["pending_hold_syncs"]), `"held": true`)
}

// TestSweepLimitBoundsAFirstRun: sweep --wait --limit N archives N due
// subjects and no more, in policy order; the next sweep takes the rest.
func TestSweepLimitBoundsAFirstRun(t *testing.T) {
	t.Parallel()
	s := newShop(t, 7)
	due := len(s.keys(catGoneDue)) + len(s.keys(catSpamDue))
	require.Greater(t, len(s.keys(catGoneDue)), 20)

	r := lethe(t, "sweep", "--wait", "--limit", "20", "--json", "--config", s.cfgPath)
	requireOK(t, r)
	var first struct {
		Run struct{ Subjects, Archived, Destroyed int }
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &first), r.stdout)
	require.Equal(t, 20, first.Run.Subjects, r.stdout)
	require.Equal(t, 20, first.Run.Archived, "the first policy (gone) is taken first")
	require.Equal(t, 0, first.Run.Destroyed)
	require.Equal(t, 20, s.count(t, `SELECT count(*) FROM lethe.manifest`))

	r = lethe(t, "sweep", "--wait", "--json", "--config", s.cfgPath)
	requireOK(t, r)
	var rest struct{ Run struct{ Subjects int } }
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rest), r.stdout)
	require.Equal(t, due-20, rest.Run.Subjects)
	require.Equal(t, len(s.keys(catGoneDue)), s.count(t, `SELECT count(*) FROM lethe.manifest`))
}

// metricValue is the value of name's first sample that has every label of
// labels (name, value, ...): a counter's or gauge's value, or a histogram's
// sample count.
func metricValue(t *testing.T, families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := families[name]
	require.True(t, ok, "no metric %s", name)
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	require.FailNow(t, "no sample", "%s %v", name, labels)
	return 0
}

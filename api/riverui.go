package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"riverqueue.com/riverui"
)

// RiverUIPrefix is where River UI is mounted.
const RiverUIPrefix = "/riverui"

// NewRiverUI returns River UI over client, started, for Options.RiverUI. It
// stops with ctx. Job arguments are hidden by default in the job list;
// lethe's hold only ids, never personal data.
func NewRiverUI(ctx context.Context, client *river.Client[pgx.Tx], logger *slog.Logger) (http.Handler, error) {
	h, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints:                riverui.NewEndpoints(client, nil),
		JobListHideArgsByDefault: true,
		Logger:                   logger,
		Prefix:                   RiverUIPrefix,
	})
	if err != nil {
		return nil, fmt.Errorf("error creating River UI: %w", err)
	}
	if err := h.Start(ctx); err != nil {
		return nil, fmt.Errorf("error starting River UI: %w", err)
	}
	return h, nil
}

// safeMethod reports whether a method only reads.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// riverUI serves River UI to the ops role. A call that changes something
// (cancel, retry, delete, pause, resume, a queue's settings) must come from
// River UI's own page or from a client that is not a browser; the call and
// its outcome are audited under the token, with the job ids it names.
//
// Browsers send basic-auth credentials they have saved with any request to
// the site, so a page elsewhere could post a form here. Such a request is
// refused by its Sec-Fetch-Site or Origin header. A request that carries
// neither (a browser older than those headers, or a script) must be
// application/json, which no form can send and no page can send elsewhere
// without the CORS preflight lethe never answers. River UI's own page sends
// its JSON as text/plain, so the content type alone cannot be the rule.
func (s *Server) riverUI(w http.ResponseWriter, r *http.Request) {
	if safeMethod(r.Method) {
		s.opts.RiverUI.ServeHTTP(w, r)
		return
	}
	c := callerFrom(r.Context())
	route := r.Method + " " + r.URL.Path
	if err := s.csrf.Check(r); err != nil {
		writeProblem(w, r, http.StatusForbidden, "forbidden",
			"River UI changes only from its own page: this request comes from another site")
		s.auditRiverUI(r, c, route, http.StatusForbidden, nil)
		return
	}
	if r.Header.Get("Sec-Fetch-Site") == "" && r.Header.Get("Origin") == "" {
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			writeProblem(w, r, http.StatusUnsupportedMediaType, "unsupported media type",
				"send changes to River UI's API as Content-Type: application/json")
			s.auditRiverUI(r, c, route, http.StatusUnsupportedMediaType, nil)
			return
		}
	}
	// The body names the jobs; it is read once for the audit entry and
	// handed on unchanged.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.Config.HTTP.MaxBodyBytes))
	if err != nil {
		writeProblem(w, r, http.StatusRequestEntityTooLarge, "request entity too large",
			fmt.Sprintf("the body is larger than %d bytes (http.max_body_bytes)", s.opts.Config.HTTP.MaxBodyBytes))
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var named struct {
		IDs []json.Number `json:"ids"`
	}
	_ = json.Unmarshal(body, &named) // not every call names jobs
	s.opts.RiverUI.ServeHTTP(w, r)
	s.auditRiverUI(r, c, route, statusOf(w), named.IDs)
}

func (s *Server) auditRiverUI(r *http.Request, c *caller, route string, status int, jobIDs []json.Number) {
	detail := map[string]any{"route": route}
	if len(jobIDs) > 0 {
		detail["job_ids"] = jobIDs
	}
	s.auditCall(r, c, status, detail)
}

// statusOf is the status a handler answered on w, as logRequests's writer
// recorded it.
func statusOf(w http.ResponseWriter) int {
	if lw, ok := w.(*logWriter); ok && lw.status != 0 {
		return lw.status
	}
	return http.StatusOK
}

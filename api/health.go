package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/lethehq/lethe/retention"
)

// healthz says the process is alive; it checks nothing else.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readiness is the last /readyz result.
type readiness struct {
	Ready  bool              `json:"ready"`
	Checks map[string]string `json:"checks"`
}

// readyCacheFor spares the dependencies from probes that come faster.
const readyCacheFor = 2 * time.Second

// readyz runs every readiness check (the database, the migrations, the
// bucket with the worker's credentials): 200 when all pass, 503 naming the
// ones that fail.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if time.Since(s.readyAt) > readyCacheFor {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		res := readiness{Ready: true, Checks: map[string]string{}}
		for _, c := range s.opts.Ready {
			if err := c.Fn(ctx); err != nil {
				res.Ready = false
				res.Checks[c.Name] = err.Error()
			} else {
				res.Checks[c.Name] = "ok"
			}
		}
		cancel()
		s.readyLast, s.readyAt = res, time.Now()
	}
	status := http.StatusOK
	if !s.readyLast.Ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, s.readyLast)
}

// status answers GET /api/v1/status?runs=N with what lethe status --json
// prints.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	runs := 5
	if v := r.URL.Query().Get("runs"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100 {
			writeProblem(w, r, http.StatusBadRequest, "bad request", "runs must be an integer from 0 to 100")
			return
		}
		runs = n
	}
	rep, err := retention.Status(r.Context(), s.opts.Pool, s.opts.Plan, runs)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/lethehq/lethe"
)

// healthz says the process is alive, and which build it runs; it checks
// nothing else.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	b := lethe.BuildInfo()
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "version": b.Version, "commit": b.Commit, "modified": b.Modified, "go": b.Go})
}

// readiness is the last /readyz result.
type readiness struct {
	Ready  bool              `json:"ready"`
	Checks map[string]string `json:"checks"`
}

// readyCacheFor spares the dependencies from probes that come faster.
const readyCacheFor = 2 * time.Second

// readyTimeout bounds all the checks of one probe.
const readyTimeout = 5 * time.Second

// Words of a check's result to a caller without a token.
const (
	checkOK      = "ok"
	checkFailing = "failing"
)

// readyz runs every readiness check (the database, the migrations, the
// bucket with the worker's credentials): 200 when all pass, 503 naming the
// ones that fail. The checks run on a context of their own, so a caller that
// hangs up does not turn its cancellation into the cached result. A caller
// without a token learns only which checks fail; the causes (which may name
// the bucket or quote the database) are for callers with a token, and for
// the log.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	res := s.readiness()
	status := http.StatusOK
	if !res.Ready {
		status = http.StatusServiceUnavailable
	}
	if s.authenticate(r) != nil {
		writeJSON(w, status, res)
		return
	}
	plain := readiness{Ready: res.Ready, Checks: make(map[string]string, len(res.Checks))}
	for name, v := range res.Checks {
		if v == checkOK {
			plain.Checks[name] = checkOK
		} else {
			plain.Checks[name] = checkFailing
		}
	}
	writeJSON(w, status, plain)
}

// readiness returns the checks' result, run at most every readyCacheFor.
func (s *Server) readiness() readiness {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if time.Since(s.readyAt) <= readyCacheFor {
		return s.readyLast
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	res := readiness{Ready: true, Checks: map[string]string{}}
	for _, c := range s.opts.Ready {
		if err := c.Fn(ctx); err != nil {
			res.Ready = false
			res.Checks[c.Name] = err.Error()
			if s.readyLast.Checks[c.Name] != err.Error() {
				s.opts.Logger.Warn("not ready", "check", c.Name, "error", err)
			}
		} else {
			res.Checks[c.Name] = checkOK
		}
	}
	s.readyLast, s.readyAt = res, time.Now()
	return res
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
	rep, err := s.opts.Status(r.Context(), runs)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/lethehq/lethe"
	"github.com/lethehq/lethe/hold"
)

// holdBody is POST /api/v1/holds.
type holdBody struct {
	// Kind is the kind of subject; empty: the default kind.
	Kind     string   `json:"kind"`
	Matter   string   `json:"matter"`
	Subjects []string `json:"subjects"`
	Reason   string   `json:"reason"`
	By       string   `json:"by"`
}

// releaseBody is POST /api/v1/holds/release. Without subjects the whole
// matter is released.
type releaseBody struct {
	// Kind is the kind of subject of Subjects; without subjects it limits
	// the release to that kind (empty: every kind).
	Kind     string   `json:"kind"`
	Matter   string   `json:"matter"`
	Subjects []string `json:"subjects"`
	By       string   `json:"by"`
}

// postHold places holds: 201 when any hold is new, 200 when every subject
// was already held under the matter.
func (s *Server) postHold(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	var body holdBody
	if err := s.decode(w, r, &body); err != nil {
		bodyProblem(w, r, err)
		return
	}
	if len(body.Subjects) == 0 {
		writeProblem(w, r, http.StatusUnprocessableEntity, "invalid request", "subjects must name at least one subject")
		return
	}
	if len(body.Subjects) > 10_000 {
		writeProblem(w, r, http.StatusUnprocessableEntity, "invalid request", "at most 10000 subjects in one call")
		return
	}
	res, err := s.opts.Holds.Place(r.Context(), body.Kind, body.Matter, body.Subjects, body.Reason, body.By)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if res.Placed == nil {
		res.Placed = []hold.Hold{}
	}
	status := http.StatusOK
	if len(res.Placed) > 0 {
		status = http.StatusCreated
	}
	ids := make([]int64, len(res.Placed))
	for i, h := range res.Placed {
		ids[i] = h.ID
	}
	s.auditCall(r, c, status, map[string]any{"hold_ids": ids, "already_held": res.Already})
	writeJSON(w, status, res)
}

func (s *Server) releaseHold(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	var body releaseBody
	if err := s.decode(w, r, &body); err != nil {
		bodyProblem(w, r, err)
		return
	}
	res, err := s.opts.Holds.Release(r.Context(), body.Kind, body.Matter, body.Subjects, body.By)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.auditCall(r, c, http.StatusOK, map[string]any{"released": res.Released, "freed": res.Freed, "resumed": res.Resumed})
	writeJSON(w, http.StatusOK, res)
}

// listHolds answers GET /api/v1/holds?matter=&subject=&kind=.
func (s *Server) listHolds(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Has("subject") && strings.TrimSpace(q.Get("subject")) == "" {
		writeProblem(w, r, http.StatusBadRequest, "bad request", "subject cannot be empty or only whitespace")
		return
	}
	holds, err := s.opts.Holds.List(r.Context(), q.Get("kind"), q.Get("matter"), q.Get("subject"))
	var in *lethe.InputError
	if errors.As(err, &in) {
		writeProblem(w, r, http.StatusBadRequest, "bad request", inputDetail(in))
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if holds == nil {
		holds = []hold.Hold{}
	}
	writeJSON(w, http.StatusOK, holds)
}

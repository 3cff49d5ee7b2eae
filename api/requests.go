package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/lethehq/lethe"
	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/request"
)

// requestBody is POST /api/v1/requests.
type requestBody struct {
	Subject *string `json:"subject"`
	Ticket  string  `json:"ticket"`
	By      string  `json:"by"`
	Force   bool    `json:"force"`
	// Regime is the legal regime; empty: requests.default_regime.
	Regime string `json:"regime"`
	// Kind is the kind of subject; empty: the default kind.
	Kind string `json:"kind"`
}

// extendBody is POST /api/v1/requests/{id}/extend.
type extendBody struct {
	Reason string `json:"reason"`
	By     string `json:"by"`
}

// postRequest queues a deletion request: 201 with the request when it is
// new, 200 with the existing one when the ticket was seen before.
func (s *Server) postRequest(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	var body requestBody
	if err := s.decode(w, r, &body); err != nil {
		bodyProblem(w, r, err)
		return
	}
	if body.Subject == nil {
		writeProblem(w, r, http.StatusUnprocessableEntity, "invalid request", "subject is required")
		return
	}
	req, created, err := s.opts.Intake.Submit(r.Context(), request.Submission{Key: *body.Subject, Ticket: body.Ticket, By: body.By,
		Force: body.Force, Regime: body.Regime, Kind: body.Kind})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/api/v1/requests/"+strconv.FormatInt(req.ID, 10))
	}
	s.auditCall(r, c, status, map[string]any{"request_id": req.ID, "created": created})
	writeJSON(w, status, req)
}

// extendRequest moves a request's deadline once by its regime's
// extension: 200 with the request. A second extension, an ended request and
// a regime without an extension are 422.
func (s *Server) extendRequest(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	id, ok := requestID(w, r)
	if !ok {
		return
	}
	var body extendBody
	if err := s.decode(w, r, &body); err != nil {
		bodyProblem(w, r, err)
		return
	}
	req, err := s.opts.Intake.Extend(r.Context(), id, body.Reason, body.By)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.auditCall(r, c, http.StatusOK, map[string]any{"request_id": req.ID})
	writeJSON(w, http.StatusOK, req)
}

// requestID reads the {id} of the path, or answers 400.
func requestID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeProblem(w, r, http.StatusBadRequest, "bad request", "the request id must be a positive integer")
		return 0, false
	}
	return id, true
}

func (s *Server) getRequest(w http.ResponseWriter, r *http.Request) {
	id, ok := requestID(w, r)
	if !ok {
		return
	}
	req, err := s.opts.Intake.Get(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, req)
}

// listRequests answers GET /api/v1/requests?state=&ticket=&limit=, newest
// first.
func (s *Server) listRequests(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	if state != "" && !slices.Contains(request.RequestStates, state) {
		writeProblem(w, r, http.StatusBadRequest, "bad request",
			"state must be one of "+strings.Join(request.RequestStates, ", "))
		return
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeProblem(w, r, http.StatusBadRequest, "bad request", "limit must be an integer from 1 to 1000")
			return
		}
		limit = n
	}
	list := []*request.Request{}
	if ticket := q.Get("ticket"); ticket != "" {
		req, err := s.opts.Intake.ByTicket(r.Context(), ticket)
		switch {
		case errors.Is(err, request.ErrNoRequest):
		case err != nil:
			s.writeError(w, r, err)
			return
		case state == "" || req.State == state:
			list = append(list, req)
		}
		writeJSON(w, http.StatusOK, list)
		return
	}
	found, err := s.opts.Intake.List(r.Context(), state, limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, append(list, found...))
}

// writeError maps the services' errors onto problems.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var in *lethe.InputError
	switch {
	case errors.Is(err, request.ErrNoRequest):
		writeProblem(w, r, http.StatusNotFound, "not found", "no request has this id")
	case errors.Is(err, hold.ErrNoSuchMatter):
		writeProblem(w, r, http.StatusNotFound, "not found", "no active hold has this matter")
	case errors.Is(err, request.ErrTicketReused) && errors.As(err, &in) && in.Field == "regime":
		writeProblem(w, r, http.StatusConflict, "conflict", "the ticket was already used under another regime: a request keeps its regime; use a new ticket")
	case errors.Is(err, request.ErrTicketReused):
		writeProblem(w, r, http.StatusConflict, "conflict", "the ticket was already used for another subject: use a new ticket")
	case errors.As(err, &in):
		writeProblem(w, r, http.StatusUnprocessableEntity, "invalid request", inputDetail(in))
	default:
		s.internalError(w, r, err)
	}
}

// inputDetail words an input error with the JSON field at fault: a value of
// a list is named by its index, as in subjects[2].
func inputDetail(in *lethe.InputError) string {
	name := in.Field
	if in.Index >= 0 {
		name = fmt.Sprintf("%ss[%d]", in.Field, in.Index)
	}
	return in.Render(name)
}

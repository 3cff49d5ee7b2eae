package api

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/lethehq/lethe/retention"
)

// requestBody is POST /api/v1/requests.
type requestBody struct {
	Subject *string `json:"subject"`
	Ticket  string  `json:"ticket"`
	By      string  `json:"by"`
	Force   bool    `json:"force"`
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
	req, created, err := s.requests.Submit(r.Context(), s.opts.Queue, *body.Subject, body.Ticket, body.By, body.Force)
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

func (s *Server) getRequest(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeProblem(w, r, http.StatusBadRequest, "bad request", "the request id must be a positive integer")
		return
	}
	req, err := s.requests.Get(r.Context(), id)
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
	if state != "" && !slices.Contains(retention.RequestStates, state) {
		writeProblem(w, r, http.StatusBadRequest, "bad request",
			"state must be one of "+strings.Join(retention.RequestStates, ", "))
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
	list := []*retention.Request{}
	if ticket := q.Get("ticket"); ticket != "" {
		req, err := s.requests.ByTicket(r.Context(), ticket)
		switch {
		case errors.Is(err, retention.ErrNoRequest):
		case err != nil:
			s.writeError(w, r, err)
			return
		case state == "" || req.State == state:
			list = append(list, req)
		}
		writeJSON(w, http.StatusOK, list)
		return
	}
	found, err := s.requests.List(r.Context(), state, limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, append(list, found...))
}

// writeError maps retention's errors onto problems.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, retention.ErrNoRequest):
		writeProblem(w, r, http.StatusNotFound, "not found", "no request has this id")
	case errors.Is(err, retention.ErrNoSuchMatter):
		writeProblem(w, r, http.StatusNotFound, "not found", "no active hold has this matter")
	case errors.Is(err, retention.ErrTicketReused):
		writeProblem(w, r, http.StatusConflict, "conflict", "the ticket was already used for another subject: use a new ticket")
	case errors.Is(err, retention.ErrNotHeld):
		writeProblem(w, r, http.StatusUnprocessableEntity, "invalid request", err.Error())
	case errors.Is(err, retention.ErrBadInput):
		writeProblem(w, r, http.StatusUnprocessableEntity, "invalid request", inputDetail(err))
	default:
		s.internalError(w, r, err)
	}
}

// inputDetail words a retention input error for the API: its messages name
// CLI flags (--ticket), which here are JSON fields (ticket).
func inputDetail(err error) string {
	msg := strings.TrimPrefix(err.Error(), retention.ErrBadInput.Error()+": ")
	msg = strings.ReplaceAll(msg, "--subject", "subject")
	for _, f := range []string{"ticket", "by", "matter", "reason"} {
		msg = strings.ReplaceAll(msg, "--"+f, f)
	}
	return msg
}

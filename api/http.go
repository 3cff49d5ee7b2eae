package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/audit"
)

// problem is an RFC 9457 problem detail.
type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

func writeProblem(w http.ResponseWriter, r *http.Request, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	p := problem{Type: "about:blank", Title: title, Status: status, Detail: detail, RequestID: w.Header().Get("X-Request-Id")}
	json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, "error encoding response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// errBody is a request body that cannot be used; its message is the
// problem's detail.
type errBody struct {
	status int
	msg    string
}

func (e *errBody) Error() string { return e.msg }

// decode reads a JSON object into dst: application/json only, within
// http.max_body_bytes, no unknown fields, nothing after the object.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, dst any) error {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return &errBody{http.StatusUnsupportedMediaType, "send the body as Content-Type: application/json"}
	}
	limit := s.opts.Config.HTTP.MaxBodyBytes
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err == nil {
		// encoding/json lets the last of two equal keys win and matches
		// names in any case; a gateway in front of lethe may read the same
		// body otherwise. So every name must be one field's, exactly, once.
		err = checkNames(body, jsonFields(dst))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err == nil {
		err = dec.Decode(dst)
	}
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("more than one JSON value in the body")
		}
	}
	if err == nil {
		return nil
	}
	var maxErr *http.MaxBytesError
	var synErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	var nameErr *errBody
	switch {
	case errors.As(err, &nameErr):
		return nameErr
	case errors.As(err, &maxErr):
		return &errBody{http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes (http.max_body_bytes)", limit)}
	case errors.As(err, &synErr):
		return &errBody{http.StatusBadRequest, fmt.Sprintf("the body is not valid JSON (at byte %d)", synErr.Offset)}
	case errors.As(err, &typeErr):
		return &errBody{http.StatusBadRequest, fmt.Sprintf("field %q must be a JSON %s", typeErr.Field, typeErr.Type.Kind())}
	case errors.Is(err, io.EOF):
		return &errBody{http.StatusBadRequest, "the body is empty: send a JSON object"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &errBody{http.StatusBadRequest, "the body is not valid JSON (it ends too early)"}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return &errBody{http.StatusBadRequest, "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")}
	default:
		return &errBody{http.StatusBadRequest, "the body cannot be read as the JSON object this endpoint takes: " + err.Error()}
	}
}

// jsonFields returns the JSON names of the fields of the struct dst points
// to.
func jsonFields(dst any) []string {
	t := reflect.TypeOf(dst).Elem()
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// checkNames refuses a body whose objects repeat a name, or hold two names
// that differ only in case, and one whose outer object has a name that is
// not exactly one of fields. Syntax errors are left to the decoder.
func checkNames(body []byte, fields []string) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	type object struct{ seen map[string]string } // folded name -> name
	var stack []*object                          // nil entries are arrays
	expectName := func() bool { return len(stack) > 0 && stack[len(stack)-1] != nil }
	afterName := false
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // the end, or a syntax error the decoder reports
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, &object{seen: map[string]string{}})
			case '[':
				stack = append(stack, nil)
			default:
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return nil // what follows the value is the decoder's to refuse
				}
			}
			afterName = false
			continue
		case string:
			if expectName() && !afterName {
				o := stack[len(stack)-1]
				folded := strings.ToLower(v)
				if prev, ok := o.seen[folded]; ok {
					if prev == v {
						return &errBody{http.StatusBadRequest, fmt.Sprintf("field %q appears twice", v)}
					}
					return &errBody{http.StatusBadRequest, fmt.Sprintf("fields %q and %q differ only in case", prev, v)}
				}
				o.seen[folded] = v
				if len(stack) == 1 && !slices.Contains(fields, v) {
					msg := fmt.Sprintf("unknown field %q", v)
					for _, f := range fields {
						if strings.EqualFold(f, v) {
							msg += fmt.Sprintf(" (names are case-sensitive: %q)", f)
						}
					}
					return &errBody{http.StatusBadRequest, msg}
				}
				afterName = true
				continue
			}
		}
		afterName = false
	}
}

// bodyProblem writes err from decode.
func bodyProblem(w http.ResponseWriter, r *http.Request, err error) {
	var eb *errBody
	if errors.As(err, &eb) {
		writeProblem(w, r, eb.status, http.StatusText(eb.status), eb.msg)
		return
	}
	writeProblem(w, r, http.StatusBadRequest, "bad request", err.Error())
}

// internalError logs err and answers 500 without it: errors from the
// database or the object store are for the operator's log.
func (s *Server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	s.opts.Logger.Error("http request failed", "method", r.Method, "route", r.Pattern,
		"request_id", w.Header().Get("X-Request-Id"), "error", err)
	writeProblem(w, r, http.StatusInternalServerError, "internal error",
		"lethe could not complete the call; the server log has the cause under this request_id")
}

// auditCall records a call that changes something, or tried to, under the
// token's name. result holds ids and counts, never personal data.
func (s *Server) auditCall(r *http.Request, c *caller, status int, result map[string]any) {
	detail := map[string]any{"method": r.Method, "route": r.Pattern, "status": status, "role": c.Role}
	for k, v := range result {
		detail[k] = v
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.opts.Pool, func(tx pgx.Tx) error {
		return audit.Append(ctx, tx, audit.Entry{Kind: audit.KindAPICall, Actor: "token:" + c.Name, Detail: detail})
	})
	if err != nil {
		s.opts.Logger.Error("could not audit an API call", "route", r.Pattern, "token", c.Name, "error", err)
	}
}

// logWriter records the status and size of a response for its log line.
type logWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	caller *caller
}

func (w *logWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush lets River UI stream.
func (w *logWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests gives every request an id and logs one line for it: the
// route pattern, never the path or query, which may hold a subject's key.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := newRequestID()
		w.Header().Set("X-Request-Id", id)
		lw := &logWriter{ResponseWriter: w}
		next.ServeHTTP(lw, r)
		if lw.status == 0 {
			lw.status = http.StatusOK
		}
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		level := slog.LevelInfo
		if r.Pattern == "GET /healthz" || r.Pattern == "GET /readyz" || r.Pattern == "GET /metrics" ||
			strings.HasPrefix(r.URL.Path, "/riverui/") {
			level = slog.LevelDebug // probes and the UI's polling would drown the rest
		}
		if lw.status >= 500 {
			level = slog.LevelError
		}
		attrs := []any{"request_id", id, "method", r.Method, "route", route, "status", lw.status,
			"bytes", lw.bytes, "duration_ms", time.Since(start).Milliseconds()}
		if lw.caller != nil {
			attrs = append(attrs, "token", lw.caller.Name, "role", lw.caller.Role)
		}
		s.opts.Logger.Log(r.Context(), level, "http request", attrs...)
	})
}

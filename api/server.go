// Package api is lethe's HTTP surface: the REST API under /api/v1 that a
// privacy intake system and legal drive, health probes, Prometheus metrics,
// and River UI for operators. It calls into request and hold for everything
// it does, with the same checks and the same idempotency as the CLI.
package api

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/request"
)

// Options are what the server serves. Every field but RiverUI and Metrics
// must be set.
type Options struct {
	// Config supplies http.* (listen address, TLS, tokens, body limit).
	Config *config.Config
	// Pool is lethe's database, where API calls are audited.
	Pool *pgxpool.Pool
	// Intake records and reads deletion requests.
	Intake *request.Intake
	// Holds places, releases and lists legal holds.
	Holds *hold.Service
	// Status reads what GET /api/v1/status answers, with at most runs runs.
	Status func(ctx context.Context, runs int) (any, error)
	// Ready checks what /readyz reports; each check returns nil when its
	// dependency is usable. Checks run in order under one timeout.
	Ready []Check
	// Metrics serves /metrics; nil serves 404 there.
	Metrics http.Handler
	// RiverUI serves /riverui/ to the ops role; nil serves 404 there.
	RiverUI http.Handler
	// Logger gets one line per HTTP request.
	Logger *slog.Logger
}

// Check is one readiness check.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Server is lethe's HTTP server.
type Server struct {
	opts    Options
	tokens  []config.Token
	handler http.Handler
	csrf    *http.CrossOriginProtection

	readyMu   sync.Mutex
	readyAt   time.Time
	readyLast readiness
}

// New returns a server for opts.
func New(opts Options) (*Server, error) {
	if opts.Config == nil || opts.Pool == nil || opts.Intake == nil || opts.Holds == nil || opts.Status == nil || opts.Logger == nil {
		return nil, errors.New("error creating the HTTP server: config, pool, intake, holds, status and logger are required")
	}
	s := &Server{
		opts:   opts,
		tokens: opts.Config.HTTP.Tokens,
		csrf:   http.NewCrossOriginProtection(),
	}
	s.handler = s.routes()
	return s, nil
}

// Handler returns the server's routes, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// route is one method and path of the server.
type route struct {
	method, path string
	handler      http.Handler
}

func (s *Server) routes() http.Handler {
	table := []route{
		{"GET", "/healthz", http.HandlerFunc(s.healthz)},
		{"GET", "/readyz", http.HandlerFunc(s.readyz)},
		{"GET", "/api/v1/openapi.json", http.HandlerFunc(serveOpenAPI)},
		{"POST", "/api/v1/requests", s.authorize(permWriteRequests, s.postRequest)},
		{"GET", "/api/v1/requests", s.authorize(permReadRequests, s.listRequests)},
		{"GET", "/api/v1/requests/{id}", s.authorize(permReadRequests, s.getRequest)},
		{"POST", "/api/v1/requests/{id}/extend", s.authorize(permWriteRequests, s.extendRequest)},
		{"POST", "/api/v1/holds", s.authorize(permWriteHolds, s.postHold)},
		{"POST", "/api/v1/holds/release", s.authorize(permWriteHolds, s.releaseHold)},
		{"GET", "/api/v1/holds", s.authorize(permReadHolds, s.listHolds)},
		{"GET", "/api/v1/status", s.authorize(permReadStatus, s.status)},
	}
	if s.opts.Metrics != nil {
		table = append(table, route{"GET", "/metrics", s.opts.Metrics})
	}
	mux := http.NewServeMux()
	allow := map[string][]string{}
	var paths []string
	for _, rt := range table {
		mux.Handle(rt.method+" "+rt.path, rt.handler)
		if allow[rt.path] == nil {
			paths = append(paths, rt.path)
		}
		allow[rt.path] = append(allow[rt.path], rt.method)
	}
	// A known path asked with another method is 405 naming the methods it
	// takes; a pattern without a method is matched only when no method
	// matches.
	for _, path := range paths {
		methods := allow[path]
		if slices.Contains(methods, "GET") {
			methods = append(methods, "HEAD")
		}
		mux.Handle(path, methodNotAllowed(strings.Join(methods, ", ")))
	}
	mux.Handle("/api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, http.StatusNotFound, "no such endpoint", "see /api/v1/openapi.json for the endpoints")
	}))
	if s.opts.RiverUI != nil {
		mux.Handle(RiverUIPrefix+"/", s.authorize(permRiverUI, s.riverUI))
		mux.Handle("GET "+RiverUIPrefix, http.RedirectHandler(RiverUIPrefix+"/", http.StatusMovedPermanently))
	}
	return s.logRequests(checkURL(mux))
}

func methodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeProblem(w, r, http.StatusMethodNotAllowed, "method not allowed", r.Method+" is not allowed here; use "+allow)
	})
}

// checkURL refuses a path or query string that is not valid UTF-8 text or
// holds NUL, before any handler sees it: no value lethe takes from a URL
// can be such text, and the database would refuse it with an error.
func checkURL(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !cleanText(r.URL.Path) {
			writeProblem(w, r, http.StatusBadRequest, "bad request", "the path must be valid UTF-8 text without NUL")
			return
		}
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			writeProblem(w, r, http.StatusBadRequest, "bad request", "the query string cannot be parsed: write name=value pairs joined by &, percent-encoded")
			return
		}
		for k, vs := range q {
			ok := cleanText(k)
			for _, v := range vs {
				ok = ok && cleanText(v)
			}
			if !ok {
				writeProblem(w, r, http.StatusBadRequest, "bad request", "query parameters must be valid UTF-8 text without NUL")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func cleanText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// Listen opens http.listen, with TLS when http.tls_cert and http.tls_key are
// set. Its errors name the config key at fault.
func (s *Server) Listen() (net.Listener, error) {
	hc := s.opts.Config.HTTP
	ln, err := net.Listen("tcp", hc.Listen)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, config.Errorf("http.listen", "%s is in use, perhaps by another lethe worker or serve on this machine: "+
			"set http.listen to a free address (such as 127.0.0.1:0 for any free port), or to \"off\" for a worker without the HTTP server", hc.Listen)
	}
	if err != nil {
		return nil, config.Errorf("http.listen", "cannot listen on %s: %v", hc.Listen, err)
	}
	if hc.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(hc.TLSCert, hc.TLSKey)
		if err != nil {
			ln.Close()
			return nil, config.Errorf("http.tls_cert", "cannot load the certificate and key: %v", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	return ln, nil
}

// Serve serves on ln until ctx is done, then shuts down, giving requests in
// flight a few seconds to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	s.opts.Logger.Info("http server listening", "addr", ln.Addr().String(), "tls", s.opts.Config.HTTP.TLSCert != "")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("error serving http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// newRequestID returns a random id for one HTTP request, echoed in
// X-Request-Id and in its log line.
func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Package api is lethe's HTTP surface: the REST API under /api/v1 that a
// privacy intake system and legal drive, health probes, Prometheus metrics,
// and River UI for operators. It calls into retention for everything it
// does, with the same checks and the same idempotency as the CLI.
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
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/retention"
)

// Options are what the server serves. Every field but RiverUI and Metrics
// must be set.
type Options struct {
	// Config supplies http.* (listen address, TLS, tokens, body limit).
	Config *config.Config
	// Pool is lethe's database.
	Pool *pgxpool.Pool
	// Plan is the compiled subject graph.
	Plan *retention.Plan
	// Queue inserts the jobs that requests and holds start.
	Queue retention.Queue
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
	opts     Options
	tokens   []config.Token
	requests *retention.Requests
	holds    *retention.Holds
	handler  http.Handler

	readyMu   sync.Mutex
	readyAt   time.Time
	readyLast readiness
}

// New returns a server for opts.
func New(opts Options) (*Server, error) {
	if opts.Config == nil || opts.Pool == nil || opts.Plan == nil || opts.Queue == nil || opts.Logger == nil {
		return nil, errors.New("error creating the HTTP server: config, pool, plan, queue and logger are required")
	}
	s := &Server{
		opts:     opts,
		tokens:   opts.Config.HTTP.Tokens,
		requests: retention.NewRequests(opts.Pool, opts.Plan, nil, opts.Logger),
		holds:    retention.NewHolds(opts.Pool, opts.Plan, nil, opts.Logger),
	}
	s.handler = s.routes()
	return s, nil
}

// Handler returns the server's routes, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.opts.Metrics != nil {
		mux.Handle("GET /metrics", s.opts.Metrics)
	}
	mux.HandleFunc("GET /api/v1/openapi.json", serveOpenAPI)

	mux.Handle("POST /api/v1/requests", s.authorize(permWriteRequests, s.postRequest))
	mux.Handle("GET /api/v1/requests", s.authorize(permReadRequests, s.listRequests))
	mux.Handle("GET /api/v1/requests/{id}", s.authorize(permReadRequests, s.getRequest))
	mux.Handle("POST /api/v1/holds", s.authorize(permWriteHolds, s.postHold))
	mux.Handle("POST /api/v1/holds/release", s.authorize(permWriteHolds, s.releaseHold))
	mux.Handle("GET /api/v1/holds", s.authorize(permReadHolds, s.listHolds))
	mux.Handle("GET /api/v1/status", s.authorize(permReadStatus, s.status))
	mux.Handle("/api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, http.StatusNotFound, "no such endpoint", "see /api/v1/openapi.json for the endpoints")
	}))

	if s.opts.RiverUI != nil {
		mux.Handle("/riverui/", s.authorize(permRiverUI, s.opts.RiverUI.ServeHTTP))
		mux.Handle("GET /riverui", http.RedirectHandler("/riverui/", http.StatusMovedPermanently))
	}
	return s.logRequests(mux)
}

// Listen opens http.listen, with TLS when http.tls_cert and http.tls_key are
// set. Its errors name the config key at fault.
func (s *Server) Listen() (net.Listener, error) {
	hc := s.opts.Config.HTTP
	ln, err := net.Listen("tcp", hc.Listen)
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

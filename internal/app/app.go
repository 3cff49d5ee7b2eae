// Package app wires lethe from one config: the database pool, the compiled
// subject graph, the archive with the worker's credentials, the services of
// retention, request and hold, and the River clients that insert and work
// their jobs. cmd/lethe and the bench build lethe through it, so both run
// the same code.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/jobs"
	"github.com/lethehq/lethe/metrics"
	"github.com/lethehq/lethe/migrations"
	"github.com/lethehq/lethe/request"
	"github.com/lethehq/lethe/retention"
)

// App is lethe over one config: a pool on a migrated database, the compiled
// plan, and a client that inserts jobs.
type App struct {
	Config *config.Config
	Logger *slog.Logger
	Pool   *pgxpool.Pool
	// Plan is the config compiled against the catalog; nil when Open was
	// asked not to compile it.
	Plan *retention.Plan
	// Queue inserts jobs and reads their state; it works none.
	Queue jobs.Queue

	store  *archive.Archiver
	ledger *audit.Guard
}

// Options say how much Open prepares.
type Options struct {
	// NoPlan skips compiling the config against the catalog, for commands
	// that do not touch the subject graph.
	NoPlan bool
}

// Open connects to the database, checks that it is migrated, compiles the
// config against its catalog and creates the inserting client.
func Open(ctx context.Context, cfg *config.Config, logger *slog.Logger, opts Options) (*App, error) {
	pool, err := Connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	a := &App{Config: cfg, Logger: logger, Pool: pool}
	if err := migrations.Check(ctx, pool); err != nil {
		a.Close()
		return nil, err
	}
	if !opts.NoPlan {
		if a.Plan, err = retention.Compile(ctx, pool, cfg); err != nil {
			a.Close()
			return nil, err
		}
	}
	client, err := jobs.NewInserter(pool, logger)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("error creating the queue client: %w", err)
	}
	a.Queue = jobs.Queue{Client: client}
	return a, nil
}

// Close closes the pool.
func (a *App) Close() {
	if a.Pool != nil {
		a.Pool.Close()
	}
}

// Connect opens a pool on cfg's database and checks that it answers. Its
// errors never quote the connection string.
func Connect(ctx context.Context, cfg *config.Config) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.Database.URL)
	if err != nil {
		return nil, config.Errorf("database.url", "cannot be parsed: %v", redactParseError(err))
	}
	pc.MaxConns = int32(cfg.Database.MaxConns)
	pc.ConnConfig.ConnectTimeout = 10 * time.Second
	if pc.ConnConfig.RuntimeParams == nil {
		pc.ConnConfig.RuntimeParams = map[string]string{}
	}
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "lethe"
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("error connecting to the database: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach the database at %s:%d: %s (is PostgreSQL running, and is database.url right?)",
			pc.ConnConfig.Host, pc.ConnConfig.Port, PGReason(err))
	}
	return pool, nil
}

// PGReason says why a database call failed, without the connection string.
func PGReason(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message
	}
	var netErr *net.OpError
	if errors.As(err, &netErr) {
		return netErr.Err.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}

// redactParseError keeps a password in a malformed URL out of the message.
func redactParseError(err error) string {
	msg := err.Error()
	if strings.Contains(msg, "@") || strings.Contains(msg, "password") {
		return "malformed connection string"
	}
	return msg
}

// Store returns the archive with the worker's credentials, built once. With
// probe, it first checks that the bucket accepts them and, unless
// archive.lock_mode is none, that it takes objects under Object Lock.
func (a *App) Store(ctx context.Context, probe bool) (*archive.Archiver, error) {
	if a.store == nil {
		a.store = archive.FromConfig(a.Config, a.Config.Worker.Concurrency)
	}
	if !probe {
		return a.store, nil
	}
	ac := a.Config.Archive
	err := a.store.Probe(ctx)
	if err == nil {
		err = a.store.ProbeLock(ctx, ac.LockMode)
	}
	switch {
	case errors.Is(err, archive.ErrAccessDenied):
		return nil, config.Errorf("archive.credentials", "bucket %q refused them (%v): check the access key and the bucket policy",
			ac.Bucket, RootCause(err))
	case errors.Is(err, archive.ErrNoObjectLock):
		return nil, config.Errorf("archive.lock_mode", "is %s, but bucket %q has no Object Lock: create the bucket with Object Lock enabled, or set lock_mode: none",
			ac.LockMode, ac.Bucket)
	case err != nil:
		return nil, err
	}
	if !a.store.LegalHolds() {
		a.Logger.Warn("archive.lock_mode is none and the bucket has no Object Lock: segments carry no retention and no legal hold; "+
			"only lethe's database protects held subjects, and nothing stops the bucket from deleting a segment", "bucket", ac.Bucket)
	}
	return a.store, nil
}

// RootCause is the innermost error's message: what a server said, without
// the layers of context lethe put around it.
func RootCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// Intake returns the service that records and reads deletion requests.
func (a *App) Intake() (*request.Intake, error) {
	return request.NewIntake(request.IntakeConfig{Pool: a.Pool, Plan: a.Plan, Queue: a.Queue, Logger: a.Logger,
		Regimes: a.Config.Requests.Regimes, DefaultRegime: a.Config.Requests.DefaultRegime})
}

// Holds returns the service that places, releases and lists holds.
func (a *App) Holds() (*hold.Service, error) {
	intake, err := a.Intake()
	if err != nil {
		return nil, err
	}
	return hold.New(hold.Config{Pool: a.Pool, Plan: a.Plan, Queue: a.Queue, Waiting: intake, Logger: a.Logger})
}

// Services builds everything the workers call into, over store (the
// worker's archive) and counting into m (which may be nil).
func (a *App) Services(store *archive.Archiver, m *metrics.Metrics) (*jobs.Services, error) {
	cfg := a.Config
	holds := hold.Checker{}
	common := retention.Common{Pool: a.Pool, Plan: a.Plan, Holds: holds, Logger: a.Logger}
	sweeper, err := retention.NewSweeper(retention.SweeperConfig{Common: common, Jobs: a.Queue,
		BatchSize: cfg.Archive.BatchSize})
	if err != nil {
		return nil, err
	}
	mover, err := retention.NewMover(retention.MoverConfig{Common: common, Store: store, LockMode: cfg.Archive.LockMode,
		MastersFingerprint: archive.MastersFingerprint(cfg.Archive.Recipients)})
	if err != nil {
		return nil, err
	}
	expirer, err := retention.NewExpirer(retention.ExpirerConfig{Common: common})
	if err != nil {
		return nil, err
	}
	eraser, err := request.NewEraser(request.EraserConfig{Pool: a.Pool, Plan: a.Plan, Holds: holds, Logger: a.Logger, SigningKey: a.Config.Requests.SigningKey})
	if err != nil {
		return nil, err
	}
	syncer, err := hold.NewSyncer(a.Pool, store, a.Logger)
	if err != nil {
		return nil, err
	}
	intake, err := a.Intake()
	if err != nil {
		return nil, err
	}
	return &jobs.Services{Pool: a.Pool, Sweeper: sweeper, Mover: mover, Expirer: expirer, Intake: intake,
		Eraser: eraser, Syncer: syncer, Store: store, Anchorer: a.Anchorer(store), Ledger: a.Ledger(store), Queue: a.Queue, Metrics: m}, nil
}

// Anchorer returns the writer of the audit chain's anchors, over store (the
// worker's archive).
func (a *App) Anchorer(store *archive.Archiver) *audit.Anchorer {
	return &audit.Anchorer{Pool: a.Pool, Store: store, LockMode: a.Config.Archive.LockMode,
		Retain: a.Config.Audit.AnchorRetainDays.Duration(), Logger: a.Logger}
}

// Ledger returns the process's guard, over store (the worker's archive),
// that compares the database with the bucket's newest anchor. One guard
// serves the workers, /readyz and status, so that they agree and the
// bucket is read once every few seconds at most.
func (a *App) Ledger(store *archive.Archiver) *audit.Guard {
	if a.ledger == nil {
		a.ledger = audit.NewGuard(a.Pool, store, a.Logger)
	}
	return a.ledger
}

// Worker returns a River client that works every job kind with svc; with
// periodic, it also schedules the nightly sweep and expiry.
func (a *App) Worker(svc *jobs.Services, periodic bool) (*river.Client[pgx.Tx], error) {
	client, err := jobs.NewWorker(a.Config, svc, jobs.Options{Periodic: periodic}, a.Logger)
	if err != nil {
		return nil, fmt.Errorf("error creating the queue client: %w", err)
	}
	return client, nil
}

// Working builds what a process that works jobs needs: the worker's archive
// (after checking that the bucket accepts its credentials), the services
// counting into m (which may be nil), and the River client that works them;
// with periodic, the client also schedules the nightly sweep and expiry.
// The client is not started.
func (a *App) Working(ctx context.Context, m *metrics.Metrics, periodic bool) (*jobs.Services, *river.Client[pgx.Tx], error) {
	store, err := a.Store(ctx, true)
	if err != nil {
		return nil, nil, err
	}
	svc, err := a.Services(store, m)
	if err != nil {
		return nil, nil, err
	}
	client, err := a.Worker(svc, periodic)
	if err != nil {
		return nil, nil, err
	}
	return svc, client, nil
}

// Metrics returns the Prometheus metrics of this process over the database
// and the queue.
func (a *App) Metrics() *metrics.Metrics {
	return metrics.New(a.Pool, a.Queue.FailedCounts, a.Logger)
}

// Status is what lethe status and GET /api/v1/status show.
type Status struct {
	*retention.SweepStatus
	*request.RequestStatus
	*hold.HoldStatus
	FailedJobs []jobs.FailedJobs `json:"failed_jobs"`
	// Anchors is how the audit chain's anchoring fares, and how the
	// database stands against the bucket's newest anchor.
	Anchors *audit.AnchorStatus `json:"anchors"`
}

// Status reads lethe status, with at most runs runs.
func (a *App) Status(ctx context.Context, runs int) (*Status, error) {
	s := &Status{}
	var err error
	if s.SweepStatus, err = retention.Status(ctx, a.Pool, a.Plan, runs); err != nil {
		return nil, err
	}
	if s.RequestStatus, err = request.Status(ctx, a.Pool); err != nil {
		return nil, err
	}
	if s.HoldStatus, err = hold.Status(ctx, a.Pool); err != nil {
		return nil, err
	}
	if s.FailedJobs, err = a.Queue.Failed(ctx); err != nil {
		return nil, err
	}
	if s.Anchors, err = audit.Status(ctx, a.Pool); err != nil {
		return nil, err
	}
	store, err := a.Store(ctx, false)
	if err != nil {
		return nil, err
	}
	if s.Anchors.Ledger, err = a.LedgerState(ctx, store); err != nil {
		s.Anchors.LedgerError = err.Error()
	}
	return s, nil
}

// LedgerState compares the database with the bucket's newest anchor: through
// the process's guard in a worker or server (cached, and logged when it
// changes), directly in a command, whose error message says it all.
func (a *App) LedgerState(ctx context.Context, store *archive.Archiver) (*audit.LedgerState, error) {
	if a.ledger != nil {
		return a.ledger.State(ctx)
	}
	return audit.CheckLedger(ctx, a.Pool, store)
}

// Package metrics holds lethe's Prometheus metrics: counters of what this
// process did (subjects archived and destroyed, bytes, batch durations, job
// failures) and gauges read from the database at each scrape (requests by
// state and by deadline, holds, hold syncs, failed jobs), which every
// process reports alike. Labels carry policy names, states and job kinds,
// never a subject.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lethehq/lethe/request"
)

// Metrics holds lethe's Prometheus metrics on a registry of its own. Every
// method is safe on a nil *Metrics, which records nothing.
type Metrics struct {
	registry  *prometheus.Registry
	archived  *prometheus.CounterVec
	destroyed *prometheus.CounterVec
	minimized *prometheus.CounterVec
	minRows   *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	expired   *prometheus.CounterVec
	failures  *prometheus.CounterVec
	finished  *prometheus.CounterVec
	batches   *prometheus.HistogramVec
	logger    *slog.Logger
}

// JobCount is how many of lethe's jobs of one kind are in one failed state.
type JobCount struct {
	Kind, State string
	Count       int64
}

// JobCounts counts lethe's failed jobs (retryable now, or discarded in the
// last week). Package jobs, which owns River's tables, provides it.
type JobCounts func(ctx context.Context) ([]JobCount, error)

// New registers the process and Go collectors, lethe's counters, and, when
// pool is not nil, the collector that reads the database (and, through
// jobs, River's jobs) at each scrape.
func New(pool *pgxpool.Pool, jobs JobCounts, logger *slog.Logger) *Metrics {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		archived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lethe_subjects_archived_total",
			Help: "Subjects this process archived and deleted from the hot tables."}, []string{"policy"}),
		destroyed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lethe_subjects_destroyed_total",
			Help: "Subjects this process destroyed without archiving (then: delete, or erased again after a request)."}, []string{"policy"}),
		minimized: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lethe_subjects_minimized_total",
			Help: "Subjects whose rows this process minimised (then: minimize)."}, []string{"policy"}),
		minRows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lethe_rows_minimized_total",
			Help: "Rows whose columns this process minimised (then: minimize)."}, []string{"policy"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lethe_archive_bytes_total",
			Help: "Ciphertext bytes this process put in the archive."}, []string{"policy"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lethe_archives_expired_total",
			Help: "Archived copies this process destroyed because they outlived archive_retain."}, []string{"policy"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lethe_job_failures_total",
			Help: "Failed attempts of jobs this process worked."}, []string{"kind"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lethe_requests_finished_total",
			Help: "Deletion requests this process brought to a state where they wait or end."}, []string{"state"}),
		batches: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lethe_batch_duration_seconds",
			Help: "Durations of archive batches.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}, []string{"policy"}),
		logger: logger,
	}
	m.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.archived, m.destroyed, m.minimized, m.minRows, m.bytes, m.expired, m.failures, m.finished, m.batches)
	if pool != nil {
		m.registry.MustRegister(&dbCollector{pool: pool, jobs: jobs, logger: logger})
	}
	return m
}

// Registry is the registry the metrics are on; nil for a nil Metrics.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.registry
}

// Handler serves the metrics in Prometheus's text format; a nil Metrics
// serves 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(m.logger.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// ObserveBatch records one finished archive batch of a policy.
func (m *Metrics) ObserveBatch(policy string, archived, destroyed int, bytes int64, took time.Duration) {
	if m == nil || policy == "" {
		return
	}
	m.archived.WithLabelValues(policy).Add(float64(archived))
	m.destroyed.WithLabelValues(policy).Add(float64(destroyed))
	m.bytes.WithLabelValues(policy).Add(float64(bytes))
	m.batches.WithLabelValues(policy).Observe(took.Seconds())
}

// Minimized records the subjects and rows a batch of a then: minimize
// policy minimised.
func (m *Metrics) Minimized(policy string, subjects int, rows int64) {
	if m == nil || policy == "" {
		return
	}
	m.minimized.WithLabelValues(policy).Add(float64(subjects))
	m.minRows.WithLabelValues(policy).Add(float64(rows))
}

// ArchivesExpired records archived copies of a policy destroyed by expiry.
func (m *Metrics) ArchivesExpired(policy string, n int) {
	if m == nil {
		return
	}
	m.expired.WithLabelValues(policy).Add(float64(n))
}

// JobFailed records a failed attempt of a job of kind.
func (m *Metrics) JobFailed(kind string) {
	if m == nil {
		return
	}
	m.failures.WithLabelValues(kind).Inc()
}

// RequestDone records a deletion request reaching state.
func (m *Metrics) RequestDone(state string) {
	if m == nil {
		return
	}
	m.finished.WithLabelValues(state).Inc()
}

// dbCollector reads lethe's state from the database at each scrape.
type dbCollector struct {
	pool   *pgxpool.Pool
	jobs   JobCounts
	logger *slog.Logger
}

var (
	descUp = prometheus.NewDesc("lethe_database_up",
		"1 when the database answered this scrape's queries, else 0 (and the database metrics are missing).", nil, nil)
	descRequests = prometheus.NewDesc("lethe_requests",
		"Deletion requests by state.", []string{"state"}, nil)
	descOldest = prometheus.NewDesc("lethe_oldest_open_request_age_seconds",
		"Age of the oldest request not yet ended (received, processing or blocked_by_hold); 0 when none.", nil, nil)
	descDaysLeft = prometheus.NewDesc("lethe_open_request_min_days_left",
		"The fewest days left to a deadline among open requests (negative when overdue); absent when none is open.", nil, nil)
	descHolds = prometheus.NewDesc("lethe_holds_active",
		"Active legal holds, one per (matter, subject).", nil, nil)
	descHeld = prometheus.NewDesc("lethe_held_subjects",
		"Subjects at least one active hold covers.", nil, nil)
	descSyncs = prometheus.NewDesc("lethe_hold_syncs_pending",
		"Subjects whose object-store legal hold is not yet what their holds say.", nil, nil)
	descJobs = prometheus.NewDesc("lethe_jobs",
		"lethe's River jobs that are retryable now, or were discarded in the last 7 days, by kind.", []string{"kind", "state"}, nil)
	descAnchorFailures = prometheus.NewDesc("lethe_anchor_failures_total",
		"Attempts to anchor the audit chain in the bucket that failed (they are retried).", nil, nil)
	descAnchorFailing = prometheus.NewDesc("lethe_anchor_failing",
		"1 while the last attempt to anchor the audit chain failed, else 0.", nil, nil)
	descUnanchored = prometheus.NewDesc("lethe_unanchored_entries",
		"Audit log entries after the newest anchor this database wrote.", nil, nil)
	descLastAnchor = prometheus.NewDesc("lethe_last_anchor_timestamp_seconds",
		"When the newest anchor this database wrote was put; absent before the first.", nil, nil)
)

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descRequests, descOldest, descDaysLeft, descHolds, descHeld, descSyncs, descJobs,
		descAnchorFailures, descAnchorFailing, descUnanchored, descLastAnchor} {
		ch <- d
	}
}

// scrapeSQL reads everything in one round trip.
const scrapeSQL = `
	SELECT
		(SELECT coalesce(jsonb_object_agg(state, n), '{}') FROM (SELECT state, count(*) AS n FROM lethe.request GROUP BY state) r),
		(SELECT extract(epoch FROM now() - min(received_at))::float8 FROM lethe.request WHERE state = ANY ($1)),
		(SELECT (extract(epoch FROM min(deadline) - now()) / 86400)::float8 FROM lethe.request WHERE state = ANY ($1)),
		(SELECT count(*) FROM lethe.hold WHERE released_at IS NULL),
		(SELECT count(DISTINCT subject_hmac) FROM lethe.hold WHERE released_at IS NULL),
		(SELECT count(*) FROM lethe.hold_sync WHERE synced < generation),
		(SELECT failures FROM lethe.anchor_state WHERE id),
		(SELECT last_error IS NOT NULL FROM lethe.anchor_state WHERE id),
		(SELECT seq FROM lethe.audit_head WHERE id) - coalesce((SELECT max(seq) FROM lethe.anchor), 0),
		(SELECT extract(epoch FROM max(at))::float8 FROM lethe.anchor)`

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var (
		byState          map[string]int64
		oldest, daysLeft *float64
		holds, held      int64
		syncs            int64
		jobs             []JobCount
		anchorFailures   int64
		anchorFailing    bool
		unanchored       int64
		lastAnchor       *float64
	)
	open := []string{request.StateReceived, request.StateProcessing, request.StateBlockedByHold}
	err := c.pool.QueryRow(ctx, scrapeSQL, open).Scan(&byState, &oldest, &daysLeft, &holds, &held, &syncs,
		&anchorFailures, &anchorFailing, &unanchored, &lastAnchor)
	if err == nil && c.jobs != nil {
		jobs, err = c.jobs(ctx)
	}
	if err != nil {
		c.logger.Warn("metrics: cannot read lethe's state from the database", "error", err)
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
	for _, state := range request.RequestStates {
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.GaugeValue, float64(byState[state]), state)
	}
	age := 0.0
	if oldest != nil {
		age = *oldest
	}
	ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, age)
	if daysLeft != nil {
		ch <- prometheus.MustNewConstMetric(descDaysLeft, prometheus.GaugeValue, *daysLeft)
	}
	ch <- prometheus.MustNewConstMetric(descHolds, prometheus.GaugeValue, float64(holds))
	ch <- prometheus.MustNewConstMetric(descHeld, prometheus.GaugeValue, float64(held))
	ch <- prometheus.MustNewConstMetric(descSyncs, prometheus.GaugeValue, float64(syncs))
	for _, j := range jobs {
		ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(j.Count), j.Kind, j.State)
	}
	failing := 0.0
	if anchorFailing {
		failing = 1
	}
	ch <- prometheus.MustNewConstMetric(descAnchorFailures, prometheus.CounterValue, float64(anchorFailures))
	ch <- prometheus.MustNewConstMetric(descAnchorFailing, prometheus.GaugeValue, failing)
	ch <- prometheus.MustNewConstMetric(descUnanchored, prometheus.GaugeValue, float64(max(unanchored, 0)))
	if lastAnchor != nil {
		ch <- prometheus.MustNewConstMetric(descLastAnchor, prometheus.GaugeValue, *lastAnchor)
	}
}

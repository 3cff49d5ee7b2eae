package metrics_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/jobs"
	"github.com/lethehq/lethe/metrics"
)

// scrape serves m's handler once and parses the answer.
func scrape(t *testing.T, m *metrics.Metrics) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	body := rec.Body.String()
	return testenv.ParseMetrics(t, body), body
}

func TestCountersAndNil(t *testing.T) {
	t.Parallel()
	var none *metrics.Metrics
	none.ObserveBatch("p", 1, 1, 1, time.Second) // nil records nothing, and does not panic
	none.ArchivesExpired("p", 1)
	none.Minimized("p", 1, 1)
	none.JobFailed("k")
	none.RequestDone("completed")
	require.Nil(t, none.Registry())
	rec := httptest.NewRecorder()
	none.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 404, rec.Code)

	m := metrics.New(nil, nil, slog.New(slog.DiscardHandler))
	m.ObserveBatch("former", 500, 0, 1_000_000, 2*time.Second)
	m.ObserveBatch("former", 20, 0, 40_000, 100*time.Millisecond)
	m.ObserveBatch("spam", 0, 30, 0, 50*time.Millisecond)
	m.ArchivesExpired("former", 3)
	m.Minimized("ssn", 40, 55)
	m.Minimized("ssn", 2, 2)
	m.JobFailed("lethe.archive_batch")
	m.JobFailed("lethe.archive_batch")
	m.RequestDone("completed")
	f, _ := scrape(t, m)
	require.Equal(t, 520.0, testenv.MetricValue(t, f, "lethe_subjects_archived_total", "policy", "former"))
	require.Equal(t, 30.0, testenv.MetricValue(t, f, "lethe_subjects_destroyed_total", "policy", "spam"))
	require.Equal(t, 1_040_000.0, testenv.MetricValue(t, f, "lethe_archive_bytes_total", "policy", "former"))
	require.Equal(t, 2.0, testenv.MetricValue(t, f, "lethe_batch_duration_seconds", "policy", "former"))
	require.Equal(t, 3.0, testenv.MetricValue(t, f, "lethe_archives_expired_total", "policy", "former"))
	require.Equal(t, 42.0, testenv.MetricValue(t, f, "lethe_subjects_minimized_total", "policy", "ssn"))
	require.Equal(t, 57.0, testenv.MetricValue(t, f, "lethe_rows_minimized_total", "policy", "ssn"))
	require.Equal(t, 2.0, testenv.MetricValue(t, f, "lethe_job_failures_total", "kind", "lethe.archive_batch"))
	require.Equal(t, 1.0, testenv.MetricValue(t, f, "lethe_requests_finished_total", "state", "completed"))
	_, ok := testenv.MetricSample(f, "lethe_database_up")
	require.False(t, ok, "without a pool there are no database metrics")
	_, ok = testenv.MetricSample(f, "go_goroutines")
	require.True(t, ok, "the Go collector is registered")
}

func TestDatabaseGauges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.NewDB(t)
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO lethe.request (ticket, subject_hmac, subject_key, requested_by, state, received_at, deadline) VALUES
			('t1', 'h1', 'SUBJECT-SECRET-123', 'desk', 'received', now() - interval '3 days', now() + interval '42 days'),
			('t2', 'h2', 'SUBJECT-SECRET-456', 'desk', 'blocked_by_hold', now() - interval '40 days', now() + interval '5 days');
		INSERT INTO lethe.request (ticket, subject_hmac, requested_by, state, deadline, completed_at) VALUES
			('t3', 'h3', 'desk', 'completed', now() + interval '45 days', now()),
			('t4', 'h4', 'desk', 'rejected', now() + interval '45 days', now());
		INSERT INTO lethe.hold (matter, subject_hmac, subject_key, reason, placed_by) VALUES
			('M1', 'h2', 'SUBJECT-SECRET-456', 'r', 'counsel'),
			('M2', 'h2', 'SUBJECT-SECRET-456', 'r', 'counsel'),
			('M2', 'h5', 'SUBJECT-SECRET-789', 'r', 'counsel');
		INSERT INTO lethe.hold (matter, subject_hmac, reason, placed_by, released_by, released_at) VALUES
			('M0', 'h6', 'r', 'counsel', 'counsel', now());
		INSERT INTO lethe.hold_sync (subject_hmac, held, generation, synced) VALUES ('h2', true, 2, 1), ('h5', true, 1, 1);
		INSERT INTO lethe.river_job (kind, args, state, max_attempts, attempt, finalized_at, queue, priority)
			VALUES ('lethe.request', '{"request_id": 9}', 'discarded', 20, 20, now(), 'subjects', 1);`)
	require.NoError(t, err)

	inserter, err := jobs.NewInserter(db.Pool, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	queue := jobs.Queue{Client: inserter}
	m := metrics.New(db.Pool, queue.FailedCounts, slog.New(slog.DiscardHandler))
	f, body := scrape(t, m)
	require.Equal(t, 1.0, testenv.MetricValue(t, f, "lethe_database_up"))
	require.Equal(t, 1.0, testenv.MetricValue(t, f, "lethe_requests", "state", "received"))
	require.Equal(t, 1.0, testenv.MetricValue(t, f, "lethe_requests", "state", "blocked_by_hold"))
	require.Equal(t, 1.0, testenv.MetricValue(t, f, "lethe_requests", "state", "completed"))
	require.Equal(t, 1.0, testenv.MetricValue(t, f, "lethe_requests", "state", "rejected"))
	require.Equal(t, 0.0, testenv.MetricValue(t, f, "lethe_requests", "state", "failed"), "every state is reported, 0 when empty")
	require.InDelta(t, 40*86400, testenv.MetricValue(t, f, "lethe_oldest_open_request_age_seconds"), 60)
	require.InDelta(t, 5.0, testenv.MetricValue(t, f, "lethe_open_request_min_days_left"), 0.01)
	require.Equal(t, 3.0, testenv.MetricValue(t, f, "lethe_holds_active"), "the released hold does not count")
	require.Equal(t, 2.0, testenv.MetricValue(t, f, "lethe_held_subjects"))
	require.Equal(t, 1.0, testenv.MetricValue(t, f, "lethe_hold_syncs_pending"))
	require.Equal(t, 1.0, testenv.MetricValue(t, f, "lethe_jobs", "kind", "lethe.request", "state", "discarded"))
	require.NotContains(t, body, "SUBJECT-SECRET", "no key anywhere in the scrape")
	for _, secret := range []string{"h1", "h2", "t1", "t2"} {
		require.NotContains(t, body, `"`+secret+`"`, "labels never carry hmacs or tickets")
	}

	// No open request: no days-left sample, and an age of 0.
	_, err = db.Pool.Exec(ctx, `UPDATE lethe.request SET state = 'completed', subject_key = NULL, completed_at = now() WHERE state IN ('received', 'blocked_by_hold')`)
	require.NoError(t, err)
	f, _ = scrape(t, m)
	_, ok := testenv.MetricSample(f, "lethe_open_request_min_days_left")
	require.False(t, ok)
	require.Equal(t, 0.0, testenv.MetricValue(t, f, "lethe_oldest_open_request_age_seconds"))

	// A database that does not answer is reported, not hidden.
	pool, err := pgxpool.New(ctx, db.URL)
	require.NoError(t, err)
	down := metrics.New(pool, queue.FailedCounts, slog.New(slog.DiscardHandler))
	pool.Close()
	f, _ = scrape(t, down)
	require.Equal(t, 0.0, testenv.MetricValue(t, f, "lethe_database_up"))
	_, ok = testenv.MetricSample(f, "lethe_requests")
	require.False(t, ok)
}

// Package bench owns lethe bench: it seeds synthetic subjects into a scratch
// schema of the configured database, archives them through the real
// pipeline into the configured bucket under a bench/ prefix, measures the
// two limits that bound it (plain puts of objects of the same size, and the
// same read-and-delete SQL without encryption or S3), queues deletion
// requests for archived subjects, and removes everything it made, even
// after a failure.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"go.yaml.in/yaml/v3"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/internal/demo"
	"github.com/lethehq/lethe/jobs"
	"github.com/lethehq/lethe/retention"
)

// Options configure a run.
type Options struct {
	// Subjects is how many synthetic subjects to seed and archive.
	Subjects int
	// Workers is how many worker processes work the queue; 1 works it in
	// this process.
	Workers int
	// Requests is how many deletion requests to queue for archived
	// subjects afterwards; default min(10000, Subjects).
	Requests int
	// Binary is the lethe binary the worker processes run (Workers > 1).
	Binary string
	// CPUProfile, if set, receives a CPU profile of the archive phase.
	CPUProfile string
	// Progress receives a line now and then.
	Progress func(format string, args ...any)
}

// Result is what a run measured.
type Result struct {
	Subjects       int     `json:"subjects"`
	Seconds        float64 `json:"seconds"`
	SubjectsPerSec float64 `json:"subjects_per_sec"`
	BytesPerSec    float64 `json:"bytes_per_sec"`
	RawPutPerSec   float64 `json:"raw_put_per_sec"`
	RawDBPerSec    float64 `json:"raw_db_per_sec"`
	Efficiency     float64 `json:"efficiency"`
	PeakRSSBytes   int64   `json:"peak_rss_bytes"`
	RequestsPerSec float64 `json:"requests_per_sec"`
	Requests       int     `json:"requests"`
	Workers        int     `json:"workers"`
	Rows           int64   `json:"rows"`
	Bytes          int64   `json:"bytes"`
	MeanObjectSize int64   `json:"mean_object_bytes"`
	SeedSeconds    float64 `json:"seed_seconds"`
	// PerWorker is each worker process's share (Workers > 1).
	PerWorker []WorkerShare `json:"per_worker,omitempty"`
	// Timeline samples the subjects archived since the start.
	Timeline []Sample `json:"-"`
}

// WorkerShare is one worker process's part of the run.
type WorkerShare struct {
	Client         string  `json:"client"`
	Subjects       int     `json:"subjects"`
	SubjectsPerSec float64 `json:"subjects_per_sec"`
}

// Sample is the archived count at a moment of the run.
type Sample struct {
	At       time.Duration
	Archived int
}

// PolicyName is the policy of bench subjects in lethe's tables.
const PolicyName = "bench"

// Run runs the benchmark against cfg's database and bucket.
func Run(ctx context.Context, cfg *config.Config, pool *pgxpool.Pool, opts Options, logger *slog.Logger) (res *Result, err error) {
	if opts.Subjects < 1 {
		return nil, errors.New("bench: --subjects must be at least 1")
	}
	if opts.Workers < 1 {
		opts.Workers = 1
	}
	if opts.Requests == 0 {
		opts.Requests = min(10000, opts.Subjects)
	}
	if opts.Progress == nil {
		opts.Progress = func(string, ...any) {}
	}
	id := randomHex(4)
	b := &run{cfg: cfg, pool: pool, opts: opts, logger: logger, id: id,
		schema: "lethe_bench_" + id, rawSchema: "lethe_bench_raw_" + id,
		prefix: cfg.Archive.Prefix + "bench/" + id + "/", res: &Result{Subjects: opts.Subjects, Workers: opts.Workers}}
	defer func() {
		// Removing N objects one by one takes time in proportion: allow
		// ten minutes plus a second per 500 subjects (43 minutes at 1M).
		limit := 10*time.Minute + time.Duration(opts.Subjects/500)*time.Second
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
		defer cancel()
		opts.Progress("removing the scratch schemas, objects and rows")
		if cerr := b.cleanup(cctx); cerr != nil {
			err = errors.Join(err, &CleanupError{Err: cerr, Prefix: b.prefix, Schema: b.schema})
		}
	}()
	if err := b.prepare(ctx); err != nil {
		return nil, err
	}
	if err := b.archive(ctx); err != nil {
		return nil, err
	}
	if err := b.rawDB(ctx); err != nil {
		return nil, err
	}
	if err := b.rawPut(ctx); err != nil {
		return nil, err
	}
	if err := b.requests(ctx); err != nil {
		return nil, err
	}
	r := b.res
	if limit := min(r.RawPutPerSec, r.RawDBPerSec); limit > 0 {
		r.Efficiency = r.SubjectsPerSec / limit
	}
	return r, nil
}

// CleanupError is a bench that measured but could not remove all it made.
// Run returns its result with it.
type CleanupError struct {
	Err    error
	Prefix string
	Schema string
}

func (e *CleanupError) Error() string {
	return fmt.Sprintf("error cleaning up the bench (objects under %s, schema %s and its bench rows may remain; run the bench again or remove them by hand): %v",
		e.Prefix, e.Schema, e.Err)
}

func (e *CleanupError) Unwrap() error { return e.Err }

type run struct {
	cfg       *config.Config
	bcfg      *config.Config
	pool      *pgxpool.Pool
	opts      Options
	logger    *slog.Logger
	id        string
	schema    string
	rawSchema string
	prefix    string
	plan      *retention.Plan
	arch      *archive.Archiver
	runIDs    []int64
	res       *Result
	cleanups  []func()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// prepare seeds the scratch schema and builds the bench's config: the
// configured database and bucket, a prefix of its own, a key secret of its
// own, and the demo graph over the scratch tables.
func (b *run) prepare(ctx context.Context) error {
	b.opts.Progress("seeding %d synthetic subjects into schema %s", b.opts.Subjects, b.schema)
	start := time.Now()
	stats, err := demo.Seed(ctx, b.pool, demo.Options{Schema: b.schema, Subjects: b.opts.Subjects, AllDue: true,
		Progress: func(done, total int) { b.opts.Progress("seeded %d/%d", done, total) }})
	if err != nil {
		return fmt.Errorf("error seeding: %w", err)
	}
	b.res.SeedSeconds = time.Since(start).Seconds()
	for _, n := range stats.Rows {
		b.res.Rows += n
	}
	if err := analyze(ctx, b.pool, b.schema); err != nil {
		return err
	}
	fragment := strings.Replace(demo.Config(b.schema), "name: former-customers", "name: "+PolicyName, 1)
	bcfg, err := b.cfg.WithGraph(fragment)
	if err != nil {
		return fmt.Errorf("error building the bench config: %w", err)
	}
	bcfg.Archive.Prefix = b.prefix
	bcfg.Archive.KeySecret = "bench-" + randomHex(16)
	bcfg.Schedule = "0 0 1 1 *" // the bench queues its own sweep
	b.bcfg = bcfg
	if b.plan, err = retention.Compile(ctx, b.pool, bcfg); err != nil {
		return err
	}
	ac := bcfg.Archive
	client := archive.NewClient(archive.ClientConfig{Endpoint: ac.Endpoint, Region: ac.Region, PathStyle: ac.PathStyle,
		AccessKeyID: ac.Credentials.AccessKeyID, SecretAccessKey: ac.Credentials.SecretAccessKey,
		MaxConns: ac.Concurrency * bcfg.Worker.Concurrency})
	b.arch = archive.NewArchiver(client, ac.Bucket, ac.Prefix, ac.ParsedRecipients)
	return b.arch.Probe(ctx)
}

// archive runs the sweep and every batch, and samples progress.
func (b *run) archive(ctx context.Context) error {
	deps := jobs.NewDeps(b.pool, b.plan, b.arch, b.bcfg, b.logger)
	var client *river.Client[pgx.Tx]
	var err error
	var children []*exec.Cmd
	if b.opts.Workers == 1 {
		client, err = jobs.NewClient(b.pool, b.bcfg, deps, jobs.Options{}, b.logger)
	} else {
		client, err = jobs.NewClient(b.pool, b.bcfg, nil, jobs.Options{}, b.logger)
		if err == nil {
			children, err = b.startWorkers(ctx)
			defer stopWorkers(children)
		}
	}
	if err != nil {
		return err
	}
	if b.opts.Workers == 1 {
		if err := client.Start(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("error starting the queue client: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = client.StopAndCancel(sctx)
		}()
	}
	if b.opts.CPUProfile != "" {
		f, err := os.Create(b.opts.CPUProfile)
		if err != nil {
			return fmt.Errorf("error creating the CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("error starting the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	resetPeakRSS(os.Getpid())
	for _, c := range children {
		resetPeakRSS(c.Process.Pid)
	}

	b.opts.Progress("archiving with %d worker process(es)", b.opts.Workers)
	start := time.Now()
	runID, err := deps.Sweeper.StartRun(ctx, retention.TriggerCLI, 0)
	if err != nil {
		return err
	}
	b.runIDs = append(b.runIDs, runID)
	// The sweep claims while the workers already archive what it has
	// claimed: sample the whole run, claiming included.
	swept := make(chan error, 1)
	go func() {
		_, err := deps.Sweeper.Sweep(ctx, runID, jobs.Queue{Client: client})
		swept <- err
	}()
	claiming := true
	var peak int64
	pids := []int{os.Getpid()}
	for _, c := range children {
		pids = append(pids, c.Process.Pid)
	}
	for {
		if claiming {
			select {
			case err := <-swept:
				if err != nil {
					return err
				}
				claiming = false
			default:
			}
		}
		var archived, claimed int
		var state string
		err := b.pool.QueryRow(ctx, `
			SELECT coalesce((SELECT sum(archived) FROM lethe.batch WHERE run_id = $1), 0)::int,
			       coalesce((SELECT sum(subjects) FROM lethe.batch WHERE run_id = $1), 0)::int, state
			FROM lethe.run WHERE id = $1`, runID).Scan(&archived, &claimed, &state)
		if err != nil {
			return fmt.Errorf("error reading progress: %w", err)
		}
		b.res.Timeline = append(b.res.Timeline, Sample{At: time.Since(start), Archived: archived})
		for _, pid := range pids {
			peak = max(peak, peakRSS(pid))
		}
		if state == "failed" {
			return fmt.Errorf("the bench run %d failed: see lethe status", runID)
		}
		if state == "done" && !claiming {
			break
		}
		if len(b.res.Timeline)%10 == 0 {
			if claiming {
				b.opts.Progress("archived %d/%d (claimed %d so far)", archived, b.opts.Subjects, claimed)
			} else {
				b.opts.Progress("archived %d/%d", archived, b.opts.Subjects)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	t, err := retention.Totals(ctx, b.pool, runID)
	if err != nil {
		return err
	}
	if t.Archived != b.opts.Subjects {
		return fmt.Errorf("the bench archived %d subjects of %d", t.Archived, b.opts.Subjects)
	}
	r := b.res
	r.Seconds = elapsed.Seconds()
	r.SubjectsPerSec = float64(t.Archived) / r.Seconds
	r.Bytes = t.Bytes
	r.BytesPerSec = float64(t.Bytes) / r.Seconds
	r.MeanObjectSize = t.Bytes / int64(max(t.Archived, 1))
	r.PeakRSSBytes = peak
	if b.opts.Workers > 1 {
		if r.PerWorker, err = b.shares(ctx, runID, elapsed); err != nil {
			return err
		}
	}
	return nil
}

// startWorkers starts the worker processes on a config file of the bench's
// own, written 0600 in a private directory and removed with it.
func (b *run) startWorkers(ctx context.Context) ([]*exec.Cmd, error) {
	dir, err := os.MkdirTemp("", "lethe-bench-")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "lethe.yaml")
	if err := os.WriteFile(path, []byte(workerConfig(b.bcfg)), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var cmds []*exec.Cmd
	for i := range b.opts.Workers {
		cmd := exec.CommandContext(ctx, b.opts.Binary, "worker", "--config", path, "--log-level", "warn")
		cmd.Env = append(os.Environ(), "LETHE_CONFIG=")
		logf, err := os.Create(filepath.Join(dir, "worker-"+strconv.Itoa(i)+".log"))
		if err != nil {
			stopWorkers(cmds)
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			stopWorkers(cmds)
			return nil, fmt.Errorf("error starting worker %d: %w", i, err)
		}
		cmds = append(cmds, cmd)
	}
	go func() {
		// The config holds secrets: remove it once the workers have read it.
		time.Sleep(5 * time.Second)
		os.Remove(path)
	}()
	b.cleanups = append(b.cleanups, func() { os.RemoveAll(dir) })
	return cmds, nil
}

func stopWorkers(cmds []*exec.Cmd) {
	for _, c := range cmds {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range cmds {
		_ = c.Wait()
	}
}

// workerConfig renders cfg for a worker process, every value resolved.
func workerConfig(cfg *config.Config) string {
	type creds struct {
		AccessKeyID     string `yaml:"access_key_id"`
		SecretAccessKey string `yaml:"secret_access_key"`
	}
	doc := map[string]any{
		"database": map[string]any{"url": cfg.Database.URL, "max_conns": cfg.Database.MaxConns},
		"schedule": cfg.Schedule,
		"timezone": cfg.Timezone,
		"subject":  cfg.Subject,
		"policies": cfg.Policies,
		"requests": cfg.Requests,
		"archive": map[string]any{
			"endpoint": cfg.Archive.Endpoint, "region": cfg.Archive.Region, "bucket": cfg.Archive.Bucket,
			"prefix": cfg.Archive.Prefix, "path_style": cfg.Archive.PathStyle,
			"credentials": creds{cfg.Archive.Credentials.AccessKeyID, cfg.Archive.Credentials.SecretAccessKey},
			"recipients":  cfg.Archive.Recipients, "key_secret": cfg.Archive.KeySecret,
			"batch_size": cfg.Archive.BatchSize, "concurrency": cfg.Archive.Concurrency,
		},
		"worker": map[string]any{"concurrency": cfg.Worker.Concurrency, "max_attempts": cfg.Worker.MaxAttempts},
		// Several workers on one machine cannot share a port; the bench
		// reads its figures from the database, not from /metrics.
		"http": map[string]any{"listen": config.HTTPListenOff},
	}
	out, _ := yaml.Marshal(doc) // maps, strings and config structs always encode
	return string(out)
}

// shares splits the run by the worker process (River client) that worked
// each batch.
func (b *run) shares(ctx context.Context, runID int64, elapsed time.Duration) ([]WorkerShare, error) {
	rows, err := b.pool.Query(ctx, `
		SELECT j.attempted_by[array_length(j.attempted_by, 1)], sum(b.archived)::int
		FROM lethe.batch b JOIN lethe.river_job j ON j.id = b.job_id
		WHERE b.run_id = $1 GROUP BY 1 ORDER BY 1`, runID)
	if err != nil {
		return nil, fmt.Errorf("error reading the workers' shares: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (WorkerShare, error) {
		var w WorkerShare
		err := r.Scan(&w.Client, &w.Subjects)
		w.SubjectsPerSec = float64(w.Subjects) / elapsed.Seconds()
		return w, err
	})
	if err != nil {
		return nil, fmt.Errorf("error reading the workers' shares: %w", err)
	}
	return out, nil
}

// rawDB measures the database half alone: the same read-and-delete SQL on a
// second scratch schema, with the same concurrency and batch size.
func (b *run) rawDB(ctx context.Context) error {
	n := min(b.opts.Subjects, 50000)
	b.opts.Progress("measuring the database alone: read and delete %d subjects", n)
	if _, err := demo.Seed(ctx, b.pool, demo.Options{Schema: b.rawSchema, Subjects: n, AllDue: true}); err != nil {
		return fmt.Errorf("error seeding: %w", err)
	}
	if err := analyze(ctx, b.pool, b.rawSchema); err != nil {
		return err
	}
	fragment := strings.Replace(demo.Config(b.rawSchema), "name: former-customers", "name: "+PolicyName, 1)
	rcfg, err := b.bcfg.WithGraph(fragment)
	if err != nil {
		return err
	}
	plan, err := retention.Compile(ctx, b.pool, rcfg)
	if err != nil {
		return err
	}
	mover := retention.NewMover(b.pool, plan, b.arch, rcfg.Archive.Concurrency, b.logger)
	batch := rcfg.Archive.BatchSize
	keys := make(chan []string)
	go func() {
		defer close(keys)
		for i := 1; i <= n; i += batch {
			page := make([]string, 0, batch)
			for id := i; id < i+batch && id <= n; id++ {
				page = append(page, strconv.Itoa(id))
			}
			select {
			case keys <- page:
			case <-ctx.Done():
				return
			}
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	done := 0
	for range rcfg.Worker.Concurrency * b.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for page := range keys {
				k, err := mover.ReadAndDelete(ctx, PolicyName, page)
				mu.Lock()
				done += k
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if done != n {
		return fmt.Errorf("the database measure deleted %d subjects of %d", done, n)
	}
	b.res.RawDBPerSec = float64(done) / time.Since(start).Seconds()
	return nil
}

// rawPut measures the object store alone: plain puts of objects of the
// archive's mean size, with the same client settings and as many in flight
// as the pipeline keeps.
func (b *run) rawPut(ctx context.Context) error {
	n := min(b.opts.Subjects, 20000)
	size := max(b.res.MeanObjectSize, 1)
	inflight := b.bcfg.Archive.Concurrency * b.bcfg.Worker.Concurrency * b.opts.Workers
	b.opts.Progress("measuring the object store alone: %d puts of %d bytes, %d in flight", n, size, inflight)
	body := make([]byte, size)
	_, _ = rand.Read(body)
	rate, err := b.arch.RawPut(ctx, "raw/", body, n, inflight)
	if err != nil {
		return err
	}
	b.res.RawPutPerSec = rate
	return nil
}

// requests queues deletion requests for archived subjects and measures how
// fast the workers carry them out.
func (b *run) requests(ctx context.Context) error {
	n := min(b.opts.Requests, b.opts.Subjects)
	if n <= 0 {
		return nil
	}
	b.opts.Progress("queueing %d deletion requests", n)
	deps := jobs.NewDeps(b.pool, b.plan, b.arch, b.bcfg, b.logger)
	client, err := jobs.NewClient(b.pool, b.bcfg, deps, jobs.Options{}, b.logger)
	if err != nil {
		return err
	}
	if err := client.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = client.StopAndCancel(sctx)
	}()
	q := jobs.Queue{Client: client}
	start := time.Now()
	for i := 1; i <= n; i++ {
		if _, _, err := deps.Requests.Submit(ctx, q, strconv.Itoa(i), fmt.Sprintf("bench-%s-%d", b.id, i), "lethe bench", false); err != nil {
			return err
		}
	}
	for {
		var open, failed int
		err := b.pool.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE state IN ('received', 'processing', 'blocked_by_hold')),
			       count(*) FILTER (WHERE state IN ('failed', 'rejected'))
			FROM lethe.request WHERE ticket LIKE $1`, "bench-"+b.id+"-%").Scan(&open, &failed)
		if err != nil {
			return fmt.Errorf("error reading requests: %w", err)
		}
		if failed > 0 {
			return fmt.Errorf("%d bench deletion requests failed: see lethe request list --state failed", failed)
		}
		if open == 0 {
			break
		}
		b.opts.Progress("deletion requests: %d of %d open", open, n)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	b.res.Requests = n
	b.res.RequestsPerSec = float64(n) / time.Since(start).Seconds()
	return nil
}

// cleanup removes what the bench made: the scratch schemas, every object
// version under its prefix, and its rows in lethe's tables. Its audit
// entries stay: the audit log is append-only.
func (b *run) cleanup(ctx context.Context) error {
	for _, f := range b.cleanups {
		f()
	}
	var errs []error
	for _, s := range []string{b.schema, b.rawSchema} {
		if _, err := b.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{s}.Sanitize()+" CASCADE"); err != nil {
			errs = append(errs, err)
		}
	}
	if b.arch != nil {
		// The manifest names nearly every object the bench made: delete
		// those by name, then list the prefix once for anything else (a
		// version of a retried put).
		rows, err := b.pool.Query(ctx, `SELECT object_key, version_id FROM lethe.manifest WHERE policy = $1 AND object_key LIKE $2`,
			PolicyName, b.prefix+"%")
		if err == nil {
			var known []archive.KeyVersion
			known, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (archive.KeyVersion, error) {
				var kv archive.KeyVersion
				return kv, r.Scan(&kv.Key, &kv.VersionID)
			})
			if err == nil {
				err = b.arch.DeleteKnown(ctx, known)
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
		if _, err := b.arch.DeletePrefix(ctx, ""); err != nil {
			errs = append(errs, err)
		}
	}
	_, err := b.pool.Exec(ctx, `
		WITH r AS (DELETE FROM lethe.request WHERE ticket LIKE $1 RETURNING id),
		     s AS (DELETE FROM lethe.suppression WHERE request_id IN (SELECT id FROM r)),
		     j AS (DELETE FROM lethe.river_job WHERE kind = 'lethe.request' AND (args ->> 'request_id')::bigint IN (SELECT id FROM r))
		SELECT 1`, "bench-"+b.id+"-%")
	if err != nil {
		errs = append(errs, err)
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`DELETE FROM lethe.manifest WHERE policy = $1 AND object_key LIKE $2`, []any{PolicyName, b.prefix + "%"}},
		// Jobs left queued by an interrupted run would otherwise be worked
		// by the next one, against rows that no longer exist.
		{`DELETE FROM lethe.river_job WHERE kind = 'lethe.archive_batch'
			AND (args ->> 'batch_id')::bigint IN (SELECT id FROM lethe.batch WHERE run_id = ANY ($1))`, []any{b.runIDs}},
		{`DELETE FROM lethe.work_item WHERE batch_id IN (SELECT id FROM lethe.batch WHERE run_id = ANY ($1))`, []any{b.runIDs}},
		{`DELETE FROM lethe.batch WHERE run_id = ANY ($1)`, []any{b.runIDs}},
		{`DELETE FROM lethe.run WHERE id = ANY ($1)`, []any{b.runIDs}},
	} {
		if _, err := b.pool.Exec(ctx, q.sql, q.args...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// analyze gathers statistics on every scratch table, as a production
// database has them: freshly loaded tables without statistics get plans
// that read whole child tables for each batch.
func analyze(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	for _, t := range demo.Tables() {
		if _, err := pool.Exec(ctx, "ANALYZE "+pgx.Identifier{schema, t}.Sanitize()); err != nil {
			return fmt.Errorf("error analysing the scratch tables: %w", err)
		}
	}
	return nil
}

// resetPeakRSS resets the kernel's peak-RSS mark of pid, so that the peak
// read later covers only what came after (Linux: clear_refs 5).
func resetPeakRSS(pid int) {
	_ = os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0)
}

// peakRSS reads pid's peak resident set size (VmHWM), in bytes.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// Throughput turns the timeline into subjects per second over windows of
// width w.
func (r *Result) Throughput(w time.Duration) (at []time.Duration, rate []float64) {
	if len(r.Timeline) == 0 {
		return nil, nil
	}
	s := r.Timeline
	sort.Slice(s, func(i, j int) bool { return s[i].At < s[j].At })
	j := 0
	for i := range s {
		for s[i].At-s[j].At > w {
			j++
		}
		if i == j {
			continue
		}
		d := (s[i].At - s[j].At).Seconds()
		at = append(at, s[i].At)
		rate = append(rate, float64(s[i].Archived-s[j].Archived)/d)
	}
	return at, rate
}

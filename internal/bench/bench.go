// Package bench owns lethe bench: it seeds synthetic subjects into a scratch
// schema of the configured database, archives them through the real
// pipeline (built by package app, as lethe worker builds it) into the
// configured bucket under a bench/ prefix, measures the two limits that bound
// it (plain puts of objects of a segment's size, and the sweep's database
// work without encryption or S3), queues deletion requests for archived
// subjects, and removes what it made in the database, even after a failure.
// The segments it put stay in the bucket, unreadable once their keys are
// gone, for the bucket's lifecycle rule: the worker cannot delete objects.
package bench

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/internal/demo"
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
	// ConfigPath is the config file the worker processes read (Workers >
	// 1); each derives the bench's config from it and the run's id.
	ConfigPath string
	// CPUProfile, if set, receives a CPU profile of the archive phase, and
	// CPUProfile + ".requests" one of the deletion requests.
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
	// RawPutPerSec are plain puts of objects of the mean segment's size,
	// and RawPutBytesPerSec their bytes: the object store alone.
	RawPutPerSec      float64 `json:"raw_put_per_sec"`
	RawPutBytesPerSec float64 `json:"raw_put_bytes_per_sec"`
	// RawDBPerSec is the sweep's database work alone: reading the graph,
	// deleting it, writing the manifest and the keys.
	RawDBPerSec float64 `json:"raw_db_per_sec"`
	// PutCeilingPerSec is the object store's limit in subjects per
	// second: RawPutBytesPerSec / MeanObjectSize × SubjectsPerSegment.
	PutCeilingPerSec float64 `json:"put_ceiling_per_sec"`
	// Efficiency is SubjectsPerSec over the lower of the two limits,
	// RawDBPerSec and PutCeilingPerSec.
	Efficiency float64 `json:"efficiency"`
	// Segments are the objects the run put; ObjectsPerSubject is them per
	// subject archived.
	Segments           int     `json:"segments"`
	ObjectsPerSubject  float64 `json:"objects_per_subject"`
	SubjectsPerSegment float64 `json:"subjects_per_segment"`
	PeakRSSBytes       int64   `json:"peak_rss_bytes"`
	// RequestsPerSec is how fast the workers carried out Requests deletion
	// requests from a full queue; RequestIntakePerSec how fast they were
	// queued.
	RequestsPerSec      float64 `json:"requests_per_sec"`
	RequestIntakePerSec float64 `json:"request_intake_per_sec"`
	Requests            int     `json:"requests"`
	Workers             int     `json:"workers"`
	Rows                int64   `json:"rows"`
	Bytes               int64   `json:"bytes"`
	// MeanObjectSize is the mean segment's size; MeanPartSize the mean
	// subject's part in it.
	MeanObjectSize int64   `json:"mean_object_bytes"`
	MeanPartSize   int64   `json:"mean_part_bytes"`
	SeedSeconds    float64 `json:"seed_seconds"`
	// Minimized subjects had their SSN hashed by a then: minimize policy
	// before they were archived, in MinimizedRows rows, MinimizedPerSec
	// subjects a second.
	Minimized       int     `json:"minimized"`
	MinimizedRows   int64   `json:"minimized_rows"`
	MinimizeSeconds float64 `json:"minimize_seconds"`
	MinimizedPerSec float64 `json:"minimized_per_sec"`
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
func Run(ctx context.Context, cfg *config.Config, opts Options, logger *slog.Logger) (res *Result, err error) {
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
	bcfg, err := Config(cfg, id)
	if err != nil {
		return nil, err
	}
	pool, err := app.Connect(ctx, bcfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	b := &run{cfg: bcfg, pool: pool, opts: opts, logger: logger, id: id,
		schema: schemaOf(id), rawSchema: "lethe_bench_raw_" + id, prefix: bcfg.Archive.Prefix,
		res: &Result{Subjects: opts.Subjects, Workers: opts.Workers}}
	defer func() {
		// Dropping the scratch schemas and deleting the run's rows takes
		// time in proportion: allow ten minutes plus a second per 5,000
		// subjects. The segments stay, retained for a day: lethe never
		// deletes an object.
		limit := 10*time.Minute + time.Duration(opts.Subjects/5000)*time.Second
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
		defer cancel()
		opts.Progress("removing the scratch schemas and rows (the segments under %s stay until the lifecycle rule removes them)", b.prefix)
		if cerr := b.cleanup(cctx); cerr != nil {
			err = errors.Join(err, &CleanupError{Err: cerr, Prefix: b.prefix, Schema: b.schema})
		}
		if b.app != nil {
			b.app.Close()
		}
	}()
	if err := b.prepare(ctx); err != nil {
		return nil, err
	}
	if err := b.minimize(ctx); err != nil {
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
	if r.MeanObjectSize > 0 {
		r.PutCeilingPerSec = r.RawPutBytesPerSec / float64(r.MeanObjectSize) * r.SubjectsPerSegment
	}
	if limit := min(r.PutCeilingPerSec, r.RawDBPerSec); limit > 0 {
		r.Efficiency = r.SubjectsPerSec / limit
	}
	return r, nil
}

// Config is the bench's config for run id: cfg's database and bucket, a
// prefix and key secret of the run's own, the demo graph over the run's
// scratch tables, and no HTTP server. The worker processes of a run derive
// the same config from the same file and id.
func Config(cfg *config.Config, id string) (*config.Config, error) {
	subject, policies, requests := demo.Graph(schemaOf(id), PolicyName)
	// lethe never deletes an object: the bench's segments stay, retained
	// for a day, for the bucket's lifecycle rule to remove.
	for i := range policies {
		if policies[i].Then == config.ThenArchive {
			policies[i].ArchiveRetain = "1d"
		}
	}
	bcfg, err := cfg.WithGraph(subject, policies, requests)
	if err != nil {
		return nil, fmt.Errorf("error building the bench config: %w", err)
	}
	bcfg.Archive.Prefix = cfg.Archive.Prefix + "bench/" + id + "/"
	// A key secret of the run's own keeps its HMACs apart from production's;
	// it is derived, so that every process of the run agrees on it.
	mac := hmac.New(sha256.New, []byte(cfg.Archive.KeySecret))
	mac.Write([]byte("lethe bench " + id))
	bcfg.Archive.KeySecret = hex.EncodeToString(mac.Sum(nil))
	bcfg.Schedule = "0 0 1 1 *" // the bench queues its own sweep
	bcfg.HTTP.Listen = config.HTTPListenOff
	return bcfg, nil
}

func schemaOf(id string) string { return "lethe_bench_" + id }

// CleanupError is a bench that measured but could not remove all it made.
// Run returns its result with it.
type CleanupError struct {
	Err    error
	Prefix string
	Schema string
}

func (e *CleanupError) Error() string {
	return fmt.Sprintf("error cleaning up the bench (schema %s and the rows of the segments under %s may remain; drop the schema and delete them by hand): %v",
		e.Schema, e.Prefix, e.Err)
}

func (e *CleanupError) Unwrap() error { return e.Err }

type run struct {
	cfg       *config.Config // the bench's own
	pool      *pgxpool.Pool
	app       *app.App
	opts      Options
	logger    *slog.Logger
	id        string
	schema    string
	rawSchema string
	prefix    string
	runIDs    []int64
	res       *Result
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// prepare seeds the scratch schema and opens lethe over the bench's config.
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
	if b.app, err = app.Open(ctx, b.cfg, b.logger, app.Options{}); err != nil {
		return err
	}
	_, err = b.app.Store(ctx, true)
	return err
}

// archive runs the sweep and every batch, and samples progress.
func (b *run) archive(ctx context.Context) error {
	store, err := b.app.Store(ctx, false)
	if err != nil {
		return err
	}
	svc, err := b.app.Services(store, nil)
	if err != nil {
		return err
	}
	var children []*exec.Cmd
	if b.opts.Workers == 1 {
		client, err := b.app.Worker(svc, false)
		if err != nil {
			return err
		}
		if err := client.Start(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("error starting the queue client: %w", err)
		}
		defer stopClient(client)
	} else {
		if children, err = b.startWorkers(ctx); err != nil {
			return err
		}
		defer stopWorkers(children)
	}
	stop, err := b.profile(b.opts.CPUProfile)
	if err != nil {
		return err
	}
	defer stop()
	pids := []int{os.Getpid()}
	for _, c := range children {
		pids = append(pids, c.Process.Pid)
	}
	for _, pid := range pids {
		resetPeakRSS(pid)
	}

	b.opts.Progress("archiving with %d worker process(es)", b.opts.Workers)
	start := time.Now()
	runID, err := svc.Sweeper.StartRun(ctx, retention.TriggerCLI, 0)
	if err != nil {
		return err
	}
	b.runIDs = append(b.runIDs, runID)
	// The sweep claims while the workers already archive what it has
	// claimed: sample the whole run, claiming included.
	swept := make(chan error, 1)
	go func() {
		_, err := svc.Sweeper.Sweep(ctx, runID, b.app.Queue)
		swept <- err
	}()
	peak, err := b.follow(ctx, runID, swept, pids, start)
	if err != nil {
		return err
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
	r.MeanPartSize = t.Bytes / int64(max(t.Archived, 1))
	if err := b.pool.QueryRow(ctx, `
		SELECT count(*), coalesce(avg(size), 0)::bigint FROM lethe.segment
		WHERE state = 'committed' AND batch_id IN (SELECT id FROM lethe.batch WHERE run_id = $1)`, runID).Scan(&r.Segments, &r.MeanObjectSize); err != nil {
		return fmt.Errorf("error counting segments: %w", err)
	}
	r.ObjectsPerSubject = float64(r.Segments) / float64(max(t.Archived, 1))
	r.SubjectsPerSegment = float64(t.Archived) / float64(max(r.Segments, 1))
	r.PeakRSSBytes = peak
	if b.opts.Workers > 1 {
		if r.PerWorker, err = b.shares(ctx, runID, elapsed); err != nil {
			return err
		}
	}
	return nil
}

// follow samples the run until it is done, and returns the peak RSS of the
// processes in pids.
func (b *run) follow(ctx context.Context, runID int64, swept <-chan error, pids []int, start time.Time) (int64, error) {
	claiming := true
	var peak int64
	for {
		if claiming {
			select {
			case err := <-swept:
				if err != nil {
					return 0, err
				}
				claiming = false
			default:
			}
		}
		t, err := retention.Totals(ctx, b.pool, runID)
		if err != nil {
			return 0, fmt.Errorf("error reading progress: %w", err)
		}
		b.res.Timeline = append(b.res.Timeline, Sample{At: time.Since(start), Archived: t.Archived})
		for _, pid := range pids {
			peak = max(peak, peakRSS(pid))
		}
		if t.State == retention.RunFailed {
			return 0, fmt.Errorf("the bench run %d failed: see lethe status", runID)
		}
		if t.State == retention.RunDone && !claiming {
			return peak, nil
		}
		if len(b.res.Timeline)%10 == 0 {
			if claiming {
				b.opts.Progress("archived %d/%d (claimed %d so far)", t.Archived, b.opts.Subjects, t.Subjects)
			} else {
				b.opts.Progress("archived %d/%d", t.Archived, b.opts.Subjects)
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// shares splits the run by the worker process (River client) that worked
// each batch, as River's client reports it.
func (b *run) shares(ctx context.Context, runID int64, elapsed time.Duration) ([]WorkerShare, error) {
	rows, err := b.pool.Query(ctx, `SELECT job_id, archived FROM lethe.batch WHERE run_id = $1 AND job_id IS NOT NULL`, runID)
	if err != nil {
		return nil, fmt.Errorf("error reading the workers' shares: %w", err)
	}
	archived := map[int64]int{}
	var jobID int64
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&jobID, &n}, func() error { archived[jobID] += n; return nil }); err != nil {
		return nil, fmt.Errorf("error reading the workers' shares: %w", err)
	}
	ids := make([]int64, 0, len(archived))
	for id := range archived {
		ids = append(ids, id)
	}
	byClient := map[string]int{}
	for start := 0; start < len(ids); start += 10_000 {
		page := ids[start:min(start+10_000, len(ids))]
		res, err := b.app.Queue.Client.JobList(ctx, river.NewJobListParams().IDs(page...).First(len(page)))
		if err != nil {
			return nil, fmt.Errorf("error reading the workers' shares: %w", err)
		}
		for _, j := range res.Jobs {
			if len(j.AttemptedBy) > 0 {
				byClient[j.AttemptedBy[len(j.AttemptedBy)-1]] += archived[j.ID]
			}
		}
	}
	out := make([]WorkerShare, 0, len(byClient))
	for c, n := range byClient {
		out = append(out, WorkerShare{Client: c, Subjects: n, SubjectsPerSec: float64(n) / elapsed.Seconds()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Client < out[j].Client })
	return out, nil
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

// profile starts a CPU profile of this process into path, if path is set,
// and returns the function that stops it.
func (b *run) profile(path string) (stop func(), err error) {
	if b.opts.CPUProfile == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("error creating the CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("error starting the CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

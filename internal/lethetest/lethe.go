// Package lethetest builds lethe over a test's own PostgreSQL database and
// bucket (from package testenv), wired as package app wires lethe worker, with
// a recorded queue the test works itself, and the synthetic fixtures the
// tests of several packages share.
package lethetest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/request"
	"github.com/lethehq/lethe/retention"
)

// Env is lethe wired over a test's own database and bucket, the way package
// app wires it for lethe worker, except that the jobs the services hand off
// go to a Recorder, which the test works in the order a queue would.
type Env struct {
	DB       *testenv.DB
	Bucket   *testenv.Bucket
	Identity *age.X25519Identity
	Config   *config.Config
	App      *app.App
	Plan     *retention.Plan
	// Kind is the plan's default kind of subject: the only one, or the one
	// called default (nil if neither).
	Kind    *retention.Kind
	Arch    *archive.Archiver
	Queue   *Recorder
	Sweeper *retention.Sweeper
	Mover   *retention.Mover
	Expirer *retention.Expirer
	Intake  *request.Intake
	Eraser  *request.Eraser
	Holds   *hold.Service
	Syncer  *hold.Syncer
	// Root is the bucket's owner, who may read and list everything.
	Root *s3.Client
	// Logs holds what the services logged.
	Logs *SyncBuffer
}

// New gives t its own database, prepared by the statements of
// prepare, and bucket, and builds lethe over them with the config fragment
// (subject:, policies: and requests: sections).
func New(t testing.TB, prepare, fragment string) *Env {
	t.Helper()
	return NewFunc(t, func(db *testenv.DB) {
		_, err := db.Pool.Exec(context.Background(), prepare)
		require.NoError(t, err)
	}, fragment)
}

// NewFunc is New with the database prepared by a function.
func NewFunc(t testing.TB, prepare func(*testenv.DB), fragment string) *Env {
	t.Helper()
	ctx := context.Background()
	e := &Env{DB: testenv.NewDB(t), Bucket: testenv.NewBucket(t), Identity: testenv.NewIdentity(t), Logs: &SyncBuffer{}, Queue: &Recorder{}}
	prepare(e.DB)
	e.Config = testenv.Config(t, e.DB, e.Bucket, e.Identity.Recipient().String(), fragment)
	logger := slog.New(slog.NewTextHandler(e.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	e.App, err = app.Open(ctx, e.Config, logger, app.Options{})
	require.NoError(t, err)
	t.Cleanup(e.App.Close)
	e.Plan = e.App.Plan
	e.Kind = e.Plan.DefaultKind()
	e.Arch, err = e.App.Store(ctx, false)
	require.NoError(t, err)
	holds := hold.Checker{}
	common := retention.Common{Pool: e.DB.Pool, Plan: e.Plan, Holds: holds, Logger: logger}
	e.Sweeper, err = retention.NewSweeper(retention.SweeperConfig{Common: common, Jobs: e.App.Queue,
		BatchSize: e.Config.Archive.BatchSize})
	require.NoError(t, err)
	e.Mover, err = retention.NewMover(retention.MoverConfig{Common: common, Store: e.Arch, LockMode: e.Config.Archive.LockMode,
		MastersFingerprint: archive.MastersFingerprint(e.Config.Archive.Recipients)})
	require.NoError(t, err)
	e.Expirer, err = retention.NewExpirer(retention.ExpirerConfig{Common: common})
	require.NoError(t, err)
	e.Intake, err = request.NewIntake(request.IntakeConfig{Pool: e.DB.Pool, Plan: e.Plan, Queue: e.Queue, Logger: logger,
		Regimes: e.Config.Requests.Regimes, DefaultRegime: e.Config.Requests.DefaultRegime})
	require.NoError(t, err)
	e.Eraser, err = request.NewEraser(request.EraserConfig{Pool: e.DB.Pool, Plan: e.Plan, Holds: holds, Logger: logger,
		SigningKey: e.Config.Requests.SigningKey})
	require.NoError(t, err)
	e.Holds, err = hold.New(hold.Config{Pool: e.DB.Pool, Plan: e.Plan, Queue: e.Queue, Waiting: e.Intake, Logger: logger})
	require.NoError(t, err)
	e.Syncer, err = hold.NewSyncer(e.DB.Pool, e.Arch, logger)
	require.NoError(t, err)
	e.Root = e.Bucket.Server.Client(e.Bucket.Server.Root)
	return e
}

// Sweep runs a whole sweep in the test: it claims, then works every batch
// it queued (and every batch it took over), as the queue would. It returns
// the first batch error.
func (e *Env) Sweep(t *testing.T) (*retention.SweepResult, error) {
	t.Helper()
	ctx := context.Background()
	q := &Recorder{}
	run, err := e.Sweeper.StartRun(ctx, retention.TriggerCLI, 0)
	require.NoError(t, err)
	res, err := e.Sweeper.Sweep(ctx, run, q)
	if err != nil {
		return res, err
	}
	var first error
	for _, id := range q.Taken().Batches {
		// A batch another sweep is working is that sweep's to finish, as
		// the queue would snooze this job.
		if _, err := e.Mover.RunBatch(ctx, id); err != nil && !errors.Is(err, retention.ErrBatchBusy) && first == nil {
			first = err
		}
	}
	return res, first
}

// MustSweep sweeps and requires success.
func (e *Env) MustSweep(t *testing.T) *retention.SweepResult {
	t.Helper()
	res, err := e.Sweep(t)
	require.NoError(t, err)
	return res
}

// Work drains the recorded queue as workers would: batches, requests and
// hold syncs, trying a busy one again shortly, until nothing is left.
func (e *Env) Work(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for range 200 {
		jobs := e.Queue.Taken()
		if len(jobs.Batches)+len(jobs.Requests)+len(jobs.Syncs) == 0 {
			return
		}
		for _, id := range jobs.Batches {
			_, err := e.Mover.RunBatch(ctx, id)
			require.NoError(t, err)
		}
		for _, h := range jobs.Syncs {
			if err := e.Syncer.Sync(ctx, h); errors.Is(err, hold.ErrRetryLater) {
				e.Queue.EnqueueHoldSyncs(ctx, nil, []string{h}) //nolint:errcheck // never fails
			} else {
				require.NoError(t, err)
			}
		}
		for _, id := range jobs.Requests {
			if err := e.Eraser.Process(ctx, id); errors.Is(err, request.ErrRetryLater) {
				e.Queue.EnqueueRequest(ctx, nil, id) //nolint:errcheck // never fails
			} else {
				require.NoError(t, err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the queue did not drain")
}

// Versions lists, as root, every version and delete marker in the bucket,
// by object name.
func (e *Env) Versions(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	in := &s3.ListObjectVersionsInput{Bucket: aws.String(e.Bucket.Name)}
	for {
		res, err := e.Root.ListObjectVersions(context.Background(), in)
		require.NoError(t, err)
		for _, v := range res.Versions {
			out[aws.ToString(v.Key)] = append(out[aws.ToString(v.Key)], aws.ToString(v.VersionId))
		}
		for _, m := range res.DeleteMarkers {
			out[aws.ToString(m.Key)] = append(out[aws.ToString(m.Key)], "marker:"+aws.ToString(m.VersionId))
		}
		if !aws.ToBool(res.IsTruncated) {
			return out
		}
		in.KeyMarker, in.VersionIdMarker = res.NextKeyMarker, res.NextVersionIdMarker
	}
}

// Locate returns the subject's newest manifest entry.
func (e *Env) Locate(t *testing.T, key string) *retention.Entry {
	t.Helper()
	en, err := retention.Locate(context.Background(), e.DB.Pool, e.Kind.HMAC(key))
	require.NoError(t, err)
	return en
}

// Manifest reads the manifest's newest entry of every subject: subject
// HMAC -> state.
func (e *Env) Manifest(t *testing.T) map[string]string {
	t.Helper()
	rows, err := e.DB.Pool.Query(context.Background(), `SELECT DISTINCT ON (subject_hmac) subject_hmac, state
		FROM lethe.manifest ORDER BY subject_hmac, id DESC`)
	require.NoError(t, err)
	out := map[string]string{}
	var h, st string
	_, err = pgx.ForEachRow(rows, []any{&h, &st}, func() error { out[h] = st; return nil })
	require.NoError(t, err)
	return out
}

// Restore reads the subject's live part with the reader's credentials and
// opens it with the master identity, returning its rows by table, each
// table's rows sorted.
func (e *Env) Restore(t *testing.T, key string) map[string][]string {
	t.Helper()
	res, err := e.TryRestore(key)
	require.NoError(t, err)
	out := map[string][]string{}
	for table, rows := range res.Bundle.Rows {
		out[table] = []string{}
		for _, row := range rows {
			out[table] = append(out[table], string(row))
		}
		sort.Strings(out[table])
	}
	return out
}

// TryRestore is Restore, returning its error.
func (e *Env) TryRestore(key string) (*archive.Restored, error) {
	ctx := context.Background()
	en, err := retention.Locate(ctx, e.DB.Pool, e.Kind.HMAC(key))
	if err != nil {
		return nil, err
	}
	if en.WrappedKey == nil {
		return nil, errors.New("the subject's copy is " + en.State)
	}
	srv := e.Bucket.Server
	return archive.NewRestorer(srv.Client(srv.Reader), e.Bucket.Name).Restore(ctx, en.Location(), key, e.Kind.Tables(),
		[]age.Identity{e.Identity})
}

// SegmentRow is a segment as lethe recorded it.
type SegmentRow struct {
	State, VersionID string
	Size             int64
}

// Segments reads lethe's record of segments, by object name.
func (e *Env) Segments(t *testing.T) map[string]SegmentRow {
	t.Helper()
	rows, err := e.DB.Pool.Query(context.Background(), `SELECT name, state, coalesce(version_id, ''), size FROM lethe.segment`)
	require.NoError(t, err)
	out := map[string]SegmentRow{}
	var name string
	var r SegmentRow
	_, err = pgx.ForEachRow(rows, []any{&name, &r.State, &r.VersionID, &r.Size}, func() error { out[name] = r; return nil })
	require.NoError(t, err)
	return out
}

// RequireNothingUnnamedReadable checks the second half of invariant 2: every
// object in the bucket is a segment lethe recorded, each put once; every
// manifest entry names a version the bucket holds; and no manifest entry
// names a segment that never committed, whose parts the master identity
// cannot open either (each is encrypted to its subject's own key, which was
// never stored).
func (e *Env) RequireNothingUnnamedReadable(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	segs := e.Segments(t)
	inBucket := e.Versions(t)
	for name, versions := range inBucket {
		if strings.HasPrefix(name, e.Config.Archive.Prefix+"probe/") {
			continue // lethe's start-up probe of Object Lock: empty
		}
		seg, ok := segs[name]
		require.True(t, ok, "object %s is not a segment lethe recorded", name)
		require.Len(t, versions, 1, "segment %s was written more than once", name)
		if seg.State == "committed" {
			require.Equal(t, seg.VersionID, versions[0], "segment %s: the bucket holds another version than lethe recorded", name)
			continue
		}
		var named int
		require.NoError(t, e.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM lethe.manifest m JOIN lethe.segment s ON s.id = m.segment_id
			WHERE s.name = $1`, name).Scan(&named))
		require.Zero(t, named, "segment %s never committed, yet the manifest names it", name)
		out, err := e.Root.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(e.Bucket.Name), Key: aws.String(name)})
		require.NoError(t, err)
		body, err := io.ReadAll(out.Body)
		out.Body.Close()
		require.NoError(t, err)
		if len(body) > 0 {
			_, err = archive.Decrypt(body, []age.Identity{e.Identity})
			require.ErrorIs(t, err, archive.ErrWrongIdentity, "the master identity opens a part of uncommitted segment %s", name)
		}
	}
	rows, err := e.DB.Pool.Query(ctx, `SELECT DISTINCT s.name, s.version_id, s.state FROM lethe.manifest m JOIN lethe.segment s ON s.id = m.segment_id`)
	require.NoError(t, err)
	var name, version, state string
	_, err = pgx.ForEachRow(rows, []any{&name, &version, &state}, func() error {
		require.Equal(t, "committed", state, "the manifest names segment %s, which is %s", name, state)
		require.Equal(t, []string{version}, inBucket[name], "the manifest names segment %s version %s, which the bucket lacks", name, version)
		return nil
	})
	require.NoError(t, err)
}

// Count runs a count query.
func (e *Env) Count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

// AuditKinds counts the audit log's entries by kind.
func (e *Env) AuditKinds(t *testing.T) map[string]int {
	t.Helper()
	rows, err := e.DB.Pool.Query(context.Background(), `SELECT kind, count(*) FROM lethe.audit_log GROUP BY kind`)
	require.NoError(t, err)
	out := map[string]int{}
	var k string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&k, &n}, func() error { out[k] = n; return nil })
	require.NoError(t, err)
	return out
}

// RequireAuditIntact requires the audit log's chain to verify.
func (e *Env) RequireAuditIntact(t *testing.T) {
	t.Helper()
	v, err := audit.Verify(context.Background(), e.DB.Pool)
	require.NoError(t, err)
	require.True(t, v.OK, v.Problem)
}

// SyncBuffer is a buffer safe for concurrent writes: a log's destination.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var _ io.Writer = (*SyncBuffer)(nil)

// Recorder is the queue of in-process tests: it records what the services
// hand off, and the test works it.
type Recorder struct {
	mu       sync.Mutex
	Batches  []int64
	Requests []int64
	Syncs    []string
}

var (
	_ retention.BatchQueue = (*Recorder)(nil)
	_ request.Queue        = (*Recorder)(nil)
	_ hold.Queue           = (*Recorder)(nil)
)

// EnqueueBatch records a batch job.
func (r *Recorder) EnqueueBatch(_ context.Context, _ pgx.Tx, id int64) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Batches = append(r.Batches, id)
	return 0, nil
}

// EnqueueRequest records a request job.
func (r *Recorder) EnqueueRequest(_ context.Context, _ pgx.Tx, id int64) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Requests = append(r.Requests, id)
	return 0, nil
}

// EnqueueHoldSyncs records hold-sync jobs.
func (r *Recorder) EnqueueHoldSyncs(_ context.Context, _ pgx.Tx, hs []string) ([]int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Syncs = append(r.Syncs, hs...)
	return make([]int64, len(hs)), nil
}

// Taken empties the recorder and returns what it held.
func (r *Recorder) Taken() *Recorder {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := &Recorder{Batches: r.Batches, Requests: r.Requests, Syncs: r.Syncs}
	r.Batches, r.Requests, r.Syncs = nil, nil, nil
	return out
}

// Submit files a deletion request and requires it to be new.
func (e *Env) Submit(t *testing.T, key, ticket string, force bool) *request.Request {
	t.Helper()
	req, created, err := e.Intake.Submit(context.Background(), request.Submission{Key: key, Ticket: ticket, By: "privacy-team", Force: force})
	require.NoError(t, err)
	require.True(t, created)
	return req
}

// Get reads a request.
func (e *Env) Get(t *testing.T, id int64) *request.Request {
	t.Helper()
	req, err := e.Intake.Get(context.Background(), id)
	require.NoError(t, err)
	return req
}

// ReceiptOf decodes a completed request's receipt.
func ReceiptOf(t *testing.T, req *request.Request) request.Receipt {
	t.Helper()
	require.NotNil(t, req.Receipt, "request %d has no receipt", req.ID)
	var rc request.Receipt
	require.NoError(t, json.Unmarshal(*req.Receipt, &rc))
	return rc
}

// LegalHold reads, as root, the S3 legal hold of a segment's version.
func (e *Env) LegalHold(t *testing.T, segment, version string) types.ObjectLockLegalHoldStatus {
	t.Helper()
	out, err := e.Root.GetObjectLegalHold(context.Background(), &s3.GetObjectLegalHoldInput{
		Bucket: aws.String(e.Bucket.Name), Key: aws.String(segment), VersionId: aws.String(version),
	})
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchObjectLockConfiguration" {
		return types.ObjectLockLegalHoldStatusOff // versitygw: no legal hold was ever set on it
	}
	require.NoError(t, err)
	return out.LegalHold.Status
}

// SubjectLegalHold reads the legal hold of the segment holding the
// subject's newest copy.
func (e *Env) SubjectLegalHold(t *testing.T, key string) types.ObjectLockLegalHoldStatus {
	t.Helper()
	en := e.Locate(t, key)
	return e.LegalHold(t, en.Segment, en.VersionID)
}

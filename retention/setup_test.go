package retention_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/retention"
)

// crmSchema is a customer schema unlike the demo's: text keys, a three-level
// graph, jsonb, bytea, numeric and uuid columns, foreign keys without
// cascade.
const crmSchema = `
CREATE SCHEMA crm;
CREATE TABLE crm.customers (
	code       text PRIMARY KEY,
	status     text NOT NULL,
	closed_at  timestamptz,
	created_at timestamptz NOT NULL,
	profile    jsonb,
	photo      bytea,
	credit     numeric(14,4),
	ext_id     uuid
);
CREATE INDEX ON crm.customers (closed_at);
CREATE TABLE crm.accounts (
	id            uuid PRIMARY KEY,
	customer_code text NOT NULL REFERENCES crm.customers (code),
	balance       numeric,
	opened        date
);
CREATE INDEX ON crm.accounts (customer_code);
CREATE TABLE crm.lines (
	id         bigint PRIMARY KEY,
	account_id uuid NOT NULL REFERENCES crm.accounts (id),
	imei       text,
	meta       jsonb
);
CREATE INDEX ON crm.lines (account_id);
CREATE TABLE crm.notes (
	id            serial PRIMARY KEY,
	customer_code text NOT NULL REFERENCES crm.customers (code),
	body          text,
	blob          bytea
);
CREATE INDEX ON crm.notes (customer_code);
`

const crmConfig = `
subject:
  table: crm.customers
  key: code
  related:
    - table: crm.accounts
      join: customer_code = code
      related:
        - table: crm.lines
          join: account_id = id
    - table: crm.notes
      join: customer_code = code
policies:
  - name: former
    where: "status = 'closed'"
    clock: closed_at
    retain: 730d
    archive_retain: 7y
  - name: spam
    where: "status = 'spam'"
    clock: created_at
    retain: 30d
    then: delete
requests:
  protect: "status = 'active'"
`

// withSQL prepares a database by running sql.
func withSQL(t *testing.T, sql string) func(*testenv.DB) {
	return func(db *testenv.DB) {
		_, err := db.Pool.Exec(context.Background(), sql)
		require.NoError(t, err)
	}
}

var crmTables = []string{"crm.customers", "crm.accounts", "crm.lines", "crm.notes"}

// env is one test's database, bucket, config and pipeline.
type env struct {
	db      *testenv.DB
	bucket  *testenv.Bucket
	id      *age.X25519Identity
	cfg     *config.Config
	plan    *retention.Plan
	arch    *archive.Archiver
	sweeper *retention.Sweeper
	mover   *retention.Mover
	root    *s3.Client
	logs    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// setup gives t its own database, prepared by prepare, and bucket, and
// compiles fragment against them.
func setup(t *testing.T, prepare func(*testenv.DB), fragment string) *env {
	t.Helper()
	e := &env{db: testenv.NewDB(t), bucket: testenv.NewBucket(t), id: testenv.NewIdentity(t), logs: &syncBuffer{}}
	prepare(e.db)
	ctx := context.Background()
	e.cfg = testenv.Config(t, e.db, e.bucket, e.id.Recipient().String(), fragment)
	var err error
	e.plan, err = retention.Compile(ctx, e.db.Pool, e.cfg)
	require.NoError(t, err)
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(e.logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := e.bucket.Server
	e.arch = archive.NewArchiver(archive.NewClient(archive.ClientConfig{
		Endpoint: srv.Endpoint, Region: "us-east-1", PathStyle: true,
		AccessKeyID: srv.Writer.AccessKeyID, SecretAccessKey: srv.Writer.SecretAccessKey,
	}), e.bucket.Name, e.cfg.Archive.Prefix, e.cfg.Archive.ParsedRecipients)
	e.sweeper = retention.NewSweeper(e.db.Pool, e.plan, e.cfg.Archive.BatchSize, logger)
	e.mover = retention.NewMover(e.db.Pool, e.plan, e.arch, e.cfg.Archive.Concurrency, logger)
	e.root = srv.Client(srv.Root)
	return e
}

// sweep runs a whole sweep in the test: it claims, then works every batch
// it queued (and every batch it requeued), as the queue would. It returns
// the first batch error.
func (e *env) sweep(t *testing.T) (*retention.SweepResult, error) {
	t.Helper()
	ctx := context.Background()
	q := &recorder{}
	run, err := e.sweeper.StartRun(ctx, retention.TriggerCLI, 0)
	require.NoError(t, err)
	res, err := e.sweeper.Sweep(ctx, run, q)
	if err != nil {
		return res, err
	}
	var first error
	for _, id := range q.taken().batches {
		// A batch another sweep is working is that sweep's to finish, as
		// the queue would snooze this job.
		if _, err := e.mover.RunBatch(ctx, id); err != nil && !errors.Is(err, retention.ErrBatchBusy) && first == nil {
			first = err
		}
	}
	return res, first
}

// mustSweep sweeps and requires success.
func (e *env) mustSweep(t *testing.T) *retention.SweepResult {
	t.Helper()
	res, err := e.sweep(t)
	require.NoError(t, err)
	return res
}

// snapshot is every table's rows, as to_jsonb text, per subject.
type snapshot map[string]map[string][]string // subject -> table -> sorted rows

// crmSnapshot reads the crm tables grouped by customer.
func (e *env) crmSnapshot(t *testing.T) snapshot {
	t.Helper()
	q := map[string]string{
		"crm.customers": `SELECT code, to_jsonb(c)::text FROM crm.customers c`,
		"crm.accounts":  `SELECT customer_code, to_jsonb(a)::text FROM crm.accounts a`,
		"crm.lines":     `SELECT a.customer_code, to_jsonb(l)::text FROM crm.lines l JOIN crm.accounts a ON a.id = l.account_id`,
		"crm.notes":     `SELECT customer_code, to_jsonb(n)::text FROM crm.notes n`,
	}
	s := snapshot{}
	for table, sql := range q {
		rows, err := e.db.Pool.Query(context.Background(), sql)
		require.NoError(t, err)
		for rows.Next() {
			var subject, row string
			require.NoError(t, rows.Scan(&subject, &row))
			if s[subject] == nil {
				s[subject] = map[string][]string{}
			}
			s[subject][table] = append(s[subject][table], row)
		}
		require.NoError(t, rows.Err())
	}
	for _, tables := range s {
		for _, rows := range tables {
			sort.Strings(rows)
		}
	}
	return s
}

// seedCRM inserts customers: n closed long ago (due), n closed recently (not
// due), n active, n spam created long ago (due for destruction). Keys carry
// quotes, spaces and unicode. It returns the keys by group.
func (e *env) seedCRM(t *testing.T, n int) map[string][]string {
	t.Helper()
	groups := map[string][]string{}
	ctx := context.Background()
	lineID := 0
	add := func(group, status, closedAt, createdAt string, i int) {
		code := fmt.Sprintf("%s O'Brien \"%d\" Zoë", group, i)
		groups[group] = append(groups[group], code)
		_, err := e.db.Pool.Exec(ctx, `
			INSERT INTO crm.customers (code, status, closed_at, created_at, profile, photo, credit, ext_id)
			VALUES ($1, $2, now() - $3::interval, now() - $4::interval,
			        jsonb_build_object('tier', $5::int, 'tags', jsonb_build_array('a', 'b'), 'nested', jsonb_build_object('x', 1.5)),
			        decode('00ff10' || lpad(to_hex($5::int), 4, '0'), 'hex'), 1234.5678 * $5::int, gen_random_uuid())`,
			code, status, closedAt, createdAt, i)
		require.NoError(t, err)
		for a := range i % 3 {
			var acct string
			err := e.db.Pool.QueryRow(ctx, `INSERT INTO crm.accounts (id, customer_code, balance, opened) VALUES (gen_random_uuid(), $1, $2, current_date - $3::int) RETURNING id::text`,
				code, float64(a)*10.25, a*100).Scan(&acct)
			require.NoError(t, err)
			for l := range a + 1 {
				lineID++
				_, err := e.db.Pool.Exec(ctx, `INSERT INTO crm.lines (id, account_id, imei, meta) VALUES ($1, $2, $3, '{"sim": true}')`,
					lineID, acct, fmt.Sprintf("35%013d", lineID*10+l))
				require.NoError(t, err)
			}
		}
		if i%2 == 0 {
			_, err := e.db.Pool.Exec(ctx, `INSERT INTO crm.notes (customer_code, body, blob) VALUES ($1, $2, '\x00deadbeef')`, code, "note; with 'quotes'")
			require.NoError(t, err)
		}
	}
	for i := range n {
		add("due", "closed", "800 days", "3000 days", i)
		add("recent", "closed", "10 days", "3000 days", i)
		add("active", "active", "0 days", "3000 days", i)
		add("spam", "spam", "0 days", "40 days", i)
	}
	return groups
}

// versions lists, as root, every version and delete marker in the bucket,
// by object name.
func (e *env) versions(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	in := &s3.ListObjectVersionsInput{Bucket: aws.String(e.bucket.Name)}
	for {
		res, err := e.root.ListObjectVersions(context.Background(), in)
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

// manifest reads the manifest: subject HMAC -> version id.
func (e *env) manifest(t *testing.T) map[string]string {
	t.Helper()
	rows, err := e.db.Pool.Query(context.Background(), `SELECT subject_hmac, version_id FROM lethe.manifest`)
	require.NoError(t, err)
	out := map[string]string{}
	for rows.Next() {
		var h, v string
		require.NoError(t, rows.Scan(&h, &v))
		out[h] = v
	}
	require.NoError(t, rows.Err())
	return out
}

// restore reads and decrypts a subject's object with the reader's
// credentials, returning its rows by table, sorted as snapshot rows are.
func (e *env) restore(t *testing.T, key string) map[string][]string {
	t.Helper()
	srv := e.bucket.Server
	r := archive.NewRestorer(srv.Client(srv.Reader), e.bucket.Name, e.cfg.Archive.Prefix)
	res, err := r.Restore(context.Background(), e.plan.Hasher().HMAC(key), key, "", "", e.plan.Tables(), []age.Identity{e.id})
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

// workItems counts unsettled work items.
func (e *env) workItems(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM lethe.work_item`).Scan(&n))
	return n
}

var errInjected = errors.New("injected")

// recorder is the queue of these tests: it records what retention hands
// off, and the test works it, in the order a queue would.
type recorder struct {
	mu       sync.Mutex
	batches  []int64
	requests []int64
	syncs    []string
}

var _ retention.Queue = (*recorder)(nil)

func (r *recorder) EnqueueBatch(_ context.Context, _ pgx.Tx, id int64) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, id)
	return 0, nil
}

func (r *recorder) EnqueueRequest(_ context.Context, _ pgx.Tx, id int64) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, id)
	return 0, nil
}

func (r *recorder) EnqueueHoldSyncs(_ context.Context, _ pgx.Tx, hs []string) ([]int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncs = append(r.syncs, hs...)
	return make([]int64, len(hs)), nil
}

// taken empties the recorder and returns what it held.
func (r *recorder) taken() *recorder {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := &recorder{batches: r.batches, requests: r.requests, syncs: r.syncs}
	r.batches, r.requests, r.syncs = nil, nil, nil
	return out
}

// Package testenv gives tests their own real PostgreSQL database and their
// own bucket on a real S3 server (versitygw), so that tests run in parallel
// without sharing state. Nothing here is a mock.
//
// Databases are cloned from a template that is migrated once per change of
// the migrations, so a new database costs a CREATE DATABASE. The S3 server
// is started once per test process; each test gets a fresh object-lock
// bucket with the same least-privilege policy as production.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/s3dev"
	"github.com/lethehq/lethe/migrations"
)

// AdminURL is the database tests connect to in order to create their own:
// $TEST_DATABASE_URL, or the local server.
func AdminURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// DB is a test's own database.
type DB struct {
	// URL connects to it.
	URL string
	// Name is the database's name.
	Name string
	// Pool is connected to it.
	Pool *pgxpool.Pool
}

// NewDB creates a database for t, migrated, and drops it when t ends.
func NewDB(t testing.TB) *DB {
	t.Helper()
	ctx := context.Background()
	templateOnce.Do(func() { templateName, templateErr = ensureTemplate(ctx) })
	require.NoError(t, templateErr, "preparing the template database")

	name := fmt.Sprintf("lethe_t_%d_%s", time.Now().Unix(), randomHex(4))
	admin, err := pgx.Connect(ctx, AdminURL())
	require.NoError(t, err, "connecting to PostgreSQL at $TEST_DATABASE_URL (is it running?)")
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{templateName}.Sanitize())
	require.NoError(t, err)
	u := withDatabase(t, AdminURL(), name)
	pool, err := pgxpool.New(ctx, u)
	require.NoError(t, err)
	t.Cleanup(func() {
		pool.Close()
		dropDatabase(name)
	})
	return &DB{URL: u, Name: name, Pool: pool}
}

func dropDatabase(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

func withDatabase(t testing.TB, base, name string) string {
	u, err := url.Parse(base)
	require.NoError(t, err)
	u.Path = "/" + name
	return u.String()
}

// ensureTemplate creates, once per version of the migrations, a migrated
// database to clone. An advisory lock orders test processes that race to
// create it. Databases left by earlier, killed test runs are dropped.
func ensureTemplate(ctx context.Context) (string, error) {
	name := "lethe_tmpl_" + migrations.Fingerprint()[:16]

	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return "", fmt.Errorf("connecting to PostgreSQL at $TEST_DATABASE_URL (is it running?): %w", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock(7301)"); err != nil {
		return "", err
	}
	defer admin.Exec(ctx, "SELECT pg_advisory_unlock(7301)") //nolint:errcheck // the session ends anyway

	dropStale(ctx, admin, name)
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_building"
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{building}.Sanitize()+" WITH (FORCE)")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{building}.Sanitize()); err != nil {
		return "", err
	}
	u, err := url.Parse(AdminURL())
	if err != nil {
		return "", err
	}
	u.Path = "/" + building
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		return "", err
	}
	_, err = migrations.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
	pool.Close()
	if err != nil {
		return "", fmt.Errorf("migrating the template: %w", err)
	}
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{building}.Sanitize()+" RENAME TO "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	return name, nil
}

// dropStale drops templates of other migration versions and test databases
// older than two hours (left by killed runs) that nobody is connected to.
func dropStale(ctx context.Context, admin *pgx.Conn, keep string) {
	rows, err := admin.Query(ctx, `
		SELECT datname FROM pg_database d
		WHERE (datname LIKE 'lethe\_tmpl\_%' OR datname LIKE 'lethe\_t\_%')
		  AND datname <> $1
		  AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)`, keep)
	if err != nil {
		return
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	cutoff := time.Now().Add(-2 * time.Hour).Unix()
	for _, n := range names {
		if strings.HasPrefix(n, "lethe_t_") {
			parts := strings.SplitN(strings.TrimPrefix(n, "lethe_t_"), "_", 2)
			ts, err := strconv.ParseInt(parts[0], 10, 64)
			if err != nil || ts > cutoff {
				continue
			}
		}
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n}.Sanitize()+" WITH (FORCE)")
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var (
	s3Once   sync.Once
	s3Server *s3dev.Server
	s3Err    error
)

// S3Server returns the test process's versitygw, starting it on first use.
// It is shared: tests that stop or restart a server must use NewS3Server.
func S3Server(t testing.TB) *s3dev.Server {
	t.Helper()
	s3Once.Do(func() {
		s3Server, s3Err = s3dev.Start(context.Background(), s3dev.Options{})
	})
	require.NoError(t, s3Err, "starting versitygw (run make bin/versitygw)")
	return s3Server
}

// NewS3Server starts a versitygw of t's own, stopped when t ends.
func NewS3Server(t testing.TB) *s3dev.Server {
	t.Helper()
	srv, err := s3dev.Start(context.Background(), s3dev.Options{Dir: t.TempDir()})
	require.NoError(t, err, "starting versitygw (run make bin/versitygw)")
	t.Cleanup(func() { _ = srv.Stop() })
	return srv
}

// Bucket is a test's own object-lock bucket.
type Bucket struct {
	Server *s3dev.Server
	Name   string
}

// NewBucket creates a bucket for t on the shared server.
func NewBucket(t testing.TB) *Bucket {
	t.Helper()
	return NewBucketOn(t, S3Server(t))
}

// NewBucketOn creates a bucket for t on srv.
func NewBucketOn(t testing.TB, srv *s3dev.Server) *Bucket {
	t.Helper()
	name := "t-" + randomHex(8)
	require.NoError(t, srv.CreateBucket(context.Background(), name))
	return &Bucket{Server: srv, Name: name}
}

// NewBucketWithoutLock creates a versioned bucket for t on the shared server
// with lethe's bucket policy, but without Object Lock: the bucket an owner
// who skipped that step would give lethe.
func NewBucketWithoutLock(t testing.TB) *Bucket {
	t.Helper()
	srv := S3Server(t)
	ctx := context.Background()
	name := "t-" + randomHex(8)
	root := srv.Client(srv.Root)
	_, err := root.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	require.NoError(t, err)
	_, err = root.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: aws.String(name),
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled}})
	require.NoError(t, err)
	_, err = root.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: aws.String(name),
		Policy: aws.String(s3dev.BucketPolicy(name, s3dev.DefaultPrefix, srv.Writer.AccessKeyID, srv.Reader.AccessKeyID))})
	require.NoError(t, err)
	return &Bucket{Server: srv, Name: name}
}

// NewIdentity returns a fresh age identity.
func NewIdentity(t testing.TB) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	require.NoError(t, err)
	return id
}

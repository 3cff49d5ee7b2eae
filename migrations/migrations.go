// Package migrations owns lethe's database schema: River's tables, applied
// with rivermigrate, and lethe's own numbered SQL files (embedded from sql/),
// applied with tern. Everything lives in schema "lethe".
package migrations

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// Schema is the PostgreSQL schema of lethe's and River's tables.
const Schema = "lethe"

const versionTable = Schema + ".schema_version"

//go:embed sql/*.sql
var files embed.FS

// sqlFiles is the embedded sql/ directory, which always exists.
var sqlFiles, _ = fs.Sub(files, "sql")

// ErrNotCurrent is returned by Check when migrations are missing.
var ErrNotCurrent = errors.New("database schema is not current")

// Result says what Migrate did.
type Result struct {
	// RiverApplied are the River versions applied by this call.
	RiverApplied []int
	// LetheFrom and LetheTo are lethe's schema versions before and after.
	LetheFrom, LetheTo int32
}

// migrateLock is the advisory lock every lethe migrate holds, so that two
// running at once apply each migration once (rivermigrate takes no lock of
// its own).
const migrateLock = 0x4c45_4d49_4752 // "LEMIGR"

// Migrate applies River's and lethe's migrations. It is safe to run again,
// and concurrently: the second waits for the first and then finds nothing
// to do.
func Migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) (*Result, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("error connecting: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLock); err != nil {
		return nil, fmt.Errorf("error taking the migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLock) //nolint:errcheck // released with the session anyway

	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{Schema}.Sanitize()); err != nil {
		return nil, fmt.Errorf("error creating schema %s: %w", Schema, err)
	}
	rm, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: Schema, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("error preparing River migrations: %w", err)
	}
	rres, err := rm.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return nil, fmt.Errorf("error applying River migrations: %w", err)
	}
	res := &Result{}
	for _, v := range rres.Versions {
		res.RiverApplied = append(res.RiverApplied, v.Version)
	}

	m, err := newMigrator(ctx, conn.Conn())
	if err != nil {
		return nil, err
	}
	if res.LetheFrom, err = m.GetCurrentVersion(ctx); err != nil {
		return nil, fmt.Errorf("error reading lethe schema version: %w", err)
	}
	m.OnStart = func(seq int32, name, direction, _ string) {
		logger.Info("applying lethe migration", "version", seq, "name", name, "direction", direction)
	}
	if err := m.Migrate(ctx); err != nil {
		return nil, fmt.Errorf("error applying lethe migrations: %w", err)
	}
	if res.LetheTo, err = m.GetCurrentVersion(ctx); err != nil {
		return nil, fmt.Errorf("error reading lethe schema version: %w", err)
	}
	return res, nil
}

func newMigrator(ctx context.Context, conn *pgx.Conn) (*migrate.Migrator, error) {
	m, err := migrate.NewMigrator(ctx, conn, versionTable)
	if err != nil {
		return nil, fmt.Errorf("error preparing lethe migrations: %w", err)
	}
	if err := m.LoadMigrations(sqlFiles); err != nil {
		return nil, fmt.Errorf("error loading lethe migrations: %w", err)
	}
	return m, nil
}

// Latest is the newest version of lethe's own migrations.
func Latest() int32 {
	names, err := migrate.FindMigrations(sqlFiles)
	if err != nil {
		return 0
	}
	return int32(len(names))
}

// Check returns ErrNotCurrent, naming what is missing, unless both River's
// and lethe's migrations are fully applied. It changes nothing.
func Check(ctx context.Context, pool *pgxpool.Pool) error {
	rm, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: Schema})
	if err != nil {
		return fmt.Errorf("error preparing River migrations: %w", err)
	}
	vres, err := rm.Validate(ctx, nil)
	if err != nil {
		return fmt.Errorf("error checking River migrations: %w", err)
	}
	if !vres.OK {
		return fmt.Errorf("%w: River's migrations are not applied (%v): run lethe migrate", ErrNotCurrent, vres.Messages)
	}
	var v int32
	err = pool.QueryRow(ctx, "SELECT version FROM "+versionTable).Scan(&v)
	if err != nil {
		return fmt.Errorf("%w: lethe's tables are missing (%v): run lethe migrate", ErrNotCurrent, err)
	}
	if latest := Latest(); v < latest {
		return fmt.Errorf("%w: lethe's schema is at version %d of %d: run lethe migrate", ErrNotCurrent, v, latest)
	} else if v > latest {
		return fmt.Errorf("%w: lethe's schema is at version %d, newer than this binary knows (%d): upgrade lethe", ErrNotCurrent, v, latest)
	}
	return nil
}

// Fingerprint identifies this binary's schema: a hash of lethe's migration
// files and River's newest migration version. Two binaries with the same
// fingerprint create the same schema.
func Fingerprint() string {
	h := sha256.New()
	_ = fs.WalkDir(sqlFiles, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sqlFiles, path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	if rm, err := rivermigrate.New(riverpgxv5.New(nil), nil); err == nil {
		all := rm.AllVersions()
		if len(all) > 0 {
			fmt.Fprintf(h, "river:%d", all[len(all)-1].Version)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

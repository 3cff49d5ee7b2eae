package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"
)

// TestDemoSeedAndConfig checks that `lethe demo config` prints a config
// that, with database and archive sections, fits the tables `lethe demo
// seed` creates: sweep --dry-run accepts it and counts what SQL counts.
func TestDemoSeedAndConfig(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := fmt.Sprintf("demo_cli_%d", time.Now().UnixNano()%1e9)
	db := testenv.NewDB(t)
	bucket := testenv.NewBucket(t)
	id := testenv.NewIdentity(t)

	r := lethe(t, "demo", "config", "--schema", schema)
	requireOK(t, r)
	fragment := r.stdout
	cfg := filepath.Join(t.TempDir(), "demo.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(testenv.ConfigYAML(db, bucket, id.Recipient().String(), fragment)), 0o600))

	r = lethe(t, "demo", "seed", "--subjects", "300", "--schema", schema, "--config", cfg)
	requireOK(t, r)
	require.Contains(t, r.stdout, "seeded 300 synthetic customers", "%s", r)

	r = lethe(t, "sweep", "--dry-run", "--json", "--config", cfg)
	requireOK(t, r)
	var dry struct {
		Policies []struct {
			Policy string `json:"policy"`
			Due    int64  `json:"due"`
		} `json:"policies"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &dry), "%s", r)
	subscribers := pgx.Identifier{schema, "subscribers"}.Sanitize()
	var former, prospects, total int64
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT
			count(*) FILTER (WHERE status = 'former' AND closed_at < now() - interval '730 days'),
			count(*) FILTER (WHERE status = 'prospect' AND created_at < now() - interval '90 days'),
			count(*)
		FROM `+subscribers).Scan(&former, &prospects, &total))
	require.EqualValues(t, 300, total)
	require.Positive(t, former+prospects, "the demo data has nothing due")
	require.Len(t, dry.Policies, 2, "%s", r)
	require.Equal(t, "former-customers", dry.Policies[0].Policy)
	require.Equal(t, former, dry.Policies[0].Due)
	require.Equal(t, "prospects", dry.Policies[1].Policy)
	require.Equal(t, prospects, dry.Policies[1].Due)

	r = lethe(t, "sweep", "--dry-run", "--config", cfg)
	requireOK(t, r)
	require.Equal(t, map[string]int{"former-customers": int(former), "prospects": int(prospects), "total": int(former + prospects)}, dryRunCounts(t, r))
	require.False(t, strings.Contains(r.stderr, "error"), "%s", r)
}

// TestDemoConfigQuotedSchema checks demo config for schema names that SQL
// must quote (upper case, spaces, dashes): demo seed creates such a schema,
// and the config demo config prints for it must name its tables.
func TestDemoConfigQuotedSchema(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	bucket := testenv.NewBucket(t)
	id := testenv.NewIdentity(t)
	dir := t.TempDir()
	// Any valid config will do for seeding: demo seed needs only the database.
	r := lethe(t, "demo", "config")
	requireOK(t, r)
	seedCfg := filepath.Join(dir, "seed.yaml")
	require.NoError(t, os.WriteFile(seedCfg, []byte(testenv.ConfigYAML(db, bucket, id.Recipient().String(), r.stdout)), 0o600))

	for _, schema := range []string{"DemoMixed", "Demo Cli-x"} {
		t.Run(schema, func(t *testing.T) {
			r := lethe(t, "demo", "seed", "--subjects", "20", "--schema", schema, "--config", seedCfg)
			requireOK(t, r)
			r = lethe(t, "demo", "config", "--schema", schema)
			requireOK(t, r)
			cfg := filepath.Join(t.TempDir(), "demo.yaml")
			require.NoError(t, os.WriteFile(cfg, []byte(testenv.ConfigYAML(db, bucket, id.Recipient().String(), r.stdout)), 0o600))
			r = lethe(t, "sweep", "--dry-run", "--config", cfg)
			requireOK(t, r)
		})
	}
}

// TestCLIHoldUnderOneSpellingBlocksARequestUnderAnother places a hold on a
// demo subscriber under one spelling of its bigint key and files deletion
// requests under others, through the CLI and a running worker: each waits
// on the hold, and every output shows the canonical key.
func TestCLIHoldUnderOneSpellingBlocksARequestUnderAnother(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := fmt.Sprintf("demo_keys_%d", time.Now().UnixNano()%1e9)
	db := testenv.NewDB(t)
	r := lethe(t, "demo", "config", "--schema", schema)
	requireOK(t, r)
	cfg := filepath.Join(t.TempDir(), "demo.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(testenv.ConfigYAML(db, testenv.NewBucket(t), testenv.NewIdentity(t).Recipient().String(), r.stdout)), 0o600))
	requireOK(t, lethe(t, "demo", "seed", "--subjects", "200", "--schema", schema, "--config", cfg))
	w := startWorker(t, cfg)
	run := func(args ...string) result { return lethe(t, append(args, "--config", cfg)...) }
	subscribers := pgx.Identifier{schema, "subscribers"}.Sanitize()
	present := func(id int) bool {
		var n int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM `+subscribers+` WHERE id = $1`, id).Scan(&n))
		return n == 1
	}
	require.True(t, present(111) && present(83))

	r = run("hold", "place", "--matter", "M-1", "--subject", "0111", "--subject", " +83 ", "--reason", "litigation", "--by", "legal", "--json")
	requireOK(t, r)
	var placed struct {
		Placed []struct {
			Subject string `json:"subject"`
		} `json:"placed"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &placed))
	require.Len(t, placed.Placed, 2)
	require.Equal(t, "111", placed.Placed[0].Subject)
	require.Equal(t, "83", placed.Placed[1].Subject)

	for _, s := range []string{"111", "+111", "00111"} {
		r = run("hold", "list", "--subject", s, "--json")
		requireOK(t, r)
		var holds []struct {
			Subject string `json:"subject"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &holds))
		require.Len(t, holds, 1, "hold list --subject %q", s)
		require.Equal(t, "111", holds[0].Subject)
	}
	r = run("hold", "list", "--subject", "1.5")
	require.Equal(t, 2, r.code, "%s", r)
	require.Contains(t, r.stderr, "not a valid bigint")

	for i, s := range []string{" 111 ", "+111", "0111", "083"} {
		r = run("request", "delete", "--subject", s, "--ticket", fmt.Sprintf("T-%d", i), "--by", "privacy", "--wait", "--json")
		requireOK(t, r)
		var v struct {
			Subject string `json:"subject"`
			State   string `json:"state"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &v), "%s", r)
		require.Equal(t, "blocked_by_hold", v.State, "request under %q\n%s", s, w.output())
		require.Contains(t, []string{"111", "83"}, v.Subject, "the canonical key, not %q", s)
	}
	require.True(t, present(111) && present(83), "a held subject is never deleted")
}

// TestMigrateRepairsKeysStoredAsTyped gives lethe migrate a hold and a
// request stored under other spellings of their keys, as versions before
// canonical keys stored them: it rewrites both and says so.
func TestMigrateRepairsKeysStoredAsTyped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := fmt.Sprintf("demo_repair_%d", time.Now().UnixNano()%1e9)
	db := testenv.NewDB(t)
	r := lethe(t, "demo", "config", "--schema", schema)
	requireOK(t, r)
	cfg := filepath.Join(t.TempDir(), "demo.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(testenv.ConfigYAML(db, testenv.NewBucket(t), testenv.NewIdentity(t).Recipient().String(), r.stdout)), 0o600))
	requireOK(t, lethe(t, "demo", "seed", "--subjects", "50", "--schema", schema, "--config", cfg))
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO lethe.hold (matter, subject_hmac, subject_key, reason, placed_by) VALUES ('M-1', repeat('ab', 32), '0042', 'litigation', 'legal');
		INSERT INTO lethe.request (ticket, subject_hmac, subject_key, requested_by, deadline) VALUES ('T-1', repeat('cd', 32), ' +7 ', 'privacy', now() + interval '45 days');`)
	require.NoError(t, err)

	r = lethe(t, "migrate", "--config", cfg)
	requireOK(t, r)
	require.Contains(t, r.stdout, "subject keys made canonical: 1 hold, 1 open request", "%s", r)
	var key string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT subject_key FROM lethe.hold WHERE matter = 'M-1'`).Scan(&key))
	require.Equal(t, "42", key)
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT subject_key FROM lethe.request WHERE ticket = 'T-1'`).Scan(&key))
	require.Equal(t, "7", key)
	r = lethe(t, "migrate", "--config", cfg)
	requireOK(t, r)
	require.NotContains(t, r.stdout, "made canonical", "a second migrate has nothing to rewrite")
}

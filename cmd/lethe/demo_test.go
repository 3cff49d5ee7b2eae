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

package main_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// lethe bench on the shop's database and bucket: it reports every figure
// the contract names, on one JSON line last, writes its report, and leaves
// no scratch schema, object or lethe row behind. Run with two worker
// processes, each subject is archived once and both share the work.
func TestBench(t *testing.T) {
	t.Parallel()

	for _, workers := range []string{"1", "2"} {
		t.Run("workers="+workers, func(t *testing.T) {
			t.Parallel()

			ctx := context.Background()
			s := newShop(t, 0)
			before := letheState(t, s.db.Pool)
			beforeObjects := listVersions(t, s.bucket)
			report := t.TempDir()
			r := lethe(t, "bench", "--config", s.cfgPath, "--subjects", "1200", "--requests", "100", "--workers", workers, "--json", "--report", report)
			requireOK(t, r)

			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			var res map[string]any
			require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &res), "the last line is the JSON: %s", r)
			for _, k := range []string{"subjects", "seconds", "subjects_per_sec", "bytes_per_sec", "raw_put_per_sec",
				"raw_db_per_sec", "efficiency", "peak_rss_bytes", "requests_per_sec"} {
				v, ok := res[k].(float64)
				require.True(t, ok, "%s missing in %s", k, lines[len(lines)-1])
				require.Positive(t, v, k)
			}
			require.Equal(t, 1200.0, res["subjects"])
			limit := min(res["raw_put_per_sec"].(float64), res["raw_db_per_sec"].(float64))
			require.InDelta(t, res["subjects_per_sec"].(float64)/limit, res["efficiency"].(float64), 1e-9)
			require.Less(t, res["peak_rss_bytes"].(float64), 300.0*(1<<20))
			if workers == "2" {
				shares, ok := res["per_worker"].([]any)
				require.True(t, ok, "per_worker in %s", lines[len(lines)-1])
				total := 0.0
				for _, sh := range shares {
					total += sh.(map[string]any)["subjects"].(float64)
				}
				require.Equal(t, 1200.0, total, "each subject archived exactly once, across the processes")
			}

			// The report and its chart.
			files, err := filepath.Glob(filepath.Join(report, "*.md"))
			require.NoError(t, err)
			require.Len(t, files, 1)
			md, err := os.ReadFile(files[0])
			require.NoError(t, err)
			require.Contains(t, string(md), "efficiency")
			svgs, err := filepath.Glob(filepath.Join(report, "*.svg"))
			require.NoError(t, err)
			require.Len(t, svgs, 1)
			svg, err := os.ReadFile(svgs[0])
			require.NoError(t, err)
			require.Contains(t, string(svg), "<polyline")

			// Nothing left behind but the audit log, which is append-only.
			var schemas int
			require.NoError(t, s.db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'lethe_bench%'`).Scan(&schemas))
			require.Zero(t, schemas)
			require.Equal(t, beforeObjects, listVersions(t, s.bucket))
			after := letheState(t, s.db.Pool)
			for table, n := range before {
				if table == "audit_log" || table == "audit_head" || table == "river_job" {
					continue
				}
				require.Equal(t, n, after[table], "lethe.%s", table)
			}
			for _, table := range []string{"request", "suppression"} {
				var n int
				require.NoError(t, s.db.Pool.QueryRow(ctx, "SELECT count(*) FROM lethe."+table).Scan(&n))
				require.Zero(t, n, "lethe.%s", table)
			}
		})
	}
}

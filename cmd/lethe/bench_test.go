package main_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
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
				"raw_db_per_sec", "efficiency", "peak_rss_bytes", "requests_per_sec", "minimized", "minimized_rows", "minimized_per_sec"} {
				v, ok := res[k].(float64)
				require.True(t, ok, "%s missing in %s", k, lines[len(lines)-1])
				require.Positive(t, v, k)
			}
			require.Equal(t, 1200.0, res["subjects"])
			require.Equal(t, res["minimized"], res["minimized_rows"], "one subscriber row, one SSN, per subject")
			require.LessOrEqual(t, res["minimized"].(float64), 1200.0)
			for _, k := range []string{"raw_put_bytes_per_sec", "put_ceiling_per_sec", "segments", "objects_per_subject", "subjects_per_segment", "mean_object_bytes", "mean_part_bytes"} {
				v, ok := res[k].(float64)
				require.True(t, ok, "%s missing in %s", k, lines[len(lines)-1])
				require.Positive(t, v, k)
			}
			ceiling := res["raw_put_bytes_per_sec"].(float64) / res["mean_object_bytes"].(float64) * res["subjects_per_segment"].(float64)
			require.InDelta(t, ceiling, res["put_ceiling_per_sec"].(float64), ceiling*1e-9)
			limit := min(ceiling, res["raw_db_per_sec"].(float64))
			require.InDelta(t, res["subjects_per_sec"].(float64)/limit, res["efficiency"].(float64), 1e-9)
			// 1,200 subjects of two policies in batches of 50: 24 segments,
			// or 25 when neither policy's count is a multiple of 50.
			segments := res["segments"].(float64)
			require.Contains(t, []float64{24, 25}, segments)
			require.InDelta(t, segments/1200, res["objects_per_subject"].(float64), 1e-9)
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
			// The segments stay (lethe never deletes an object), under the
			// run's prefix, retained for a day for the lifecycle rule.
			root := s.bucket.Server.Client(s.bucket.Server.Root)
			left := 0
			for _, v := range listVersions(t, s.bucket) {
				if slices.Contains(beforeObjects, v) {
					continue
				}
				if strings.Contains(v.key, "/probe/") {
					continue // the worker's start-up check of Object Lock
				}
				require.Regexp(t, `^v1/bench/[0-9a-f]+/(segments|raw-put)/`, v.key)
				if strings.Contains(v.key, "/segments/") {
					left++
				}
				ret, err := root.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: aws.String(s.bucket.Name),
					Key: aws.String(v.key), VersionId: aws.String(v.versionID)})
				require.NoError(t, err)
				require.WithinDuration(t, time.Now().Add(24*time.Hour), aws.ToTime(ret.Retention.RetainUntilDate), time.Hour)
			}
			require.Equal(t, int(segments), left)
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

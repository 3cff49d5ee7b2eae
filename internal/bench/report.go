package bench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Machine describes where a run happened.
type Machine struct {
	CPU      string
	Cores    int
	MemoryGB float64
	Go       string
	Postgres string
	Commit   string
}

// Describe reads the machine, the database's version and lethe's commit.
func Describe(ctx context.Context, pool *pgxpool.Pool) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), CPU: "unknown", Commit: commit()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %f kB", &kb); err == nil {
			m.MemoryGB = kb / 1024 / 1024
		}
	}
	_ = pool.QueryRow(ctx, `SHOW server_version`).Scan(&m.Postgres)
	return m
}

// commit is the build's VCS revision, or the checkout's, or "unknown".
func commit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				return s.Value
			}
		}
	}
	if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	return "unknown"
}

// WriteReport writes a markdown report and its throughput chart (SVG) into
// dir, and returns the report's path.
func WriteReport(dir string, r *Result, m Machine, now time.Time) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	short := m.Commit
	if len(short) > 12 {
		short = short[:12]
	}
	base := fmt.Sprintf("%s-%dk-w%d-%s", now.UTC().Format("20060102-150405"), r.Subjects/1000, r.Workers, short)
	svg := base + ".svg"
	if err := os.WriteFile(filepath.Join(dir, svg), Chart(r), 0o644); err != nil {
		return "", err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# lethe bench: %d subjects, %d worker process(es)\n\n", r.Subjects, r.Workers)
	fmt.Fprintf(&b, "Run %s on commit `%s`.\n\n", now.UTC().Format(time.RFC3339), m.Commit)
	fmt.Fprintf(&b, "| figure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| subjects archived | %d (%d rows, %.1f per subject) |\n", r.Subjects, r.Rows, float64(r.Rows)/float64(max(r.Subjects, 1)))
	fmt.Fprintf(&b, "| time | %.1f s |\n", r.Seconds)
	fmt.Fprintf(&b, "| subjects_per_sec | **%.0f** |\n", r.SubjectsPerSec)
	fmt.Fprintf(&b, "| bytes_per_sec | %.0f (%.1f MiB/s; mean part %d B) |\n", r.BytesPerSec, r.BytesPerSec/(1<<20), r.MeanPartSize)
	fmt.Fprintf(&b, "| segments | %d (%.0f subjects each, mean %d B): %.4f objects per subject |\n",
		r.Segments, r.SubjectsPerSegment, r.MeanObjectSize, r.ObjectsPerSubject)
	fmt.Fprintf(&b, "| raw_put_per_sec (object store alone, segment-sized puts) | %.0f (%.1f MiB/s) |\n", r.RawPutPerSec, r.RawPutBytesPerSec/(1<<20))
	fmt.Fprintf(&b, "| put_ceiling_per_sec (subjects/s the store could take) | %.0f |\n", r.PutCeilingPerSec)
	fmt.Fprintf(&b, "| raw_db_per_sec (database alone: read, delete, manifest and keys) | %.0f |\n", r.RawDBPerSec)
	fmt.Fprintf(&b, "| efficiency = subjects_per_sec / min(raw_db, put_ceiling) | **%.2f** |\n", r.Efficiency)
	fmt.Fprintf(&b, "| subjects_per_sec / raw_put_per_sec | %.1f |\n", r.SubjectsPerSec/max(r.RawPutPerSec, 1e-9))
	fmt.Fprintf(&b, "| peak_rss_bytes | %d (%.0f MiB) |\n", r.PeakRSSBytes, float64(r.PeakRSSBytes)/(1<<20))
	fmt.Fprintf(&b, "| deletion requests | %d, carried out at **%s/s** from a full queue (queued at %s/s) |\n",
		r.Requests, Rate(r.RequestsPerSec), Rate(r.RequestIntakePerSec))
	fmt.Fprintf(&b, "| minimised (then: minimize, SSN hashed, before archiving) | %d subjects, %d rows, at **%s/s** |\n",
		r.Minimized, r.MinimizedRows, Rate(r.MinimizedPerSec))
	fmt.Fprintf(&b, "| seeding (not timed above) | %.1f s |\n", r.SeedSeconds)
	if len(r.PerWorker) > 0 {
		fmt.Fprintf(&b, "\n| worker process (River client) | subjects | subjects/s |\n|---|---|---|\n")
		for _, w := range r.PerWorker {
			fmt.Fprintf(&b, "| %s | %d | %.0f |\n", w.Client, w.Subjects, w.SubjectsPerSec)
		}
	}
	fmt.Fprintf(&b, "\n![throughput over the run](%s)\n\n", svg)
	fmt.Fprintf(&b, "## Machine\n\n- CPU: %s, %d cores\n- memory: %.1f GiB\n- Go: %s\n- PostgreSQL: %s\n", m.CPU, m.Cores, m.MemoryGB, m.Go, m.Postgres)
	fmt.Fprintf(&b, "\nPostgreSQL, the S3 server and lethe share these cores. The raw figures are measured in the same run,\n"+
		"with the same concurrency and client settings, so the efficiency compares like with like on a noisy machine.\n"+
		"Each subject costs five X25519 scalar multiplications (its key, the part's and the wrapped key's age stanzas),\n"+
		"which the raw database figure does not include.\n")
	path := filepath.Join(dir, base+".md")
	return path, os.WriteFile(path, b.Bytes(), 0o644)
}

// Chart draws subjects per second over the run as an SVG line chart.
func Chart(r *Result) []byte {
	const w, h, left, bottom, top, right = 720.0, 300.0, 60.0, 40.0, 30.0, 20.0
	at, rate := r.Throughput(2 * time.Second)
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="13">lethe bench: subjects archived per second (2 s window), %d subjects, %d worker(s)</text>`+"\n", left, r.Subjects, r.Workers)
	maxT := r.Seconds
	if len(at) > 0 {
		maxT = math.Max(maxT, at[len(at)-1].Seconds())
	}
	maxR := 1.0
	for _, v := range rate {
		maxR = math.Max(maxR, v)
	}
	maxR = niceCeil(maxR)
	maxT = math.Max(maxT, 1)
	x := func(t float64) float64 { return left + (w-left-right)*t/maxT }
	y := func(v float64) float64 { return h - bottom - (h-bottom-top)*v/maxR }
	// Axes and grid.
	for i := 0; i <= 4; i++ {
		v := maxR * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), w-right, y(v))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%.0f</text>`+"\n", left-6, y(v)+4, v)
	}
	for i := 0; i <= 5; i++ {
		t := maxT * float64(i) / 5
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.0f s</text>`+"\n", x(t), h-bottom+16, t)
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, h-bottom, w-right, h-bottom)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, top, left, h-bottom)
	// The mean.
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c33" stroke-dasharray="4 3"/>`+"\n", left, y(r.SubjectsPerSec), w-right, y(r.SubjectsPerSec))
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#c33" text-anchor="end">mean %.0f/s</text>`+"\n", w-right, y(r.SubjectsPerSec)-4, r.SubjectsPerSec)
	if len(at) > 0 {
		var pts []string
		for i := range at {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(at[i].Seconds()), y(rate[i])))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="#2563eb" stroke-width="1.5" points="%s"/>`+"\n", strings.Join(pts, " "))
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// Rate formats a per-second figure: whole numbers from 10 up, one decimal
// below, so that a slow rate does not print as 0.
func Rate(v float64) string {
	if v >= 10 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

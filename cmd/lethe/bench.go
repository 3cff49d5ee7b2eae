package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/bench"
)

func runBench(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var opts bench.Options
	var asJSON bool
	var report, serve string
	fs := newFlagSet(env, "bench", "--subjects N [--workers W] [--requests R] [--json] [--report DIR] [--config FILE]")
	c.register(fs, "warn")
	fs.IntVar(&opts.Subjects, "subjects", 0, "how many synthetic subjects to seed and archive")
	fs.IntVar(&opts.Workers, "workers", 1, "worker processes working the queue (1: this process)")
	fs.IntVar(&opts.Requests, "requests", 0, "deletion requests to queue afterwards (default min(10000, subjects))")
	fs.BoolVar(&asJSON, "json", false, "end with the figures as one JSON line")
	fs.StringVar(&report, "report", "", "write a markdown report and a throughput chart into this directory")
	fs.StringVar(&opts.CPUProfile, "cpuprofile", "", "write a CPU profile of the archive phase to this file")
	fs.StringVar(&serve, "serve", "", "work the jobs of the bench run with this id until stopped (how --workers starts its processes)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case serve != "":
	case opts.Subjects < 1:
		return usagef("bench: --subjects N is required and must be at least 1")
	case opts.Workers < 1 || opts.Workers > 64:
		return usagef("bench: --workers %d: give 1 to 64", opts.Workers)
	case opts.Requests < 0:
		return usagef("bench: --requests %d: give 0 or more", opts.Requests)
	}
	a, err := c.open(ctx, env, false)
	if err != nil {
		return err
	}
	defer a.Close()
	if serve != "" {
		return bench.Serve(ctx, a.Config, serve, a.Logger)
	}
	opts.ConfigPath = c.path(env)
	if opts.Binary, err = os.Executable(); err != nil {
		return fmt.Errorf("error finding the lethe binary for the worker processes: %w", err)
	}
	prog := newProgress(env.stderr)
	opts.Progress = func(format string, args ...any) { prog.statusf("bench: "+format, args...) }
	res, err := bench.Run(ctx, a.Config, opts, a.Logger)
	prog.done()
	var cleanupErr *bench.CleanupError
	if err != nil && (res == nil || !errors.As(err, &cleanupErr)) {
		return err
	}
	// The figures stand when only the clean-up failed: report them, then
	// the error.
	if err := printBench(ctx, env, a, res, report, asJSON); err != nil {
		return err
	}
	return err
}

func printBench(ctx context.Context, env *cliEnv, a *app.App, res *bench.Result, report string, asJSON bool) error {
	fmt.Fprintf(env.stdout, "archived %d subjects (%d rows) in %.1f s: %.0f subjects/s, %s/s\n",
		res.Subjects, res.Rows, res.Seconds, res.SubjectsPerSec, humanBytes(int64(res.BytesPerSec)))
	fmt.Fprintf(env.stdout, "%s of %.0f subjects each: %.4f objects per subject\n", plural(res.Segments, "segment"), res.SubjectsPerSegment, res.ObjectsPerSubject)
	fmt.Fprintf(env.stdout, "limits in the same run: object store alone %.0f puts/s (%.0f subjects/s at this segment size), database alone %.0f subjects/s; efficiency %.2f\n",
		res.RawPutPerSec, res.PutCeilingPerSec, res.RawDBPerSec, res.Efficiency)
	fmt.Fprintf(env.stdout, "peak RSS %s; %d deletion requests carried out at %s/s (queued at %s/s)\n", humanBytes(res.PeakRSSBytes), res.Requests,
		bench.Rate(res.RequestsPerSec), bench.Rate(res.RequestIntakePerSec))
	fmt.Fprintf(env.stdout, "minimised %s (%s, SSN hashed) before archiving them, at %s/s\n",
		plural(res.Minimized, "subject"), plural(int(res.MinimizedRows), "row"), bench.Rate(res.MinimizedPerSec))
	for _, w := range res.PerWorker {
		fmt.Fprintf(env.stdout, "  worker %s: %d subjects, %.0f/s\n", w.Client, w.Subjects, w.SubjectsPerSec)
	}
	if report != "" {
		path, err := bench.WriteReport(report, res, bench.Describe(ctx, a.Pool), time.Now())
		if err != nil {
			return fmt.Errorf("error writing the report: %w", err)
		}
		fmt.Fprintf(env.stdout, "report: %s\n", path)
	}
	if asJSON {
		return writeJSON(env.stdout, res)
	}
	return nil
}

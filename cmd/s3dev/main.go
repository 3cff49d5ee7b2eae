// Command s3dev runs a local S3 server (versitygw) for the demo and
// benchmarks, detached so that it outlives the command.
//
// Usage:
//
//	s3dev start --dir DIR [--addr 127.0.0.1:7070] [--prefix v1/] [--bucket NAME]...
//	s3dev stop --dir DIR
//
// start launches versitygw with its state in DIR, or reuses the one already
// running there, creates each bucket that is missing, sets on each bucket
// the least-privilege policy for the archive prefix --prefix (the config's
// archive.prefix: the worker may read back only PREFIX + "ledger/*"), and
// writes DIR/env:
// the endpoint and the archive, restore and root keys, ready to source from
// a shell. Keys are generated on the first start and kept afterwards, so
// the data in DIR stays readable. stop terminates the server; the data
// stays.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lethehq/lethe/internal/s3dev"
)

const usage = `usage:
  s3dev start --dir DIR [--addr 127.0.0.1:7070] [--prefix v1/] [--bucket NAME]...
  s3dev stop --dir DIR

--prefix is the config's archive.prefix; each --bucket gets the policy for it.
`

// timeout bounds one command: a start, its buckets, or a stop.
const timeout = time.Minute

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

// usageError is bad command-line input: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	err := dispatch(ctx, args, stdout)
	var uerr usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return exitOK
	case errors.As(err, &uerr):
		fmt.Fprintf(stderr, "s3dev: %s (run s3dev -h for usage)\n", oneLine(err.Error()))
		return exitUsage
	default:
		fmt.Fprintf(stderr, "s3dev: %s\n", oneLine(err.Error()))
		return exitError
	}
}

func dispatch(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{"missing command"}
	}
	switch args[0] {
	case "start":
		return start(ctx, args[1:], stdout)
	case "stop":
		return stop(args[1:], stdout)
	case "-h", "-help", "--help", "help":
		return flag.ErrHelp
	default:
		return usageError{fmt.Sprintf("unknown command %q", args[0])}
	}
}

// bucketList collects repeated --bucket flags.
type bucketList []string

func (b *bucketList) String() string { return strings.Join(*b, ",") }

func (b *bucketList) Set(v string) error {
	if v == "" {
		return errors.New("empty bucket name")
	}
	*b = append(*b, v)
	return nil
}

// parse parses the flags of one command and requires --dir.
func parse(fs *flag.FlagSet, args []string, dir *string) error {
	fs.SetOutput(io.Discard)
	fs.StringVar(dir, "dir", "", "state `directory` of the server")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	if *dir == "" {
		return usageError{fmt.Sprintf("%s: --dir is required", fs.Name())}
	}
	return nil
}

func start(ctx context.Context, args []string, stdout io.Writer) error {
	var dir string
	var buckets bucketList
	fs := flag.NewFlagSet("start", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:7070", "S3 listen `address` (loopback)")
	prefix := fs.String("prefix", s3dev.DefaultPrefix, "archive `prefix` (archive.prefix) the buckets' policy is for")
	fs.Var(&buckets, "bucket", "bucket to create if missing (repeatable)")
	if err := parse(fs, args, &dir); err != nil {
		return err
	}
	if err := s3dev.CheckPrefix(*prefix); err != nil {
		return usageError{fmt.Sprintf("start: --prefix: %v", err)}
	}

	srv, err := s3dev.Attach(dir)
	switch {
	case err == nil:
		if err := srv.Ready(ctx); err != nil {
			return fmt.Errorf("versitygw pid %d for %s is running but not healthy (run s3dev stop --dir %s): %w", srv.PID(), srv.Dir, dir, err)
		}
		fmt.Fprintf(stdout, "reusing versitygw already running: pid %d, %s\n", srv.PID(), srv.Endpoint)
	case errors.Is(err, s3dev.ErrNotRunning):
		srv, err = s3dev.Start(ctx, s3dev.Options{Dir: dir, Addr: *addr, Detach: true})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "started versitygw: pid %d, %s, log %s\n", srv.PID(), srv.Endpoint, filepath.Join(srv.Dir, s3dev.LogFile))
	default:
		return err
	}

	for _, b := range buckets {
		created, err := srv.EnsureBucketWithPrefix(ctx, b, *prefix)
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(stdout, "created bucket %s, policy for prefix %q\n", b, *prefix)
		} else {
			fmt.Fprintf(stdout, "bucket %s exists, policy for prefix %q\n", b, *prefix)
		}
	}
	fmt.Fprintf(stdout, "env in %s\n", filepath.Join(srv.Dir, s3dev.EnvFile))
	return nil
}

func stop(args []string, stdout io.Writer) error {
	var dir string
	fs := flag.NewFlagSet("stop", flag.ContinueOnError)
	if err := parse(fs, args, &dir); err != nil {
		return err
	}
	srv, err := s3dev.Attach(dir)
	if errors.Is(err, s3dev.ErrNotRunning) {
		fmt.Fprintf(stdout, "versitygw is not running for %s\n", dir)
		return nil
	}
	if err != nil {
		return err
	}
	pid := srv.PID()
	if err := srv.Stop(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "stopped versitygw: pid %d\n", pid)
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

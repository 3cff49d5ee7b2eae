// Command lethe moves customers' data out of the hot database once their
// retention window has passed: it encrypts each due subject's rows to age
// recipients, stores them in an object-lock bucket it cannot read, and
// deletes them from the hot tables. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	_ "time/tzdata" // timezone: works on machines without a zoneinfo database

	"github.com/lethehq/lethe"
	"github.com/lethehq/lethe/archive"
)

// Exit codes, as the README documents them.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is bad input on the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// Unwrap makes every usage error a lethe.ErrBadInput, as input errors of
// the services and config errors are.
func (e *usageError) Unwrap() error { return lethe.ErrBadInput }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *cliEnv, args []string) error
}

func commands() []command {
	return []command{
		{"migrate", "apply River's and lethe's migrations; safe to run again", runMigrate},
		{"worker", "run the queue (nightly sweep, archive, requests, holds) and the HTTP API; stops on SIGTERM/SIGINT", runWorker},
		{"serve", "run only the HTTP API, metrics, health probes and River UI", runServe},
		{"sweep", "run the sweep now (--dry-run: count only; --wait: work it here and summarise)", runSweep},
		{"restore", "read a subject's archived part, open it with a master identity and write its bundle", runRestore},
		{"archive", "archive locate: where a subject's copy lies and its wrapped key; archive verify: a restore drill", runArchive},
		{"keys", "keys rewrap: wrap every subject key again to archive.recipients (master-key rotation)", runKeys},
		{"receipt", "receipt verify: check a signed receipt offline with the public key", runReceipt},
		{"request", "deletion requests: delete (queue one), show, list", runRequest},
		{"hold", "legal holds: place, release, list", runHold},
		{"status", "what is due, archived, unsettled, and the last runs", runStatus},
		{"audit", "audit verify [--anchors]: check the audit log's hash chain, and its anchors in the bucket", runAudit},
		{"ledger", "ledger replay [--confirm]: after a database restore, apply again the erasures the bucket's anchors hold", runLedger},
		{"demo", "demo seed: create synthetic customers; demo config: print their config", runDemo},
		{"bench", "measure throughput on synthetic subjects in a scratch schema, then clean up", runBench},
		{"version", "the module version, commit and Go version of this binary", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// cliEnv is what every command gets: where to write, and the environment.
type cliEnv struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	env := &cliEnv{stdout: stdout, stderr: stderr, getenv: os.Getenv}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printUsage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return exitCode(stderr, c.run(ctx, env, args[1:]))
		}
	}
	fmt.Fprintf(stderr, "lethe: unknown command %q; run lethe help for the list\n", args[0])
	return exitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: lethe <command> [flags]   (each command takes -h)")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "The config comes from --config FILE or $LETHE_CONFIG. Exit codes: 0 ok, 1 failure, 2 usage or config error.")
}

// subcommand is one verb of a command group, such as hold place.
type subcommand struct {
	name string
	run  func(ctx context.Context, env *cliEnv, args []string) error
}

// dispatch runs the subcommand args[0] of group.
func dispatch(ctx context.Context, env *cliEnv, group string, args []string, subs ...subcommand) error {
	names := make([]string, len(subs))
	for i, sc := range subs {
		names[i] = sc.name
		if len(args) > 0 && args[0] == sc.name {
			return sc.run(ctx, env, args[1:])
		}
	}
	if len(args) == 0 {
		return usagef("%s: usage: lethe %s %s [flags]", group, group, strings.Join(names, "|"))
	}
	return usagef("%s: unknown subcommand %q: use %s", group, args[0], strings.Join(names, ", "))
}

// exitCode prints err on one line and maps it to an exit code.
func exitCode(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	switch {
	case errors.Is(err, lethe.ErrBadInput):
		if problems := leaves(err); len(problems) > 1 {
			// Several problems (a config with many mistakes): a count, then
			// one per line.
			fmt.Fprintf(stderr, "lethe: %s:\n", plural(len(problems), "problem"))
			for _, p := range problems {
				fmt.Fprintln(stderr, "  "+oneLine(p.Error()))
			}
			return exitUsage
		}
		fmt.Fprintln(stderr, "lethe: "+oneLine(err.Error()))
		return exitUsage
	case errors.Is(err, errSilent):
		return exitFailure
	default:
		fmt.Fprintln(stderr, "lethe: "+oneLine(err.Error())+hint(err))
		return exitFailure
	}
}

// leaves are the errors that errors.Join put together in err, however
// deeply; err alone if it joins none. An error that wraps several for
// errors.Is (an InputError wraps ErrBadInput and its cause) is one error:
// a join is told by its message, its errors' messages one per line.
func leaves(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	errs := j.Unwrap()
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	if err.Error() != strings.Join(msgs, "\n") {
		return []error{err}
	}
	var out []error
	for _, e := range errs {
		out = append(out, leaves(e)...)
	}
	return out
}

// errSilent is a failure already reported to the user.
var errSilent = errors.New("failed")

// hint adds what to do for the failures an operator meets first.
func hint(err error) string {
	switch {
	case errors.Is(err, archive.ErrUnreachable):
		return " (is the object store running, and is archive.endpoint right?)"
	case errors.Is(err, archive.ErrNoBucket):
		return " (create the bucket with versioning and object lock, or fix archive.bucket)"
	}
	return ""
}

func oneLine(s string) string {
	out := []rune{}
	space := false
	for _, r := range s {
		if r == '\n' || r == '\r' || r == '\t' {
			r = ' '
		}
		if r == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		out = append(out, r)
	}
	return string(out)
}

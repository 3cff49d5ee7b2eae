package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/jobs"
	"github.com/lethehq/lethe/migrations"
	"github.com/lethehq/lethe/retention"
)

// common are the flags every command that reads the config takes.
type common struct {
	configPath string
	logLevel   string
	logFormat  string
}

func (c *common) register(fs *flag.FlagSet, defaultLevel string) {
	fs.StringVar(&c.configPath, "config", "", "config file (default $LETHE_CONFIG)")
	fs.StringVar(&c.logLevel, "log-level", defaultLevel, "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(env *cliEnv, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("lethe "+name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "usage: lethe %s %s\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and refuses stray arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// parseFlagsOnly parses the flags at the front of args, leaving the rest in
// fs.Args().
func parseFlagsOnly(fs *flag.FlagSet, args []string) error {
	// The flag package prints a bad flag's error and the whole usage before
	// returning; a usage error must be the one line exitCode prints, so the
	// usage is printed here, for -h only.
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.Usage()
			return err
		}
		return usagef("%s: %v (run %s -h for its flags)", fs.Name(), err, fs.Name())
	}
	return nil
}

func (c *common) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, usagef("--log-level %q: use debug, info, warn or error", c.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, usagef("--log-format %q: use text or json", c.logFormat)
	}
}

func (c *common) load(env *cliEnv) (*config.Config, error) {
	path := c.configPath
	if path == "" {
		path = env.getenv("LETHE_CONFIG")
	}
	if path == "" {
		return nil, usagef("no config: pass --config FILE or set LETHE_CONFIG")
	}
	return config.LoadFile(path)
}

// app is a loaded config with the connections most commands need.
type app struct {
	cfg    *config.Config
	logger *slog.Logger
	pool   *pgxpool.Pool
	plan   *retention.Plan
}

func (a *app) close() {
	if a.pool != nil {
		a.pool.Close()
	}
}

// open loads the config, connects to the database, checks that it is
// migrated and, if plan is set, compiles the config against the catalog.
func (c *common) open(ctx context.Context, env *cliEnv, plan bool) (*app, error) {
	logger, err := c.logger(env.stderr)
	if err != nil {
		return nil, err
	}
	cfg, err := c.load(env)
	if err != nil {
		return nil, err
	}
	a := &app{cfg: cfg, logger: logger}
	if a.pool, err = connect(ctx, cfg); err != nil {
		return nil, err
	}
	if err := migrations.Check(ctx, a.pool); err != nil {
		a.close()
		return nil, err
	}
	if plan {
		if a.plan, err = retention.Compile(ctx, a.pool, cfg); err != nil {
			a.close()
			return nil, err
		}
	}
	return a, nil
}

// connect opens a pool and checks that the database answers.
func connect(ctx context.Context, cfg *config.Config) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.Database.URL)
	if err != nil {
		return nil, config.Errorf("database.url", "cannot be parsed: %v", redactParseError(err))
	}
	pc.MaxConns = int32(cfg.Database.MaxConns)
	pc.ConnConfig.ConnectTimeout = 10 * time.Second
	if pc.ConnConfig.RuntimeParams == nil {
		pc.ConnConfig.RuntimeParams = map[string]string{}
	}
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "lethe"
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("error connecting to the database: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach the database at %s:%d: %s (is PostgreSQL running, and is database.url right?)",
			pc.ConnConfig.Host, pc.ConnConfig.Port, pgReason(err))
	}
	return pool, nil
}

// pgReason says why a connection failed, without the connection string.
func pgReason(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message
	}
	var netErr *net.OpError
	if errors.As(err, &netErr) {
		return netErr.Err.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}

// redactParseError keeps a password in a malformed URL out of the message.
func redactParseError(err error) string {
	msg := err.Error()
	if strings.Contains(msg, "@") || strings.Contains(msg, "password") {
		return "malformed connection string"
	}
	return msg
}

// workerArchive returns the archiver with the worker's credentials, after
// checking that the bucket accepts them.
func (a *app) workerArchive(ctx context.Context) (*archive.Archiver, error) {
	arch := a.newWorkerArchive()
	if err := arch.Probe(ctx); err != nil {
		if errors.Is(err, archive.ErrAccessDenied) {
			return nil, config.Errorf("archive.credentials", "bucket %q refused them (%v): check the access key and the bucket policy", a.cfg.Archive.Bucket, rootCause(err))
		}
		return nil, err
	}
	return arch, nil
}

// newWorkerArchive returns the archive with the worker's credentials,
// unchecked.
func (a *app) newWorkerArchive() *archive.Archiver {
	ac := a.cfg.Archive
	client := archive.NewClient(archive.ClientConfig{
		Endpoint: ac.Endpoint, Region: ac.Region, PathStyle: ac.PathStyle,
		AccessKeyID: ac.Credentials.AccessKeyID, SecretAccessKey: ac.Credentials.SecretAccessKey,
		MaxConns: ac.Concurrency * a.cfg.Worker.Concurrency,
	})
	return archive.NewArchiver(client, ac.Bucket, ac.Prefix, ac.ParsedRecipients)
}

// rootCause is the innermost error's message.
func rootCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// flagSet reports whether the flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// safeText returns s as it is when every rune prints and is not a tab, and
// Go-quoted otherwise, so that a key or a name cannot move the cursor, clear
// the screen or forge a line of output.
func safeText(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// required returns a usage error for the first of the flags (name, value
// pairs) that is blank.
func required(cmd string, nameValue ...string) error {
	for i := 0; i+1 < len(nameValue); i += 2 {
		if strings.TrimSpace(nameValue[i+1]) == "" {
			return usagef("%s: --%s is required and cannot be blank", cmd, nameValue[i])
		}
	}
	return nil
}

// nonBlankSubjects returns a usage error if any --subject is blank.
func nonBlankSubjects(cmd string, subjects []string) error {
	for _, s := range subjects {
		if strings.TrimSpace(s) == "" {
			return usagef("%s: a --subject cannot be empty or only whitespace", cmd)
		}
	}
	return nil
}

// openWithQueue is open with a plan, and an insert-only job queue.
func (c *common) openWithQueue(ctx context.Context, env *cliEnv) (*app, jobs.Queue, error) {
	a, err := c.open(ctx, env, true)
	if err != nil {
		return nil, jobs.Queue{}, err
	}
	q, err := a.queue()
	if err != nil {
		a.close()
		return nil, jobs.Queue{}, err
	}
	return a, q, nil
}

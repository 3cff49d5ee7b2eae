package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/config"
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

// path is the config file's path: --config, or $LETHE_CONFIG.
func (c *common) path(env *cliEnv) string {
	if c.configPath != "" {
		return c.configPath
	}
	return env.getenv("LETHE_CONFIG")
}

func (c *common) load(env *cliEnv) (*config.Config, error) {
	path := c.path(env)
	if path == "" {
		return nil, usagef("no config: pass --config FILE or set LETHE_CONFIG")
	}
	return config.LoadFile(path)
}

// connect loads the config and connects to its database, without
// checking the schema: for the commands that create it.
func (c *common) connect(ctx context.Context, env *cliEnv) (*config.Config, *pgxpool.Pool, error) {
	cfg, err := c.load(env)
	if err != nil {
		return nil, nil, err
	}
	pool, err := app.Connect(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return cfg, pool, nil
}

// open loads the config, connects to the database, checks that it is
// migrated and, if plan is set, compiles the config against the catalog.
func (c *common) open(ctx context.Context, env *cliEnv, plan bool) (*app.App, error) {
	logger, err := c.logger(env.stderr)
	if err != nil {
		return nil, err
	}
	cfg, err := c.load(env)
	if err != nil {
		return nil, err
	}
	return app.Open(ctx, cfg, logger, app.Options{NoPlan: !plan})
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

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/request"
	"github.com/lethehq/lethe/retention"
)

func runRestore(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var subject, kind, identityPath, out string
	fs := newFlagSet(env, "restore", "--subject KEY [--kind K] --identity FILE [--out FILE] [--config FILE]")
	c.register(fs, "warn")
	fs.StringVar(&subject, "subject", "", "the subject's key, as text")
	fs.StringVar(&kind, "kind", "", "the kind of subject (default: the only kind, or default)")
	fs.StringVar(&identityPath, "identity", "", "age identity file of a master key (never give it to the worker)")
	fs.StringVar(&out, "out", "", "write the bundle here (mode 0600) instead of standard output")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkSubjectFlag("restore", subject); err != nil {
		return err
	}
	a, identities, err := c.openReader(ctx, env, "restore", identityPath)
	if err != nil {
		return err
	}
	defer a.Close()

	k, subject, err := a.Plan.Subject(ctx, a.Pool, kind, subject)
	if err != nil {
		return err
	}
	entry, err := locate(ctx, a, k, subject)
	if err != nil {
		return err
	}
	if entry.WrappedKey == nil {
		return unreadable(ctx, a, subject, entry)
	}
	tables := k.Tables()
	if entry.Part == retention.PartMinimized {
		tables = nil // one table: the one the policy minimised
	}
	res, err := archive.RestorerFromConfig(a.Config).Restore(ctx, entry.Location(), subject, tables, identities)
	if err != nil {
		return restoreError(identityPath, err)
	}

	// The bundle is staged, then the restore is audited, then the file
	// appears: no restore leaves a file without an audit entry, and an
	// audit entry of a written file means the file exists.
	var stage *staged
	if out != "" {
		if stage, err = stageFile(out, res.Plaintext); err != nil {
			return err
		}
		defer stage.discard()
	}
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	err = pgx.BeginFunc(ctx, a.Pool, func(tx pgx.Tx) error {
		return audit.Append(ctx, tx, audit.Entry{Kind: audit.KindRestore, Actor: who, SubjectHMAC: entry.SubjectHMAC,
			Detail: map[string]any{"segment": entry.Segment, "version_id": entry.VersionID, "sha256": entry.SHA256, "to_file": out != ""}})
	})
	if err != nil {
		return fmt.Errorf("error auditing the restore (nothing was written): %w", err)
	}
	if out == "" {
		_, err := env.stdout.Write(res.Plaintext)
		return err
	}
	if err := stage.commit(); err != nil {
		return err
	}
	rows := 0
	for _, r := range res.Bundle.Rows {
		rows += len(r)
	}
	fmt.Fprintf(env.stderr, "restored subject %q (%s in %s, archived %s by policy %s) to %s\n",
		subject, plural(rows, "row"), plural(len(res.Bundle.Rows), "table"), res.Bundle.ArchivedAt.Format("2006-01-02 15:04:05Z07:00"),
		res.Bundle.Policy, out)
	return nil
}

// checkSubjectFlag refuses a --subject that is missing, blank or not text.
func checkSubjectFlag(cmd, subject string) error {
	if strings.TrimSpace(subject) == "" {
		return usagef("%s: --subject is required and cannot be blank", cmd)
	}
	if !utf8.ValidString(subject) {
		return usagef("%s: --subject: a subject key must be valid UTF-8 text", cmd)
	}
	return nil
}

// locate returns the newest manifest entry of the canonical subject key, or
// an error saying that lethe never archived it (or erased it before it
// was ever archived).
func locate(ctx context.Context, a *app.App, k *retention.Kind, subject string) (*retention.Entry, error) {
	hmac := k.HMAC(subject)
	entry, err := retention.Locate(ctx, a.Pool, hmac)
	if errors.Is(err, retention.ErrNotArchived) {
		if erased, err := erasure(ctx, a, hmac); err != nil {
			return nil, err
		} else if erased != "" {
			return nil, fmt.Errorf("subject %q was %s before it was ever archived: there is no archived copy", subject, erased)
		}
		return nil, fmt.Errorf("subject %q was never archived: the manifest has no entry of it (check the key, and lethe status for what is due)", subject)
	}
	return entry, err
}

// erasure says which request erased the subject ("erased by request 12
// (ticket T) on DATE"), or "" if none did.
func erasure(ctx context.Context, a *app.App, hmac string) (string, error) {
	intake, err := a.Intake()
	if err != nil {
		return "", err
	}
	req, err := intake.Erasure(ctx, hmac)
	if errors.Is(err, request.ErrNoRequest) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	s := fmt.Sprintf("erased by deletion request %d (ticket %s)", req.ID, req.Ticket)
	if req.CompletedAt != nil {
		s += " on " + req.CompletedAt.UTC().Format(time.DateOnly)
	}
	return s, nil
}

// unreadable explains why a subject's newest copy cannot be restored: its
// key was destroyed.
func unreadable(ctx context.Context, a *app.App, subject string, e *retention.Entry) error {
	when := ""
	if e.DestroyedAt != nil {
		when = " on " + e.DestroyedAt.UTC().Format(time.DateOnly)
	}
	switch e.State {
	case retention.CopyErased:
		erased, err := erasure(ctx, a, e.SubjectHMAC)
		if err != nil {
			return err
		}
		if erased == "" {
			erased = "erased" + when
		}
		return fmt.Errorf("subject %q was %s: its key was destroyed, and no one can read its archived copy any more", subject, erased)
	case retention.CopyExpired:
		return fmt.Errorf("subject %q expired%s: its archived copy outlived archive_retain of policy %s, and its key was destroyed", subject, when, e.Policy)
	default:
		return fmt.Errorf("subject %q has no readable copy: its newest copy is %s and its key was destroyed%s", subject, e.State, when)
	}
}

// restoreError says what to do about a failed restore.
func restoreError(identityPath string, err error) error {
	switch {
	case errors.Is(err, archive.ErrAccessDenied):
		return config.Errorf("restore.credentials", "the bucket refused them (%v): check the reader's access key and the bucket policy", app.RootCause(err))
	case errors.Is(err, archive.ErrWrongIdentity):
		return fmt.Errorf("%s cannot open this subject's key: %w; use the identity of a master key that was in archive.recipients when it was archived, or since lethe keys rewrap", identityPath, err)
	}
	return err
}

// readIdentities reads the age identities in the --identity FILE that cmd
// requires.
func readIdentities(cmd, path string) ([]age.Identity, error) {
	if path == "" {
		return nil, usagef("%s: --identity FILE is required (a master key's identity: AGE-SECRET-KEY-1... lines, as age-keygen writes)", cmd)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("%s: --identity: %v", cmd, err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		// age's message can quote the offending line, which may be secret:
		// keep only where it is.
		where := "it"
		if msg := err.Error(); strings.HasPrefix(msg, "error at line ") {
			where, _, _ = strings.Cut(msg, ":")
			where = strings.TrimPrefix(where, "error at ")
		}
		return nil, usagef("%s: --identity %s: %s is not an age identity (the file must hold AGE-SECRET-KEY-1... lines, as age-keygen writes)", cmd, path, where)
	}
	return ids, nil
}

// openReader reads the master identities of cmd's --identity FILE, and
// opens lethe for reading the archive with the reader's credentials
// (restore.credentials).
func (c *common) openReader(ctx context.Context, env *cliEnv, cmd, identityPath string) (*app.App, []age.Identity, error) {
	identities, err := readIdentities(cmd, identityPath)
	if err != nil {
		return nil, nil, err
	}
	a, err := c.open(ctx, env, true)
	if err != nil {
		return nil, nil, err
	}
	if err := a.Config.ValidateRestore(); err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, identities, nil
}

// staged is a file written beside its destination, mode 0600, that appears
// under its name only on commit.
type staged struct {
	tmp, path string
}

func stageFile(path string, b []byte) (*staged, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".lethe-restore-*")
	if err != nil {
		return nil, fmt.Errorf("error writing %s: %w", path, err)
	}
	st := &staged{tmp: tmp.Name(), path: path}
	if err := tmp.Chmod(0o600); err == nil {
		_, err = tmp.Write(b)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			return st, nil
		}
	} else {
		tmp.Close()
	}
	st.discard()
	return nil, fmt.Errorf("error writing %s: %w", path, err)
}

func (s *staged) commit() error {
	if err := os.Rename(s.tmp, s.path); err != nil {
		return fmt.Errorf("error writing %s: %w", s.path, err)
	}
	s.tmp = ""
	return nil
}

// discard removes the staged file unless it was committed.
func (s *staged) discard() {
	if s.tmp != "" {
		os.Remove(s.tmp) //nolint:errcheck // best effort: a temp file
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/config"
)

func runRestore(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var subject, identityPath, out, version string
	fs := newFlagSet(env, "restore", "--subject KEY --identity FILE [--out FILE] [--version ID] [--config FILE]")
	c.register(fs, "warn")
	fs.StringVar(&subject, "subject", "", "the subject's key, as text")
	fs.StringVar(&identityPath, "identity", "", "age identity file (the private key; never give it to the worker)")
	fs.StringVar(&out, "out", "", "write the bundle here (mode 0600) instead of standard output")
	fs.StringVar(&version, "version", "", "object version to restore (default: the one the manifest names)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if strings.TrimSpace(subject) == "" {
		return usagef("restore: --subject is required and cannot be blank")
	}
	if !utf8.ValidString(subject) {
		return usagef("restore: --subject: a subject key must be valid UTF-8 text")
	}
	if identityPath == "" {
		return usagef("restore: --identity FILE is required")
	}
	identities, err := readIdentities(identityPath)
	if err != nil {
		return err
	}
	a, err := c.open(ctx, env, true)
	if err != nil {
		return err
	}
	defer a.Close()
	if err := a.Config.ValidateRestore(); err != nil {
		return err
	}

	if subject, err = a.Plan.CanonicalKey(ctx, a.Pool, subject); err != nil {
		return err
	}
	hmac := a.Plan.Hasher().HMAC(subject)
	var manifestVersion, sum string
	err = a.Pool.QueryRow(ctx, `SELECT version_id, sha256 FROM lethe.manifest WHERE subject_hmac = $1`, hmac).Scan(&manifestVersion, &sum)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("subject %q has no archive in the manifest: it was never archived, or it was deleted on request", subject)
	}
	if err != nil {
		return fmt.Errorf("error reading the manifest: %w", err)
	}
	if version == "" {
		version = manifestVersion
	} else if version != manifestVersion {
		sum = "" // another version: the manifest's checksum does not apply
	}

	rc := a.Config.Restore.Credentials
	ac := a.Config.Archive
	client := archive.NewClient(archive.ClientConfig{Endpoint: ac.Endpoint, Region: ac.Region, PathStyle: ac.PathStyle,
		AccessKeyID: rc.AccessKeyID, SecretAccessKey: rc.SecretAccessKey})
	r := archive.NewRestorer(client, ac.Bucket, ac.Prefix)
	res, err := r.Restore(ctx, hmac, subject, version, sum, a.Plan.Tables(), identities)
	switch {
	case errors.Is(err, archive.ErrAccessDenied):
		return config.Errorf("restore.credentials", "the bucket refused them (%v): check the reader's access key and the bucket policy", app.RootCause(err))
	case errors.Is(err, archive.ErrWrongIdentity):
		return fmt.Errorf("%s cannot decrypt this subject: %w; use the identity whose recipient was in archive.recipients when it was archived", identityPath, err)
	case err != nil:
		return err
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
		return audit.Append(ctx, tx, audit.Entry{Kind: audit.KindRestore, Actor: who, SubjectHMAC: hmac,
			Detail: map[string]any{"version_id": res.VersionID, "sha256": res.SHA256, "to_file": out != ""}})
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
	fmt.Fprintf(env.stderr, "restored subject %q (%d rows in %d tables, archived %s by policy %s) to %s\n",
		subject, rows, len(res.Bundle.Rows), res.Bundle.ArchivedAt.Format("2006-01-02 15:04:05Z07:00"), res.Bundle.Policy, out)
	return nil
}

func readIdentities(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("restore: --identity: %v", err)
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
		return nil, usagef("restore: --identity %s: %s is not an age identity (the file must hold AGE-SECRET-KEY-1... lines, as age-keygen writes)", path, where)
	}
	return ids, nil
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

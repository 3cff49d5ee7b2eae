package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/retention"
)

func runArchive(ctx context.Context, env *cliEnv, args []string) error {
	return dispatch(ctx, env, "archive", args,
		subcommand{"locate", runArchiveLocate},
		subcommand{"verify", runArchiveVerify})
}

func runArchiveLocate(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var subject, kind string
	var all, asJSON bool
	fs := newFlagSet(env, "archive locate", "--subject KEY [--kind K] [--json] | --all [--json] [--config FILE]")
	c.register(fs, "warn")
	fs.StringVar(&subject, "subject", "", "the subject's key, as text")
	fs.StringVar(&kind, "kind", "", "the kind of subject (default: the only kind, or default)")
	fs.BoolVar(&all, "all", false, "every manifest entry, live and erased (with --json, one JSON object per line)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if all == flagSet(fs, "subject") {
		return usagef("archive locate: give --subject KEY or --all, not both and not neither")
	}
	if !all {
		if err := checkSubjectFlag("archive locate", subject); err != nil {
			return err
		}
	}
	a, err := c.open(ctx, env, true)
	if err != nil {
		return err
	}
	defer a.Close()
	if all {
		return locateAll(ctx, env.stdout, a.Pool, asJSON)
	}
	k, subject, err := a.Plan.Subject(ctx, a.Pool, kind, subject)
	if err != nil {
		return err
	}
	entry, err := locate(ctx, a, k, subject)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(env.stdout, entry)
	}
	printEntry(env.stdout, subject, entry)
	return nil
}

// locateAll prints every manifest entry, a page at a time.
func locateAll(ctx context.Context, w io.Writer, db retention.Querier, asJSON bool) error {
	var tw *tabwriter.Writer
	if !asJSON {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SUBJECT HMAC\tSTATE\tPART\tPOLICY\tARCHIVED\tRETAIN UNTIL\tSEGMENT\tOFFSET\tLENGTH")
	}
	for after := int64(0); ; {
		entries, err := retention.Entries(ctx, db, after, 1000, false)
		if err != nil {
			return err
		}
		for i := range entries {
			e := &entries[i]
			if asJSON {
				if err := writeJSON(w, e); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", e.SubjectHMAC[:16], e.State, e.Part, e.Policy,
				e.ArchivedAt.UTC().Format(time.DateOnly), retainUntil(e.RetainUntil), e.Segment, e.Offset, e.Length)
		}
		if len(entries) < 1000 {
			break
		}
		after = entries[len(entries)-1].ID
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

func retainUntil(t *time.Time) string {
	if t == nil {
		return "until erased"
	}
	return t.UTC().Format(time.DateOnly)
}

func printEntry(w io.Writer, subject string, e *retention.Entry) {
	fmt.Fprintf(w, "subject %s: %s\n", safeText(subject), e.State)
	fmt.Fprintf(w, "  subject hmac:  %s\n", e.SubjectHMAC)
	if e.Part == retention.PartMinimized {
		fmt.Fprintf(w, "  part:          the original values of minimised columns, not the subject's rows\n")
	}
	fmt.Fprintf(w, "  policy:        %s\n", e.Policy)
	fmt.Fprintf(w, "  archived at:   %s\n", e.ArchivedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "  retain until:  %s\n", retainUntil(e.RetainUntil))
	fmt.Fprintf(w, "  segment:       %s\n", e.Segment)
	fmt.Fprintf(w, "  version:       %s\n", e.VersionID)
	fmt.Fprintf(w, "  part:          bytes %d-%d (%d bytes), sha256 %s\n", e.Offset, e.Offset+e.Length-1, e.Length, e.SHA256)
	if e.WrappedKey != nil {
		fmt.Fprintf(w, "  wrapped key:   stored (%d bytes; --json gives it in base64)\n", len(e.WrappedKey))
		return
	}
	destroyed := "destroyed"
	if e.DestroyedAt != nil {
		destroyed += " on " + e.DestroyedAt.UTC().Format(time.RFC3339)
	}
	if e.DestroyedBy != nil {
		destroyed += " (" + *e.DestroyedBy + ")"
	}
	fmt.Fprintf(w, "  wrapped key:   %s: this copy can no longer be read\n", destroyed)
}

func runArchiveVerify(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var identityPath string
	var sample int
	var asJSON bool
	fs := newFlagSet(env, "archive verify", "--identity FILE [--sample N] [--json] [--config FILE]")
	c.register(fs, "warn")
	fs.StringVar(&identityPath, "identity", "", "age identity file of a master key")
	fs.IntVar(&sample, "sample", 0, "check N random live parts instead of all of them")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if flagSet(fs, "sample") && sample < 1 {
		return usagef("archive verify: --sample %d: give a number of parts of at least 1", sample)
	}
	a, identities, err := c.openReader(ctx, env, "archive verify", identityPath)
	if err != nil {
		return err
	}
	defer a.Close()
	p := newProgress(env.stderr)
	last := time.Now()
	res, err := a.Plan.Verify(ctx, a.Pool, archive.RestorerFromConfig(a.Config), identities, sample, func(r retention.VerifyResult) {
		if time.Since(last) > 2*time.Second {
			p.statusf("verified %d of %s, %d failed", r.Checked, plural(r.Live, "part"), len(r.Failed))
			last = time.Now()
		}
	})
	p.done()
	switch {
	case errors.Is(err, archive.ErrAccessDenied):
		return config.Errorf("restore.credentials", "the bucket refused them (%v): check the reader's access key and the bucket policy", err)
	case errors.Is(err, archive.ErrWrongIdentity):
		return fmt.Errorf("%s: %w; use the identity of a master key in archive.recipients", identityPath, err)
	case err != nil:
		return err
	}
	if asJSON {
		if err := writeJSON(env.stdout, res); err != nil {
			return err
		}
	} else {
		what := "every live part"
		if sample > 0 {
			what = "a sample"
		}
		if len(res.Failed) == 0 {
			fmt.Fprintf(env.stdout, "archive verified (%s): %s in %s read, checked and opened; %d live in all\n",
				what, plural(res.Checked, "part"), plural(res.Segments, "segment"), res.Live)
		} else {
			fmt.Fprintf(env.stdout, "archive verify FAILED (%s): %d of %s did not restore\n", what, len(res.Failed), plural(res.Checked, "part"))
			for i, f := range res.Failed {
				if i == 20 {
					fmt.Fprintf(env.stdout, "  ... and %d more (--json lists them all)\n", len(res.Failed)-20)
					break
				}
				fmt.Fprintf(env.stdout, "  subject hmac %s, segment %s at %d: %s\n", f.SubjectHMAC[:16], f.Segment, f.Offset, oneLine(f.Error))
			}
		}
	}
	if len(res.Failed) > 0 {
		return errSilent
	}
	return nil
}

func runKeys(ctx context.Context, env *cliEnv, args []string) error {
	return dispatch(ctx, env, "keys", args, subcommand{"rewrap", runKeysRewrap})
}

func runKeysRewrap(ctx context.Context, env *cliEnv, args []string) error {
	var c common
	var identityPath string
	var page int
	var asJSON bool
	fs := newFlagSet(env, "keys rewrap", "--identity FILE [--page N] [--json] [--config FILE]")
	c.register(fs, "warn")
	fs.StringVar(&identityPath, "identity", "", "age identity file of the master key the subject keys are wrapped to now")
	fs.IntVar(&page, "page", 500, "keys rewrapped per transaction")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if page < 1 {
		return usagef("keys rewrap: --page %d: give at least 1", page)
	}
	identities, err := readIdentities("keys rewrap", identityPath)
	if err != nil {
		return err
	}
	a, err := c.open(ctx, env, false)
	if err != nil {
		return err
	}
	defer a.Close()
	ac := a.Config.Archive
	p := newProgress(env.stderr)
	last := time.Now()
	res, err := retention.Rewrap(ctx, a.Pool, identities, ac.ParsedRecipients, archive.MastersFingerprint(ac.Recipients), page,
		func(r retention.RewrapResult) {
			if time.Since(last) > 2*time.Second {
				p.statusf("rewrapped %s, %d left, %d not opened", plural(r.Rewrapped, "key"), r.Left, r.Unopened)
				last = time.Now()
			}
		})
	p.done()
	if errors.Is(err, retention.ErrNoKeyOpened) {
		return fmt.Errorf("keys rewrap: %s opens none of the %s that need rewrapping; nothing was changed: give the identity of the master key they are wrapped to now",
			identityPath, plural(res.Unopened, "key"))
	}
	if err != nil {
		if res != nil && res.Rewrapped > 0 {
			return fmt.Errorf("%w (%s were rewrapped before it; run lethe keys rewrap again to resume)", err, plural(res.Rewrapped, "key"))
		}
		return err
	}
	if asJSON {
		if err := writeJSON(env.stdout, res); err != nil {
			return err
		}
	} else if res.Rewrapped == 0 && res.Unopened == 0 {
		fmt.Fprintln(env.stdout, "every stored key is already wrapped to archive.recipients: nothing to do")
	} else {
		fmt.Fprintf(env.stdout, "rewrapped %s to archive.recipients (%s); the bucket was not touched\n",
			plural(res.Rewrapped, "subject key"), plural(len(ac.Recipients), "recipient"))
	}
	if res.Unopened > 0 {
		fmt.Fprintf(env.stderr, "lethe: %s could not be opened with %s and are still wrapped to the old masters: run lethe keys rewrap again with the identity they are wrapped to\n",
			plural(res.Unopened, "key"), identityPath)
		return errSilent
	}
	return nil
}

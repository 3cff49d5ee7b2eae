package retention_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/internal/demo"
	"github.com/lethehq/lethe/internal/lethetest"
	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/retention"
)

var errInjected = errors.New("injected")

func TestSweepArchivesExactlyTheDueSubjects(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	e := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := e.SeedCRM(t, 12)
	e.Sweeper.BatchSize = 5 // several batches and pages per policy
	before := e.CRMSnapshot(t)

	res := e.MustSweep(t)
	require.Equal(t, 12, res.Claimed["former"])
	require.Equal(t, 12, res.Claimed["spam"])
	require.Equal(t, 6, res.Batches) // 3 pages of 5, 5, 2 per policy

	after := e.CRMSnapshot(t)
	for _, k := range append(groups["due"], groups["spam"]...) {
		require.NotContains(t, after, k, "due subject %q still has rows", k)
	}
	for _, k := range append(groups["recent"], groups["active"]...) {
		require.Equal(t, before[k], after[k], "subject %q that was not due changed", k)
	}

	// One segment per batch of archived subjects (12 in batches of 5),
	// each put once and committed; a manifest entry with a live key per
	// archived subject; nothing for destroyed subjects.
	man := e.Manifest(t)
	require.Len(t, man, 12)
	for _, k := range groups["due"] {
		require.Equal(t, retention.CopyArchived, man[e.Kind.HMAC(k)])
	}
	vers := e.Versions(t)
	require.Len(t, vers, 3, "one segment per batch")
	segs := e.Segments(t)
	for name, vs := range vers {
		require.Equal(t, "committed", segs[name].State)
		require.Equal(t, []string{segs[name].VersionID}, vs)
		for _, k := range groups["due"] {
			require.NotContains(t, name, k)
			require.NotContains(t, name, e.Kind.HMAC(k)[:12])
		}
	}
	e.RequireNothingUnnamedReadable(t)

	// Each bundle restores to exactly the rows the subject had.
	for _, k := range groups["due"] {
		got := e.Restore(t, k)
		for _, table := range lethetest.CRMTables {
			require.Contains(t, got, table, "bundle of %q lacks table %s", k, table)
			require.Equal(t, nonNil(before[k][table]), nonNil(got[table]), "subject %q table %s", k, table)
		}
	}

	// The audit log has one archive entry per archived subject and one
	// destroy entry, with its row counts, per destroyed subject.
	counts := map[string]int{}
	rows, err := e.DB.Pool.Query(ctx, `SELECT kind, count(*) FROM lethe.audit_log GROUP BY kind`)
	require.NoError(t, err)
	for rows.Next() {
		var kind string
		var n int
		require.NoError(t, rows.Scan(&kind, &n))
		counts[kind] = n
	}
	require.NoError(t, rows.Err())
	require.Equal(t, 12, counts[audit.KindArchive])
	require.Equal(t, 12, counts[audit.KindDestroy])
	require.Equal(t, 1, counts[audit.KindRun])
	spam := groups["spam"][3]
	var destroyedLines int
	require.NoError(t, e.DB.Pool.QueryRow(ctx, `SELECT (detail::jsonb -> 'rows' ->> 'crm.lines')::int FROM lethe.audit_log WHERE kind = 'destroy' AND subject_hmac = $1`,
		e.Kind.HMAC(spam)).Scan(&destroyedLines))
	require.Equal(t, len(before[spam]["crm.lines"]), destroyedLines)
	require.Equal(t, 0, e.Count(t, `SELECT count(*) FROM lethe.work_item`))

	// A second sweep over the same state does nothing.
	res = e.MustSweep(t)
	require.Zero(t, res.Batches)
	require.Equal(t, man, e.Manifest(t))
	require.Equal(t, vers, e.Versions(t))
	require.Equal(t, after, e.CRMSnapshot(t))

	v, err := audit.Verify(ctx, e.DB.Pool)
	require.NoError(t, err)
	require.True(t, v.OK, v.Problem)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func TestCrashAtEveryStepConverges(t *testing.T) {
	t.Parallel()

	points := []string{retention.FaultBeforePut, retention.FaultAfterPut, retention.FaultDuringDelete,
		retention.FaultBeforeCommit, retention.FaultAfterCommit}
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			t.Parallel()

			e := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
			groups := e.SeedCRM(t, 6)
			before := e.CRMSnapshot(t)
			var once sync.Once
			retention.SetFault(e.Mover, func(p string) error {
				var err error
				if p == point {
					once.Do(func() { err = errInjected })
				}
				return err
			})

			_, err := e.Sweep(t)
			require.ErrorIs(t, err, errInjected)

			// After the crash: every due subject is whole in the hot tables
			// or archived, never torn; every object is named by the
			// manifest or belongs to a subject still claimed.
			requireWholeOrArchived(t, e, before, append(groups["due"], groups["spam"]...))
			e.RequireNothingUnnamedReadable(t)

			// Running again converges.
			res := e.MustSweep(t)
			require.GreaterOrEqual(t, res.Recovered, 0)
			after := e.CRMSnapshot(t)
			for _, k := range append(groups["due"], groups["spam"]...) {
				require.NotContains(t, after, k)
			}
			man := e.Manifest(t)
			require.Len(t, man, len(groups["due"]))
			for _, k := range groups["due"] {
				require.Equal(t, retention.CopyArchived, man[e.Kind.HMAC(k)])
				got := e.Restore(t, k)
				for _, table := range lethetest.CRMTables {
					require.Equal(t, nonNil(before[k][table]), nonNil(got[table]))
				}
			}
			e.RequireNothingUnnamedReadable(t)
			// A crash between recording the segment and the commit leaves
			// it uncommitted (put or not: the worker cannot tell): status
			// reports it, as garbage for the lifecycle rule.
			st, err := retention.Status(context.Background(), e.DB.Pool, e.Plan, 1)
			require.NoError(t, err)
			switch point {
			case retention.FaultBeforePut, retention.FaultAfterPut, retention.FaultDuringDelete, retention.FaultBeforeCommit:
				require.Equal(t, int64(1), st.Uncommitted.Count, "the segment recorded before the crash")
				require.Positive(t, st.Uncommitted.Bytes)
			default:
				require.Zero(t, st.Uncommitted.Count)
			}
			require.Equal(t, int64(len(groups["due"])), st.Keys[retention.CopyArchived])
			require.Equal(t, 0, e.Count(t, `SELECT count(*) FROM lethe.work_item`))
			var entries, subjects int
			require.NoError(t, e.DB.Pool.QueryRow(context.Background(),
				`SELECT count(*), count(DISTINCT subject_hmac) FROM lethe.audit_log WHERE kind = 'archive'`).Scan(&entries, &subjects))
			require.Equal(t, len(groups["due"]), subjects)
			require.Equal(t, subjects, entries, "a subject was archived twice")
			v, err := audit.Verify(context.Background(), e.DB.Pool)
			require.NoError(t, err)
			require.True(t, v.OK, v.Problem)
		})
	}
}

// requireWholeOrArchived checks that each subject is either whole in the hot
// tables, exactly as before, or gone from all of them with (for archived
// subjects) a live manifest entry that restores.
func requireWholeOrArchived(t *testing.T, e *lethetest.Env, before lethetest.Snapshot, keys []string) {
	t.Helper()
	now := e.CRMSnapshot(t)
	man := e.Manifest(t)
	for _, k := range keys {
		if _, hot := now[k]; hot {
			require.Equal(t, before[k], now[k], "subject %q is torn: some of its rows are gone", k)
			continue
		}
		if strings.HasPrefix(k, "spam") {
			continue // destroyed, as its policy says
		}
		require.Equal(t, retention.CopyArchived, man[e.Kind.HMAC(k)], "subject %q left the hot tables without a manifest entry", k)
		e.Restore(t, k)
	}
}

func TestConcurrentSweepsArchiveEachSubjectOnce(t *testing.T) {
	t.Parallel()

	e := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := e.SeedCRM(t, 30)
	e.Sweeper.BatchSize = 4

	var wg sync.WaitGroup
	results := make([]*retention.SweepResult, 3)
	errs := make([]error, 3)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.Sweep(t)
		}()
	}
	wg.Wait()
	claimed := 0
	for i := range results {
		require.NoError(t, errs[i])
		claimed += results[i].Claimed["former"]
	}
	require.Equal(t, len(groups["due"]), claimed, "each due subject must be claimed by exactly one sweep")

	require.Len(t, e.Manifest(t), len(groups["due"]))
	require.Equal(t, len(groups["due"]), e.Count(t, `SELECT count(*) FROM lethe.manifest`), "one entry per subject")
	e.RequireNothingUnnamedReadable(t)
	var entries, subjects int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(),
		`SELECT count(*), count(DISTINCT subject_hmac) FROM lethe.audit_log WHERE kind = 'archive'`).Scan(&entries, &subjects))
	require.Equal(t, len(groups["due"]), entries)
	require.Equal(t, len(groups["due"]), subjects)
}

func TestRowsChangedWhileArchivingAreNotDeleted(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	e := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := e.SeedCRM(t, 4)
	changed := groups["due"][0] // has a note (i = 0 is even)
	added := groups["due"][1]
	// Between the put and the commit, the application edits one subject and
	// adds a row to another.
	var once sync.Once
	retention.SetFault(e.Mover, func(p string) error {
		if p == retention.FaultAfterPut {
			once.Do(func() {
				_, err := e.DB.Pool.Exec(ctx, `UPDATE crm.notes SET body = 'edited meanwhile' WHERE customer_code = $1`, changed)
				require.NoError(t, err)
				_, err = e.DB.Pool.Exec(ctx, `INSERT INTO crm.notes (customer_code, body) VALUES ($1, 'added meanwhile')`, added)
				require.NoError(t, err)
			})
		}
		return nil
	})
	beforeEdit := e.CRMSnapshot(t)
	_, err := e.Sweep(t)
	require.Error(t, err, "the batch must report the subjects it left for later")

	now := e.CRMSnapshot(t)
	require.Contains(t, now, changed, "an edited subject must not be deleted on the strength of a stale copy")
	require.Contains(t, now, added, "a subject that gained a row must not be deleted")
	require.Len(t, now[added]["crm.notes"], len(beforeEdit[added]["crm.notes"])+1)
	for _, k := range groups["due"][2:] {
		require.NotContains(t, now, k)
	}
	e.RequireNothingUnnamedReadable(t)

	// The next run archives the current rows.
	retention.SetFault(e.Mover, nil)
	e.MustSweep(t)
	after := e.CRMSnapshot(t)
	require.NotContains(t, after, changed)
	require.NotContains(t, after, added)
	got := e.Restore(t, changed)
	require.Equal(t, now[changed]["crm.notes"], got["crm.notes"])
	require.Contains(t, strings.Join(got["crm.notes"], ""), "edited meanwhile")
	got = e.Restore(t, added)
	require.Equal(t, now[added]["crm.notes"], got["crm.notes"])
	for _, k := range []string{changed, added} {
		// The stale part stays in the first segment, named by no entry: its
		// key was never stored.
		require.Equal(t, 1, e.Count(t, `SELECT count(*) FROM lethe.manifest WHERE subject_hmac = $1`, e.Kind.HMAC(k)))
	}
	e.RequireNothingUnnamedReadable(t)
	require.Equal(t, 0, e.Count(t, `SELECT count(*) FROM lethe.work_item`))
}

func TestSubjectNoLongerDueIsReleased(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	e := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := e.SeedCRM(t, 3)
	back := groups["due"][1]
	var once sync.Once
	retention.SetFault(e.Mover, func(p string) error {
		var err error
		if p == retention.FaultAfterPut {
			once.Do(func() { err = errInjected })
		}
		return err
	})
	_, err := e.Sweep(t)
	require.ErrorIs(t, err, errInjected)
	require.Len(t, e.Versions(t), 1, "the crash came after the put")

	// The customer comes back before the next run.
	_, err = e.DB.Pool.Exec(ctx, `UPDATE crm.customers SET status = 'active' WHERE code = $1`, back)
	require.NoError(t, err)
	retention.SetFault(e.Mover, nil)
	e.MustSweep(t)

	// Its part stays in the segment put before the crash, which never
	// committed: nobody can read it, and status counts it as garbage.
	require.Contains(t, e.CRMSnapshot(t), back)
	require.NotContains(t, e.Manifest(t), e.Kind.HMAC(back))
	require.Len(t, e.Manifest(t), len(groups["due"])-1)
	require.Len(t, e.Versions(t), 2, "the abandoned segment and the one that committed")
	st, err := retention.Status(ctx, e.DB.Pool, e.Plan, 1)
	require.NoError(t, err)
	require.Equal(t, int64(1), st.Uncommitted.Count)
	require.Equal(t, int64(1), st.Segments.Count)
	require.Equal(t, 0, e.Count(t, `SELECT count(*) FROM lethe.work_item`))
	e.RequireNothingUnnamedReadable(t)
}

func TestPersonalDataStaysOutOfLetheOutputs(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	e := lethetest.NewFunc(t, func(db *testenv.DB) {
		_, err := demo.Seed(ctx, db.Pool, demo.Options{Schema: "demo", Subjects: 400})
		require.NoError(t, err)
	}, demo.Config("demo"))
	personal, err := demo.PersonalValues(ctx, e.DB.Pool, "demo", 400)
	require.NoError(t, err)
	require.NotEmpty(t, personal)
	e.MustSweep(t)
	require.NotEmpty(t, e.Manifest(t), "the sweep must have archived someone for this test to mean anything")

	// Everything lethe wrote, except the ciphertext.
	var dump strings.Builder
	for _, q := range []string{
		`SELECT string_agg(to_jsonb(a)::text, E'\n') FROM lethe.audit_log a`,
		`SELECT string_agg(to_jsonb(m)::text, E'\n') FROM lethe.manifest m`,
		`SELECT string_agg(to_jsonb(r)::text, E'\n') FROM lethe.run r`,
		`SELECT string_agg(to_jsonb(b)::text, E'\n') FROM lethe.batch b`,
		`SELECT string_agg(to_jsonb(w)::text, E'\n') FROM lethe.work_item w`,
		`SELECT string_agg(to_jsonb(s)::text, E'\n') FROM lethe.segment s`,
	} {
		var s *string
		require.NoError(t, e.DB.Pool.QueryRow(ctx, q).Scan(&s))
		if s != nil {
			dump.WriteString(*s)
		}
	}
	for key := range e.Versions(t) {
		dump.WriteString(key + "\n")
	}
	dump.WriteString(e.Logs.String())
	out := dump.String()
	require.NotEmpty(t, e.Logs.String())
	for _, v := range personal {
		require.NotContains(t, out, v, "personal value found in lethe's own output")
	}
}

// Paging through due subjects must visit each once even when many share one
// clock value and keys sort differently as text than as numbers.
func TestSweepPagesThroughTiesAndNumericKeys(t *testing.T) {
	t.Parallel()

	e := lethetest.New(t, `
		CREATE TABLE ties (id bigint PRIMARY KEY, gone date NOT NULL);
		CREATE INDEX ON ties (gone);
		INSERT INTO ties SELECT g, DATE '2001-01-01' + (g % 3) FROM generate_series(1, 57) g;`, `
subject:
  table: ties
  key: id
policies:
  - name: old
    clock: gone
    retain: 365d
`)
	e.Sweeper.BatchSize = 4
	res := e.MustSweep(t)
	require.Equal(t, 57, res.Claimed["old"])
	require.Len(t, e.Manifest(t), 57)
	var left int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM ties`).Scan(&left))
	require.Zero(t, left)
}

package retention_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/audit"
	"github.com/lethehq/lethe/internal/demo"
	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/retention"
)

func TestSweepArchivesExactlyTheDueSubjects(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	e := setup(t, withSQL(t, crmSchema), crmConfig)
	groups := e.seedCRM(t, 12)
	e.sweeper.BatchSize = 5 // several batches and pages per policy
	before := e.crmSnapshot(t)

	res := e.mustSweep(t)
	require.Equal(t, 12, res.Claimed["former"])
	require.Equal(t, 12, res.Claimed["spam"])
	require.Equal(t, 6, res.Batches) // 3 pages of 5, 5, 2 per policy

	after := e.crmSnapshot(t)
	for _, k := range append(groups["due"], groups["spam"]...) {
		require.NotContains(t, after, k, "due subject %q still has rows", k)
	}
	for _, k := range append(groups["recent"], groups["active"]...) {
		require.Equal(t, before[k], after[k], "subject %q that was not due changed", k)
	}

	// One object per archived subject, one version each, the one the
	// manifest names; nothing for destroyed subjects.
	man := e.manifest(t)
	vers := e.versions(t)
	require.Len(t, man, 12)
	require.Len(t, vers, 12)
	for _, k := range groups["due"] {
		h := e.plan.Hasher().HMAC(k)
		require.Contains(t, man, h)
		require.Equal(t, []string{man[h]}, vers[e.arch.ObjectKey(h)])
		require.NotContains(t, e.arch.ObjectKey(h), k)
	}

	// Each bundle restores to exactly the rows the subject had.
	for _, k := range groups["due"] {
		got := e.restore(t, k)
		for _, table := range crmTables {
			require.Contains(t, got, table, "bundle of %q lacks table %s", k, table)
			require.Equal(t, nonNil(before[k][table]), nonNil(got[table]), "subject %q table %s", k, table)
		}
	}

	// The audit log has one archive entry per archived subject and one
	// destroy entry, with its row counts, per destroyed subject.
	counts := map[string]int{}
	rows, err := e.db.Pool.Query(ctx, `SELECT kind, count(*) FROM lethe.audit_log GROUP BY kind`)
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
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT (detail::jsonb -> 'rows' ->> 'crm.lines')::int FROM lethe.audit_log WHERE kind = 'destroy' AND subject_hmac = $1`,
		e.plan.Hasher().HMAC(spam)).Scan(&destroyedLines))
	require.Equal(t, len(before[spam]["crm.lines"]), destroyedLines)
	require.Equal(t, 0, e.workItems(t))

	// A second sweep over the same state does nothing.
	res = e.mustSweep(t)
	require.Zero(t, res.Batches)
	require.Equal(t, man, e.manifest(t))
	require.Equal(t, vers, e.versions(t))
	require.Equal(t, after, e.crmSnapshot(t))

	v, err := audit.Verify(ctx, e.db.Pool)
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

			e := setup(t, withSQL(t, crmSchema), crmConfig)
			groups := e.seedCRM(t, 6)
			before := e.crmSnapshot(t)
			var once sync.Once
			e.mover.Fault = func(p string) error {
				var err error
				if p == point {
					once.Do(func() { err = errInjected })
				}
				return err
			}

			_, err := e.sweep(t)
			require.ErrorIs(t, err, errInjected)

			// After the crash: every due subject is whole in the hot tables
			// or archived, never torn; every object is named by the
			// manifest or belongs to a subject still claimed.
			e.requireWholeOrArchived(t, before, append(groups["due"], groups["spam"]...))
			e.requireNoOrphans(t)

			// Running again converges.
			res := e.mustSweep(t)
			require.GreaterOrEqual(t, res.Recovered, 0)
			after := e.crmSnapshot(t)
			for _, k := range append(groups["due"], groups["spam"]...) {
				require.NotContains(t, after, k)
			}
			man := e.manifest(t)
			vers := e.versions(t)
			require.Len(t, man, len(groups["due"]))
			require.Len(t, vers, len(groups["due"]))
			for _, k := range groups["due"] {
				h := e.plan.Hasher().HMAC(k)
				require.Equal(t, []string{man[h]}, vers[e.arch.ObjectKey(h)], "subject %q must have exactly the manifest's version", k)
				got := e.restore(t, k)
				for _, table := range crmTables {
					require.Equal(t, nonNil(before[k][table]), nonNil(got[table]))
				}
			}
			require.Equal(t, 0, e.workItems(t))
			var entries, subjects int
			require.NoError(t, e.db.Pool.QueryRow(context.Background(),
				`SELECT count(*), count(DISTINCT subject_hmac) FROM lethe.audit_log WHERE kind = 'archive'`).Scan(&entries, &subjects))
			require.Equal(t, len(groups["due"]), subjects)
			require.Equal(t, subjects, entries, "a subject was archived twice")
			v, err := audit.Verify(context.Background(), e.db.Pool)
			require.NoError(t, err)
			require.True(t, v.OK, v.Problem)
		})
	}
}

// requireWholeOrArchived checks that each subject is either whole in the hot
// tables, exactly as before, or gone from all of them with (for archived
// subjects) a manifest entry and its object.
func (e *env) requireWholeOrArchived(t *testing.T, before snapshot, keys []string) {
	t.Helper()
	now := e.crmSnapshot(t)
	man := e.manifest(t)
	vers := e.versions(t)
	for _, k := range keys {
		if _, hot := now[k]; hot {
			require.Equal(t, before[k], now[k], "subject %q is torn: some of its rows are gone", k)
			continue
		}
		if strings.HasPrefix(k, "spam") {
			continue // destroyed, as its policy says
		}
		h := e.plan.Hasher().HMAC(k)
		require.Contains(t, man, h, "subject %q left the hot tables without a manifest entry", k)
		require.Contains(t, vers[e.arch.ObjectKey(h)], man[h], "subject %q left the hot tables without its object", k)
	}
}

// requireNoOrphans checks that every object in the bucket is named by the
// manifest or belongs to a subject with an open work item.
func (e *env) requireNoOrphans(t *testing.T) {
	t.Helper()
	rows, err := e.db.Pool.Query(context.Background(), `SELECT subject_hmac FROM lethe.manifest UNION SELECT subject_hmac FROM lethe.work_item`)
	require.NoError(t, err)
	known, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	names := map[string]bool{}
	for _, h := range known {
		names[e.arch.ObjectKey(h)] = true
	}
	for key := range e.versions(t) {
		require.True(t, names[key], "object %s is known to neither the manifest nor a work item", key)
	}
}

func TestConcurrentSweepsArchiveEachSubjectOnce(t *testing.T) {
	t.Parallel()

	e := setup(t, withSQL(t, crmSchema), crmConfig)
	groups := e.seedCRM(t, 30)
	e.sweeper.BatchSize = 4

	var wg sync.WaitGroup
	results := make([]*retention.SweepResult, 3)
	errs := make([]error, 3)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.sweep(t)
		}()
	}
	wg.Wait()
	claimed := 0
	for i := range results {
		require.NoError(t, errs[i])
		claimed += results[i].Claimed["former"]
	}
	require.Equal(t, len(groups["due"]), claimed, "each due subject must be claimed by exactly one sweep")

	man := e.manifest(t)
	vers := e.versions(t)
	require.Len(t, man, len(groups["due"]))
	for _, k := range groups["due"] {
		h := e.plan.Hasher().HMAC(k)
		require.Equal(t, []string{man[h]}, vers[e.arch.ObjectKey(h)])
	}
	var entries, subjects int
	require.NoError(t, e.db.Pool.QueryRow(context.Background(),
		`SELECT count(*), count(DISTINCT subject_hmac) FROM lethe.audit_log WHERE kind = 'archive'`).Scan(&entries, &subjects))
	require.Equal(t, len(groups["due"]), entries)
	require.Equal(t, len(groups["due"]), subjects)
}

func TestRowsChangedWhileArchivingAreNotDeleted(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	e := setup(t, withSQL(t, crmSchema), crmConfig)
	groups := e.seedCRM(t, 4)
	changed := groups["due"][0] // has a note (i = 0 is even)
	added := groups["due"][1]
	// Between the put and the commit, the application edits one subject and
	// adds a row to another.
	var once sync.Once
	e.mover.Fault = func(p string) error {
		if p == retention.FaultAfterPut {
			once.Do(func() {
				_, err := e.db.Pool.Exec(ctx, `UPDATE crm.notes SET body = 'edited meanwhile' WHERE customer_code = $1`, changed)
				require.NoError(t, err)
				_, err = e.db.Pool.Exec(ctx, `INSERT INTO crm.notes (customer_code, body) VALUES ($1, 'added meanwhile')`, added)
				require.NoError(t, err)
			})
		}
		return nil
	}
	beforeEdit := e.crmSnapshot(t)
	_, err := e.sweep(t)
	require.Error(t, err, "the batch must report the subjects it left for later")

	now := e.crmSnapshot(t)
	require.Contains(t, now, changed, "an edited subject must not be deleted on the strength of a stale copy")
	require.Contains(t, now, added, "a subject that gained a row must not be deleted")
	require.Len(t, now[added]["crm.notes"], len(beforeEdit[added]["crm.notes"])+1)
	for _, k := range groups["due"][2:] {
		require.NotContains(t, now, k)
	}
	e.requireNoOrphans(t)

	// The next run archives the current rows.
	e.mover.Fault = nil
	e.mustSweep(t)
	after := e.crmSnapshot(t)
	require.NotContains(t, after, changed)
	require.NotContains(t, after, added)
	got := e.restore(t, changed)
	require.Equal(t, now[changed]["crm.notes"], got["crm.notes"])
	require.Contains(t, strings.Join(got["crm.notes"], ""), "edited meanwhile")
	got = e.restore(t, added)
	require.Equal(t, now[added]["crm.notes"], got["crm.notes"])
	man := e.manifest(t)
	vers := e.versions(t)
	for _, k := range []string{changed, added} {
		h := e.plan.Hasher().HMAC(k)
		require.Equal(t, []string{man[h]}, vers[e.arch.ObjectKey(h)], "the stale version must be pruned")
	}
	require.Equal(t, 0, e.workItems(t))
}

func TestSubjectNoLongerDueIsReleasedWithItsObject(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	e := setup(t, withSQL(t, crmSchema), crmConfig)
	groups := e.seedCRM(t, 3)
	back := groups["due"][1]
	var once sync.Once
	e.mover.Fault = func(p string) error {
		var err error
		if p == retention.FaultAfterPut {
			once.Do(func() { err = errInjected })
		}
		return err
	}
	_, err := e.sweep(t)
	require.ErrorIs(t, err, errInjected)
	require.NotEmpty(t, e.versions(t), "the crash came after the puts")

	// The customer comes back before the next run.
	_, err = e.db.Pool.Exec(ctx, `UPDATE crm.customers SET status = 'active' WHERE code = $1`, back)
	require.NoError(t, err)
	e.mover.Fault = nil
	e.mustSweep(t)

	require.Contains(t, e.crmSnapshot(t), back)
	require.NotContains(t, e.versions(t), e.arch.ObjectKey(e.plan.Hasher().HMAC(back)), "the object put for a subject that is no longer due must be removed")
	require.NotContains(t, e.manifest(t), e.plan.Hasher().HMAC(back))
	require.Len(t, e.manifest(t), len(groups["due"])-1)
	require.Equal(t, 0, e.workItems(t))
	e.requireNoOrphans(t)
}

func TestPersonalDataStaysOutOfLetheOutputs(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	e := setup(t, func(db *testenv.DB) {
		_, err := demo.Seed(ctx, db.Pool, demo.Options{Schema: "demo", Subjects: 400})
		require.NoError(t, err)
	}, demo.Config("demo"))
	personal, err := demo.PersonalValues(ctx, e.db.Pool, "demo", 400)
	require.NoError(t, err)
	require.NotEmpty(t, personal)
	e.mustSweep(t)
	require.NotEmpty(t, e.manifest(t), "the sweep must have archived someone for this test to mean anything")

	// Everything lethe wrote, except the ciphertext.
	var dump strings.Builder
	for _, q := range []string{
		`SELECT string_agg(to_jsonb(a)::text, E'\n') FROM lethe.audit_log a`,
		`SELECT string_agg(to_jsonb(m)::text, E'\n') FROM lethe.manifest m`,
		`SELECT string_agg(to_jsonb(r)::text, E'\n') FROM lethe.run r`,
		`SELECT string_agg(to_jsonb(b)::text, E'\n') FROM lethe.batch b`,
		`SELECT string_agg(to_jsonb(w)::text, E'\n') FROM lethe.work_item w`,
	} {
		var s *string
		require.NoError(t, e.db.Pool.QueryRow(ctx, q).Scan(&s))
		if s != nil {
			dump.WriteString(*s)
		}
	}
	for key := range e.versions(t) {
		dump.WriteString(key + "\n")
	}
	dump.WriteString(e.logs.String())
	out := dump.String()
	require.NotEmpty(t, e.logs.String())
	for _, v := range personal {
		require.NotContains(t, out, v, "personal value found in lethe's own output")
	}
}

// Paging through due subjects must visit each once even when many share one
// clock value and keys sort differently as text than as numbers.
func TestSweepPagesThroughTiesAndNumericKeys(t *testing.T) {
	t.Parallel()

	e := setup(t, withSQL(t, `
		CREATE TABLE ties (id bigint PRIMARY KEY, gone date NOT NULL);
		CREATE INDEX ON ties (gone);
		INSERT INTO ties SELECT g, DATE '2001-01-01' + (g % 3) FROM generate_series(1, 57) g;`), `
subject:
  table: ties
  key: id
policies:
  - name: old
    clock: gone
    retain: 365d
`)
	e.sweeper.BatchSize = 4
	res := e.mustSweep(t)
	require.Equal(t, 57, res.Claimed["old"])
	require.Len(t, e.manifest(t), 57)
	var left int
	require.NoError(t, e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM ties`).Scan(&left))
	require.Zero(t, left)
}

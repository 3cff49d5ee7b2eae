package retention_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/internal/lethetest"
	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/retention"
)

func TestCompileNamesTheKeyAtFault(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	db := testenv.NewDB(t)
	_, err := db.Pool.Exec(ctx, lethetest.CRMSchema+`
		CREATE TABLE crm.loose (id bigint, customer_code text);
		CREATE VIEW crm.customer_view AS SELECT * FROM crm.customers;`)
	require.NoError(t, err)
	bucket := testenv.NewBucket(t)
	recipient := testenv.NewIdentity(t).Recipient().String()

	tests := []struct {
		name    string
		replace [2]string // in lethetest.CRMConfig
		key     string    // the key the error must name
		more    string    // and a fragment of the message
	}{
		{"unknown root table", [2]string{"table: crm.customers", "table: crm.custmers"}, "subject.table", "crm.custmers"},
		{"view as root", [2]string{"table: crm.customers", "table: crm.customer_view"}, "subject.table", "not a table"},
		{"unknown related table", [2]string{"table: crm.lines", "table: crm.lynes"}, "subject.related[0].related[0].table", "crm.lynes"},
		{"unknown key column", [2]string{"key: code", "key: kode"}, "subject.key", "kode"},
		{"key without unique index", [2]string{"key: code", "key: status"}, "subject.key", "unique"},
		{"unknown child join column", [2]string{"join: account_id = id", "join: acount_id = id"}, "subject.related[0].related[0].join", "acount_id"},
		{"unknown parent join column", [2]string{"join: account_id = id", "join: account_id = ident"}, "subject.related[0].related[0].join", "ident"},
		{"join on a non-unique parent column", [2]string{"join: account_id = id", "join: account_id = customer_code"}, "subject.related[0].related[0].join", "unique"},
		{"join of mismatched types", [2]string{"join: customer_code = code", "join: customer_code = created_at"}, "subject.related[0].join", ""},
		{"unknown clock column", [2]string{"clock: closed_at", "clock: closed"}, "policies[0].clock", "closed"},
		{"clock of the wrong type", [2]string{"clock: closed_at", "clock: status"}, "policies[0].clock", "timestamptz"},
		{"where that does not parse", [2]string{`where: "status = 'closed'"`, `where: "status = = 'closed'"`}, "policies[0].where", "syntax error"},
		{"where on an unknown column", [2]string{`where: "status = 'closed'"`, `where: "stat = 'closed'"`}, "policies[0].where", "stat"},
		{"where that is not boolean", [2]string{`where: "status = 'closed'"`, `where: "status"`}, "policies[0].where", "boolean"},
		{"protect that does not parse", [2]string{`protect: "status = 'active'"`, `protect: "status = "`}, "requests.protect", ""},
		{"where injecting a statement", [2]string{`where: "status = 'closed'"`, `where: "status = 'closed'); DROP TABLE crm.notes; --"`}, "policies[0].where", ""},
		{"where hiding a statement in a function call", [2]string{`where: "status = 'closed'"`, `where: "status = 'closed' AND pg_sleep(0) IS NOT NULL); DROP TABLE crm.notes; SELECT (1"`}, "policies[0].where", ""},
		{"where with a data-modifying subquery", [2]string{`where: "status = 'closed'"`, `where: "EXISTS (WITH d AS (DELETE FROM crm.notes RETURNING 1) SELECT 1 FROM d)"`}, "policies[0].where", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			require.Contains(t, lethetest.CRMConfig, tt.replace[0])
			fragment := strings.Replace(lethetest.CRMConfig, tt.replace[0], tt.replace[1], 1)
			cfg, err := config.Load(strings.NewReader(testenv.ConfigYAML(db, bucket, recipient, fragment)), func(string) (string, bool) { return "", false })
			if err == nil {
				_, err = retention.Compile(ctx, db.Pool, cfg)
			}
			require.Error(t, err)
			require.True(t, config.IsConfigError(err), "want a config error, got %v", err)
			require.Contains(t, err.Error(), tt.key+":")
			require.Contains(t, err.Error(), tt.more)
		})
	}

	// Nothing the checks ran changed the database.
	var tables int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'crm'`).Scan(&tables))
	require.Equal(t, 5, tables)
}

func TestCompileAcceptsQuotedAndUnqualifiedNames(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	db := testenv.NewDB(t)
	_, err := db.Pool.Exec(ctx, `
		CREATE SCHEMA "Odd Schema";
		CREATE TABLE "Odd Schema"."Customer ""Table""" ("Key" text PRIMARY KEY, "Closed At" date, kind text);
		CREATE TABLE public.child ("Parent Key" text REFERENCES "Odd Schema"."Customer ""Table""", v int);`)
	require.NoError(t, err)
	bucket := testenv.NewBucket(t)
	fragment := `
subject:
  table: '"Odd Schema"."Customer ""Table"""'
  key: '"Key"'
  related:
    - table: child
      join: '"Parent Key" = "Key"'
policies:
  - name: old
    where: "kind = 'x'"
    clock: '"Closed At"'
    retain: 1y
`
	cfg := testenv.Config(t, db, bucket, testenv.NewIdentity(t).Recipient().String(), fragment)
	plan, err := retention.Compile(ctx, db.Pool, cfg)
	require.NoError(t, err)
	require.Equal(t, []string{`"Odd Schema"."Customer ""Table"""`, "child"}, plan.Kinds[0].Tables())
	require.Equal(t, "date", plan.Policies[0].ClockType)
	require.Equal(t, "text", plan.Kinds[0].KeyType)
}

func TestCompileRejectsAPolicyThatCanNeverApply(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	db := testenv.NewDB(t)
	_, err := db.Pool.Exec(ctx, lethetest.CRMSchema)
	require.NoError(t, err)
	fragment := strings.Replace(lethetest.CRMConfig, `    where: "status = 'closed'"`+"\n", "", 1)
	cfg := testenv.Config(t, db, testenv.NewBucket(t), testenv.NewIdentity(t).Recipient().String(), fragment)
	_, err = retention.Compile(ctx, db.Pool, cfg)
	require.Error(t, err)
	require.Contains(t, err.Error(), "policies[1]:")
}

// The lexical screen in config is one layer; the database's own parse is the
// other. This checks the second on its own, with the screen bypassed.
func TestCompileRefusesASecondStatementEvenPastTheScreen(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	db := testenv.NewDB(t)
	_, err := db.Pool.Exec(ctx, lethetest.CRMSchema)
	require.NoError(t, err)
	cfg := testenv.Config(t, db, testenv.NewBucket(t), testenv.NewIdentity(t).Recipient().String(), lethetest.CRMConfig)
	for _, where := range []string{
		"status = 'closed'); DROP TABLE crm.notes; SELECT (true",
		"true) OR (SELECT true FROM pg_sleep(0)); DELETE FROM crm.notes; SELECT (true",
	} {
		cfg.Policies[0].Where = where
		_, err = retention.Compile(ctx, db.Pool, cfg)
		require.Error(t, err, where)
		require.Contains(t, err.Error(), "policies[0].where")
	}
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'crm' AND tablename = 'notes'`).Scan(&n))
	require.Equal(t, 1, n)
}

func TestCompileRefusesForeignKeysFromOutsideTheGraph(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	for _, tt := range []struct {
		onDelete string
		ok       bool
		key      string
	}{
		{"NO ACTION", false, "subject.table"},
		{"RESTRICT", false, "subject.table"},
		{"CASCADE", true, ""},
		{"SET NULL", true, ""},
	} {
		t.Run(tt.onDelete, func(t *testing.T) {
			t.Parallel()

			db := testenv.NewDB(t)
			_, err := db.Pool.Exec(ctx, lethetest.CRMSchema+`CREATE TABLE crm.invoices (id int PRIMARY KEY, customer_code text REFERENCES crm.customers (code) ON DELETE `+tt.onDelete+`);`)
			require.NoError(t, err)
			cfg := testenv.Config(t, db, testenv.NewBucket(t), testenv.NewIdentity(t).Recipient().String(), lethetest.CRMConfig)
			_, err = retention.Compile(ctx, db.Pool, cfg)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.True(t, config.IsConfigError(err))
			require.Contains(t, err.Error(), tt.key+": table crm.invoices references crm.customers")
		})
	}
}

func TestIndexAdviceNamesTheIndexToCreate(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	db := testenv.NewDB(t)
	_, err := db.Pool.Exec(ctx, lethetest.CRMSchema+`DROP INDEX crm.lines_account_id_idx;`)
	require.NoError(t, err)
	cfg := testenv.Config(t, db, testenv.NewBucket(t), testenv.NewIdentity(t).Recipient().String(), lethetest.CRMConfig)
	plan, err := retention.Compile(ctx, db.Pool, cfg)
	require.NoError(t, err)
	advice, err := plan.IndexAdvice(ctx, db.Pool)
	require.NoError(t, err)
	byKey := map[string]retention.Advice{}
	for _, a := range advice {
		byKey[a.Key] = a
	}
	require.Len(t, advice, 2, "%+v", advice)
	// closed_at has an index; created_at, the spam policy's clock, has none.
	require.NotContains(t, byKey, "policies[0].clock")
	require.Equal(t, `CREATE INDEX CONCURRENTLY ON "crm"."customers" ("created_at") WHERE status = 'spam'`, byKey["policies[1].clock"].Create)
	require.Equal(t, `CREATE INDEX CONCURRENTLY ON "crm"."lines" ("account_id")`, byKey["subject.related[0].related[0].join"].Create)

	// Once created, the advice goes away.
	for _, a := range advice {
		_, err := db.Pool.Exec(ctx, a.Create)
		require.NoError(t, err)
	}
	advice, err = plan.IndexAdvice(ctx, db.Pool)
	require.NoError(t, err)
	require.Empty(t, advice)
}

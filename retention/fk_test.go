package retention_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/internal/demo"
	"github.com/lethehq/lethe/internal/lethetest"
	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/retention"
)

// rentalGraph lists payments before rentals, which a payment references:
// deleting in the config's order, reversed, would delete a rental while its
// payment still references it.
const rentalGraph = `
subject:
  table: rental.customer
  key: customer_id
  related:
    - table: rental.payment
      join: customer_id = customer_id
    - table: rental.rental
      join: customer_id = customer_id
    - table: rental.id_check
      join: customer_id = customer_id
policies:
  - name: gone
    where: "NOT active"
    clock: last_active
    retain: 730d
`

func newRental(t *testing.T, prepare, fragment string) (*lethetest.Env, *demo.RentalStats) {
	t.Helper()
	var st *demo.RentalStats
	e := lethetest.NewFunc(t, func(db *testenv.DB) {
		var err error
		st, err = demo.SeedRental(context.Background(), db.Pool, demo.RentalOptions{Customers: 60, Applicants: 10, Seed: 7})
		require.NoError(t, err)
		if prepare != "" {
			_, err = db.Pool.Exec(context.Background(), prepare)
			require.NoError(t, err)
		}
	}, fragment)
	return e, st
}

func (st rentalCounts) left(t *testing.T, e *lethetest.Env) rentalCounts {
	t.Helper()
	var c rentalCounts
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM rental.customer WHERE NOT active), (SELECT count(*) FROM rental.payment p JOIN rental.customer c USING (customer_id) WHERE NOT c.active),
		(SELECT count(*) FROM rental.rental r JOIN rental.customer c USING (customer_id) WHERE NOT c.active)`).Scan(&c.gone, &c.payments, &c.rentals))
	return c
}

type rentalCounts struct{ gone, payments, rentals int }

func TestDeletesFollowForeignKeysAndPartitions(t *testing.T) {
	t.Parallel()
	e, st := newRental(t, "", rentalGraph)
	require.Positive(t, st.Gone)
	before := rentalCounts{}.left(t, e)
	require.Positive(t, before.payments, "payments of gone customers, in several partitions")

	res := e.MustSweep(t)
	require.Equal(t, st.Gone, res.Claimed["gone"])
	require.Equal(t, rentalCounts{}, rentalCounts{}.left(t, e), "every gone customer, and their payments and rentals, left the hot tables")
	// The payments came out of the partitioned parent, from every partition,
	// and are in the bundle under the name the config gives.
	var paid int
	for k := 3; k <= 60; k += 3 {
		b := e.Restore(t, strconv.Itoa(k))
		require.Contains(t, b, "rental.payment")
		paid += len(b["rental.payment"])
	}
	require.Equal(t, before.payments, paid)
	require.Zero(t, e.MustSweep(t).Batches, "a second sweep does nothing")
	e.RequireAuditIntact(t)
}

func TestForeignKeysFromOutsideTheGraph(t *testing.T) {
	t.Parallel()
	const loyalty = `CREATE TABLE rental.loyalty (card_id int PRIMARY KEY, customer_id int NOT NULL REFERENCES rental.customer)`

	db := testenv.NewDB(t)
	_, err := demo.SeedRental(context.Background(), db.Pool, demo.RentalOptions{Customers: 6, Seed: 1})
	require.NoError(t, err)
	_, err = db.Pool.Exec(context.Background(), loyalty)
	require.NoError(t, err)
	cfg := testenv.Config(t, db, testenv.NewBucket(t), testenv.NewIdentity(t).Recipient().String(), rentalGraph)
	_, err = retention.Compile(context.Background(), db.Pool, cfg)
	require.True(t, config.IsConfigError(err), "%v", err)
	require.Contains(t, err.Error(), "subject.table: table rental.loyalty references rental.customer through foreign key loyalty_customer_id_fkey")
	require.Contains(t, err.Error(), "subject.ignore_references")

	// Listed under ignore_references, lethe starts; a row that still
	// references a due customer keeps that customer in place, reported,
	// and the batch does not fail.
	ignoring := strings.Replace(rentalGraph, "  key: customer_id\n", "  key: customer_id\n  ignore_references: [rental.loyalty]\n", 1)
	e, st := newRental(t, loyalty+`; INSERT INTO rental.loyalty VALUES (1, 3)`, ignoring)
	res := e.MustSweep(t)
	require.Equal(t, st.Gone, res.Claimed["gone"])
	left := rentalCounts{}.left(t, e)
	require.Equal(t, 1, left.gone, "customer 3 is left in place")
	var blocked int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM lethe.blocked_subject WHERE constraint_name = 'loyalty_customer_id_fkey'`).Scan(&blocked))
	require.Equal(t, 1, blocked)
	groups, err := retention.BlockedSubjects(context.Background(), e.DB.Pool)
	require.NoError(t, err)
	require.Len(t, groups, 1)
	require.Equal(t, "rental.loyalty", groups[0].Table)
	require.Contains(t, groups[0].BlockedMessage(), "foreign key loyalty_customer_id_fkey on table rental.loyalty")
	var failed int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM lethe.batch WHERE state <> 'done'`).Scan(&failed))
	require.Zero(t, failed, "the batch is not failed")

	// Once the row is gone, the next sweep takes the customer, and the
	// report clears.
	_, err = e.DB.Pool.Exec(context.Background(), `DELETE FROM rental.loyalty`)
	require.NoError(t, err)
	e.MustSweep(t)
	require.Zero(t, rentalCounts{}.left(t, e).gone)
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM lethe.blocked_subject`).Scan(&blocked))
	require.Zero(t, blocked)
}

func TestPartitionsAndCycles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.NewDB(t)
	_, err := demo.SeedRental(ctx, db.Pool, demo.RentalOptions{Customers: 6, Seed: 1})
	require.NoError(t, err)
	var partition string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'rental.payment'::regclass LIMIT 1`).Scan(&partition))
	compile := func(fragment string) error {
		cfg := testenv.Config(t, db, testenv.NewBucket(t), testenv.NewIdentity(t).Recipient().String(), fragment)
		_, err := retention.Compile(ctx, db.Pool, cfg)
		return err
	}

	// A partition listed beside its parent.
	err = compile(strings.Replace(rentalGraph, "    - table: rental.id_check\n", "    - table: "+partition+"\n      join: customer_id = customer_id\n    - table: rental.id_check\n", 1))
	require.True(t, config.IsConfigError(err), "%v", err)
	require.Contains(t, err.Error(), "subject.related[2].table: "+partition+" is a partition of the same partitioned table as rental.payment (subject.related[0])")
	require.Contains(t, err.Error(), "list only the partitioned parent")

	// Index advice on a partitioned table cannot be CONCURRENTLY.
	_, err = db.Pool.Exec(ctx, `DROP INDEX rental.payment_customer_id_idx`)
	require.NoError(t, err)
	cfg := testenv.Config(t, db, testenv.NewBucket(t), testenv.NewIdentity(t).Recipient().String(), rentalGraph)
	plan, err := retention.Compile(ctx, db.Pool, cfg)
	require.NoError(t, err)
	advice, err := plan.IndexAdvice(ctx, db.Pool)
	require.NoError(t, err)
	var creates []string
	for _, a := range advice {
		creates = append(creates, a.Create)
	}
	require.Contains(t, creates, `CREATE INDEX ON "rental"."payment" ("customer_id")`)
	for _, c := range creates {
		_, err := db.Pool.Exec(ctx, c)
		require.NoError(t, err, "the advice must run: %s", c)
	}

	// Foreign keys in a cycle cannot be ordered.
	_, err = db.Pool.Exec(ctx, `ALTER TABLE rental.customer ADD COLUMN last_rental int REFERENCES rental.rental`)
	require.NoError(t, err)
	err = compile(rentalGraph)
	require.True(t, config.IsConfigError(err), "%v", err)
	require.Contains(t, err.Error(), "form a cycle")
}

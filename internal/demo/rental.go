package demo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The rental schema is shaped like the public sample databases that new
// users try first: customers with rentals, and a payment table partitioned
// by date that references both the customer and the rental. Its foreign
// keys cross the graph's branches, so that the order the config lists the
// tables in cannot be the order they can be deleted in. Credit applicants
// live in a table of their own, as they often do, and an identity check of
// each customer keeps a social security number and a licence number that
// the business no longer needs once it is done. Every value is synthetic.

// RentalOptions say what SeedRental makes.
type RentalOptions struct {
	// Schema is created (it must not exist). Default "rental".
	Schema string
	// Customers and Applicants are how many of each to make.
	Customers, Applicants int
	// Seed makes the data reproducible.
	Seed uint64
	// Now is the time the data is generated relative to. Default
	// time.Now.
	Now time.Time
}

// RentalStats counts what SeedRental made.
type RentalStats struct {
	// Gone are customers inactive for more than two years; Active the
	// others. Prospects are applicants older than 90 days never approved.
	Gone, Active, Stale int
	Rentals, Payments   int
}

const rentalSchemaSQL = `
CREATE SCHEMA %[1]s;
CREATE TABLE %[1]s.store (store_id int PRIMARY KEY, city text NOT NULL);
CREATE TABLE %[1]s.customer (
	customer_id int PRIMARY KEY,
	store_id    int NOT NULL REFERENCES %[1]s.store,
	first_name  text NOT NULL,
	last_name   text NOT NULL,
	email       text NOT NULL,
	active      boolean NOT NULL,
	create_date timestamptz NOT NULL,
	last_active timestamptz NOT NULL
);
CREATE INDEX ON %[1]s.customer (last_active) WHERE NOT active;
CREATE TABLE %[1]s.rental (
	rental_id    int PRIMARY KEY,
	rental_date  timestamptz NOT NULL,
	inventory_id int NOT NULL,
	customer_id  int NOT NULL REFERENCES %[1]s.customer,
	return_date  timestamptz
);
CREATE INDEX ON %[1]s.rental (customer_id);
CREATE TABLE %[1]s.payment (
	payment_id   int NOT NULL,
	customer_id  int NOT NULL REFERENCES %[1]s.customer,
	rental_id    int REFERENCES %[1]s.rental,
	amount       numeric(6,2) NOT NULL,
	payment_date timestamptz NOT NULL,
	PRIMARY KEY (payment_id, payment_date)
) PARTITION BY RANGE (payment_date);
CREATE INDEX ON %[1]s.payment (customer_id);
CREATE TABLE %[1]s.id_check (
	check_id      int PRIMARY KEY,
	customer_id   int NOT NULL REFERENCES %[1]s.customer,
	ssn           text,
	licence_no    text,
	date_of_birth date,
	checked_at    timestamptz NOT NULL
);
CREATE INDEX ON %[1]s.id_check (customer_id);
CREATE TABLE %[1]s.applicant (
	applicant_id int PRIMARY KEY,
	full_name    text NOT NULL,
	ssn          text NOT NULL,
	applied_at   timestamptz NOT NULL,
	approved     boolean NOT NULL
);
CREATE INDEX ON %[1]s.applicant (applied_at) WHERE NOT approved;
CREATE TABLE %[1]s.applicant_document (
	document_id  int PRIMARY KEY,
	applicant_id int NOT NULL REFERENCES %[1]s.applicant,
	kind         text NOT NULL,
	scan         bytea NOT NULL
);
CREATE INDEX ON %[1]s.applicant_document (applicant_id);
`

// RentalConfig is the subjects: and policies: of a config for the rental
// schema: lethe demo config --rental prints it, and docs/SCHEMA.md works
// through it. Payments are listed before rentals, which they reference:
// lethe orders the deletes by the catalog's foreign keys.
func RentalConfig(schema string) string {
	return strings.ReplaceAll(`subjects:
  - name: customer
    table: rental.customer
    key: customer_id
    protect: "active"                   # requests for active customers need --force
    related:
      - table: rental.payment           # partitioned by year: the parent covers them all
        join: customer_id = customer_id
      - table: rental.rental
        join: customer_id = customer_id
      - table: rental.id_check
        join: customer_id = customer_id
  - name: applicant
    table: rental.applicant
    key: applicant_id
    related:
      - table: rental.applicant_document
        join: applicant_id = applicant_id
policies:
  - name: gone-customers
    subject: customer
    where: "NOT active"
    clock: last_active
    retain: 730d
  - name: id-after-check
    subject: customer
    then: minimize
    table: rental.id_check
    clock: checked_at
    retain: 30d
    columns: {ssn: hash, licence_no: "keep_last:4", date_of_birth: null}
    archive: true
  - name: stale-applicants
    subject: applicant
    where: "NOT approved"
    clock: applied_at
    retain: 90d
`, "rental.", tableName(schema, ""))
}

// SeedRental creates the rental schema and fills it with synthetic data.
func SeedRental(ctx context.Context, db *pgxpool.Pool, opts RentalOptions) (*RentalStats, error) {
	if opts.Schema == "" {
		opts.Schema = "rental"
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.Customers < 1 || opts.Applicants < 0 {
		return nil, fmt.Errorf("error seeding the rental schema: give at least one customer and no negative applicants")
	}
	schema := pgx.Identifier{opts.Schema}.Sanitize()
	rng := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x5eed))
	now := opts.Now.UTC().Truncate(time.Second)
	st := &RentalStats{}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("error seeding the rental schema: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	if _, err := tx.Exec(ctx, fmt.Sprintf(rentalSchemaSQL, schema)); err != nil {
		return nil, fmt.Errorf("error creating the rental schema: %w", err)
	}
	// A partition per year, from six years back to next year.
	for y := now.Year() - 6; y <= now.Year()+1; y++ {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s.%s PARTITION OF %s.payment FOR VALUES FROM ('%d-01-01') TO ('%d-01-01')`,
			schema, pgx.Identifier{fmt.Sprintf("payment_%d", y)}.Sanitize(), schema, y, y+1)); err != nil {
			return nil, fmt.Errorf("error creating payment partitions: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.store VALUES (1, 'Lethbridge'), (2, 'Woodridge')`, schema)); err != nil {
		return nil, fmt.Errorf("error seeding stores: %w", err)
	}
	var customers, rentals, payments, checks [][]any
	for c := 1; c <= opts.Customers; c++ {
		first, last := givenNames[rng.IntN(len(givenNames))], familyNames[rng.IntN(len(familyNames))]
		created := now.AddDate(-5, 0, 0).Add(time.Duration(rng.IntN(365*24)) * time.Hour)
		active := c%3 != 0
		lastActive := now.Add(-time.Duration(rng.IntN(300)) * 24 * time.Hour)
		if !active {
			lastActive = now.AddDate(-3, 0, 0).Add(-time.Duration(rng.IntN(300)) * 24 * time.Hour)
			st.Gone++
		} else {
			st.Active++
		}
		customers = append(customers, []any{c, 1 + c%2, first, last, fmt.Sprintf("%s.%s.%d@example.org", lower(first), lower(last), c), active, created, lastActive})
		checkedAt := created.Add(48 * time.Hour)
		checks = append(checks, []any{c, c, fmt.Sprintf("%03d-%02d-%04d", 900+rng.IntN(100), 1+rng.IntN(98), 1+rng.IntN(9998)),
			fmt.Sprintf("D%07d", rng.IntN(10_000_000)), created.AddDate(-20-rng.IntN(40), 0, 0), checkedAt})
		for r := range rng.IntN(4) {
			id := c*10 + r
			rented := lastActive.Add(-time.Duration(r*30+rng.IntN(20)) * 24 * time.Hour)
			rentals = append(rentals, []any{id, rented, 1000 + rng.IntN(4000), c, rented.Add(72 * time.Hour)})
			st.Rentals++
			// The payment of the rental, and now and then a payment of the
			// customer that belongs to no rental (a late fee).
			payments = append(payments, []any{id, c, id, float64(rng.IntN(900)+99) / 100, rented.Add(time.Hour)})
			st.Payments++
			if rng.IntN(4) == 0 {
				payments = append(payments, []any{id + 5, c, nil, 4.99, rented.Add(10 * 24 * time.Hour)})
				st.Payments++
			}
		}
	}
	var applicants, documents [][]any
	for a := 1; a <= opts.Applicants; a++ {
		name := givenNames[rng.IntN(len(givenNames))] + " " + familyNames[rng.IntN(len(familyNames))]
		applied := now.Add(-time.Duration(rng.IntN(365)) * 24 * time.Hour)
		approved := a%4 == 0
		if !approved && applied.Before(now.AddDate(0, 0, -91)) {
			st.Stale++
		}
		applicants = append(applicants, []any{a, name, fmt.Sprintf("%03d-%02d-%04d", 900+rng.IntN(100), 1+rng.IntN(98), 1+rng.IntN(9998)), applied, approved})
		for d := range 1 + rng.IntN(2) {
			documents = append(documents, []any{a*10 + d, a, []string{"licence", "passport"}[d], []byte(fmt.Sprintf("synthetic scan %d-%d", a, d))})
		}
	}
	for _, t := range []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"customer", []string{"customer_id", "store_id", "first_name", "last_name", "email", "active", "create_date", "last_active"}, customers},
		{"id_check", []string{"check_id", "customer_id", "ssn", "licence_no", "date_of_birth", "checked_at"}, checks},
		{"rental", []string{"rental_id", "rental_date", "inventory_id", "customer_id", "return_date"}, rentals},
		{"payment", []string{"payment_id", "customer_id", "rental_id", "amount", "payment_date"}, payments},
		{"applicant", []string{"applicant_id", "full_name", "ssn", "applied_at", "approved"}, applicants},
		{"applicant_document", []string{"document_id", "applicant_id", "kind", "scan"}, documents},
	} {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{opts.Schema, t.table}, t.cols, pgx.CopyFromRows(t.rows)); err != nil {
			return nil, fmt.Errorf("error seeding %s: %w", t.table, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("error seeding the rental schema: %w", err)
	}
	return st, nil
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

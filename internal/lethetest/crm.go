package lethetest

import (
	"context"
	"fmt"
	"sort"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// CRMSchema is a customer schema unlike the demo's: text keys, a three-level
// graph, jsonb, bytea, numeric and uuid columns, foreign keys without
// cascade.
const CRMSchema = `
CREATE SCHEMA crm;
CREATE TABLE crm.customers (
	code       text PRIMARY KEY,
	status     text NOT NULL,
	closed_at  timestamptz,
	created_at timestamptz NOT NULL,
	profile    jsonb,
	photo      bytea,
	credit     numeric(14,4),
	ext_id     uuid
);
CREATE INDEX ON crm.customers (closed_at);
CREATE TABLE crm.accounts (
	id            uuid PRIMARY KEY,
	customer_code text NOT NULL REFERENCES crm.customers (code),
	balance       numeric,
	opened        date
);
CREATE INDEX ON crm.accounts (customer_code);
CREATE TABLE crm.lines (
	id         bigint PRIMARY KEY,
	account_id uuid NOT NULL REFERENCES crm.accounts (id),
	imei       text,
	meta       jsonb
);
CREATE INDEX ON crm.lines (account_id);
CREATE TABLE crm.notes (
	id            serial PRIMARY KEY,
	customer_code text NOT NULL REFERENCES crm.customers (code),
	body          text,
	blob          bytea
);
CREATE INDEX ON crm.notes (customer_code);
`

// CRMConfig is the graph and policies of CRMSchema: former customers are
// archived two years after they leave, spam is deleted after 30 days.
const CRMConfig = `
subject:
  table: crm.customers
  key: code
  related:
    - table: crm.accounts
      join: customer_code = code
      related:
        - table: crm.lines
          join: account_id = id
    - table: crm.notes
      join: customer_code = code
policies:
  - name: former
    where: "status = 'closed'"
    clock: closed_at
    retain: 730d
    archive_retain: 7y
  - name: spam
    where: "status = 'spam'"
    clock: created_at
    retain: 30d
    then: delete
requests:
  protect: "status = 'active'"
`

// CRMTables are the tables of CRMSchema's graph, as CRMConfig names them.
var CRMTables = []string{"crm.customers", "crm.accounts", "crm.lines", "crm.notes"}

// Snapshot is every table's rows, as to_jsonb text, per subject.
type Snapshot map[string]map[string][]string // subject -> table -> sorted rows

// CRMSnapshot reads the crm tables grouped by customer.
func (e *Env) CRMSnapshot(t *testing.T) Snapshot {
	t.Helper()
	q := map[string]string{
		"crm.customers": `SELECT code, to_jsonb(c)::text FROM crm.customers c`,
		"crm.accounts":  `SELECT customer_code, to_jsonb(a)::text FROM crm.accounts a`,
		"crm.lines":     `SELECT a.customer_code, to_jsonb(l)::text FROM crm.lines l JOIN crm.accounts a ON a.id = l.account_id`,
		"crm.notes":     `SELECT customer_code, to_jsonb(n)::text FROM crm.notes n`,
	}
	s := Snapshot{}
	for table, sql := range q {
		rows, err := e.DB.Pool.Query(context.Background(), sql)
		require.NoError(t, err)
		for rows.Next() {
			var subject, row string
			require.NoError(t, rows.Scan(&subject, &row))
			if s[subject] == nil {
				s[subject] = map[string][]string{}
			}
			s[subject][table] = append(s[subject][table], row)
		}
		require.NoError(t, rows.Err())
	}
	for _, tables := range s {
		for _, rows := range tables {
			sort.Strings(rows)
		}
	}
	return s
}

// SeedCRM inserts synthetic customers: n closed long ago (due), n closed
// recently (not due), n active, n spam created long ago (due for
// destruction). Keys carry quotes, spaces and unicode. It returns the keys
// by group: due, recent, active and spam.
func (e *Env) SeedCRM(t *testing.T, n int) map[string][]string {
	t.Helper()
	return SeedCRM(t, e.DB.Pool, n)
}

// SeedCRM is Env.SeedCRM on any database that has CRMSchema.
func SeedCRM(t testing.TB, pool *pgxpool.Pool, n int) map[string][]string {
	t.Helper()
	groups := map[string][]string{}
	ctx := context.Background()
	lineID := 0
	add := func(group, status, closedAt, createdAt string, i int) {
		code := fmt.Sprintf("%s O'Brien \"%d\" Zoë", group, i)
		groups[group] = append(groups[group], code)
		_, err := pool.Exec(ctx, `
			INSERT INTO crm.customers (code, status, closed_at, created_at, profile, photo, credit, ext_id)
			VALUES ($1, $2, now() - $3::interval, now() - $4::interval,
			        jsonb_build_object('tier', $5::int, 'tags', jsonb_build_array('a', 'b'), 'nested', jsonb_build_object('x', 1.5)),
			        decode('00ff10' || lpad(to_hex($5::int), 4, '0'), 'hex'), 1234.5678 * $5::int, gen_random_uuid())`,
			code, status, closedAt, createdAt, i)
		require.NoError(t, err)
		for a := range i % 3 {
			var acct string
			err := pool.QueryRow(ctx, `INSERT INTO crm.accounts (id, customer_code, balance, opened) VALUES (gen_random_uuid(), $1, $2, current_date - $3::int) RETURNING id::text`,
				code, float64(a)*10.25, a*100).Scan(&acct)
			require.NoError(t, err)
			for l := range a + 1 {
				lineID++
				_, err := pool.Exec(ctx, `INSERT INTO crm.lines (id, account_id, imei, meta) VALUES ($1, $2, $3, '{"sim": true}')`,
					lineID, acct, fmt.Sprintf("35%013d", lineID*10+l))
				require.NoError(t, err)
			}
		}
		if i%2 == 0 {
			_, err := pool.Exec(ctx, `INSERT INTO crm.notes (customer_code, body, blob) VALUES ($1, $2, '\x00deadbeef')`, code, "note; with 'quotes'")
			require.NoError(t, err)
		}
	}
	for i := range n {
		add("due", "closed", "800 days", "3000 days", i)
		add("recent", "closed", "10 days", "3000 days", i)
		add("active", "active", "0 days", "3000 days", i)
		add("spam", "spam", "0 days", "40 days", i)
	}
	return groups
}

// CRMInsertSpam makes sure a spam subject exists (an earlier sweep may have
// destroyed it).
const CRMInsertSpam = `INSERT INTO crm.customers (code, status, created_at) VALUES ($1, 'spam', now() - interval '40 days') ON CONFLICT DO NOTHING`

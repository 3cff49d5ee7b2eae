package demo

import (
	"context"
	_ "embed"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

//go:embed schema.sql
var schemaSQL string

// Execer runs one SQL string. *pgxpool.Pool, *pgx.Conn and pgx.Tx satisfy it.
type Execer interface {
	Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error)
}

// table is one demo table: its name and the columns Seed copies into it.
type table struct {
	name    string
	columns []string
}

// Indexes into tables, in foreign-key order: parents before children.
const (
	tSubscribers = iota
	tAccounts
	tLines
	tAddresses
	tIdentityDocuments
	tCreditChecks
	numTables
)

// tables lists the demo tables in foreign-key order (parents first).
var tables = [numTables]table{
	tSubscribers: {"subscribers", []string{
		"id", "status", "first_name", "last_name", "date_of_birth", "ssn", "email", "phone",
		"created_at", "closed_at", "marketing_opt_in",
	}},
	tAccounts: {"accounts", []string{
		"id", "subscriber_id", "account_number", "plan", "balance", "opened_at", "closed_at",
	}},
	tLines: {"lines", []string{
		"id", "account_id", "msisdn", "imei", "imsi", "device", "activated_at", "deactivated_at",
	}},
	tAddresses: {"addresses", []string{
		"id", "subscriber_id", "kind", "line1", "city", "state", "postal_code",
	}},
	tIdentityDocuments: {"identity_documents", []string{
		"id", "subscriber_id", "kind", "number", "issuing_state", "expires_on",
	}},
	tCreditChecks: {"credit_checks", []string{
		"id", "subscriber_id", "bureau", "score", "decision", "checked_at", "report",
	}},
}

// Tables returns the names of the demo tables, parents before children: the
// order to insert in (delete in the reverse order).
func Tables() []string {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.name
	}
	return names
}

// CreateSchema creates the demo schema, its tables and their indexes. It is
// idempotent: what already exists is left as it is, data included.
func CreateSchema(ctx context.Context, db Execer, schema string) error {
	if schema == "" {
		return fmt.Errorf("error creating demo schema: schema name is empty")
	}
	ddl := strings.ReplaceAll(schemaSQL, "{{schema}}", pgx.Identifier{schema}.Sanitize())
	if _, err := db.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("error creating demo schema %q: %w", schema, err)
	}
	return nil
}

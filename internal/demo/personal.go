package demo

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// personalValuesSQL gathers the personal values of the sampled subscribers.
// {{schema}} is replaced by the quoted schema name.
const personalValuesSQL = `
WITH s AS (
    SELECT * FROM {{schema}}.subscribers
    ORDER BY status = 'active', id
    LIMIT $1
), a AS (
    SELECT a.* FROM {{schema}}.accounts a JOIN s ON a.subscriber_id = s.id
), l AS (
    SELECT l.* FROM {{schema}}.lines l JOIN a ON l.account_id = a.id
), v(value) AS (
              SELECT ssn FROM s
    UNION ALL SELECT first_name FROM s
    UNION ALL SELECT last_name FROM s
    UNION ALL SELECT email FROM s
    UNION ALL SELECT phone FROM s
    UNION ALL SELECT account_number FROM a
    UNION ALL SELECT msisdn FROM l
    UNION ALL SELECT imei FROM l
    UNION ALL SELECT imsi FROM l
    UNION ALL SELECT d.line1 FROM {{schema}}.addresses d JOIN s ON d.subscriber_id = s.id
    UNION ALL SELECT d.number FROM {{schema}}.identity_documents d JOIN s ON d.subscriber_id = s.id
)
SELECT DISTINCT value FROM v ORDER BY value`

// PersonalValues returns the personal values of up to limit subscribers in
// schema, former customers and prospects first (the subjects lethe moves),
// then active ones, in id order: SSNs, given and family names, e-mail
// addresses, phone and line numbers, IMEIs, IMSIs, account numbers, street
// lines and identity document numbers. A leak test searches lethe's logs,
// tables and objects for them. The values are distinct and sorted.
func PersonalValues(ctx context.Context, db *pgxpool.Pool, schema string, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("error reading personal values: limit must be positive, got %d", limit)
	}
	sql := strings.ReplaceAll(personalValuesSQL, "{{schema}}", pgx.Identifier{schema}.Sanitize())
	rows, err := db.Query(ctx, sql, limit)
	if err != nil {
		return nil, fmt.Errorf("error reading personal values: %w", err)
	}
	values, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("error reading personal values: %w", err)
	}
	return values, nil
}

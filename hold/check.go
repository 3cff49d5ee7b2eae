package hold

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/retention"
)

// Checker answers whether holds cover subjects. Every destroyer asks it, in
// the transaction that holds the subjects' locks, before it destroys.
type Checker struct{}

var _ retention.HoldChecker = Checker{}

// HeldAmong returns which of the subjects any active hold covers.
func (Checker) HeldAmong(ctx context.Context, db retention.Querier, subjectHMACs []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(subjectHMACs) == 0 {
		return out, nil
	}
	rows, err := db.Query(ctx, `SELECT DISTINCT subject_hmac FROM lethe.hold WHERE released_at IS NULL AND subject_hmac = ANY ($1)`, subjectHMACs)
	if err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	held, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	for _, h := range held {
		out[h] = true
	}
	return out, nil
}

// Matters returns, for each of the subjects that active holds cover, the
// matters that hold it, in order.
func (Checker) Matters(ctx context.Context, db retention.Querier, subjectHMACs []string) (map[string][]string, error) {
	rows, err := db.Query(ctx, `SELECT DISTINCT subject_hmac, matter FROM lethe.hold
		WHERE subject_hmac = ANY ($1) AND released_at IS NULL ORDER BY subject_hmac, matter`, subjectHMACs)
	if err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	out := map[string][]string{}
	var h, matter string
	if _, err := pgx.ForEachRow(rows, []any{&h, &matter}, func() error { out[h] = append(out[h], matter); return nil }); err != nil {
		return nil, fmt.Errorf("error reading holds: %w", err)
	}
	return out, nil
}

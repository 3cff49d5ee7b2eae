package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DueCount is how many subjects one policy would claim now.
type DueCount struct {
	Policy string `json:"policy"`
	Then   string `json:"then"`
	Retain string `json:"retain"`
	// Cutoff is the clock value before which a subject is due.
	Cutoff time.Time `json:"cutoff"`
	Due    int64     `json:"due"`
	// Protected are due subjects that requests.protect matches: a deletion
	// request would refuse them, yet the policy moves them. Usually a sign
	// of a policy that is too broad.
	Protected int64 `json:"protected"`
	// Held are due subjects a legal hold covers: archiving moves them (and
	// locks their object); a then: delete policy skips them.
	Held int64 `json:"held"`
}

// CountDue counts, per policy, the subjects due at now. It changes nothing.
// The counts run in a read-only transaction, so not even a predicate that
// calls a function with side effects can change anything.
func CountDue(ctx context.Context, pool *pgxpool.Pool, plan *Plan, now time.Time) ([]DueCount, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("error counting due subjects: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	out := make([]DueCount, 0, len(plan.Policies))
	for _, pp := range plan.Policies {
		c := DueCount{Policy: pp.Name, Then: pp.Then, Retain: pp.RetainDays.String(), Cutoff: pp.Cutoff(now)}
		args := append([]any{c.Cutoff}, plan.hmacp.args()...)
		if err := tx.QueryRow(ctx, plan.sql.dueCount[pp.Name], args...).Scan(&c.Due, &c.Protected, &c.Held); err != nil {
			return nil, fmt.Errorf("error counting due subjects of policy %s: %w", pp.Name, err)
		}
		out = append(out, c)
	}
	return out, nil
}

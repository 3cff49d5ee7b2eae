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
	// locks their object); then: delete and then: minimize policies skip
	// them.
	Held int64 `json:"held"`
	// Kind is the kind of subject the policy governs.
	Kind string `json:"kind"`
	// Rows are, for then: minimize, the due subjects' rows with values to
	// minimise.
	Rows int64 `json:"rows,omitempty"`
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
		c := DueCount{Policy: pp.Name, Kind: pp.Kind.Name, Then: pp.Then, Retain: pp.RetainDays.String(), Cutoff: pp.Cutoff(now)}
		args := append([]any{c.Cutoff}, pp.Kind.hmacp.args()...)
		var err error
		if pp.Minimizes() {
			err = tx.QueryRow(ctx, pp.Kind.sql.minimize[pp.Name].count, args...).Scan(&c.Due, &c.Rows, &c.Held)
		} else {
			err = tx.QueryRow(ctx, pp.Kind.sql.dueCount[pp.Name], args...).Scan(&c.Due, &c.Protected, &c.Held)
		}
		if err != nil {
			return nil, fmt.Errorf("error counting due subjects of policy %s: %w", pp.Name, err)
		}
		out = append(out, c)
	}
	return out, nil
}

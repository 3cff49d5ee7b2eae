package retention

import (
	"context"
	"fmt"
	"time"

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
func CountDue(ctx context.Context, pool *pgxpool.Pool, plan *Plan, now time.Time) ([]DueCount, error) {
	out := make([]DueCount, 0, len(plan.Policies))
	for _, pp := range plan.Policies {
		c := DueCount{Policy: pp.Name, Then: pp.Then, Retain: pp.RetainDays.String(), Cutoff: pp.Cutoff(now)}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		args := append([]any{c.Cutoff}, plan.hmacp.args()...)
		err := pool.QueryRow(qctx, plan.sql.dueCount[pp.Name], args...).Scan(&c.Due, &c.Protected, &c.Held)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("error counting due subjects of policy %s: %w", pp.Name, err)
		}
		out = append(out, c)
	}
	return out, nil
}

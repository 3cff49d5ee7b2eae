package request

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// StateCount is how many requests are in a state.
type StateCount struct {
	State string `json:"state"`
	Count int64  `json:"count"`
}

// AtRisk is an open request close to its deadline.
type AtRisk struct {
	ID       int64     `json:"id"`
	Ticket   string    `json:"ticket"`
	State    string    `json:"state"`
	Deadline time.Time `json:"deadline"`
	DaysLeft float64   `json:"days_left"`
}

// RequestStatus is the requests' part of lethe status.
type RequestStatus struct {
	Requests []StateCount `json:"requests"`
	AtRisk   []AtRisk     `json:"requests_near_deadline"`
}

// atRiskWithin is how close to its deadline an open request must be to be
// shown as at risk.
const atRiskWithin = "10 days"

// Status reads the requests by state, and the open ones within ten days of
// their deadline.
func Status(ctx context.Context, pool *pgxpool.Pool) (*RequestStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	rep := &RequestStatus{}
	rows, err := pool.Query(ctx, `SELECT state, count(*) FROM lethe.request GROUP BY state ORDER BY state`)
	if err != nil {
		return nil, fmt.Errorf("error reading requests: %w", err)
	}
	if rep.Requests, err = pgx.CollectRows(rows, pgx.RowToStructByPos[StateCount]); err != nil {
		return nil, fmt.Errorf("error reading requests: %w", err)
	}
	rows, err = pool.Query(ctx, `
		SELECT id, ticket, state, deadline, round((extract(epoch FROM deadline - now()) / 86400)::numeric, 1)::float8
		FROM lethe.request
		WHERE state IN ($1, $2, $3) AND deadline < now() + $4::interval
		ORDER BY deadline LIMIT 100`, StateReceived, StateProcessing, StateBlockedByHold, atRiskWithin)
	if err != nil {
		return nil, fmt.Errorf("error reading requests: %w", err)
	}
	if rep.AtRisk, err = pgx.CollectRows(rows, pgx.RowToStructByPos[AtRisk]); err != nil {
		return nil, fmt.Errorf("error reading requests: %w", err)
	}
	return rep, nil
}

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

// AtRisk is an open request close to its deadline, or past it.
type AtRisk struct {
	ID       int64     `json:"id"`
	Ticket   string    `json:"ticket"`
	State    string    `json:"state"`
	Deadline time.Time `json:"deadline"`
	// DaysLeft is negative once the deadline has passed.
	DaysLeft float64 `json:"days_left"`
	Regime   string  `json:"regime"`
	// Overdue is true once the deadline has passed.
	Overdue bool `json:"overdue"`
	// Extended is true when the deadline was extended already: it cannot
	// move again.
	Extended bool `json:"extended"`
}

// ToAcknowledge is an open request whose regime asks that the requester be
// told, by a date, that it arrived. lethe cannot see whether they were: it
// lists every open request with such a date until the request ends.
type ToAcknowledge struct {
	ID            int64     `json:"id"`
	Ticket        string    `json:"ticket"`
	State         string    `json:"state"`
	Regime        string    `json:"regime"`
	AcknowledgeBy time.Time `json:"acknowledge_by"`
	// DaysLeft is negative once the date has passed.
	DaysLeft float64 `json:"days_left"`
	// Overdue is true once the date has passed.
	Overdue bool `json:"overdue"`
}

// RegimeCount is how the open requests of one regime stand.
type RegimeCount struct {
	Regime string `json:"regime"`
	// Open counts the regime's open requests.
	Open int64 `json:"open"`
	// ToAcknowledge counts those with an acknowledge-by date, and
	// AcknowledgeOverdue those of them whose date has passed.
	ToAcknowledge      int64 `json:"to_acknowledge"`
	AcknowledgeOverdue int64 `json:"acknowledge_overdue"`
	// NearDeadline counts those within ten days of their deadline, and
	// PastDeadline those past it.
	NearDeadline int64 `json:"near_deadline"`
	PastDeadline int64 `json:"past_deadline"`
	// Extended counts those whose deadline was extended.
	Extended int64 `json:"extended"`
}

// RequestStatus is the requests' part of lethe status.
type RequestStatus struct {
	Requests []StateCount `json:"requests"`
	// AtRisk are the open requests within ten days of their deadline or
	// past it, soonest first (at most 100).
	AtRisk []AtRisk `json:"requests_near_deadline"`
	// ToAcknowledge are the open requests with an acknowledge-by date,
	// soonest first (at most 100).
	ToAcknowledge []ToAcknowledge `json:"requests_to_acknowledge"`
	// ByRegime counts the open requests of each regime that has any.
	ByRegime []RegimeCount `json:"requests_by_regime"`
}

// AtRiskDays is how close to its deadline an open request must be to be
// shown as at risk.
const AtRiskDays = 10

// statusListLimit bounds each list of status; the counts by regime say
// how many there are in all.
const statusListLimit = 100

// Status reads the requests by state; the open ones within ten days of
// their deadline, or past it; the open ones to acknowledge; and, per
// regime, how many open requests are in each of those lists.
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
	within := fmt.Sprintf("%d days", AtRiskDays)
	open := []string{StateReceived, StateProcessing, StateBlockedByHold}
	rows, err = pool.Query(ctx, `
		SELECT id, ticket, state, deadline, round((extract(epoch FROM deadline - now()) / 86400)::numeric, 1)::float8,
		       regime, deadline < now(), extended_at IS NOT NULL
		FROM lethe.request
		WHERE state = ANY ($1) AND deadline < now() + $2::interval
		ORDER BY deadline, id LIMIT $3`, open, within, statusListLimit)
	if err != nil {
		return nil, fmt.Errorf("error reading requests near their deadline: %w", err)
	}
	if rep.AtRisk, err = pgx.CollectRows(rows, pgx.RowToStructByPos[AtRisk]); err != nil {
		return nil, fmt.Errorf("error reading requests near their deadline: %w", err)
	}
	rows, err = pool.Query(ctx, `
		SELECT id, ticket, state, regime, acknowledge_by,
		       round((extract(epoch FROM acknowledge_by - now()) / 86400)::numeric, 1)::float8, acknowledge_by < now()
		FROM lethe.request
		WHERE state = ANY ($1) AND acknowledge_by IS NOT NULL
		ORDER BY acknowledge_by, id LIMIT $2`, open, statusListLimit)
	if err != nil {
		return nil, fmt.Errorf("error reading requests to acknowledge: %w", err)
	}
	if rep.ToAcknowledge, err = pgx.CollectRows(rows, pgx.RowToStructByPos[ToAcknowledge]); err != nil {
		return nil, fmt.Errorf("error reading requests to acknowledge: %w", err)
	}
	rows, err = pool.Query(ctx, `
		SELECT regime, count(*),
		       count(*) FILTER (WHERE acknowledge_by IS NOT NULL),
		       count(*) FILTER (WHERE acknowledge_by < now()),
		       count(*) FILTER (WHERE deadline >= now() AND deadline < now() + $2::interval),
		       count(*) FILTER (WHERE deadline < now()),
		       count(*) FILTER (WHERE extended_at IS NOT NULL)
		FROM lethe.request
		WHERE state = ANY ($1)
		GROUP BY regime ORDER BY regime`, open, within)
	if err != nil {
		return nil, fmt.Errorf("error reading requests by regime: %w", err)
	}
	if rep.ByRegime, err = pgx.CollectRows(rows, pgx.RowToStructByPos[RegimeCount]); err != nil {
		return nil, fmt.Errorf("error reading requests by regime: %w", err)
	}
	return rep, nil
}

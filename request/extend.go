package request

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe"
	"github.com/lethehq/lethe/audit"
)

// Extend moves an open request's deadline on by its regime's extension,
// records who did it and why, and audits it, in one transaction. A
// deadline moves once: a second call is refused with ErrExtended. Ended
// requests, and requests under a regime without an extension (or no
// longer configured), are refused too. Every refusal is a
// *lethe.InputError on field "id" and changes nothing.
//
// A deadline already passed may still be extended: lethe cannot see when
// the requester was told, and the audit entry keeps the deadline it moved.
func (r *Intake) Extend(ctx context.Context, id int64, reason, by string) (*Request, error) {
	if err := lethe.NonBlank("reason", reason, "by", by); err != nil {
		return nil, err
	}
	var out *Request
	err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		req, err := getRequest(ctx, tx, `id = $1 FOR UPDATE`, id)
		if err != nil {
			return err
		}
		if req.ExtendedAt != nil {
			return &lethe.InputError{Field: "id", Index: -1, Err: ErrExtended,
				Problem: fmt.Sprintf("request %d was extended already, on %s by %s, to %s: a deadline moves once",
					id, req.ExtendedAt.UTC().Format(time.DateOnly), *req.ExtendedBy, req.Deadline.UTC().Format(time.DateOnly))}
		}
		if !req.Open() {
			return lethe.Input("id", "request %d has ended (%s): only an open request's deadline can move", id, req.State)
		}
		g, ok := r.Regimes[req.Regime]
		switch {
		case !ok:
			return lethe.Input("id", "request %d is under regime %s, which the config no longer defines: add it back under requests.regimes to extend the request",
				id, req.Regime)
		case g.ExtensionPeriod.IsZero():
			return lethe.Input("id", "request %d is under regime %s, which has no extension: its deadline cannot move (set requests.regimes.%s.extension if the law allows one)",
				id, req.Regime, req.Regime)
		}
		deadline := g.ExtensionPeriod.AddTo(req.Deadline.UTC())
		if _, err := tx.Exec(ctx, `
			UPDATE lethe.request SET deadline = $2, extended_at = now(), extended_by = $3, extension_reason = $4, updated_at = now()
			WHERE id = $1`, id, deadline, by, reason); err != nil {
			return fmt.Errorf("error extending request %d: %w", id, err)
		}
		if err := audit.Append(ctx, tx, audit.Entry{Kind: audit.KindRequestExtended, Actor: by, SubjectHMAC: req.SubjectHMAC,
			Detail: map[string]any{"request_id": id, "ticket": req.Ticket, "regime": req.Regime, "extension": g.ExtensionPeriod.String(),
				"deadline_before": req.Deadline.UTC(), "deadline": deadline, "reason": reason}}); err != nil {
			return err
		}
		out, err = getRequest(ctx, tx, `id = $1`, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

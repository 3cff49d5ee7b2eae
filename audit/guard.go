package audit

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Guard tells the worker whether it may archive or erase: only while the
// database's chain matches the bucket's newest anchor. It checks at most
// every few seconds, so that a run of jobs costs one read of head.json, and
// logs when the answer changes.
type Guard struct {
	db     querier
	store  AnchorStore
	logger *slog.Logger
	ttl    time.Duration

	mu      sync.Mutex
	checked time.Time
	state   *LedgerState
	err     error
	logged  string
}

// NewGuard returns a Guard over db and store (the worker's credentials).
func NewGuard(db querier, store AnchorStore, logger *slog.Logger) *Guard {
	return &Guard{db: db, store: store, logger: logger, ttl: 5 * time.Second}
}

// State returns the ledger's state, checked at most ttl ago.
func (g *Guard) State(ctx context.Context) (*LedgerState, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.checked) < g.ttl {
		return g.state, g.err
	}
	g.state, g.err = CheckLedger(ctx, g.db, g.store)
	g.checked = time.Now()
	g.log()
	return g.state, g.err
}

// log writes a line when the answer changes.
func (g *Guard) log() {
	now := "ok"
	switch {
	case g.err != nil:
		now = "error: " + g.err.Error()
	case !g.state.OK:
		now = g.state.State + ": " + g.state.Reason
	}
	if now == g.logged {
		return
	}
	if now == "ok" {
		if g.logged != "" {
			g.logger.Info("the database matches the audit anchors again: work resumes")
		}
	} else if g.err != nil {
		g.logger.Warn("cannot compare the database with the audit anchors in the bucket; work goes on (a batch needs the bucket anyway), anchoring waits", "error", g.err)
	} else {
		g.logger.Error("the database does not match the audit anchors in the bucket: no archiving or erasing",
			"state", g.state.State, "reason", g.state.Reason)
	}
	g.logged = now
}

// Ready returns nil when the database matches the anchors, an error
// wrapping ErrLedger when it does not, and the check's error when it could
// not be made (the bucket is unreachable): only ErrLedger holds work back.
func (g *Guard) Ready(ctx context.Context) error {
	st, err := g.State(ctx)
	if err != nil {
		return fmt.Errorf("error comparing the database with the audit anchors: %w", err)
	}
	if !st.OK {
		return fmt.Errorf("%w: %s", ErrLedger, st.Reason)
	}
	return nil
}

package request_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/internal/lethetest"
	"github.com/lethehq/lethe/request"
)

// regimeConfig is CRMConfig with a regime of its own that has no extension.
const regimeConfig = lethetest.CRMConfig + `  regimes:
    lgpd: {deadline: 15d, acknowledge: 2bd}
`

// period parses a period the test writes.
func period(t *testing.T, s string) config.Period {
	t.Helper()
	p, err := config.ParsePeriod(s)
	require.NoError(t, err)
	return p
}

// inputField requires err to be an input error on field and returns it.
func inputField(t *testing.T, err error, field string) *lethe.InputError {
	t.Helper()
	require.ErrorIs(t, err, lethe.ErrBadInput)
	var in *lethe.InputError
	require.True(t, errors.As(err, &in), "%v", err)
	require.Equal(t, field, in.Field, "%v", err)
	return in
}

// auditDetail returns the detail of the newest audit entry of kind.
func auditDetail(t *testing.T, p *lethetest.Env, kind string) map[string]any {
	t.Helper()
	var raw string
	require.NoError(t, p.DB.Pool.QueryRow(context.Background(),
		`SELECT detail::text FROM lethe.audit_log WHERE kind = $1 ORDER BY seq DESC LIMIT 1`, kind).Scan(&raw))
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(raw), &m))
	return m
}

func TestSubmitUnderEachRegime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := lethetest.New(t, lethetest.CRMSchema, regimeConfig)
	groups := p.SeedCRM(t, 3)

	submit := func(key, ticket, regime string) *request.Request {
		t.Helper()
		req, created, err := p.Intake.Submit(ctx, request.Submission{Key: key, Ticket: ticket, By: "privacy-team", Regime: regime})
		require.NoError(t, err)
		require.True(t, created)
		return req
	}

	// No regime named: the default, ccpa. The dates run from received_at
	// in UTC.
	c := submit(groups["recent"][0], "T-ccpa", "")
	require.Equal(t, "ccpa", c.Regime)
	received := c.ReceivedAt.UTC()
	require.True(t, c.Deadline.Equal(received.AddDate(0, 0, 45)), "deadline %s", c.Deadline)
	require.Equal(t, 45, c.DaysLeft)
	require.NotNil(t, c.AcknowledgeBy)
	require.True(t, c.AcknowledgeBy.Equal(period(t, "10bd").AddTo(received)), "acknowledge_by %s", c.AcknowledgeBy)
	require.True(t, c.AcknowledgeBy.After(received.AddDate(0, 0, 13)) && c.AcknowledgeBy.Before(received.AddDate(0, 0, 17)),
		"10 business days are 14 to 16 calendar days")
	require.Nil(t, c.ExtendedAt)
	require.Nil(t, c.ExtendedBy)
	require.Nil(t, c.ExtensionReason)

	// gdpr: one calendar month, and no acknowledgement.
	g := submit(groups["recent"][1], "T-gdpr", "gdpr")
	require.Equal(t, "gdpr", g.Regime)
	require.True(t, g.Deadline.Equal(period(t, "1mo").AddTo(g.ReceivedAt.UTC())), "deadline %s", g.Deadline)
	require.Nil(t, g.AcknowledgeBy)

	// A configured regime.
	l := submit(groups["recent"][2], "T-lgpd", "lgpd")
	require.True(t, l.Deadline.Equal(l.ReceivedAt.UTC().AddDate(0, 0, 15)))
	require.True(t, l.AcknowledgeBy.Equal(period(t, "2bd").AddTo(l.ReceivedAt.UTC())))

	// The regime is in the JSON, and so are the nulls.
	b, err := json.Marshal(g)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	require.Equal(t, "gdpr", m["regime"])
	for _, k := range []string{"acknowledge_by", "extended_at", "extended_by", "extension_reason"} {
		v, ok := m[k]
		require.True(t, ok, "%s is in the JSON", k)
		require.Nil(t, v, k)
	}
	require.Equal(t, "lgpd", auditDetail(t, p, "request_received")["regime"])
	require.Equal(t, 1, p.Count(t, `SELECT count(*) FROM lethe.audit_log WHERE kind = 'request_received'
		AND detail::jsonb ->> 'regime' = 'gdpr' AND (detail::jsonb ->> 'request_id')::bigint = $1`, g.ID))

	// An unknown regime changes nothing, and does not repeat the name.
	jobs := len(p.Queue.Taken().Requests)
	require.Equal(t, 3, jobs)
	before := p.Count(t, `SELECT count(*) FROM lethe.request`)
	for _, bad := range []string{"hipaa", "CCPA", " ccpa", "Zoë O'Brien"} {
		_, _, err := p.Intake.Submit(ctx, request.Submission{Key: groups["due"][0], Ticket: "T-bad", By: "x", Regime: bad})
		in := inputField(t, err, "regime")
		require.Equal(t, "--regime is not a configured regime: use one of ccpa, gdpr, lgpd, or define it under requests.regimes", in.Error())
		require.NotContains(t, in.Error(), "Zoë")
	}
	require.Equal(t, before, p.Count(t, `SELECT count(*) FROM lethe.request`))
	require.Empty(t, p.Queue.Taken().Requests)

	// Idempotent per ticket: the same regime, named or by default, is the
	// same request; another regime is refused like another subject.
	again, created, err := p.Intake.Submit(ctx, request.Submission{Key: groups["recent"][0], Ticket: "T-ccpa", By: "privacy-team", Regime: "ccpa"})
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, c.ID, again.ID)
	again, created, err = p.Intake.Submit(ctx, request.Submission{Key: groups["recent"][1], Ticket: "T-gdpr", By: "privacy-team", Regime: "gdpr"})
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, g.ID, again.ID)
	_, _, err = p.Intake.Submit(ctx, request.Submission{Key: groups["recent"][1], Ticket: "T-gdpr", By: "privacy-team"})
	require.ErrorIs(t, err, request.ErrTicketReused)
	in := inputField(t, err, "regime")
	require.Contains(t, in.Error(), "under regime gdpr")
	_, _, err = p.Intake.Submit(ctx, request.Submission{Key: groups["recent"][0], Ticket: "T-ccpa", By: "privacy-team", Regime: "lgpd"})
	require.ErrorIs(t, err, request.ErrTicketReused)
	require.Equal(t, before, p.Count(t, `SELECT count(*) FROM lethe.request`))
	require.Empty(t, p.Queue.Taken().Requests)
	p.RequireAuditIntact(t)
}

func TestExtend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := lethetest.New(t, lethetest.CRMSchema, regimeConfig)
	groups := p.SeedCRM(t, 4)

	c := p.Submit(t, groups["recent"][0], "T-1", false)
	audits := p.AuditKinds(t)["request_extended"]
	require.Zero(t, audits)

	// Blank input is refused before anything is read.
	_, err := p.Intake.Extend(ctx, c.ID, " ", "dpo")
	inputField(t, err, "reason")
	_, err = p.Intake.Extend(ctx, c.ID, "complex", "")
	inputField(t, err, "by")
	_, err = p.Intake.Extend(ctx, 999999, "complex", "dpo")
	require.ErrorIs(t, err, request.ErrNoRequest)

	// ccpa: 45 more days, once.
	ext, err := p.Intake.Extend(ctx, c.ID, "many systems to search", "dpo")
	require.NoError(t, err)
	require.True(t, ext.Deadline.Equal(c.Deadline.UTC().AddDate(0, 0, 45)), "deadline %s", ext.Deadline)
	require.Equal(t, 90, ext.DaysLeft)
	require.NotNil(t, ext.ExtendedAt)
	require.WithinDuration(t, time.Now(), *ext.ExtendedAt, time.Minute)
	require.Equal(t, "dpo", *ext.ExtendedBy)
	require.Equal(t, "many systems to search", *ext.ExtensionReason)
	require.Equal(t, c.AcknowledgeBy, ext.AcknowledgeBy, "the acknowledgement does not move")
	require.Equal(t, ext, p.Get(t, c.ID))
	d := auditDetail(t, p, "request_extended")
	require.Equal(t, float64(c.ID), d["request_id"])
	require.Equal(t, "ccpa", d["regime"])
	require.Equal(t, "45d", d["extension"])
	require.Equal(t, "many systems to search", d["reason"])
	before, err := time.Parse(time.RFC3339Nano, d["deadline_before"].(string))
	require.NoError(t, err)
	require.True(t, before.Equal(c.Deadline))

	// A second time is refused, and changes nothing.
	_, err = p.Intake.Extend(ctx, c.ID, "still more", "someone else")
	require.ErrorIs(t, err, request.ErrExtended)
	in := inputField(t, err, "id")
	require.Contains(t, in.Problem, "extended already")
	require.Contains(t, in.Problem, "by dpo")
	require.Equal(t, ext, p.Get(t, c.ID))
	require.Equal(t, 1, p.AuditKinds(t)["request_extended"])

	// gdpr: two more calendar months.
	g, _, err := p.Intake.Submit(ctx, request.Submission{Key: groups["recent"][1], Ticket: "T-2", By: "privacy-team", Regime: "gdpr"})
	require.NoError(t, err)
	gx, err := p.Intake.Extend(ctx, g.ID, "complex", "dpo")
	require.NoError(t, err)
	require.True(t, gx.Deadline.Equal(period(t, "2mo").AddTo(g.Deadline.UTC())), "deadline %s", gx.Deadline)

	// A regime without an extension.
	l, _, err := p.Intake.Submit(ctx, request.Submission{Key: groups["recent"][2], Ticket: "T-3", By: "privacy-team", Regime: "lgpd"})
	require.NoError(t, err)
	_, err = p.Intake.Extend(ctx, l.ID, "complex", "dpo")
	in = inputField(t, err, "id")
	require.Contains(t, in.Problem, "regime lgpd, which has no extension")
	require.NotErrorIs(t, err, request.ErrExtended)
	require.Equal(t, l, p.Get(t, l.ID))

	// A regime the config no longer has.
	narrow := p.Intake.IntakeConfig
	narrow.Regimes = config.BuiltinRegimes()
	ni, err := request.NewIntake(narrow)
	require.NoError(t, err)
	_, err = ni.Extend(ctx, l.ID, "complex", "dpo")
	require.Contains(t, inputField(t, err, "id").Problem, "no longer defines")
	_, _, err = ni.Submit(ctx, request.Submission{Key: groups["recent"][2], Ticket: "T-3", By: "privacy-team", Regime: "lgpd"})
	inputField(t, err, "regime")

	// An ended request.
	done := p.Submit(t, "never-seen", "T-4", false)
	p.Work(t)
	require.Equal(t, request.StateCompleted, p.Get(t, done.ID).State)
	_, err = p.Intake.Extend(ctx, done.ID, "late", "dpo")
	require.Contains(t, inputField(t, err, "id").Problem, "has ended (completed)")

	// Two at once: one wins.
	r := p.Submit(t, groups["recent"][3], "T-5", false)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = p.Intake.Extend(ctx, r.ID, "busy", "dpo")
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else {
			require.ErrorIs(t, err, request.ErrExtended)
		}
	}
	require.Equal(t, 1, ok)
	require.True(t, p.Get(t, r.ID).Deadline.Equal(r.Deadline.UTC().AddDate(0, 0, 45)))
	require.Equal(t, 3, p.AuditKinds(t)["request_extended"])
	p.RequireAuditIntact(t)
}

func TestStatusByRegime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := lethetest.New(t, lethetest.CRMSchema, regimeConfig)
	groups := p.SeedCRM(t, 4)

	submit := func(key, ticket, regime string) *request.Request {
		t.Helper()
		req, _, err := p.Intake.Submit(ctx, request.Submission{Key: key, Ticket: ticket, By: "privacy-team", Regime: regime})
		require.NoError(t, err)
		return req
	}
	fresh := submit(groups["recent"][0], "A-fresh", "")   // ccpa: to acknowledge, deadline far
	late := submit(groups["recent"][1], "A-late", "ccpa") // acknowledgement overdue
	near := submit(groups["recent"][2], "D-near", "gdpr") // within 10 days of its deadline
	past := submit(groups["recent"][3], "D-past", "lgpd") // past its deadline
	submit(groups["active"][0], "G-calm", "gdpr")         // nothing to show but a count
	ended := submit("never-seen", "E-ended", "ccpa")      // completes: not listed
	for _, q := range []struct {
		sql string
		id  int64
	}{
		{`UPDATE lethe.request SET acknowledge_by = now() - interval '2 days' WHERE id = $1`, late.ID},
		{`UPDATE lethe.request SET deadline = now() + interval '3 days' WHERE id = $1`, near.ID},
		{`UPDATE lethe.request SET deadline = now() - interval '1 day', acknowledge_by = now() - interval '12 days' WHERE id = $1`, past.ID},
		{`UPDATE lethe.request SET state = 'completed', subject_key = NULL, completed_at = now() WHERE id = $1`, ended.ID},
	} {
		_, err := p.DB.Pool.Exec(ctx, q.sql, q.id)
		require.NoError(t, err)
	}
	_, err := p.Intake.Extend(ctx, near.ID, "complex", "dpo")
	require.NoError(t, err)
	_, err = p.DB.Pool.Exec(ctx, `UPDATE lethe.request SET deadline = now() + interval '5 days' WHERE id = $1`, near.ID)
	require.NoError(t, err)

	st, err := request.Status(ctx, p.DB.Pool)
	require.NoError(t, err)

	// To acknowledge: the open requests with a date, the passed first.
	var ack []int64
	for _, a := range st.ToAcknowledge {
		ack = append(ack, a.ID)
	}
	require.Equal(t, []int64{past.ID, late.ID, fresh.ID}, ack)
	require.True(t, st.ToAcknowledge[0].Overdue)
	require.Equal(t, "lgpd", st.ToAcknowledge[0].Regime)
	require.True(t, st.ToAcknowledge[1].Overdue)
	require.InDelta(t, -2, st.ToAcknowledge[1].DaysLeft, 0.2)
	require.False(t, st.ToAcknowledge[2].Overdue)
	require.Equal(t, "ccpa", st.ToAcknowledge[2].Regime)
	require.True(t, st.ToAcknowledge[2].AcknowledgeBy.Equal(*fresh.AcknowledgeBy))

	// At risk: past and near deadlines, soonest first.
	require.Len(t, st.AtRisk, 2)
	require.Equal(t, past.ID, st.AtRisk[0].ID)
	require.True(t, st.AtRisk[0].Overdue)
	require.Equal(t, "lgpd", st.AtRisk[0].Regime)
	require.Equal(t, near.ID, st.AtRisk[1].ID)
	require.False(t, st.AtRisk[1].Overdue)
	require.True(t, st.AtRisk[1].Extended)
	require.Equal(t, "gdpr", st.AtRisk[1].Regime)
	require.InDelta(t, 5, st.AtRisk[1].DaysLeft, 0.2)

	// Per regime, open requests only.
	require.Equal(t, []request.RegimeCount{
		{Regime: "ccpa", Open: 2, ToAcknowledge: 2, AcknowledgeOverdue: 1},
		{Regime: "gdpr", Open: 2, NearDeadline: 1, Extended: 1},
		{Regime: "lgpd", Open: 1, ToAcknowledge: 1, AcknowledgeOverdue: 1, PastDeadline: 1},
	}, st.ByRegime)

	// The JSON keeps the old names and adds the new ones.
	b, err := json.Marshal(st)
	require.NoError(t, err)
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{"requests", "requests_near_deadline", "requests_to_acknowledge", "requests_by_regime"} {
		require.Contains(t, m, k)
	}
}

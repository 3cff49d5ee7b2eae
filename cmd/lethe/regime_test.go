package main_test

// Exec tests of deletion-request regimes: request delete --regime, request
// extend, and what show, list and status say of them.

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/config"
)

// regimeView is the part of `request show --json` that regimes add.
type regimeView struct {
	ID              int64      `json:"id"`
	Ticket          string     `json:"ticket"`
	ReceivedAt      time.Time  `json:"received_at"`
	Regime          string     `json:"regime"`
	Deadline        time.Time  `json:"deadline"`
	DaysLeft        int        `json:"days_left"`
	AcknowledgeBy   *time.Time `json:"acknowledge_by"`
	ExtendedAt      *time.Time `json:"extended_at"`
	ExtendedBy      *string    `json:"extended_by"`
	ExtensionReason *string    `json:"extension_reason"`
}

func decodeRegime(t *testing.T, r result) regimeView {
	t.Helper()
	requireOK(t, r)
	requireKeys(t, []byte(r.stdout), "regime", "deadline", "acknowledge_by", "extended_at", "extended_by", "extension_reason")
	var v regimeView
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v), "%s", r)
	return v
}

// requestCount is how many requests lethe holds.
func (p *privacy) requestCount(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, p.db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM lethe.request`).Scan(&n))
	return n
}

// months is a period of n calendar months.
func months(n int) config.Period { return config.Period{N: n, Unit: config.UnitMonth} }

func TestRequestRegimesCLI(t *testing.T) {
	t.Parallel()
	// No worker: the requests stay open, as the deadlines are about them.
	p := newPrivacy(t, false)
	keys := p.keys(catGoneRecent)
	require.GreaterOrEqual(t, len(keys), 3)

	// gdpr: a calendar month, nothing to acknowledge.
	g := decodeRegime(t, p.run(t, "request", "delete", "--subject", keys[0], "--ticket", "R-1", "--by", "privacy", "--regime", "gdpr", "--json"))
	require.Equal(t, "gdpr", g.Regime)
	require.Nil(t, g.AcknowledgeBy)
	require.True(t, g.Deadline.Equal(months(1).AddTo(g.ReceivedAt.UTC())), "one calendar month on: %s -> %s", g.ReceivedAt, g.Deadline)

	// No --regime: ccpa, with an acknowledge-by date on a weekday.
	c := decodeRegime(t, p.run(t, "request", "delete", "--subject", keys[1], "--ticket", "R-2", "--by", "privacy", "--json"))
	require.Equal(t, "ccpa", c.Regime)
	require.True(t, c.Deadline.Equal(c.ReceivedAt.AddDate(0, 0, 45)))
	require.NotNil(t, c.AcknowledgeBy)
	require.NotContains(t, []time.Weekday{time.Saturday, time.Sunday}, c.AcknowledgeBy.UTC().Weekday())

	// Bad --regime: exit 2, one line naming the flag, nothing recorded.
	n := p.requestCount(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--subject", keys[2], "--ticket", "R-3", "--regime", "hipaa"}, []string{"--regime", "not a configured regime", "ccpa, gdpr"}},
		{[]string{"--subject", keys[2], "--ticket", "R-3", "--regime", "GDPR"}, []string{"--regime", "not a configured regime"}},
		{[]string{"--subject", keys[2], "--ticket", "R-3", "--regime", " "}, []string{"--regime", "blank"}},
		{[]string{"--subject", keys[0], "--ticket", "R-1", "--regime", "ccpa"}, []string{"--regime", fmt.Sprintf("request %d under regime gdpr", g.ID)}},
		{[]string{"--subject", keys[0], "--ticket", "R-1"}, []string{"--regime", "under regime gdpr"}},
	} {
		r := p.run(t, append(append([]string{"request", "delete", "--by", "privacy"}, tc.args...), "--json")...)
		requireOneLineError(t, r, 2, tc.want...)
		require.Empty(t, r.stdout)
	}
	require.Equal(t, n, p.requestCount(t))
	// The same ticket under its own regime is the same request.
	again := decodeRegime(t, p.run(t, "request", "delete", "--subject", keys[0], "--ticket", "R-1", "--by", "privacy", "--regime", "gdpr", "--json"))
	require.Equal(t, g.ID, again.ID)

	// extend: once, by the regime's extension.
	id := fmt.Sprint(c.ID)
	x := decodeRegime(t, p.run(t, "request", "extend", id, "--reason", "many systems to search", "--by", "dpo", "--json"))
	require.True(t, x.Deadline.Equal(c.Deadline.AddDate(0, 0, 45)), "%s -> %s", c.Deadline, x.Deadline)
	require.NotNil(t, x.ExtendedAt)
	require.Equal(t, "dpo", *x.ExtendedBy)
	require.Equal(t, "many systems to search", *x.ExtensionReason)
	require.Equal(t, 90, x.DaysLeft)
	r := p.run(t, "request", "extend", "--reason", "again", "--by", "dpo", id)
	line := requireOneLineError(t, r, 2, "request extend", "extended already", "by dpo", "a deadline moves once")
	require.NotContains(t, line, "--id")
	require.Equal(t, x, decodeRegime(t, p.run(t, "request", "show", id, "--json")), "a refused extend changes nothing")

	// By ticket, in text.
	r = p.run(t, "request", "extend", "--ticket", "R-1", "--reason", "complex", "--by", "dpo")
	requireOK(t, r)
	require.Contains(t, r.stderr, fmt.Sprintf("request %d: deadline extended to ", g.ID))
	require.Contains(t, r.stdout, "regime:    gdpr")
	require.Contains(t, r.stdout, "extended:  ")
	require.Contains(t, r.stdout, "by dpo: complex")
	gx := decodeRegime(t, p.run(t, "request", "show", "--ticket", "R-1", "--json"))
	require.True(t, gx.Deadline.Equal(months(2).AddTo(g.Deadline.UTC())), "two calendar months on: %s -> %s", g.Deadline, gx.Deadline)

	// Bad extend command lines.
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{id, "--by", "dpo"}, 2, []string{"--reason", "required"}},
		{[]string{id, "--reason", "r"}, 2, []string{"--by", "required"}},
		{[]string{"--reason", "r", "--by", "dpo"}, 2, []string{"give a request ID or --ticket ID"}},
		{[]string{id, "--ticket", "R-2", "--reason", "r", "--by", "dpo"}, 2, []string{"give a request ID or --ticket ID"}},
		{[]string{"abc", "--reason", "r", "--by", "dpo"}, 2, []string{`"abc" is not a request id`}},
		{[]string{id, "7", "--reason", "r", "--by", "dpo"}, 2, []string{"unexpected argument"}},
		{[]string{"999999", "--reason", "r", "--by", "dpo"}, 1, []string{"no request has id 999999"}},
		{[]string{"--ticket", "NOPE", "--reason", "r", "--by", "dpo"}, 1, []string{"no request has ticket NOPE"}},
	} {
		r := p.run(t, append([]string{"request", "extend"}, tc.args...)...)
		requireOneLineError(t, r, tc.code, tc.want...)
	}

	// show and list name the regime and the acknowledge-by date.
	r = p.run(t, "request", "show", id)
	requireOK(t, r)
	require.Contains(t, r.stdout, "regime:    ccpa")
	require.Contains(t, r.stdout, "acknowledge receipt by: "+c.AcknowledgeBy.UTC().Format(time.DateOnly))
	r = p.run(t, "request", "list")
	requireOK(t, r)
	require.Regexp(t, `(?m)^id\s+ticket\s+state\s+regime\s+received\s+acknowledge by\s+deadline`, r.stdout)
	require.Regexp(t, fmt.Sprintf(`(?m)^%d\s+R-2\s+received\s+ccpa\s+\S+\s+%s\s+%s \(extended\)\s+90`, c.ID,
		c.AcknowledgeBy.UTC().Format(time.DateOnly), x.Deadline.UTC().Format(time.DateOnly)), r.stdout)
	require.Regexp(t, fmt.Sprintf(`(?m)^%d\s+R-1\s+received\s+gdpr\s+\S+\s+-\s+`, g.ID), r.stdout)

	// status: the request to acknowledge, and a deadline at risk, by regime.
	_, err := p.db.Pool.Exec(t.Context(), `UPDATE lethe.request SET deadline = now() + interval '2 days' WHERE id = $1`, g.ID)
	require.NoError(t, err)
	_, err = p.db.Pool.Exec(t.Context(), `UPDATE lethe.request SET acknowledge_by = now() - interval '1 day' WHERE id = $1`, c.ID)
	require.NoError(t, err)
	r = p.run(t, "status")
	requireOK(t, r)
	t.Logf("$ lethe status\n%s", r.stdout)
	require.Regexp(t, `(?m)^OPEN REQUESTS BY REGIME\n\s+regime\s+open\s+to acknowledge\s+acknowledgement overdue\s+within 10 days of deadline\s+past deadline\s+extended\n\s+ccpa\s+1\s+1\s+1\s+0\s+0\s+1\n\s+gdpr\s+1\s+0\s+0\s+1\s+0\s+1\n`, r.stdout)
	require.Regexp(t, fmt.Sprintf(`(?m)^REQUESTS TO ACKNOWLEDGE .*\n  ccpa\n    request %d \(ticket R-2\) received: acknowledge by \S+, OVERDUE by 1\.\d days\n\n`, c.ID), r.stdout)
	require.Regexp(t, fmt.Sprintf(`(?m)^REQUESTS WITHIN 10 DAYS OF THEIR DEADLINE\n  gdpr\n    request %d \(ticket R-1\) received: deadline \S+ \(extended already\), [12]\.\d days left\n`, g.ID), r.stdout)
	requireNoNeedles(t, p.shop, "lethe status", r.stdout)
	m := p.statusJSON(t)
	var ack []struct {
		ID      int64  `json:"id"`
		Regime  string `json:"regime"`
		Overdue bool   `json:"overdue"`
	}
	require.NoError(t, json.Unmarshal(m["requests_to_acknowledge"], &ack))
	require.Len(t, ack, 1)
	require.Equal(t, c.ID, ack[0].ID)
	require.True(t, ack[0].Overdue)
	var byRegime []map[string]any
	require.NoError(t, json.Unmarshal(m["requests_by_regime"], &byRegime))
	require.Len(t, byRegime, 2)
	require.Equal(t, "ccpa", byRegime[0]["regime"])

	// Every change is in the audit log, which holds.
	var extended int
	require.NoError(t, p.db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM lethe.audit_log WHERE kind = 'request_extended'`).Scan(&extended))
	require.Equal(t, 2, extended)
	p.requireAuditIntact(t)
}

// TestRegimeConfigErrorsCLI checks that a bad regime in the config stops
// request delete with exit 2 and one line naming the key.
func TestRegimeConfigErrorsCLI(t *testing.T) {
	t.Parallel()
	b := newBadInput(t)
	key := b.keys(catGoneRecent)[0]
	for _, tc := range []struct {
		name, add string
		want      []string
	}{
		{"unknown default", "  default_regime: hipaa\n", []string{"requests.default_regime", `"hipaa" is not a regime`, "ccpa, gdpr"}},
		{"bad deadline", "  regimes:\n    acme: {deadline: 30x}\n", []string{"requests.regimes.acme.deadline", `"30x"`}},
		{"bad acknowledge", "  regimes:\n    acme: {deadline: 30d, acknowledge: 10 bd}\n", []string{"requests.regimes.acme.acknowledge"}},
		{"unknown key", "  regimes:\n    acme: {deadline: 30d, extnsion: 30d}\n", []string{"requests.regimes.acme.extnsion", "unknown key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := b.variant(t, "  protect: \"state = 'active'\"\n", "  protect: \"state = 'active'\"\n"+tc.add)
			r := letheWith(t, 30*time.Second, nil, "request", "delete", "--subject", key, "--ticket", "C-1", "--by", "x", "--config", cfg)
			requireOneLineError(t, r, 2, tc.want...)
			r = letheWith(t, 30*time.Second, nil, "request", "extend", "1", "--reason", "r", "--by", "x", "--config", cfg)
			requireOneLineError(t, r, 2, tc.want...)
			b.requireUnchanged(t)
		})
	}
}

// TestConfiguredRegimeCLI checks a regime of the config's own, made the
// default, from the command line.
func TestConfiguredRegimeCLI(t *testing.T) {
	t.Parallel()
	s := newShop(t, 0)
	key := s.keys(catGoneRecent)[0]
	const protect = "  protect: \"state = 'active'\"\n"
	require.Equal(t, 1, strings.Count(s.yaml, protect))
	cfg := s.writeConfig(t, "lgpd.yaml", strings.Replace(s.yaml, protect, protect+"  default_regime: lgpd\n  regimes:\n    lgpd: {deadline: 15d}\n", 1))
	r := letheWith(t, 30*time.Second, nil, "request", "delete", "--subject", key, "--ticket", "C-2", "--by", "x", "--json", "--config", cfg)
	v := decodeRegime(t, r)
	require.Equal(t, "lgpd", v.Regime)
	require.True(t, v.Deadline.Equal(v.ReceivedAt.AddDate(0, 0, 15)))
	r = letheWith(t, 30*time.Second, nil, "request", "extend", fmt.Sprint(v.ID), "--reason", "r", "--by", "x", "--config", cfg)
	requireOneLineError(t, r, 2, "regime lgpd, which has no extension", "requests.regimes.lgpd.extension")
	require.Empty(t, r.stdout)
}

package api_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAPIRegimes drives regimes through lethe serve's API: a request under
// a regime, an unknown regime, the same ticket under another regime, and
// POST /api/v1/requests/{id}/extend once, twice, by the wrong role, and on
// a request that does not exist. Every answer is held to the OpenAPI
// document.
func TestAPIRegimes(t *testing.T) {
	t.Parallel()
	l := startLive(t, liveOptions{})
	c := newAPIClient(t, "http://"+l.addr, nil)
	gone := l.keys["due"][0]
	other := l.keys["due"][1]

	type view struct {
		ID              int64      `json:"id"`
		Regime          string     `json:"regime"`
		ReceivedAt      time.Time  `json:"received_at"`
		Deadline        time.Time  `json:"deadline"`
		AcknowledgeBy   *time.Time `json:"acknowledge_by"`
		ExtendedAt      *time.Time `json:"extended_at"`
		ExtendedBy      *string    `json:"extended_by"`
		ExtensionReason *string    `json:"extension_reason"`
	}

	// Without a regime: ccpa, with an acknowledge-by date.
	r := c.call("POST", "/api/v1/requests", "privacy", map[string]any{"subject": other, "ticket": "T-CCPA", "by": "desk"})
	require.Equal(t, 201, r.status, "%s", r.body)
	var cc view
	r.json(t, &cc)
	require.Equal(t, "ccpa", cc.Regime)
	require.NotNil(t, cc.AcknowledgeBy)
	require.True(t, cc.Deadline.Equal(cc.ReceivedAt.AddDate(0, 0, 45)))

	// gdpr.
	body := map[string]any{"subject": gone, "ticket": "T-GDPR", "by": "desk", "regime": "gdpr"}
	r = c.call("POST", "/api/v1/requests", "privacy", body)
	require.Equal(t, 201, r.status, "%s", r.body)
	var g view
	r.json(t, &g)
	require.Equal(t, "gdpr", g.Regime)
	require.Nil(t, g.AcknowledgeBy)
	require.Nil(t, g.ExtendedAt)
	require.Equal(t, 200, c.call("POST", "/api/v1/requests", "privacy", body).status, "the same ticket and regime is the same request")

	// An unknown regime is 422 naming the field; the same ticket under
	// another regime is 409. Neither records anything.
	before := l.count(t, `SELECT count(*) FROM lethe.request`)
	detail := c.call("POST", "/api/v1/requests", "privacy", map[string]any{"subject": gone, "ticket": "T-X", "by": "desk", "regime": "hipaa"}).problem(t, 422)
	require.Equal(t, "regime is not a configured regime: use one of ccpa, gdpr, or define it under requests.regimes", detail)
	c.call("POST", "/api/v1/requests", "privacy", map[string]any{"subject": gone, "ticket": "T-X", "by": "desk", "regime": 7}).problem(t, 400)
	detail = c.call("POST", "/api/v1/requests", "privacy", map[string]any{"subject": gone, "ticket": "T-GDPR", "by": "desk", "regime": "ccpa"}).problem(t, 409)
	require.Contains(t, detail, "another regime")
	require.Equal(t, before, l.count(t, `SELECT count(*) FROM lethe.request`))

	// Extend: only privacy may, once.
	path := fmt.Sprintf("/api/v1/requests/%d/extend", g.ID)
	ext := map[string]any{"reason": "complex request", "by": "dpo"}
	for _, role := range []string{"legal", "auditor", "ops"} {
		require.Contains(t, c.call("POST", path, role, ext).problem(t, 403), "role "+role)
	}
	c.call("POST", path, "", ext).problem(t, 401)
	require.Equal(t, 0, l.count(t, `SELECT count(*) FROM lethe.request WHERE extended_at IS NOT NULL`))

	c.call("POST", path, "privacy", map[string]any{"reason": "x"}).problem(t, 422)
	c.call("POST", path, "privacy", map[string]any{"reason": "x", "by": "dpo", "days": 90}).problem(t, 400)
	c.call("POST", path, "privacy", `{"reason": "x", "by": `).problem(t, 400)
	c.call("POST", "/api/v1/requests/999999/extend", "privacy", ext).problem(t, 404)
	c.call("POST", "/api/v1/requests/abc/extend", "privacy", ext).problem(t, 400)
	r = c.call("GET", path, "privacy", nil)
	require.Equal(t, 405, r.status)
	require.Equal(t, "POST", r.header.Get("Allow"))

	r = c.call("POST", path, "privacy", ext)
	require.Equal(t, 200, r.status, "%s", r.body)
	var gx view
	r.json(t, &gx)
	require.Equal(t, g.ID, gx.ID)
	require.NotNil(t, gx.ExtendedAt)
	require.Equal(t, "dpo", *gx.ExtendedBy)
	require.Equal(t, "complex request", *gx.ExtensionReason)
	require.True(t, gx.Deadline.After(g.Deadline.AddDate(0, 0, 58)) && gx.Deadline.Before(g.Deadline.AddDate(0, 0, 63)),
		"two calendar months on: %s -> %s", g.Deadline, gx.Deadline)

	detail = c.call("POST", path, "privacy", map[string]any{"reason": "again", "by": "dpo"}).problem(t, 422)
	require.Contains(t, detail, "extended already")
	var again view
	c.call("GET", fmt.Sprintf("/api/v1/requests/%d", g.ID), "auditor", nil).json(t, &again)
	require.Equal(t, gx, again, "the refused extension changed nothing")

	// The status names both, per regime.
	var st struct {
		ToAcknowledge []struct {
			ID     int64  `json:"id"`
			Regime string `json:"regime"`
		} `json:"requests_to_acknowledge"`
		ByRegime []struct {
			Regime   string `json:"regime"`
			Open     int    `json:"open"`
			Extended int    `json:"extended"`
		} `json:"requests_by_regime"`
	}
	c.call("GET", "/api/v1/status", "auditor", nil).json(t, &st)
	require.Len(t, st.ToAcknowledge, 1)
	require.Equal(t, cc.ID, st.ToAcknowledge[0].ID)
	require.Len(t, st.ByRegime, 2)
	require.Equal(t, "gdpr", st.ByRegime[1].Regime)
	require.Equal(t, 1, st.ByRegime[1].Extended)

	// The call and the change are both audited.
	require.Equal(t, 1, l.count(t, `SELECT count(*) FROM lethe.audit_log WHERE kind = 'request_extended' AND actor = 'dpo'`))
	require.Equal(t, 1, l.count(t, `SELECT count(*) FROM lethe.audit_log WHERE kind = 'api_call' AND actor = 'token:intake'
		AND detail::jsonb ->> 'route' = 'POST /api/v1/requests/{id}/extend' AND (detail::jsonb ->> 'status')::int = 200`))
	require.Equal(t, 3, l.count(t, `SELECT count(*) FROM lethe.audit_log WHERE kind = 'api_call'
		AND detail::jsonb ->> 'route' = 'POST /api/v1/requests/{id}/extend' AND (detail::jsonb ->> 'status')::int = 403`))
	require.True(t, c.seen["extendRequest"])
}

package main_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// count runs a count query on the shop's database.
func (s *shop) count(t *testing.T, query string) int {
	t.Helper()
	var n int
	require.NoError(t, s.db.Pool.QueryRow(context.Background(), query).Scan(&n))
	return n
}

// TestSweepLimitBoundsAFirstRun: sweep --wait --limit N archives N due
// subjects and no more, in policy order; the next sweep takes the rest.
func TestSweepLimitBoundsAFirstRun(t *testing.T) {
	t.Parallel()
	s := newShop(t, 7)
	due := len(s.keys(catGoneDue)) + len(s.keys(catSpamDue))
	require.Greater(t, len(s.keys(catGoneDue)), 20)

	r := lethe(t, "sweep", "--wait", "--limit", "20", "--json", "--config", s.cfgPath)
	requireOK(t, r)
	var first struct {
		Run struct{ Subjects, Archived, Destroyed int }
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &first), r.stdout)
	require.Equal(t, 20, first.Run.Subjects, r.stdout)
	require.Equal(t, 20, first.Run.Archived, "the first policy (gone) is taken first")
	require.Equal(t, 0, first.Run.Destroyed)
	require.Equal(t, 20, s.count(t, `SELECT count(*) FROM lethe.manifest`))

	r = lethe(t, "sweep", "--wait", "--json", "--config", s.cfgPath)
	requireOK(t, r)
	var rest struct{ Run struct{ Subjects int } }
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rest), r.stdout)
	require.Equal(t, due-20, rest.Run.Subjects)
	require.Equal(t, len(s.keys(catGoneDue)), s.count(t, `SELECT count(*) FROM lethe.manifest`))
}

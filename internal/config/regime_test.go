package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/config"
)

func TestParsePeriod(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		in   string
		want config.Period
	}{
		{"45d", config.Period{N: 45, Unit: config.UnitDay}},
		{"6w", config.Period{N: 6, Unit: config.UnitWeek}},
		{"1y", config.Period{N: 1, Unit: config.UnitYear}},
		{"10bd", config.Period{N: 10, Unit: config.UnitBusinessDay}},
		{"1mo", config.Period{N: 1, Unit: config.UnitMonth}},
		{"007d", config.Period{N: 7, Unit: config.UnitDay}},
		{"100000d", config.Period{N: 100000, Unit: config.UnitDay}},
	} {
		got, err := config.ParsePeriod(tc.in)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
		require.Equal(t, strings.TrimLeft(tc.in, "0"), got.String())
	}
	for _, tc := range []struct{ in, msg string }{
		{"", "empty duration"},
		{"45", "has no unit"},
		{"d", "no number before its unit"},
		{"mo", "no number before its unit"},
		{"0bd", "greater than zero"},
		{"45h", "no unit d, w, y, bd"},
		{"1m", "no unit d, w, y, bd"},
		{"1 mo", "no unit d, w, y, bd"},
		{"1MO", "no unit d, w, y, bd"},
		{"1.5mo", "no unit"},
		{"-3d", "no unit"},
		{"3mo2d", "no unit"},
		{"100001d", "too long"},
		{"275y", "too long"},
		{"3572mo", "too long"},
		{"99999999999999999999bd", "too long"},
	} {
		_, err := config.ParsePeriod(tc.in)
		require.ErrorContains(t, err, tc.msg, "%q", tc.in)
	}
}

func TestPeriodAddTo(t *testing.T) {
	t.Parallel()

	day := func(s string) time.Time {
		t.Helper()
		d, err := time.Parse("2006-01-02 15:04", s)
		require.NoError(t, err)
		return d
	}
	for _, tc := range []struct {
		from, period, want string
	}{
		// Days, weeks and years of 365 days, keeping the time of day.
		{"2025-01-01 10:30", "45d", "2025-02-15 10:30"},
		{"2025-12-20 00:00", "2w", "2026-01-03 00:00"},
		{"2024-01-01 08:00", "1y", "2024-12-31 08:00"}, // a leap year has 366 days
		{"2025-01-01 08:00", "1y", "2026-01-01 08:00"},

		// Business days skip Saturday and Sunday. 2025-01-06 is a Monday.
		{"2025-01-06 09:00", "1bd", "2025-01-07 09:00"},  // Mon -> Tue
		{"2025-01-06 09:00", "4bd", "2025-01-10 09:00"},  // Mon -> Fri
		{"2025-01-06 09:00", "5bd", "2025-01-13 09:00"},  // Mon -> next Mon
		{"2025-01-10 17:00", "1bd", "2025-01-13 17:00"},  // Fri -> Mon
		{"2025-01-09 17:00", "2bd", "2025-01-13 17:00"},  // Thu -> Mon
		{"2025-01-10 17:00", "10bd", "2025-01-24 17:00"}, // Fri -> Fri, two weeks on
		{"2025-01-08 12:00", "10bd", "2025-01-22 12:00"}, // Wed -> Wed, two weekends skipped
		{"2025-01-08 12:00", "7bd", "2025-01-17 12:00"},  // Wed -> Fri of the next week
		{"2025-01-11 23:59", "1bd", "2025-01-13 23:59"},  // Sat -> Mon
		{"2025-01-12 00:01", "1bd", "2025-01-13 00:01"},  // Sun -> Mon
		{"2025-01-11 10:00", "5bd", "2025-01-17 10:00"},  // Sat -> Fri
		{"2025-01-12 10:00", "10bd", "2025-01-24 10:00"}, // Sun -> Fri, a week later
		{"2024-12-24 10:00", "10bd", "2025-01-07 10:00"}, // across the year; holidays count

		// Calendar months: the same day, or the month's last.
		{"2025-01-15 10:00", "1mo", "2025-02-15 10:00"},
		{"2025-01-31 10:00", "1mo", "2025-02-28 10:00"}, // clamped
		{"2024-01-31 10:00", "1mo", "2024-02-29 10:00"}, // clamped, leap year
		{"2024-02-29 10:00", "1mo", "2024-03-29 10:00"},
		{"2025-03-31 10:00", "1mo", "2025-04-30 10:00"},
		{"2025-12-15 10:00", "1mo", "2026-01-15 10:00"}, // December -> January
		{"2025-12-31 23:00", "2mo", "2026-02-28 23:00"}, // across the year, clamped
		{"2025-11-30 10:00", "3mo", "2026-02-28 10:00"},
		{"2023-12-31 10:00", "2mo", "2024-02-29 10:00"},
		{"2025-01-31 10:00", "12mo", "2026-01-31 10:00"},
		{"2024-02-29 10:00", "12mo", "2025-02-28 10:00"},
		{"2025-05-31 10:00", "25mo", "2027-06-30 10:00"},
	} {
		p, err := config.ParsePeriod(tc.period)
		require.NoError(t, err)
		got := p.AddTo(day(tc.from))
		require.Equal(t, day(tc.want), got, "%s + %s", tc.from, tc.period)
		require.Equal(t, time.UTC, got.Location())
	}

	// Nanoseconds and the location are kept; the zero period moves nothing.
	at := time.Date(2025, 1, 31, 9, 8, 7, 654321, time.UTC)
	require.Equal(t, time.Date(2025, 2, 28, 9, 8, 7, 654321, time.UTC), config.Period{N: 1, Unit: config.UnitMonth}.AddTo(at))
	require.Equal(t, at, config.Period{}.AddTo(at))
	require.True(t, config.Period{}.IsZero())
	require.Empty(t, config.Period{}.String())

	// Every business day lands on a weekday, and n+1 business days land
	// later than n.
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for d := range 14 {
		from := start.AddDate(0, 0, d)
		prev := from
		for n := 1; n <= 30; n++ {
			got := config.Period{N: n, Unit: config.UnitBusinessDay}.AddTo(from)
			require.NotContains(t, []time.Weekday{time.Saturday, time.Sunday}, got.Weekday(), "%s + %dbd", from, n)
			require.True(t, got.After(prev), "%s + %dbd", from, n)
			// Counting the weekdays passed gives n.
			count := 0
			for x := from.AddDate(0, 0, 1); !x.After(got); x = x.AddDate(0, 0, 1) {
				if x.Weekday() != time.Saturday && x.Weekday() != time.Sunday {
					count++
				}
			}
			require.Equal(t, n, count, "%s + %dbd = %s", from.Format("Mon 2006-01-02"), n, got.Format("Mon 2006-01-02"))
			prev = got
		}
	}
}

func TestRegimes(t *testing.T) {
	t.Parallel()

	// Without configuration: the built-ins, ccpa by default.
	cfg := mustLoad(t, fullYAML, env)
	require.Equal(t, config.RegimeCCPA, cfg.Requests.DefaultRegime)
	require.Equal(t, []string{"ccpa", "gdpr"}, config.RegimeNames(cfg.Requests.Regimes))
	ccpa := cfg.Requests.Regimes["ccpa"]
	require.Equal(t, config.Period{N: 45, Unit: config.UnitDay}, ccpa.DeadlinePeriod)
	require.Equal(t, config.Period{N: 45, Unit: config.UnitDay}, ccpa.ExtensionPeriod)
	require.Equal(t, config.Period{N: 10, Unit: config.UnitBusinessDay}, ccpa.AcknowledgePeriod)
	gdpr := cfg.Requests.Regimes["gdpr"]
	require.Equal(t, config.Period{N: 1, Unit: config.UnitMonth}, gdpr.DeadlinePeriod)
	require.Equal(t, config.Period{N: 2, Unit: config.UnitMonth}, gdpr.ExtensionPeriod)
	require.True(t, gdpr.AcknowledgePeriod.IsZero())
	require.Equal(t, config.BuiltinRegimes(), cfg.Requests.Regimes, "the built-ins are stated parsed")

	// A regime of its own, a built-in replaced whole, and another default.
	text := replace(t, fullYAML, "  protect: \"status = 'active'\"\n", `  protect: "status = 'active'"
  default_regime: lgpd
  regimes:
    lgpd: {deadline: 15d, acknowledge: 2bd}
    gdpr:
      deadline: 30d
    quebec-25: {deadline: 30d, extension: 1mo, acknowledge: 1w}
`)
	cfg = mustLoad(t, text, env)
	require.Equal(t, "lgpd", cfg.Requests.DefaultRegime)
	require.Equal(t, []string{"ccpa", "gdpr", "lgpd", "quebec-25"}, config.RegimeNames(cfg.Requests.Regimes))
	require.Equal(t, config.BuiltinRegimes()["ccpa"], cfg.Requests.Regimes["ccpa"])
	g := cfg.Requests.Regimes["gdpr"]
	require.Equal(t, config.Period{N: 30, Unit: config.UnitDay}, g.DeadlinePeriod)
	require.True(t, g.ExtensionPeriod.IsZero(), "a replaced built-in keeps nothing of the original")
	l := cfg.Requests.Regimes["lgpd"]
	require.Equal(t, config.Period{N: 2, Unit: config.UnitBusinessDay}, l.AcknowledgePeriod)
	require.True(t, l.ExtensionPeriod.IsZero())
	require.Equal(t, config.Period{N: 1, Unit: config.UnitMonth}, cfg.Requests.Regimes["quebec-25"].ExtensionPeriod)

	// The default may name a built-in.
	cfg = mustLoad(t, replace(t, fullYAML, "  protect: \"status = 'active'\"\n", "  protect: \"status = 'active'\"\n  default_regime: gdpr\n"), env)
	require.Equal(t, "gdpr", cfg.Requests.DefaultRegime)
}

func TestRegimeConfigErrors(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name string
		add  string // lines added under requests:
		keys []string
		msg  string
	}{
		{"bad deadline", "  regimes:\n    acme: {deadline: 30 days}\n", []string{"requests.regimes.acme.deadline"}, `"30 days"`},
		{"deadline in hours", "  regimes:\n    acme: {deadline: 72h}\n", []string{"requests.regimes.acme.deadline"}, "bd (business days) or mo (calendar months)"},
		{"missing deadline", "  regimes:\n    acme: {extension: 30d}\n", []string{"requests.regimes.acme.deadline"}, "is empty"},
		{"empty regime", "  regimes:\n    acme:\n", []string{"requests.regimes.acme.deadline"}, "is empty"},
		{"bad extension", "  regimes:\n    acme: {deadline: 30d, extension: 0d}\n", []string{"requests.regimes.acme.extension"}, "greater than zero"},
		{"bad acknowledge", "  regimes:\n    acme: {deadline: 30d, acknowledge: 10b}\n", []string{"requests.regimes.acme.acknowledge"}, "no unit"},
		{"built-in replaced badly", "  regimes:\n    gdpr: {deadline: 1month}\n", []string{"requests.regimes.gdpr.deadline"}, `"1month"`},
		{"every bad period", "  regimes:\n    b: {deadline: x, extension: y, acknowledge: z}\n",
			[]string{"requests.regimes.b.deadline", "requests.regimes.b.extension", "requests.regimes.b.acknowledge"}, "no unit"},
		{"bad name", "  regimes:\n    Acme Corp: {deadline: 30d}\n", []string{"requests.regimes.Acme Corp"}, "lower case"},
		{"unknown default", "  default_regime: lgpd\n", []string{"requests.default_regime"}, `"lgpd" is not a regime: use one of ccpa, gdpr, or define it`},
		{"default of a bad regime", "  default_regime: acme\n  regimes:\n    acme: {deadline: 1d}\n    x y: {deadline: 1d}\n",
			[]string{"requests.regimes.x y"}, "lower case"},
		{"blank default", "  default_regime: \" \"\n", []string{"requests.default_regime"}, `" " is not a regime`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			text := replace(t, fullYAML, "  protect: \"status = 'active'\"\n", "  protect: \"status = 'active'\"\n"+tc.add)
			_, err := load(t, text, env)
			require.Error(t, err)
			require.True(t, config.IsConfigError(err), "%v", err)
			require.Equal(t, tc.keys, errorKeys(t, err), "%v", err)
			require.Contains(t, err.Error(), tc.msg)
			for _, line := range strings.Split(err.Error(), "\n") {
				require.True(t, strings.HasPrefix(line, "config: requests."), "%q names its key", line)
			}
		})
	}

	// A regime's unknown key is named with its whole path.
	text := replace(t, fullYAML, "  protect: \"status = 'active'\"\n", "  protect: \"status = 'active'\"\n  regimes:\n    acme: {deadline: 30d, extend: 30d}\n")
	_, err := load(t, text, env)
	require.Equal(t, []string{"requests.regimes.acme.extend"}, errorKeys(t, err))
	require.Contains(t, err.Error(), "unknown key")
	// And a regime that is not a mapping is a decoding error on one line.
	text = replace(t, fullYAML, "  protect: \"status = 'active'\"\n", "  protect: \"status = 'active'\"\n  regimes:\n    acme: 30d\n")
	_, err = load(t, text, env)
	require.True(t, config.IsConfigError(err), "%v", err)
	require.NotContains(t, err.Error(), "\n")
	require.Contains(t, err.Error(), "line")
}

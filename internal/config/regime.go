package config

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Regime is a legal regime for deletion requests, such as CCPA or GDPR: how
// long lethe has to carry a request out, whether and by how much that
// deadline may be extended once, and by when receipt must be acknowledged.
// Every period runs from the moment the request was received, in UTC.
type Regime struct {
	// Deadline is how long after receipt the request must be completed,
	// such as 45d or 1mo. Required.
	Deadline string `yaml:"deadline"`
	// Extension is how much later `lethe request extend` may move the
	// deadline, once; empty: the deadline cannot be extended.
	Extension string `yaml:"extension"`
	// Acknowledge is how long after receipt the requester must be told the
	// request arrived, such as 10bd; empty: no acknowledgement is due.
	Acknowledge string `yaml:"acknowledge"`

	// DeadlinePeriod, ExtensionPeriod and AcknowledgePeriod are the three,
	// parsed; the last two are zero when unset. Set by Load.
	DeadlinePeriod    Period `yaml:"-"`
	ExtensionPeriod   Period `yaml:"-"`
	AcknowledgePeriod Period `yaml:"-"`
}

// The built-in regimes' names.
const (
	RegimeCCPA = "ccpa"
	RegimeGDPR = "gdpr"
)

// BuiltinRegimes returns the regimes lethe knows without configuration:
// ccpa (California: 45 days, one extension of 45 days, receipt confirmed
// within 10 business days) and gdpr (EU: one month, extended by two
// months). A regime of the same name under requests.regimes replaces one
// of these whole.
func BuiltinRegimes() map[string]Regime {
	return map[string]Regime{
		RegimeCCPA: {Deadline: "45d", Extension: "45d", Acknowledge: "10bd",
			DeadlinePeriod: Period{45, UnitDay}, ExtensionPeriod: Period{45, UnitDay}, AcknowledgePeriod: Period{10, UnitBusinessDay}},
		RegimeGDPR: {Deadline: "1mo", Extension: "2mo",
			DeadlinePeriod: Period{1, UnitMonth}, ExtensionPeriod: Period{2, UnitMonth}},
	}
}

// regimeName is what a regime may be called: it is stored with each
// request and typed on the command line.
var regimeName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// RegimeNames returns the names of regimes, sorted, for messages that list
// the choices.
func RegimeNames(regimes map[string]Regime) []string {
	return slices.Sorted(maps.Keys(regimes))
}

// validateRegimes checks requests.regimes and requests.default_regime,
// parses their periods, and adds the built-in regimes that the config does
// not replace.
func (r *Requests) validateRegimes() error {
	var errs []error
	merged := BuiltinRegimes()
	for _, name := range RegimeNames(r.Regimes) {
		g := r.Regimes[name]
		key := "requests.regimes." + name
		if !regimeName.MatchString(name) {
			errs = append(errs, Errorf(key, "%q must be lower case letters, digits, - and _ (at most 63)", name))
			continue
		}
		var err error
		if g.Deadline == "" {
			errs = append(errs, Errorf(key+".deadline", "is empty: say how long a request may take, such as 45d or 1mo"))
		} else if g.DeadlinePeriod, err = ParsePeriod(g.Deadline); err != nil {
			errs = append(errs, Errorf(key+".deadline", "%v", err))
		}
		if g.Extension != "" {
			if g.ExtensionPeriod, err = ParsePeriod(g.Extension); err != nil {
				errs = append(errs, Errorf(key+".extension", "%v", err))
			}
		}
		if g.Acknowledge != "" {
			if g.AcknowledgePeriod, err = ParsePeriod(g.Acknowledge); err != nil {
				errs = append(errs, Errorf(key+".acknowledge", "%v", err))
			}
		}
		merged[name] = g
	}
	r.Regimes = merged
	if _, ok := merged[r.DefaultRegime]; !ok {
		errs = append(errs, Errorf("requests.default_regime", "%q is not a regime: use one of %s, or define it under requests.regimes",
			r.DefaultRegime, strings.Join(RegimeNames(merged), ", ")))
	}
	return errors.Join(errs...)
}

// PeriodUnit is the unit of a Period.
type PeriodUnit string

// The units of a Period.
const (
	UnitDay         PeriodUnit = "d"  // calendar days
	UnitWeek        PeriodUnit = "w"  // 7 days
	UnitYear        PeriodUnit = "y"  // 365 days, as in retention periods
	UnitBusinessDay PeriodUnit = "bd" // Monday to Friday; public holidays are not known, so they count
	UnitMonth       PeriodUnit = "mo" // calendar months: the same day of the month, or the month's last day
)

// Period is a legal time limit: a whole number of days (d), weeks (w),
// years of 365 days (y), business days (bd) or calendar months (mo). Unlike
// Days, it is not a fixed length: 1mo from January 31 ends on the last day
// of February, and 10bd from a Friday skip two weekends. The zero value
// means "not set".
type Period struct {
	N    int
	Unit PeriodUnit
}

// maxPeriodDays bounds every Period, as ParseDays bounds Days.
const maxPeriodDays = 100_000

// ParsePeriod parses a period: a positive whole number followed by exactly
// one unit, d, w, y, bd or mo (such as 45d, 10bd or 1mo).
func ParsePeriod(s string) (Period, error) {
	const examples = "such as 45d, 10bd or 1mo"
	if s == "" {
		return Period{}, fmt.Errorf("empty duration: write a number and a unit, %s", examples)
	}
	i := strings.IndexFunc(s, func(c rune) bool { return c < '0' || c > '9' })
	if i < 0 {
		return Period{}, fmt.Errorf("duration %q has no unit: add d, w, y, bd (business days) or mo (calendar months), %s", s, examples)
	}
	digits, unit := s[:i], PeriodUnit(s[i:])
	var days int // the unit's length in days, at least
	switch unit {
	case UnitDay, UnitBusinessDay:
		days = 1
	case UnitWeek:
		days = 7
	case UnitMonth:
		days = 28
	case UnitYear:
		days = 365
	default:
		return Period{}, fmt.Errorf("duration %q has no unit d, w, y, bd (business days) or mo (calendar months), %s", s, examples)
	}
	if digits == "" {
		return Period{}, fmt.Errorf("duration %q has no number before its unit", s)
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n > maxPeriodDays/days {
		return Period{}, fmt.Errorf("duration %q is too long (at most %d days)", s, maxPeriodDays)
	}
	if n == 0 {
		return Period{}, fmt.Errorf("duration %q must be greater than zero", s)
	}
	return Period{N: n, Unit: unit}, nil
}

// IsZero reports whether the period is unset.
func (p Period) IsZero() bool { return p.N == 0 }

// String renders the period as it is written, such as "10bd".
func (p Period) String() string {
	if p.IsZero() {
		return ""
	}
	return strconv.Itoa(p.N) + string(p.Unit)
}

// AddTo returns t moved on by the period, in t's location, keeping its
// time of day. A business day is a Monday to Friday: 1bd from a Friday,
// Saturday or Sunday is the next Monday. A month ends on the same day of
// the month, or on the month's last day when it has no such day (January
// 31 + 1mo is February 28, or 29 in a leap year). The zero period returns
// t.
func (p Period) AddTo(t time.Time) time.Time {
	switch p.Unit {
	case UnitDay:
		return t.AddDate(0, 0, p.N)
	case UnitWeek:
		return t.AddDate(0, 0, 7*p.N)
	case UnitYear:
		return t.AddDate(0, 0, 365*p.N)
	case UnitBusinessDay:
		return addBusinessDays(t, p.N)
	case UnitMonth:
		return addMonths(t, p.N)
	}
	return t
}

func addBusinessDays(t time.Time, n int) time.Time {
	// From a weekend, business days count as from the Friday before it:
	// the next business day of both is the Monday.
	switch t.Weekday() {
	case time.Saturday:
		t = t.AddDate(0, 0, -1)
	case time.Sunday:
		t = t.AddDate(0, 0, -2)
	}
	// Every five business days from a weekday are one week on, to the same
	// weekday; the rest are stepped through.
	t = t.AddDate(0, 0, 7*(n/5))
	for left := n % 5; left > 0; {
		t = t.AddDate(0, 0, 1)
		if wd := t.Weekday(); wd != time.Saturday && wd != time.Sunday {
			left--
		}
	}
	return t
}

func addMonths(t time.Time, n int) time.Time {
	y, m, d := t.Date()
	// Day 0 of the month after the target is the target's last day.
	last := time.Date(y, m+time.Month(n)+1, 0, 0, 0, 0, 0, t.Location()).Day()
	hh, mm, ss := t.Clock()
	return time.Date(y, m+time.Month(n), min(d, last), hh, mm, ss, t.Nanosecond(), t.Location())
}

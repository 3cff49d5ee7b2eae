package config

import (
	"fmt"
	"strconv"
	"time"
)

// Days is a retention period written as a count of days ("730d"), weeks
// ("12w") or years of 365 days ("7y"). The zero value means "not set".
type Days int

// ParseDays parses a retention period. It accepts a positive whole number
// followed by exactly one unit: d (days), w (weeks) or y (365 days).
func ParseDays(s string) (Days, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration: write a number and a unit, such as 730d, 12w or 7y")
	}
	unit := s[len(s)-1]
	var per int
	switch unit {
	case 'd':
		per = 1
	case 'w':
		per = 7
	case 'y':
		per = 365
	default:
		return 0, fmt.Errorf("duration %q has no unit d, w or y (such as 730d, 12w or 7y)", s)
	}
	digits := s[:len(s)-1]
	if digits == "" {
		return 0, fmt.Errorf("duration %q has no number before its unit", s)
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("duration %q is not a whole number of d, w or y (such as 730d)", s)
		}
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n > 100_000/per {
		return 0, fmt.Errorf("duration %q is too long (at most 100000 days)", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("duration %q must be greater than zero", s)
	}
	return Days(n * per), nil
}

// Duration returns the period as a time.Duration of 24-hour days.
func (d Days) Duration() time.Duration { return time.Duration(d) * 24 * time.Hour }

// String renders the period in days, such as "730d".
func (d Days) String() string { return strconv.Itoa(int(d)) + "d" }

// UnmarshalText implements encoding.TextUnmarshaler for YAML.
func (d *Days) UnmarshalText(b []byte) error {
	v, err := ParseDays(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Days) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

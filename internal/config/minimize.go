package config

import (
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// ColumnAction is what a then: minimize policy does to one column, as
// written: null, hash or keep_last:N. YAML's null decodes as "", which is
// the null action too.
type ColumnAction string

// Minimize actions.
const (
	MinimizeNull     = "null"
	MinimizeHash     = "hash"
	MinimizeKeepLast = "keep_last"
)

// Minimize is one column of a then: minimize policy, parsed.
type Minimize struct {
	// Column is the column's name, as the catalog has it.
	Column string
	// Key is where it is configured, such as policies[2].columns.ssn.
	Key string
	// Action is MinimizeNull, MinimizeHash or MinimizeKeepLast.
	Action string
	// Keep is how many trailing characters keep_last keeps.
	Keep int
}

// String gives the action as the config writes it.
func (m Minimize) String() string {
	if m.Action == MinimizeKeepLast {
		return MinimizeKeepLast + ":" + strconv.Itoa(m.Keep)
	}
	return m.Action
}

// parseColumns checks a then: minimize policy's columns and returns them
// parsed, in column order.
func parseColumns(key string, cols map[string]ColumnAction) ([]Minimize, error) {
	if len(cols) == 0 {
		return nil, Errorf(key, "is empty: then: minimize needs the columns to minimise, such as {ssn: hash, date_of_birth: null, licence_no: \"keep_last:4\"}")
	}
	var errs []error
	out := make([]Minimize, 0, len(cols))
	for _, name := range slices.Sorted(maps.Keys(cols)) {
		a := cols[name]
		ck := key + "." + name
		col, err := ParseIdent(name)
		if err != nil {
			errs = append(errs, Errorf(ck, "%v", err))
			continue
		}
		m := Minimize{Column: col, Key: ck}
		action, arg, hasArg := strings.Cut(strings.TrimSpace(string(a)), ":")
		switch {
		case action == "" && !hasArg:
			m.Action = MinimizeNull
		case action == MinimizeNull && !hasArg, action == MinimizeHash && !hasArg:
			m.Action = action
		case action == MinimizeKeepLast:
			n, err := strconv.Atoi(strings.TrimSpace(arg))
			if !hasArg || err != nil || n < 1 {
				errs = append(errs, Errorf(ck, "%q: keep_last needs a positive whole number of characters to keep, such as keep_last:4", string(a)))
				continue
			}
			m.Action, m.Keep = MinimizeKeepLast, n
		default:
			errs = append(errs, Errorf(ck, "%q is not an action: use null, hash or keep_last:N", string(a)))
			continue
		}
		out = append(out, m)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortFunc(out, func(a, b Minimize) int { return strings.Compare(a.Column, b.Column) })
	for i := 1; i < len(out); i++ {
		if out[i].Column == out[i-1].Column {
			return nil, Errorf(key, "names column %q twice (spelled two ways)", out[i].Column)
		}
	}
	return out, nil
}

package config

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// ParseIdent parses one SQL identifier as PostgreSQL reads it: an unquoted
// name folds to lower case, a "quoted" one keeps its case and may contain
// anything but NUL ("" stands for a quote).
func ParseIdent(s string) (string, error) {
	parts, err := parseDotted(strings.TrimSpace(s))
	if err != nil {
		return "", err
	}
	if len(parts) != 1 {
		return "", errors.New("must be a single column name")
	}
	return parts[0], nil
}

// ParseQualified parses a table name with an optional schema:
// "crm.customers", "customers" or "\"CRM\".\"Customers\"".
func ParseQualified(s string) ([]string, error) {
	parts, err := parseDotted(strings.TrimSpace(s))
	if err != nil {
		return nil, err
	}
	if len(parts) > 2 {
		return nil, errors.New("must be table or schema.table")
	}
	return parts, nil
}

// ParseJoin parses "<column of this table> = <column of the parent table>".
func ParseJoin(s string) (child, parent string, err error) {
	if strings.TrimSpace(s) == "" {
		return "", "", errors.New("is empty: write <column of this table> = <column of the parent table>")
	}
	l, r, ok := cutOutsideQuotes(s, '=')
	if !ok {
		return "", "", errors.New("must be <column of this table> = <column of the parent table>")
	}
	child, err = ParseIdent(l)
	if err != nil {
		return "", "", fmt.Errorf("left side: %w", err)
	}
	parent, err = ParseIdent(r)
	if err != nil {
		return "", "", fmt.Errorf("right side: %w", err)
	}
	return child, parent, nil
}

func cutOutsideQuotes(s string, sep byte) (string, string, bool) {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			inQuote = !inQuote
		case s[i] == sep && !inQuote:
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}

func parseDotted(s string) ([]string, error) {
	if s == "" {
		return nil, errors.New("is empty")
	}
	var parts []string
	for i := 0; i < len(s); {
		var part string
		if s[i] == '"' {
			var b strings.Builder
			j := i + 1
			closed := false
			for j < len(s) {
				if s[j] == '"' {
					if j+1 < len(s) && s[j+1] == '"' {
						b.WriteByte('"')
						j += 2
						continue
					}
					closed = true
					j++
					break
				}
				if s[j] == 0 {
					return nil, errors.New("contains a NUL byte")
				}
				b.WriteByte(s[j])
				j++
			}
			if !closed {
				return nil, errors.New("has an unclosed quote")
			}
			part = b.String()
			if part == "" {
				return nil, errors.New("has an empty quoted name")
			}
			i = j
		} else {
			j := i
			for j < len(s) && s[j] != '.' {
				j++
			}
			part = s[i:j]
			for k, r := range part {
				if !(r == '_' || unicode.IsLetter(r) || (k > 0 && (unicode.IsDigit(r) || r == '$'))) {
					return nil, fmt.Errorf("%q is not a plain SQL name: quote it with \"double quotes\"", part)
				}
			}
			if part == "" {
				return nil, errors.New("has an empty name")
			}
			part = strings.ToLower(part)
			i = j
		}
		parts = append(parts, part)
		if i < len(s) {
			if s[i] != '.' {
				return nil, fmt.Errorf("unexpected %q after a name", s[i:])
			}
			i++
			if i == len(s) {
				return nil, errors.New("ends with a dot")
			}
		}
	}
	return parts, nil
}

// CheckPredicate rejects what a WHERE predicate from the config may never
// contain, before the database parses it: a statement separator, a comment
// (which could hide the rest of lethe's query), a NUL byte, or unbalanced
// quotes and parentheses that would close lethe's own. An empty predicate is
// fine. The database check (retention) then parses it for real.
func CheckPredicate(key, s string) error {
	const hint = "write a single boolean expression on the subject table's columns"
	if strings.IndexByte(s, 0) >= 0 {
		// Anywhere, quoted or not: PostgreSQL's protocol ends the query text
		// at a NUL.
		return Errorf(key, "contains a NUL byte: %s", hint)
	}
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case 0:
			return Errorf(key, "contains a NUL byte: %s", hint)
		case '\'', '"':
			// A string right after an e is an E'...' escape string (or a
			// syntax error): refuse both, since backslash escapes would let
			// a quote end where this scan does not expect.
			if c == '\'' && i > 0 && (s[i-1] == 'e' || s[i-1] == 'E') {
				return Errorf(key, "%q uses an E'...' escape string, which lethe does not accept: use a plain 'string'", s)
			}
			j := i + 1
			for ; j < len(s); j++ {
				if s[j] == c {
					if j+1 < len(s) && s[j+1] == c {
						j++
						continue
					}
					break
				}
			}
			if j >= len(s) {
				return Errorf(key, "%q has an unclosed %c quote", s, c)
			}
			i = j
		case '$':
			// A parameter ($1), dollar quoting ($$...$$, $tag$...$tag$), and
			// after a digit either of those again: lethe accepts none, and
			// names with $ must be quoted.
			return Errorf(key, "%q uses $ outside quotes (a parameter, dollar quoting, or a name that needs \"quotes\"), which lethe does not accept", s)
		case ';':
			return Errorf(key, "%q contains ';': a predicate cannot hold a second statement; %s", s, hint)
		case '-':
			if i+1 < len(s) && s[i+1] == '-' {
				return Errorf(key, "%q contains a -- comment: %s", s, hint)
			}
		case '/':
			if i+1 < len(s) && s[i+1] == '*' {
				return Errorf(key, "%q contains a /* comment: %s", s, hint)
			}
		case '(':
			depth++
		case ')':
			depth--
			if depth < 0 {
				return Errorf(key, "%q closes a parenthesis it did not open", s)
			}
		}
	}
	if depth != 0 {
		return Errorf(key, "%q leaves a parenthesis open", s)
	}
	return nil
}

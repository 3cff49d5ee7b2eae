// Package lethe holds what every part of lethe shares: the error a caller's
// mistake becomes. The rest lives in one package per concern; see
// docs/ARCHITECTURE.md.
package lethe

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrBadInput is wrapped by every error about what a caller gave lethe: a
// flag, a JSON field, a config key. The CLI exits 2 for it, the API answers
// 4xx.
var ErrBadInput = errors.New("bad input")

// InputError is a caller's value that lethe refuses. It never quotes the
// value, which may be personal data typed by mistake.
type InputError struct {
	// Field is the flag's name (without --) and the JSON field's name.
	Field string
	// Index is the position of the value among the field's values, from 0,
	// when the field takes several (--subject may be repeated, "subjects"
	// is an array); -1 when it takes one.
	Index int
	// Of is how many values the field was given, when Index >= 0.
	Of int
	// Problem says what is wrong and what to do.
	Problem string
	// Err, if set, is a more specific cause callers may test for.
	Err error
}

// Input returns an *InputError for a field that takes one value.
func Input(field, format string, args ...any) *InputError {
	return &InputError{Field: field, Index: -1, Problem: fmt.Sprintf(format, args...)}
}

// Error renders the error as the CLI shows it: the field as a flag, such as
// "--ticket is required" or "--subject (number 2 of 3): not a valid bigint".
func (e *InputError) Error() string {
	name := "--" + e.Field
	if e.Index >= 0 && e.Of > 1 {
		name += fmt.Sprintf(" (number %d of %d)", e.Index+1, e.Of)
	}
	return e.Render(name)
}

// Render words the error with the field called name: the API passes the
// JSON field ("subjects[1]").
func (e *InputError) Render(name string) string {
	// A problem that is a predicate ("is required") reads on from the
	// name; anything else follows a colon.
	if strings.HasPrefix(e.Problem, "is ") || strings.HasPrefix(e.Problem, "must ") {
		return name + " " + e.Problem
	}
	return name + ": " + e.Problem
}

// Unwrap makes the error match ErrBadInput, and Err if set.
func (e *InputError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrBadInput, e.Err}
	}
	return []error{ErrBadInput}
}

// NonBlank refuses the first blank or non-text value among name, value
// pairs: each is a required field that must be UTF-8 text without NUL.
func NonBlank(nameValue ...string) error {
	for i := 0; i+1 < len(nameValue); i += 2 {
		name, v := nameValue[i], nameValue[i+1]
		if strings.TrimSpace(v) == "" {
			return Input(name, "is required and cannot be blank")
		}
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return Input(name, "is not valid UTF-8 text")
		}
	}
	return nil
}

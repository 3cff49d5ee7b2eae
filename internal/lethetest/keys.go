package lethetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// KeyCase is one key type with several spellings of one subject.
type KeyCase struct {
	Type      string   // the key column's type
	Stored    string   // the key as inserted
	Canonical string   // what lethe must call it
	Spellings []string // other ways a caller may type it
	Others    []string // keys of other subjects that look alike
	Invalid   []string // not keys of this type at all
}

// KeyCases are bigint, numeric, uuid and text keys with their spellings.
var KeyCases = []KeyCase{
	{Type: "bigint", Stored: "111", Canonical: "111",
		Spellings: []string{"0111", "+111", " 111 ", "\t111\n", "00000111"},
		Others:    []string{"1111", "-111"},
		Invalid:   []string{"1.5", "111a", "1e3", "99999999999999999999"}},
	{Type: "numeric(10,2)", Stored: "1.50", Canonical: "1.5",
		Spellings: []string{"1.5", "1.50", " +1.500 ", "01.5", "0.15e1"},
		Others:    []string{"1.05", "15"},
		Invalid:   []string{"one", "1,5"}},
	{Type: "uuid", Stored: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", Canonical: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		Spellings: []string{"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
			"a0eebc999c0b4ef8bb6d6bb9bd380a11", "{A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11}"},
		Others:  []string{"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12"},
		Invalid: []string{"a0eebc99", "not-a-uuid"}},
	// A text key is the key itself: no trimming, no folding; composed and
	// decomposed forms are two subjects.
	{Type: "text", Stored: "Zoë 111", Canonical: "Zoë 111",
		Spellings: []string{"Zoë 111"},
		Others:    []string{" Zoë 111", "Zoë 111 ", "zoë 111", "Zoe\u0308 111", "0111"},
		Invalid:   nil},
}

// NewKeys gives t lethe over a subject table k.subjects whose key has
// type typ, with one due subject stored under stored and a child table
// k.notes holding one note of it.
func NewKeys(t testing.TB, typ, stored string) *Env {
	t.Helper()
	schema := fmt.Sprintf(`
CREATE SCHEMA k;
CREATE TABLE k.subjects (id %s PRIMARY KEY, status text NOT NULL, closed_at timestamptz);
CREATE TABLE k.notes (subject_id %s NOT NULL REFERENCES k.subjects (id), body text);
INSERT INTO k.subjects VALUES ('%s', 'closed', now() - interval '800 days');
INSERT INTO k.notes VALUES ('%s', 'a note');`, typ, typ, stored, stored)
	return New(t, schema, `
subject:
  table: k.subjects
  key: id
  related:
    - table: k.notes
      join: subject_id = id
policies:
  - name: former
    where: "status = 'closed'"
    clock: closed_at
    retain: 730d
`)
}

// SubjectRows counts the rows of k.subjects and k.notes.
func (e *Env) SubjectRows(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM k.subjects) + (SELECT count(*) FROM k.notes)`).Scan(&n))
	return n
}

// EachKeyCase runs test, in parallel, for every case of KeyCases, over
// lethe on a table of the case's key type (NewKeys).
func EachKeyCase(t *testing.T, test func(t *testing.T, kc KeyCase, e *Env)) {
	t.Helper()
	t.Parallel()
	for _, kc := range KeyCases {
		t.Run(kc.Type, func(t *testing.T) {
			t.Parallel()
			test(t, kc, NewKeys(t, kc.Type, kc.Stored))
		})
	}
}

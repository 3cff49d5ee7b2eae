// Package archive owns what lethe puts in object storage: the bundle format,
// each subject's own age key and its wrapping to the master recipients, the
// segments that hold a batch's encrypted parts, and the S3 operations on
// them: a put checked by its echoed checksum, legal holds, and the ranged
// reads of restores.
package archive

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// Format is the value of a bundle's "format" field.
const Format = "lethe.bundle.v1"

// KindMinimized is the "kind" of a bundle that holds the original values
// of columns a then: minimize policy changed, with the key columns of their
// rows. A subject's archived copy has no "kind".
const KindMinimized = "minimized"

// Bundle is one subject's rows, as archived. Its JSON form is the plaintext
// of an archive object:
//
//	{"format": "lethe.bundle.v1", "subject": "42", "policy": "former-customers",
//	 "archived_at": "2026-11-22T03:00:00Z", "rows": {"crm.customers": [{...}], ...}}
//
// A bundle of minimised values also has "kind": "minimized", and its rows
// hold one table.
type Bundle struct {
	// Kind is "" for a subject's archived copy, or KindMinimized.
	Kind string
	// Subject is the subject's key as text.
	Subject string
	// Policy is the name of the policy that archived it.
	Policy string
	// ArchivedAt is when the bundle was built.
	ArchivedAt time.Time
	// Tables holds every table of the graph, in graph order, each with a JSON
	// array of the rows as PostgreSQL's to_jsonb gives them.
	Tables []TableRows
}

// TableRows is one table's rows of a subject.
type TableRows struct {
	// Table is the table as written in the config.
	Table string
	// Rows is a JSON array of row objects; nil means an empty array.
	Rows []byte
}

// Encode writes b's JSON form, followed by a newline, to w.
func (b *Bundle) Encode(w io.Writer) error {
	var buf bytes.Buffer
	buf.WriteString(`{"format":"` + Format + `",`)
	if b.Kind != "" {
		buf.WriteString(`"kind":`)
		writeJSONString(&buf, b.Kind)
		buf.WriteByte(',')
	}
	buf.WriteString(`"subject":`)
	writeJSONString(&buf, b.Subject)
	buf.WriteString(`,"policy":`)
	writeJSONString(&buf, b.Policy)
	buf.WriteString(`,"archived_at":"`)
	buf.WriteString(b.ArchivedAt.UTC().Format(time.RFC3339Nano))
	buf.WriteString(`","rows":{`)
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("error writing bundle: %w", err)
	}
	for i, t := range b.Tables {
		buf.Reset()
		if i > 0 {
			buf.WriteByte(',')
		}
		writeJSONString(&buf, t.Table)
		buf.WriteByte(':')
		if _, err := w.Write(buf.Bytes()); err != nil {
			return fmt.Errorf("error writing bundle: %w", err)
		}
		rows := t.Rows
		if len(rows) == 0 {
			rows = []byte("[]")
		}
		if _, err := w.Write(rows); err != nil {
			return fmt.Errorf("error writing bundle: %w", err)
		}
	}
	if _, err := io.WriteString(w, "}}\n"); err != nil {
		return fmt.Errorf("error writing bundle: %w", err)
	}
	return nil
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always marshals
	buf.Write(b)
}

// Decoded is a bundle read back from its JSON form.
type Decoded struct {
	Format     string                       `json:"format"`
	Kind       string                       `json:"kind,omitempty"`
	Subject    string                       `json:"subject"`
	Policy     string                       `json:"policy"`
	ArchivedAt time.Time                    `json:"archived_at"`
	Rows       map[string][]json.RawMessage `json:"rows"`
}

// ErrMalformedBundle is returned by Decode for plaintext that is not a whole,
// well-formed bundle.
var ErrMalformedBundle = errors.New("malformed bundle")

// Decode parses and checks a bundle's JSON form. It accepts only a whole
// bundle: the right format, a subject, a time, and for every table an array
// of JSON objects. When tables is not empty, each of them must be present and
// no other.
func Decode(plaintext []byte, tables []string) (*Decoded, error) {
	if !utf8.Valid(plaintext) {
		return nil, fmt.Errorf("%w: not UTF-8", ErrMalformedBundle)
	}
	var raw struct {
		Format     *string                    `json:"format"`
		Kind       *string                    `json:"kind"`
		Subject    *string                    `json:"subject"`
		Policy     *string                    `json:"policy"`
		ArchivedAt *string                    `json:"archived_at"`
		Rows       map[string]json.RawMessage `json:"rows"`
	}
	dec := json.NewDecoder(bytes.NewReader(plaintext))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedBundle, err)
	}
	// Only white space may follow. (Decoder.More would let a stray ] or }
	// through.)
	if len(bytes.TrimLeft(plaintext[dec.InputOffset():], " \t\r\n")) != 0 {
		return nil, fmt.Errorf("%w: data after the bundle", ErrMalformedBundle)
	}
	switch {
	case raw.Format == nil || *raw.Format != Format:
		return nil, fmt.Errorf("%w: format is not %s", ErrMalformedBundle, Format)
	case raw.Kind != nil && *raw.Kind != KindMinimized:
		return nil, fmt.Errorf("%w: kind is neither absent nor %s", ErrMalformedBundle, KindMinimized)
	case raw.Subject == nil:
		return nil, fmt.Errorf("%w: no subject", ErrMalformedBundle)
	case raw.Policy == nil:
		return nil, fmt.Errorf("%w: no policy", ErrMalformedBundle)
	case raw.ArchivedAt == nil:
		return nil, fmt.Errorf("%w: no archived_at", ErrMalformedBundle)
	case raw.Rows == nil:
		return nil, fmt.Errorf("%w: no rows", ErrMalformedBundle)
	}
	at, err := time.Parse(time.RFC3339Nano, *raw.ArchivedAt)
	if err != nil {
		return nil, fmt.Errorf("%w: archived_at: %v", ErrMalformedBundle, err)
	}
	d := &Decoded{Format: *raw.Format, Subject: *raw.Subject, Policy: *raw.Policy, ArchivedAt: at, Rows: map[string][]json.RawMessage{}}
	if raw.Kind != nil {
		d.Kind = *raw.Kind
	}
	for table, v := range raw.Rows {
		var rows []json.RawMessage
		if err := json.Unmarshal(v, &rows); err != nil || rows == nil {
			return nil, fmt.Errorf("%w: rows of %q are not an array", ErrMalformedBundle, table)
		}
		for i, r := range rows {
			if len(r) == 0 || r[0] != '{' {
				return nil, fmt.Errorf("%w: row %d of %q is not an object", ErrMalformedBundle, i, table)
			}
		}
		d.Rows[table] = rows
	}
	if len(tables) > 0 {
		if err := d.CheckTables(tables); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// CheckTables checks that the bundle holds the rows of exactly tables.
func (d *Decoded) CheckTables(tables []string) error {
	for _, t := range tables {
		if _, ok := d.Rows[t]; !ok {
			return fmt.Errorf("%w: table %q is missing", ErrMalformedBundle, t)
		}
	}
	if len(d.Rows) != len(tables) {
		return fmt.Errorf("%w: it holds %d tables, %d were expected", ErrMalformedBundle, len(d.Rows), len(tables))
	}
	return nil
}

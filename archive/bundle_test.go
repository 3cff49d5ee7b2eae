package archive_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/archive"
)

var graphTables = []string{"crm.customers", "crm.accounts", "crm.lines", "crm.credit_checks"}

func sampleBundle() *archive.Bundle {
	return &archive.Bundle{
		Subject:    "customer-4711",
		Policy:     "former-customers",
		ArchivedAt: time.Date(2026, 11, 22, 3, 0, 0, 123456789, time.FixedZone("CET", 3600)),
		Tables: []archive.TableRows{
			{Table: "crm.customers", Rows: []byte(`[{"id": 4711, "name": "Ada Lovelace", "status": "closed"}]`)},
			{Table: "crm.accounts", Rows: []byte(`[{"id":1,"customer_id":4711},{"id":2,"customer_id":4711}]`)},
			{Table: "crm.lines", Rows: nil},
			{Table: "crm.credit_checks", Rows: []byte(`[]`)},
		},
	}
}

func encode(t testing.TB, b *archive.Bundle) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, b.Encode(&buf))
	return buf.Bytes()
}

// objectKeys returns the keys of the JSON object at path ("" or "rows")
// in document order.
func objectKeys(t *testing.T, doc []byte, path string) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(doc))
	tok, err := dec.Token()
	require.NoError(t, err)
	require.Equal(t, json.Delim('{'), tok)
	if path != "" {
		for {
			tok, err := dec.Token()
			require.NoError(t, err)
			if tok == path {
				break
			}
			var skip json.RawMessage
			require.NoError(t, dec.Decode(&skip))
		}
		tok, err := dec.Token()
		require.NoError(t, err)
		require.Equal(t, json.Delim('{'), tok)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		require.NoError(t, err)
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		require.NoError(t, dec.Decode(&skip))
	}
	return keys
}

func TestBundleRoundTrip(t *testing.T) {
	t.Parallel()

	b := sampleBundle()
	plain := encode(t, b)
	require.True(t, bytes.HasSuffix(plain, []byte("}}\n")), "one line, ending in a newline")
	require.Equal(t, 1, bytes.Count(plain, []byte("\n")))
	require.True(t, json.Valid(plain))

	require.Equal(t, []string{"format", "subject", "policy", "archived_at", "rows"}, objectKeys(t, plain, ""))
	require.Equal(t, graphTables, objectKeys(t, plain, "rows"), "tables in graph order")
	require.Contains(t, string(plain), `"archived_at":"2026-11-22T02:00:00.123456789Z"`, "archived_at is RFC 3339 in UTC")
	require.Contains(t, string(plain), `"crm.lines":[]`, "a table without rows is []")

	d, err := archive.Decode(plain, graphTables)
	require.NoError(t, err)
	require.Equal(t, archive.Format, d.Format)
	require.Equal(t, "lethe.bundle.v1", d.Format)
	require.Equal(t, b.Subject, d.Subject)
	require.Equal(t, b.Policy, d.Policy)
	require.True(t, b.ArchivedAt.Equal(d.ArchivedAt))
	require.Len(t, d.Rows, 4)
	require.Len(t, d.Rows["crm.customers"], 1)
	require.JSONEq(t, `{"id": 4711, "name": "Ada Lovelace", "status": "closed"}`, string(d.Rows["crm.customers"][0]))
	require.Len(t, d.Rows["crm.accounts"], 2)
	require.JSONEq(t, `{"id":2,"customer_id":4711}`, string(d.Rows["crm.accounts"][1]))
	require.NotNil(t, d.Rows["crm.lines"])
	require.Empty(t, d.Rows["crm.lines"])
	require.NotNil(t, d.Rows["crm.credit_checks"])
	require.Empty(t, d.Rows["crm.credit_checks"])

	// Without a table list any set of tables is accepted.
	d2, err := archive.Decode(plain, nil)
	require.NoError(t, err)
	require.Equal(t, d, d2)
}

func TestBundleRoundTripAwkwardText(t *testing.T) {
	t.Parallel()

	for _, subject := range []string{
		"",
		`he said "hi" \ back\slash`,
		"ünïcødé ☃ 😀 日本語",
		"tab\there, newline\nthere, cr\r, bell\a, \x01\x1f\x7f",
		"<script>&amp;</script>",
		"\u2028\u2029",
		strings.Repeat("k", 10_000),
	} {
		t.Run(fmt.Sprintf("%.20q", subject), func(t *testing.T) {
			t.Parallel()
			b := &archive.Bundle{
				Subject:    subject,
				Policy:     `pol"icy` + subject,
				ArchivedAt: time.Unix(0, 0),
				Tables:     []archive.TableRows{{Table: `"CRM"."Customers ""x"""`, Rows: []byte(`[{"k":"` + "\\u0001" + `"}]`)}},
			}
			plain := encode(t, b)
			require.True(t, json.Valid(plain))
			d, err := archive.Decode(plain, []string{`"CRM"."Customers ""x"""`})
			require.NoError(t, err)
			require.Equal(t, subject, d.Subject)
			require.Equal(t, b.Policy, d.Policy)
			require.True(t, d.ArchivedAt.Equal(time.Unix(0, 0)))
			require.Len(t, d.Rows[`"CRM"."Customers ""x"""`], 1)
		})
	}
}

func TestBundleNoTables(t *testing.T) {
	t.Parallel()

	plain := encode(t, &archive.Bundle{Subject: "1", Policy: "p", ArchivedAt: time.Unix(1, 0)})
	d, err := archive.Decode(plain, nil)
	require.NoError(t, err)
	require.Empty(t, d.Rows)
	require.NotNil(t, d.Rows)
}

type failingWriter struct{ left int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n := w.left
		w.left = 0
		return n, errors.New("disk full")
	}
	w.left -= len(p)
	return len(p), nil
}

func TestBundleEncodeWriteError(t *testing.T) {
	t.Parallel()

	n := len(encode(t, sampleBundle()))
	for left := 0; left < n; left++ {
		err := sampleBundle().Encode(&failingWriter{left: left})
		require.ErrorContains(t, err, "disk full", "writer failing after %d bytes", left)
		require.ErrorContains(t, err, "error writing bundle")
	}
	require.NoError(t, sampleBundle().Encode(&failingWriter{left: n}))
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()

	good := string(encode(t, sampleBundle()))
	const head = `{"format":"lethe.bundle.v1","subject":"1","policy":"p","archived_at":"2026-01-01T00:00:00Z","rows":`
	for _, tc := range []struct {
		name   string
		in     string
		tables []string
		msg    string
	}{
		{"empty", "", nil, ""},
		{"null", "null", nil, ""},
		{"array", "[]", nil, ""},
		{"not JSON", "lethe", nil, ""},
		{"half a bundle", good[:len(good)/2], nil, ""},
		{"wrong format", strings.Replace(good, "lethe.bundle.v1", "lethe.bundle.v2", 1), nil, "format"},
		{"format not a string", strings.Replace(good, `"lethe.bundle.v1"`, "1", 1), nil, ""},
		{"no format", `{"subject":"1","policy":"p","archived_at":"2026-01-01T00:00:00Z","rows":{}}`, nil, "format"},
		{"no subject", `{"format":"lethe.bundle.v1","policy":"p","archived_at":"2026-01-01T00:00:00Z","rows":{}}`, nil, "no subject"},
		{"subject null", `{"format":"lethe.bundle.v1","subject":null,"policy":"p","archived_at":"2026-01-01T00:00:00Z","rows":{}}`, nil, "no subject"},
		{"subject a number", `{"format":"lethe.bundle.v1","subject":1,"policy":"p","archived_at":"2026-01-01T00:00:00Z","rows":{}}`, nil, ""},
		{"no policy", `{"format":"lethe.bundle.v1","subject":"1","archived_at":"2026-01-01T00:00:00Z","rows":{}}`, nil, "no policy"},
		{"no archived_at", `{"format":"lethe.bundle.v1","subject":"1","policy":"p","rows":{}}`, nil, "no archived_at"},
		{"bad archived_at", `{"format":"lethe.bundle.v1","subject":"1","policy":"p","archived_at":"yesterday","rows":{}}`, nil, "archived_at"},
		{"archived_at without zone", `{"format":"lethe.bundle.v1","subject":"1","policy":"p","archived_at":"2026-01-01T00:00:00","rows":{}}`, nil, "archived_at"},
		{"no rows", `{"format":"lethe.bundle.v1","subject":"1","policy":"p","archived_at":"2026-01-01T00:00:00Z"}`, nil, "no rows"},
		{"rows null", head + `null}`, nil, "no rows"},
		{"rows an array", head + `[]}`, nil, ""},
		{"table rows an object", head + `{"t":{}}}`, nil, `rows of "t" are not an array`},
		{"table rows a string", head + `{"t":"[]"}}`, nil, "not an array"},
		{"table rows null", head + `{"t":null}}`, nil, "not an array"},
		{"row a number", head + `{"t":[{},1]}}`, nil, `row 1 of "t" is not an object`},
		{"row an array", head + `{"t":[[]]}}`, nil, "not an object"},
		{"row a string", head + `{"t":["{}"]}}`, nil, "not an object"},
		{"row null", head + `{"t":[null]}}`, nil, "not an object"},
		{"unknown field", strings.Replace(good, `"policy"`, `"extra":1,"policy"`, 1), nil, "extra"},
		{"trailing object", good + `{}`, nil, "after the bundle"},
		{"trailing text", good + `x`, nil, "after the bundle"},
		{"trailing brace", strings.TrimSuffix(good, "\n") + `}`, nil, "after the bundle"},
		{"trailing bracket", good + `]`, nil, "after the bundle"},
		{"trailing bracket and more", good + `] {"format":"x"}`, nil, "after the bundle"},
		{"two bundles", good + good, nil, "after the bundle"},
		{"missing table", good, append(append([]string{}, graphTables...), "crm.notes"), `table "crm.notes" is missing`},
		{"extra table", good, graphTables[:3], "4 tables, 3 were expected"},
		{"table named differently", good, []string{"crm.customers", "crm.accounts", "crm.lines", "CRM.credit_checks"}, "missing"},
		{"invalid UTF-8", strings.Replace(good, "Ada", "A\xffa", 1), nil, "UTF-8"},
		{"invalid UTF-8 outside strings", good + "\xff", nil, "UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := archive.Decode([]byte(tc.in), tc.tables)
			require.Error(t, err)
			require.Nil(t, d)
			require.ErrorIs(t, err, archive.ErrMalformedBundle)
			require.ErrorContains(t, err, tc.msg)
		})
	}
}

func TestDecodeAcceptsFormatting(t *testing.T) {
	t.Parallel()

	in := "\n { \"rows\" : { \"t\" : [ {\"a\" : 1} ,\n {} ] } , \"archived_at\":\"2026-01-01T01:00:00+01:00\",\n" +
		" \"policy\":\"p\", \"subject\":\"s\", \"format\":\"lethe.bundle.v1\" } \n\n"
	d, err := archive.Decode([]byte(in), []string{"t"})
	require.NoError(t, err)
	require.Len(t, d.Rows["t"], 2)
	require.True(t, d.ArchivedAt.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)))
}

// reencode builds a Bundle from a Decoded one.
func reencode(d *archive.Decoded) *archive.Bundle {
	b := &archive.Bundle{Subject: d.Subject, Policy: d.Policy, ArchivedAt: d.ArchivedAt}
	for table, rows := range d.Rows {
		var raw []byte
		if len(rows) > 0 {
			raw, _ = json.Marshal(rows)
		}
		b.Tables = append(b.Tables, archive.TableRows{Table: table, Rows: raw})
	}
	return b
}

func FuzzDecode(f *testing.F) {
	f.Add(encode(f, sampleBundle()), "crm.customers")
	f.Add(encode(f, &archive.Bundle{Subject: "x\"\\", Policy: "", ArchivedAt: time.Unix(0, 1)}), "")
	f.Add([]byte(`{"format":"lethe.bundle.v1","subject":"1","policy":"p","archived_at":"2026-01-01T00:00:00Z","rows":{"t":[{}]}}]`), "t")
	f.Add([]byte(`{"format":"lethe.bundle.v1","subject":"\ud800","policy":"p","archived_at":"2026-01-01T00:00:00.5+14:00","rows":{"t":[{"a":[1,{"b":null}]}]}}`), "t")
	f.Add([]byte(`{"format":"lethe.bundle.v1"}`), "")
	f.Add([]byte(`{}`), "")
	f.Add([]byte(``), "")
	f.Add([]byte("\xff"), "")
	f.Fuzz(func(t *testing.T, plain []byte, table string) {
		var tables []string
		if table != "" {
			tables = []string{table}
		}
		d, err := archive.Decode(plain, tables)
		if err != nil {
			require.Nil(t, d)
			require.ErrorIs(t, err, archive.ErrMalformedBundle)
			return
		}
		require.Equal(t, archive.Format, d.Format)
		require.NotNil(t, d.Rows)
		if table != "" {
			require.Len(t, d.Rows, 1)
			require.Contains(t, d.Rows, table)
		}
		for _, rows := range d.Rows {
			require.NotNil(t, rows)
			for _, r := range rows {
				require.True(t, json.Valid(r))
				require.Equal(t, byte('{'), r[0])
			}
		}
		// What decodes encodes again to the same bundle.
		again, err := archive.Decode(encode(t, reencode(d)), tables)
		require.NoError(t, err)
		require.Equal(t, d.Subject, again.Subject)
		require.Equal(t, d.Policy, again.Policy)
		require.True(t, d.ArchivedAt.Equal(again.ArchivedAt))
		require.Len(t, again.Rows, len(d.Rows))
		for k, rows := range d.Rows {
			require.Len(t, again.Rows[k], len(rows))
		}
	})
}

// A bundle is written with Encode; its JSON is the plaintext that Put
// encrypts, and Decode reads it back.
func ExampleBundle_Encode() {
	b := &archive.Bundle{
		Subject:    "4711",
		Policy:     "former-customers",
		ArchivedAt: time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC),
		Tables: []archive.TableRows{
			{Table: "crm.customers", Rows: []byte(`[{"id":4711,"status":"closed"}]`)},
			{Table: "crm.accounts"}, // no rows: written as []
		},
	}
	var buf bytes.Buffer
	if err := b.Encode(io.MultiWriter(&buf, os.Stdout)); err != nil {
		fmt.Println(err)
		return
	}

	d, err := archive.Decode(buf.Bytes(), []string{"crm.customers", "crm.accounts"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(d.Subject, len(d.Rows["crm.customers"]), len(d.Rows["crm.accounts"]))
	// Output:
	// {"format":"lethe.bundle.v1","subject":"4711","policy":"former-customers","archived_at":"2026-11-22T03:00:00Z","rows":{"crm.customers":[{"id":4711,"status":"closed"}],"crm.accounts":[]}}
	// 4711 1 0
}

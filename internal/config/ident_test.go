package config_test

import (
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/config"
)

func TestParseIdent(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		in   string
		want string
		err  string
	}{
		{in: "id", want: "id"},
		{in: "Closed_At", want: "closed_at"},
		{in: "  status  ", want: "status"},
		{in: "_x1", want: "_x1"},
		{in: "price$usd", want: "price$usd"},
		{in: "straße", want: "straße"},
		{in: "ÉTAT", want: "état"},
		{in: `"Closed At"`, want: "Closed At"},
		{in: `"MixedCase"`, want: "MixedCase"},
		{in: `"say ""hi"""`, want: `say "hi"`},
		{in: `""""`, want: `"`},
		{in: `"a.b"`, want: "a.b"},
		{in: `"1st"`, want: "1st"},
		{in: `"x;--"`, want: "x;--"},
		{in: "", err: "is empty"},
		{in: "   ", err: "is empty"},
		{in: "1st", err: "not a plain SQL name"},
		{in: "$x", err: "not a plain SQL name"},
		{in: "closed at", err: "not a plain SQL name"},
		{in: "a-b", err: "not a plain SQL name"},
		{in: "a;b", err: "not a plain SQL name"},
		{in: `a"b"`, err: "not a plain SQL name"},
		{in: "a.b", err: "single column"},
		{in: `""`, err: "empty quoted name"},
		{in: `"open`, err: "unclosed quote"},
		{in: `"a""`, err: "unclosed quote"},
		{in: `"a"b`, err: "after a name"},
		{in: `"a" b`, err: "after a name"},
		{in: "\"a\x00b\"", err: "NUL"},
		{in: "a.", err: "ends with a dot"},
		{in: ".a", err: "empty name"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := config.ParseIdent(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.Empty(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseQualified(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{in: "customers", want: []string{"customers"}},
		{in: "crm.customers", want: []string{"crm", "customers"}},
		{in: "CRM.Customers", want: []string{"crm", "customers"}},
		{in: `"CRM"."Customers"`, want: []string{"CRM", "Customers"}},
		{in: `crm."Customers"`, want: []string{"crm", "Customers"}},
		{in: `"CRM".customers`, want: []string{"CRM", "customers"}},
		{in: `"my.schema"."my ""t"""`, want: []string{"my.schema", `my "t"`}},
		{in: " crm.customers ", want: []string{"crm", "customers"}},
		{in: "a.b.c", err: "schema.table"},
		{in: "crm..customers", err: "empty name"},
		{in: "crm.", err: "ends with a dot"},
		{in: "crm. customers", err: "not a plain SQL name"},
		{in: `crm."Customers`, err: "unclosed quote"},
		{in: `"crm"x.y`, err: "after a name"},
		{in: "crm.customers;", err: "not a plain SQL name"},
		{in: "", err: "is empty"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := config.ParseQualified(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseJoin(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		in            string
		child, parent string
		err           string
	}{
		{in: "customer_id = id", child: "customer_id", parent: "id"},
		{in: "customer_id=id", child: "customer_id", parent: "id"},
		{in: "  Customer_ID   =   ID  ", child: "customer_id", parent: "id"},
		{in: `"Customer=Id" = "ID"`, child: "Customer=Id", parent: "ID"},
		{in: `"a""b" = c`, child: `a"b`, parent: "c"},
		{in: "", err: "is empty"},
		{in: "   ", err: "is empty"},
		{in: "customer_id id", err: "must be"},
		{in: `"a=b"`, err: "must be"},
		{in: "= id", err: "left side"},
		{in: "customer_id =", err: "right side"},
		{in: "a = b = c", err: "right side"},
		{in: "t.a = b", err: "left side"},
		{in: "a = t.b", err: "right side"},
		{in: "a = b; drop table x", err: "right side"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			child, parent, err := config.ParseJoin(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.Empty(t, child)
				require.Empty(t, parent)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.child, child)
			require.Equal(t, tc.parent, parent)
		})
	}
}

func TestParseRecipient(t *testing.T) {
	t.Parallel()

	id, err := age.ParseX25519Identity(testIdentity)
	require.NoError(t, err)
	require.Equal(t, testRecipient, id.Recipient().String(), "the fixtures are one key pair")

	r, err := config.ParseRecipient("  " + testRecipient + "\n")
	require.NoError(t, err)
	require.Equal(t, testRecipient, r.(*age.X25519Recipient).String())

	for _, in := range []string{
		testIdentity,
		strings.ToLower(testIdentity),
		"  " + testIdentity + "  ",
	} {
		_, err := config.ParseRecipient(in)
		require.ErrorContains(t, err, "private key")
		require.NotContains(t, err.Error(), testIdentity[15:])
		require.NotContains(t, err.Error(), strings.ToLower(testIdentity[15:]))
	}
	for _, in := range []string{"", "age1", "age1xyz", testRecipient + " " + testRecipient2, testRecipient[:len(testRecipient)-1]} {
		_, err := config.ParseRecipient(in)
		require.ErrorContains(t, err, "not an age recipient", "%q", in)
	}
}

func TestQuotedTablesKeepCase(t *testing.T) {
	t.Parallel()

	// "CRM"."Accounts" is not crm.accounts: both may be in the graph.
	text := replace(t, fullYAML, "    - table: crm.credit_checks\n", "    - table: '\"CRM\".\"Accounts\"'\n")
	cfg := mustLoad(t, text, env)
	require.Equal(t, `"CRM"."Accounts"`, cfg.Subject.Related[1].Table, "the table is kept as written")
}

func TestCheckPredicate(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		in  string
		err string // empty: accepted
	}{
		{in: ""},
		{in: "status = 'closed'"},
		{in: "status = 'it''s'"},
		{in: "status = ''"},
		{in: "note = 'a;b -- c /* d */ $1 $$ e''f ('"},
		{in: `"Status;--" = 'x'`},
		{in: `"say ""hi""" = 'x'`},
		{in: `"price$usd" > 10`},
		{in: "price$usd > 10", err: "$ outside quotes"},
		{in: "a$1 = b$$", err: "$ outside quotes"},
		{in: "1$1 = a", err: "$ outside quotes"},
		{in: "(a = 1 OR (b = 2)) AND c IN (1, 2, 3)"},
		{in: "closed_at < now() - interval '30 days'"},
		{in: "a - b > 1 AND c / d < 2"},
		{in: "a = -1"},
		{in: "lower(name) LIKE 'x%'"},
		{in: "type = 'E'"},
		{in: "code = e"},
		{in: "some_e = 'x'"},
		{in: "ee'x' = 'y'", err: "E'...' escape"},
		{in: `1E'\'' ; 1E'\''`, err: "E'...' escape"},
		{in: "status = 'x';", err: "';'"},
		{in: "true; DELETE FROM crm.customers", err: "';'"},
		{in: "status = 'x' -- hidden", err: "-- comment"},
		{in: "status = 'x' /* hidden */", err: "/* comment"},
		{in: "a = 1 /*", err: "/* comment"},
		{in: "status = 'x'\x00", err: "NUL"},
		{in: "status = 'x\x00'", err: "NUL"},
		{in: "status = 'closed", err: "unclosed ' quote"},
		{in: "status = 'it''s", err: "unclosed ' quote"},
		{in: `"status = 'x'`, err: `unclosed " quote`},
		{in: "(a = 1", err: "parenthesis open"},
		{in: "a = 1)", err: "did not open"},
		{in: "a = 1) OR (true", err: "did not open"},
		{in: "a = $1", err: "$ outside quotes"},
		{in: "$1 = a", err: "$ outside quotes"},
		{in: "a = ($1)", err: "$ outside quotes"},
		{in: "a = $$x$$", err: "$ outside quotes"},
		{in: "a = $tag$x$tag$", err: "$ outside quotes"},
		{in: `"a"$1 = b`, err: "$ outside quotes"},
		{in: `a = E'\''`, err: "E'...' escape"},
		{in: `a = e'x'`, err: "E'...' escape"},
		{in: `E'x' = a`, err: "E'...' escape"},
		{in: `a = (E'x')`, err: "E'...' escape"},
		{in: `a = E'\'' OR true; --'`, err: "E'...' escape"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			err := config.CheckPredicate("policies[0].where", tc.in)
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.ErrorContains(t, err, tc.err)
			var ce *config.Error
			require.ErrorAs(t, err, &ce)
			require.Equal(t, "policies[0].where", ce.Key)
		})
	}
}

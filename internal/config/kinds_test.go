package config_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/config"
)

// kindsYAML has two kinds of subject, and a minimise policy.
const kindsYAML = `database:
  url: ${DB_URL}
subjects:
  - name: customer
    table: crm.customers
    key: id
    protect: "status = 'active'"
    related:
      - table: crm.credit_checks
        join: customer_id = id
  - name: applicant
    table: crm.applicants
    key: applicant_id
    related:
      - table: crm.applicant_documents
        join: applicant_id = applicant_id
policies:
  - name: former-customers
    subject: customer
    where: "status = 'closed'"
    clock: closed_at
    retain: 730d
  - name: ssn-after-check
    subject: customer
    then: minimize
    table: crm.credit_checks
    clock: checked_at
    retain: 30d
    columns: {ssn: hash, date_of_birth: null, licence_no: "keep_last:4"}
    archive: true
    archive_retain: 1y
  - name: stale-applicants
    subject: applicant
    clock: applied_at
    retain: 90d
    then: delete
archive:
  bucket: lethe-archive
  credentials:
    access_key_id: writerAK
    secret_access_key: ${WRITER_SECRET}
  recipients:
    - ` + testRecipient + `
  key_secret: 0123456789abcdef0123456789abcdef
`

func TestKinds(t *testing.T) {
	t.Parallel()

	// The short form is one kind, default, with requests.protect.
	cfg := mustLoad(t, fullYAML, env)
	require.Len(t, cfg.Subjects, 1)
	k := cfg.Kind("")
	require.Equal(t, config.DefaultKind, k.Name)
	require.Equal(t, "subject", k.ConfigKey)
	require.Equal(t, "crm.customers", k.Table.Table)
	require.Equal(t, "status = 'active'", k.Protect)
	require.Equal(t, "requests.protect", k.ProtectKey())
	for _, p := range cfg.Policies {
		require.Equal(t, config.DefaultKind, p.Subject, "a policy of the only kind names it")
	}

	text := kindsYAML
	cfg = mustLoad(t, text, env)
	require.Len(t, cfg.Subjects, 2)
	require.Equal(t, "subjects[1]", cfg.Kind("applicant").ConfigKey)
	require.Equal(t, "subjects[0].protect", cfg.Kind("customer").ProtectKey())
	require.Nil(t, cfg.Kind(""), "no kind is the default among several, unless one is called default")
	require.Nil(t, cfg.Kind("prospect"))
	p := cfg.Policy("ssn-after-check")
	require.Equal(t, config.ThenMinimize, p.Then)
	require.Equal(t, []config.Minimize{
		{Column: "date_of_birth", Key: "policies[1].columns.date_of_birth", Action: config.MinimizeNull},
		{Column: "licence_no", Key: "policies[1].columns.licence_no", Action: config.MinimizeKeepLast, Keep: 4},
		{Column: "ssn", Key: "policies[1].columns.ssn", Action: config.MinimizeHash},
	}, p.Minimize)
	require.Equal(t, "keep_last:4", p.Minimize[1].String())
	require.True(t, p.Archive)

	for _, tc := range []struct {
		name, old, new string
		keys           []string
		msg            string
	}{
		{name: "duplicate kind names", old: "  - name: applicant\n", new: "  - name: customer\n", keys: []string{"subjects[1].name", "policies[2].subject"}, msg: `"customer" is the name of subjects[0] too`},
		{name: "one table, two kinds", old: "    table: crm.applicants\n", new: "    table: crm.customers\n", keys: []string{"subjects[1].table"}, msg: "the subject table of subjects[0] too"},
		{name: "policy without a kind", old: "    subject: applicant\n", new: "", keys: []string{"policies[2].subject"}, msg: "name the kind of subject the policy governs (customer, applicant)"},
		{name: "subject beside subjects", old: "policies:\n", new: "subject:\n  table: crm.x\n  key: id\npolicies:\n", keys: []string{"subject"}, msg: "not both"},
		{name: "requests.protect without a default kind", old: "archive:\n", new: "requests:\n  protect: \"true\"\narchive:\n", keys: []string{"requests.protect"}, msg: "set protect on each kind"},
		{name: "bad kind name", old: "  - name: applicant\n", new: "  - name: Applicant\n", keys: []string{"subjects[1].name", "policies[2].subject"}, msg: "lower case"},
		{name: "protect that is not a predicate", old: "    protect: \"status = 'active'\"\n", new: "    protect: \"status = 'active'; --\"\n", keys: []string{"subjects[0].protect"}, msg: "';'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(t, replace(t, text, tc.old, tc.new), env)
			require.Error(t, err)
			require.True(t, config.IsConfigError(err), "%v", err)
			require.Equal(t, tc.keys, errorKeys(t, err))
			require.Contains(t, err.Error(), tc.msg)
		})
	}
}

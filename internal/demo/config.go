package demo

import (
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/internal/config"
)

// configTemplate is the lethe config for the demo tables; %[1]s to %[6]s are
// the qualified names of the tables, in the order of tables.
const configTemplate = `subject:
  table: %[1]s
  key: id
  related:
    - table: %[2]s
      join: subscriber_id = id
      related:
        - table: %[3]s
          join: account_id = id
    - table: %[4]s
      join: subscriber_id = id
    - table: %[5]s
      join: subscriber_id = id
    - table: %[6]s
      join: subscriber_id = id
policies:
  - name: former-customers
    where: "status = 'former'"
    clock: closed_at
    retain: 730d
    then: archive
    archive_retain: 7y
  - name: prospects
    where: "status = 'prospect'"
    clock: created_at
    retain: 90d
    then: archive
requests:
  protect: "status = 'active'"
`

// plainIdentifier matches a schema name that needs no quoting in SQL or YAML.
var plainIdentifier = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// Config returns the `subject:`, `policies:` and `requests:` sections of a
// lethe config (YAML) for the demo tables in schema: former customers are
// archived two years after they leave and the archived copy is kept seven
// years, prospects are archived 90 days after they applied, and deletion
// requests for active subscribers are refused unless forced.
//
// Table names are written schema.table. A schema name that is not plain
// lower case is written as a quoted SQL identifier ("My Schema".subscribers),
// inside a YAML string, as lethe's config reads it.
func Config(schema string) string {
	names := make([]any, len(tables))
	for i, t := range tables {
		name := tableName(schema, t.name)
		if !plainIdentifier.MatchString(schema) {
			quoted, _ := json.Marshal(name) // a JSON string is a valid YAML scalar
			name = string(quoted)
		}
		names[i] = name
	}
	//lint:ignore SA5009 names holds one argument per table, in order
	return fmt.Sprintf(configTemplate, names...)
}

// Graph returns what Config writes, as config values, with the policy of
// former customers called formerPolicy: the subject graph over the demo
// tables in schema, the policies and the requests section.
func Graph(schema, formerPolicy string) (config.Table, []config.Policy, config.Requests) {
	related := func(t, join string, more ...config.Table) config.Table {
		return config.Table{Table: tableName(schema, t), Join: join, Related: more}
	}
	subject := config.Table{Table: tableName(schema, tables[0].name), Key: "id", Related: []config.Table{
		related(tables[1].name, "subscriber_id = id", related(tables[2].name, "account_id = id")),
		related(tables[3].name, "subscriber_id = id"),
		related(tables[4].name, "subscriber_id = id"),
		related(tables[5].name, "subscriber_id = id"),
	}}
	policies := []config.Policy{
		{Name: formerPolicy, Where: "status = 'former'", Clock: "closed_at", Retain: "730d", Then: config.ThenArchive, ArchiveRetain: "7y"},
		{Name: "prospects", Where: "status = 'prospect'", Clock: "created_at", Retain: "90d", Then: config.ThenArchive},
	}
	return subject, policies, config.Requests{Protect: "status = 'active'"}
}

// tableName is a demo table as the config names it: schema.table, with the
// schema quoted as SQL quotes it when it is not plain lower case.
func tableName(schema, table string) string {
	if plainIdentifier.MatchString(schema) {
		return schema + "." + table
	}
	return pgx.Identifier{schema}.Sanitize() + "." + table
}

package demo

import (
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
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
		name := schema + "." + t.name
		if !plainIdentifier.MatchString(schema) {
			sql := pgx.Identifier{schema}.Sanitize() + "." + t.name
			quoted, _ := json.Marshal(sql) // a JSON string is a valid YAML scalar
			name = string(quoted)
		}
		names[i] = name
	}
	//lint:ignore SA5009 names holds one argument per table, in order
	return fmt.Sprintf(configTemplate, names...)
}

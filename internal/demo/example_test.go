package demo_test

import (
	"fmt"

	"github.com/lethehq/lethe/internal/demo"
)

// The demo's lethe config: paste it next to the database and archive
// sections of a config file.
func ExampleConfig() {
	fmt.Print(demo.Config("demo"))
	// Output:
	// subject:
	//   table: demo.subscribers
	//   key: id
	//   related:
	//     - table: demo.accounts
	//       join: subscriber_id = id
	//       related:
	//         - table: demo.lines
	//           join: account_id = id
	//     - table: demo.addresses
	//       join: subscriber_id = id
	//     - table: demo.identity_documents
	//       join: subscriber_id = id
	//     - table: demo.credit_checks
	//       join: subscriber_id = id
	// policies:
	//   - name: former-customers
	//     where: "status = 'former'"
	//     clock: closed_at
	//     retain: 730d
	//     then: archive
	//     archive_retain: 7y
	//   - name: prospects
	//     where: "status = 'prospect'"
	//     clock: created_at
	//     retain: 90d
	//     then: archive
	// requests:
	//   protect: "status = 'active'"
}

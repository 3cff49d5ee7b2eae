package retention_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/retention"
)

// PostgreSQL's HMAC (built from sha256) must equal Go's for every key, or
// suppression and the held counts would miss subjects.
func TestSQLHMACEqualsGo(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	db := testenv.NewDB(t)
	for _, secret := range []string{"0123456789abcdef", strings.Repeat("long secret ", 10)} {
		hasher := retention.NewHasher(secret, "crm.customers")
		expr, params := retention.HMACSQL(secret, "crm.customers", "$1::text", 2)
		for _, key := range []string{"1", "O'Brien \"x\"", "Zoë 🎉", "", strings.Repeat("k", 500)} {
			var got string
			args := append([]any{key}, params...)
			require.NoError(t, db.Pool.QueryRow(ctx, "SELECT "+expr, args...).Scan(&got))
			require.Equal(t, hasher.HMAC(key), got, "key %q", key)
		}
	}
}

package retention

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"
)

// PostgreSQL's HMAC (built from sha256) must equal Go's for every key, or
// suppression and the held counts would miss subjects.
func TestSQLHMACEqualsGo(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	db := testenv.NewDB(t)
	for _, secret := range []string{"0123456789abcdef", strings.Repeat("long secret ", 10)} {
		hasher := NewHasher(secret, "crm.customers")
		params := newHMACParams(secret, "crm.customers")
		for _, key := range []string{"1", "O'Brien \"x\"", "Zoë 🎉", "", strings.Repeat("k", 500)} {
			var got string
			args := append([]any{key}, params.args()...)
			require.NoError(t, db.Pool.QueryRow(ctx, "SELECT "+hmacSQL("$1::text", 2), args...).Scan(&got))
			require.Equal(t, hasher.HMAC(key), got, "key %q", key)
		}
	}
}

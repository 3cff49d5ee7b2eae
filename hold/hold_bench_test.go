package hold_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/lethetest"
)

// BenchmarkHoldPlace places one hold on 7,000 subjects of a bigint key,
// typed as a legal team would paste them (" 0042 "), then releases it: the
// keys are made canonical and the holds written a batch at a time.
func BenchmarkHoldPlace(b *testing.B) {
	ctx := context.Background()
	// Holds may be placed before lethe knows the subjects: one will do.
	e := lethetest.NewKeys(b, "bigint", "1")
	holds, q := e.Holds, e.Queue
	keys := make([]string, 7000)
	for i := range keys {
		keys[i] = fmt.Sprintf(" %04d ", i+1)
	}
	b.ResetTimer()
	for i := range b.N {
		matter := fmt.Sprintf("M-%d", i)
		res, err := holds.Place(ctx, "", matter, keys, "litigation", "legal")
		require.NoError(b, err)
		require.Len(b, res.Placed, len(keys))
		_, err = holds.Release(ctx, "", matter, nil, "legal")
		require.NoError(b, err)
		q.Taken()
	}
}

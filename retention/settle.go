package retention

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// release gives up claimed subjects that are no longer due (or whose policy
// left the config): their work items are dropped. Nothing was put for them
// that the manifest names, so nothing else remains.
func (m *batchRun) release(ctx context.Context, batchID int64, items []item) error {
	if len(items) == 0 {
		return nil
	}
	hmacs := make([]string, len(items))
	for i, it := range items {
		hmacs[i] = it.hmac
	}
	return pgx.BeginFunc(ctx, m.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM lethe.work_item WHERE subject_hmac = ANY ($1)`, hmacs); err != nil {
			return fmt.Errorf("error dropping work items: %w", err)
		}
		_, err := tx.Exec(ctx, `UPDATE lethe.batch SET skipped = skipped + $2 WHERE id = $1`, batchID, len(items))
		return err
	})
}

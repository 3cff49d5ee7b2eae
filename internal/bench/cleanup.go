package bench

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
)

// cleanup removes what the bench made in the database: the scratch schemas,
// its rows in lethe's tables (the manifest entries, and with them the keys
// of its parts) and its jobs. The segments it put stay in the bucket, under
// its prefix, unreadable, for the lifecycle rule: the worker's credentials
// cannot delete objects. Its audit entries stay: the audit log is
// append-only.
func (b *run) cleanup(ctx context.Context) error {
	var errs []error
	for _, s := range []string{b.schema, b.rawSchema} {
		if _, err := b.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{s}.Sanitize()+" CASCADE"); err != nil {
			errs = append(errs, err)
		}
	}
	if b.app != nil {
		// Jobs left queued by an interrupted run would otherwise be worked
		// by the next one, against rows that no longer exist.
		rows, err := b.pool.Query(ctx, `
			SELECT job_id FROM lethe.request WHERE ticket LIKE $1 AND job_id IS NOT NULL
			UNION ALL SELECT job_id FROM lethe.batch WHERE run_id = ANY ($2) AND job_id IS NOT NULL`, b.ticket(-1), b.runIDs)
		if err == nil {
			var ids []int64
			if ids, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err == nil {
				for start := 0; start < len(ids) && err == nil; start += 10_000 {
					page := ids[start:min(start+10_000, len(ids))]
					_, err = b.app.Queue.Client.JobDeleteMany(ctx, river.NewJobDeleteManyParams().IDs(page...).First(len(page)))
				}
			}
		}
		errs = append(errs, err)
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`WITH r AS (DELETE FROM lethe.request WHERE ticket LIKE $1 RETURNING id)
		  DELETE FROM lethe.suppression WHERE request_id IN (SELECT id FROM r)`, []any{b.ticket(-1)}},
		{`DELETE FROM lethe.manifest WHERE segment_id IN (SELECT id FROM lethe.segment WHERE name LIKE $1)`, []any{b.prefix + "%"}},
		{`DELETE FROM lethe.segment WHERE name LIKE $1`, []any{b.prefix + "%"}},
		{`DELETE FROM lethe.work_item WHERE batch_id IN (SELECT id FROM lethe.batch WHERE run_id = ANY ($1))`, []any{b.runIDs}},
		{`DELETE FROM lethe.batch WHERE run_id = ANY ($1)`, []any{b.runIDs}},
		{`DELETE FROM lethe.run WHERE id = ANY ($1)`, []any{b.runIDs}},
	} {
		if _, err := b.pool.Exec(ctx, q.sql, q.args...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

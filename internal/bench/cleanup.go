package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/archive"
)

// cleanup removes what the bench made: the scratch schemas, every object
// version under its prefix, its rows in lethe's tables and its jobs. Its
// audit entries stay: the audit log is append-only.
func (b *run) cleanup(ctx context.Context) error {
	var errs []error
	for _, s := range []string{b.schema, b.rawSchema} {
		if _, err := b.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{s}.Sanitize()+" CASCADE"); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, b.removeObjects(ctx))
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
		{`DELETE FROM lethe.manifest WHERE policy = $1 AND object_key LIKE $2`, []any{PolicyName, b.prefix + "%"}},
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

// removeObjects deletes every object version the bench put: those the
// manifest and the raw puts name, by name, then whatever a listing of the
// prefix still finds (a version of a retried put).
func (b *run) removeObjects(ctx context.Context) error {
	c := archive.NewClient(archive.ClientConfig{Endpoint: b.cfg.Archive.Endpoint, Region: b.cfg.Archive.Region,
		PathStyle: b.cfg.Archive.PathStyle, AccessKeyID: b.cfg.Archive.Credentials.AccessKeyID,
		SecretAccessKey: b.cfg.Archive.Credentials.SecretAccessKey, MaxConns: 32})
	byKey := map[string][]string{}
	for _, st := range b.rawPuts {
		byKey[st.Key] = append(byKey[st.Key], st.VersionID)
	}
	rows, err := b.pool.Query(ctx, `SELECT object_key, version_id FROM lethe.manifest WHERE policy = $1 AND object_key LIKE $2`,
		PolicyName, b.prefix+"%")
	if err != nil {
		return fmt.Errorf("error reading the bench's objects: %w", err)
	}
	var key, version string
	if _, err := pgx.ForEachRow(rows, []any{&key, &version}, func() error {
		byKey[key] = append(byKey[key], version)
		return nil
	}); err != nil {
		return fmt.Errorf("error reading the bench's objects: %w", err)
	}
	if err := b.deleteVersions(ctx, c, byKey); err != nil {
		return err
	}
	in := &s3.ListObjectVersionsInput{Bucket: aws.String(b.cfg.Archive.Bucket), Prefix: aws.String(b.prefix)}
	for {
		out, err := c.ListObjectVersions(ctx, in)
		if err != nil {
			return fmt.Errorf("error listing the bench's objects: %w", err)
		}
		left := map[string][]string{}
		for _, v := range out.Versions {
			left[aws.ToString(v.Key)] = append(left[aws.ToString(v.Key)], aws.ToString(v.VersionId))
		}
		for _, m := range out.DeleteMarkers {
			left[aws.ToString(m.Key)] = append(left[aws.ToString(m.Key)], aws.ToString(m.VersionId))
		}
		if len(left) == 0 {
			return nil
		}
		// Everything listed goes, so list again from the start: paging on
		// with markers through what was just deleted is not reliable on
		// every server.
		if err := b.deleteVersions(ctx, c, left); err != nil {
			return err
		}
	}
}

// deleteVersions deletes the versions of 32 keys at a time, the versions of
// one key one after the other: some servers mishandle concurrent deletes of
// one key's versions.
func (b *run) deleteVersions(ctx context.Context, c *s3.Client, byKey map[string][]string) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 32)
	for key, versions := range byKey {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			for _, v := range versions {
				_, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.cfg.Archive.Bucket),
					Key: aws.String(key), VersionId: aws.String(v)})
				if err != nil && !errors.Is(archive.Classify(err), archive.ErrNotFound) {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("error deleting a bench object: %w", err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

package retention

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/audit"
)

// due is a subject read for archiving.
type due struct {
	item
	bundle  *archive.Bundle
	digests []string // per node; "" where the subject has no rows
	held    bool     // a legal hold covers the subject: put it locked
	stored  *archive.Stored
}

func (m *batchRun) archive(ctx context.Context, batchID int64, pp *PolicyPlan, items []item, res *BatchResult) error {
	now := m.Now().UTC().Truncate(time.Microsecond)
	t0 := time.Now()
	subjects, err := m.read(ctx, pp, items, now)
	tRead := time.Since(t0)
	if err != nil {
		return err
	}
	// Subjects no longer due are released, with anything put for them.
	var gone []item
	isDue := make(map[string]bool, len(subjects))
	for _, s := range subjects {
		isDue[s.hmac] = true
	}
	for _, it := range items {
		if !isDue[it.hmac] {
			gone = append(gone, it)
		}
	}
	if err := m.release(ctx, batchID, gone); err != nil {
		return err
	}
	res.Skipped += len(gone)
	if len(subjects) == 0 {
		return nil
	}

	// Count the put before making it, so that a crash after it leaves a
	// record that versions may exist.
	hmacs := make([]string, len(subjects))
	for i, s := range subjects {
		hmacs[i] = s.hmac
	}
	if _, err := m.db.Exec(ctx, `UPDATE lethe.work_item SET puts = puts + 1 WHERE subject_hmac = ANY ($1)`, hmacs); err != nil {
		return fmt.Errorf("error recording puts: %w", err)
	}
	for _, s := range subjects {
		s.puts++
	}
	if err := m.faults.At(FaultBeforePut); err != nil {
		return err
	}
	t1 := time.Now()
	putErr := m.putAll(ctx, subjects)
	tPut := time.Since(t1)
	var stored []*due
	for _, s := range subjects {
		if s.stored != nil {
			stored = append(stored, s)
		}
	}
	res.Pending += len(subjects) - len(stored)
	if err := m.faults.At(FaultAfterPut); err != nil {
		return err
	}
	if len(stored) > 0 {
		t2 := time.Now()
		if err := m.commitArchive(ctx, batchID, pp, stored, now, res); err != nil {
			return err
		}
		m.Logger.Debug("batch phases", "batch_id", batchID, "subjects", len(subjects), "read_ms", tRead.Milliseconds(),
			"put_ms", tPut.Milliseconds(), "commit_ms", time.Since(t2).Milliseconds())
	}
	if putErr != nil {
		return putErr
	}
	return nil
}

// read reads the graph of every still-due subject among items in one
// snapshot, and flags the held ones.
func (m *batchRun) read(ctx context.Context, pp *PolicyPlan, items []item, now time.Time) ([]*due, error) {
	ctx, cancel := context.WithTimeout(ctx, m.QueryTimeout)
	defer cancel()
	tx, err := m.db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("error reading subjects: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only

	byKey := make(map[string]item, len(items))
	keys := make([]string, len(items))
	for i, it := range items {
		byKey[it.key] = it
		keys[i] = it.key
	}
	graphs, err := m.Plan.ReadGraph(ctx, tx, pp, keys, now)
	if err != nil {
		return nil, err
	}
	subjects := make([]*due, 0, len(graphs))
	hmacs := make([]string, 0, len(graphs))
	for _, g := range graphs {
		it, ok := byKey[g.Key]
		if !ok {
			continue
		}
		subjects = append(subjects, &due{item: it, bundle: g.Bundle, digests: g.Digests})
		hmacs = append(hmacs, it.hmac)
	}
	held, err := m.Holds.HeldAmong(ctx, tx, hmacs)
	if err != nil {
		return nil, err
	}
	for _, d := range subjects {
		d.held = held[d.hmac]
	}
	return subjects, nil
}

// putAll puts every subject's bundle, concurrency at a time. A subject whose
// put fails is left without stored. An error that will fail every put (the
// server is unreachable, or refuses the credentials) stops the rest.
func (m *batchRun) putAll(ctx context.Context, subjects []*due) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		failed   int
	)
	work := make(chan *due)
	var wg sync.WaitGroup
	for range min(m.Concurrency, len(subjects)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				st, err := m.Store.Put(ctx, d.hmac, d.bundle, d.held)
				if err != nil {
					mu.Lock()
					failed++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					if errors.Is(err, archive.ErrUnreachable) || errors.Is(err, archive.ErrAccessDenied) || errors.Is(err, archive.ErrNoBucket) {
						cancel()
					}
					continue
				}
				d.stored = st
			}
		}()
	}
	for _, d := range subjects {
		select {
		case work <- d:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("error archiving: %d of %d puts failed, the first: %w", len(subjects)-countStored(subjects), len(subjects), firstErr)
	}
	return ctx.Err()
}

func countStored(ds []*due) int {
	n := 0
	for _, d := range ds {
		if d.stored != nil {
			n++
		}
	}
	return n
}

// commitArchive records the manifest and deletes the stored subjects' rows
// in one transaction. A subject whose rows changed since they were read
// (the delete's digest differs from the archived one) is left out, and the
// transaction is retried without it; it stays claimed for the next attempt.
func (m *batchRun) commitArchive(ctx context.Context, batchID int64, pp *PolicyPlan, subjects []*due, now time.Time, res *BatchResult) error {
	for attempt := 0; len(subjects) > 0; attempt++ {
		changed, rows, err := m.commitOnce(ctx, batchID, pp, subjects, now)
		if err != nil {
			return err
		}
		if len(changed) == 0 {
			var bytes int64
			for _, s := range subjects {
				bytes += s.stored.Size
			}
			res.Archived += len(subjects)
			res.Rows += rows
			res.Bytes += bytes
			return m.settleNew(ctx, batchID, subjects)
		}
		m.Logger.Warn("rows changed while they were archived; those subjects will be read again", "batch_id", batchID, "subjects", len(changed))
		res.Pending += len(changed)
		subjects = slices.DeleteFunc(subjects, func(d *due) bool { return changed[d.hmac] })
		if attempt == 3 {
			res.Pending += len(subjects)
			return nil
		}
	}
	return nil
}

// commitOnce runs the commit transaction. If any subject's deleted rows
// differ from its archived rows, it rolls back and returns those subjects.
func (m *batchRun) commitOnce(ctx context.Context, batchID int64, pp *PolicyPlan, subjects []*due, now time.Time) (changed map[string]bool, rows int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, m.QueryTimeout)
	defer cancel()
	tx, err := m.db.Begin(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("error committing archive: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op

	keys := make([]string, len(subjects))
	byKey := make(map[string]*due, len(subjects))
	for i, s := range subjects {
		keys[i] = s.key
		byKey[s.key] = s
	}
	if _, err := m.Plan.LockRoots(ctx, tx, keys); err != nil {
		return nil, 0, err
	}
	del, rows, err := m.Plan.DeleteGraph(ctx, tx, keys, func() error { return m.faults.At(FaultDuringDelete) })
	if err != nil {
		return nil, 0, err
	}
	changed = map[string]bool{}
	for _, s := range subjects {
		for i, d := range del[s.key] {
			if d.Digest != s.digests[i] {
				changed[s.hmac] = true // rows were changed, added or removed
			}
		}
	}
	if len(changed) > 0 {
		return changed, 0, nil // the deferred rollback restores every row
	}

	hmacs := make([]string, len(subjects))
	objKeys := make([]string, len(subjects))
	versions := make([]string, len(subjects))
	sums := make([]string, len(subjects))
	sizes := make([]int64, len(subjects))
	var prior []string
	entries := make([]audit.Entry, len(subjects))
	for i, s := range subjects {
		hmacs[i], objKeys[i], versions[i], sums[i], sizes[i] = s.hmac, s.stored.Key, s.stored.VersionID, s.stored.SHA256, s.stored.Size
		entries[i] = audit.Entry{Kind: audit.KindArchive, Actor: "lethe", SubjectHMAC: s.hmac, Detail: map[string]any{
			"policy": pp.Name, "batch_id": batchID, "object_key": s.stored.Key, "version_id": s.stored.VersionID,
			"sha256": s.stored.SHA256, "size": s.stored.Size, "rows": m.Plan.RowsByTable(del[s.key]),
		}}
	}
	prows, err := tx.Query(ctx, `SELECT subject_hmac FROM lethe.manifest WHERE subject_hmac = ANY ($1)`, hmacs)
	if err != nil {
		return nil, 0, fmt.Errorf("error reading manifest: %w", err)
	}
	if prior, err = pgx.CollectRows(prows, pgx.RowTo[string]); err != nil {
		return nil, 0, fmt.Errorf("error reading manifest: %w", err)
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO lethe.manifest (subject_hmac, object_key, version_id, sha256, size, policy, archived_at, run_id)
		SELECT h, k, v, s, z, $6, $7, (SELECT run_id FROM lethe.batch WHERE id = $8)
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS u (h, k, v, s, z)
		ON CONFLICT (subject_hmac) DO UPDATE SET object_key = excluded.object_key, version_id = excluded.version_id,
			sha256 = excluded.sha256, size = excluded.size, policy = excluded.policy,
			archived_at = excluded.archived_at, run_id = excluded.run_id`,
		hmacs, objKeys, versions, sums, sizes, pp.Name, now, batchID)
	if err != nil {
		return nil, 0, fmt.Errorf("error recording manifest: %w", err)
	}
	// A subject put more than once, or archived before, may have other
	// versions: its item stays, marked committed, until they are pruned.
	var bytes int64
	settle := []string{} // not nil: "<> ALL (NULL)" would match nothing
	priorSet := make(map[string]bool, len(prior))
	for _, h := range prior {
		priorSet[h] = true
	}
	for _, s := range subjects {
		bytes += s.stored.Size
		if s.puts > 1 || priorSet[s.hmac] {
			settle = append(settle, s.hmac)
		}
	}
	if _, err := tx.Exec(ctx, `
		WITH s AS (UPDATE lethe.work_item SET state = $3 WHERE subject_hmac = ANY ($2) RETURNING subject_hmac)
		DELETE FROM lethe.work_item WHERE subject_hmac = ANY ($1) AND subject_hmac <> ALL ($2)`, hmacs, settle, ItemCommitted); err != nil {
		return nil, 0, fmt.Errorf("error settling work items: %w", err)
	}
	if _, err := tx.Exec(ctx, `
		UPDATE lethe.batch SET archived = archived + $2, rows_moved = rows_moved + $3, bytes = bytes + $4 WHERE id = $1`,
		batchID, len(subjects), rows, bytes); err != nil {
		return nil, 0, fmt.Errorf("error counting batch: %w", err)
	}
	// The audit append locks the chain's head until the commit: last, so
	// that concurrent batches wait on each other as briefly as possible.
	if err := audit.Append(ctx, tx, entries...); err != nil {
		return nil, 0, err
	}
	if err := m.faults.At(FaultBeforeCommit); err != nil {
		return nil, 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, 0, fmt.Errorf("error committing archive: %w", err)
	}
	if err := m.faults.At(FaultAfterCommit); err != nil {
		return nil, 0, err
	}
	for _, s := range subjects {
		if slices.Contains(settle, s.hmac) {
			s.state = ItemCommitted
		}
	}
	return nil, rows, nil
}

// settleNew prunes the subjects just committed that may have other
// versions.
func (m *batchRun) settleNew(ctx context.Context, batchID int64, subjects []*due) error {
	var items []item
	for _, s := range subjects {
		if s.state == ItemCommitted {
			items = append(items, s.item)
		}
	}
	return m.settle(ctx, batchID, items)
}

package retention

import (
	"context"
	"fmt"
	"slices"
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
	held    bool     // a legal hold covers the subject
	part    archive.Part
}

// archive moves a batch's subjects: it reads their graphs in one snapshot,
// encrypts each to a key of its own into one segment, records the segment,
// puts it, and then, in one transaction, records the manifest entries and
// wrapped keys, deletes the subjects' rows and appends the audit entries.
// A crash before that transaction leaves a segment whose keys were never
// stored: nobody can read it.
func (m *batchRun) archive(ctx context.Context, batchID int64, pp *PolicyPlan, items []item, res *BatchResult) error {
	now := m.Now().UTC().Truncate(time.Microsecond)
	t0 := time.Now()
	subjects, err := m.read(ctx, pp, items, now)
	if err != nil {
		return err
	}
	tRead := time.Since(t0)
	// Subjects no longer due are let go.
	isDue := make(map[string]bool, len(subjects))
	for _, s := range subjects {
		isDue[s.hmac] = true
	}
	if err := m.letGo(ctx, batchID, items, isDue, res); err != nil || len(subjects) == 0 {
		return err
	}

	seg := m.Store.NewSegment()
	lock := m.segmentLock(pp, now)
	for _, s := range subjects {
		if s.part, err = seg.Add(s.bundle); err != nil {
			return err
		}
		lock.LegalHold = (lock.LegalHold || s.held) && m.Store.LegalHolds()
		s.bundle = nil // the rows are in the segment now; let them go
	}
	name := archive.SegmentName(m.Store.Prefix(), now)
	segID, err := m.recordSegment(ctx, batchID, name, seg, lock)
	if err != nil {
		return err
	}
	if err := m.faults.At(FaultBeforePut); err != nil {
		return err
	}
	t1 := time.Now()
	stored, err := m.Store.Put(ctx, name, seg.Bytes(), lock)
	if err != nil {
		res.Pending += len(subjects)
		return fmt.Errorf("error archiving batch %d: %w", batchID, err)
	}
	tPut := time.Since(t1)
	if err := m.faults.At(FaultAfterPut); err != nil {
		return err
	}
	t2 := time.Now()
	if err := m.commitArchive(ctx, batchID, pp, segID, stored, subjects, now, lock.RetainUntil, res); err != nil {
		return err
	}
	m.Logger.Debug("batch phases", "batch_id", batchID, "subjects", len(subjects), "segment_bytes", seg.Size(),
		"read_ms", tRead.Milliseconds(), "put_ms", tPut.Milliseconds(), "commit_ms", time.Since(t2).Milliseconds())
	return nil
}

// recordSegment records, before it is put, the segment a batch attempt is
// about to put. Segments earlier attempts of the batch recorded and did not
// commit are abandoned: no attempt reuses them.
func (m *batchRun) recordSegment(ctx context.Context, batchID int64, name string, seg *archive.Segment, lock archive.Lock) (int64, error) {
	var retain *time.Time
	if !lock.RetainUntil.IsZero() {
		retain = &lock.RetainUntil
	}
	var id int64
	err := pgx.BeginFunc(ctx, m.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE lethe.segment SET state = 'abandoned' WHERE batch_id = $1 AND state = 'pending'`, batchID); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `
			INSERT INTO lethe.segment (name, batch_id, size, sha256, lock_mode, retain_until, legal_hold)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
			name, batchID, seg.Size(), seg.SHA256(), lock.Mode, retain, lock.LegalHold).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("error recording a segment: %w", err)
	}
	return id, nil
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
	graphs, err := pp.Kind.ReadGraph(ctx, tx, pp, keys, now)
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

// commitArchive records the manifest and deletes the subjects' rows in one
// transaction. A subject whose rows changed since they were read (the
// delete's digest differs from the archived one) is left out, and the
// transaction is retried without it; it stays claimed for the next attempt,
// and its part stays in the segment, unreadable, since its key was never
// stored.
func (m *batchRun) commitArchive(ctx context.Context, batchID int64, pp *PolicyPlan, segID int64, stored *archive.Stored,
	subjects []*due, now, retainUntil time.Time, res *BatchResult) error {
	for attempt := 0; len(subjects) > 0; attempt++ {
		changed, rows, blocked, err := m.commitOnce(ctx, batchID, pp, segID, stored, subjects, now, retainUntil)
		if err != nil {
			return err
		}
		if len(changed) == 0 {
			for _, s := range subjects {
				if blocked[s.key] {
					continue
				}
				res.Archived++
				res.Bytes += s.part.Length
			}
			res.Rows += rows
			res.Blocked += len(blocked)
			return nil
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
func (m *batchRun) commitOnce(ctx context.Context, batchID int64, pp *PolicyPlan, segID int64, stored *archive.Stored,
	subjects []*due, now, retainUntil time.Time) (changed map[string]bool, rows int64, blocked map[string]bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, m.QueryTimeout)
	defer cancel()
	tx, err := m.db.Begin(ctx)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("error committing archive: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op

	keys := make([]string, len(subjects))
	hmacs := make([]string, len(subjects))
	for i, s := range subjects {
		keys[i], hmacs[i] = s.key, s.hmac
	}
	// The subjects' locks order this against holds placed meanwhile.
	if err := LockSubjects(ctx, tx, hmacs); err != nil {
		return nil, 0, nil, err
	}
	if _, err := pp.Kind.LockRoots(ctx, tx, keys); err != nil {
		return nil, 0, nil, err
	}
	del, rows, stopped, err := pp.Kind.DeleteSubjects(ctx, tx, keys, func() error { return m.faults.At(FaultDuringDelete) })
	if err != nil {
		return nil, 0, nil, err
	}
	// A subject a foreign key kept in place stays, reported; its part stays
	// in the segment, unreadable, since its key is not stored.
	blocked = map[string]bool{}
	hmacOf := map[string]string{}
	for _, s := range subjects {
		hmacOf[s.key] = s.hmac
		if _, ok := stopped[s.key]; ok {
			blocked[s.key] = true
		}
	}
	claimed := slices.Clone(hmacs)
	if len(stopped) > 0 {
		m.Logger.Warn("a foreign key kept subjects in place; see lethe status", "batch_id", batchID, "subjects", len(stopped))
		subjects = slices.DeleteFunc(slices.Clone(subjects), func(d *due) bool { return blocked[d.key] })
		hmacs = hmacs[:0]
		for _, s := range subjects {
			hmacs = append(hmacs, s.hmac)
		}
	}
	if err := recordBlocked(ctx, tx, pp.Name, hmacOf, stopped, hmacs); err != nil {
		return nil, 0, nil, err
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
		return changed, 0, nil, nil // the deferred rollback restores every row
	}
	held, err := m.Holds.HeldAmong(ctx, tx, hmacs)
	if err != nil {
		return nil, 0, nil, err
	}
	destroyed, err := supersede(ctx, tx, hmacs, held)
	if err != nil {
		return nil, 0, nil, err
	}
	entries := make([]audit.Entry, 0, len(subjects)+len(destroyed))
	offsets := make([]int64, len(subjects))
	lengths := make([]int64, len(subjects))
	sums := make([]string, len(subjects))
	wrapped := make([][]byte, len(subjects))
	for i, s := range subjects {
		offsets[i], lengths[i], sums[i], wrapped[i] = s.part.Offset, s.part.Length, s.part.SHA256, s.part.WrappedKey
		entries = append(entries, audit.Entry{Kind: audit.KindArchive, Actor: "lethe", SubjectHMAC: s.hmac, Detail: map[string]any{
			"policy": pp.Name, "batch_id": batchID, "segment": stored.Name, "version_id": stored.VersionID,
			"offset": s.part.Offset, "length": s.part.Length, "sha256": s.part.SHA256, "rows": pp.Kind.RowsByTable(del[s.key]),
		}})
	}
	for _, d := range destroyed {
		entries = append(entries, audit.Entry{Kind: audit.KindKeyDestroyed, Actor: "lethe", SubjectHMAC: d.hmac,
			Detail: map[string]any{"manifest_id": d.id, "reason": "superseded", "batch_id": batchID}})
	}
	var retain *time.Time
	if !retainUntil.IsZero() {
		retain = &retainUntil
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO lethe.manifest (subject_hmac, state, policy, archived_at, retain_until, segment_id,
			part_offset, part_length, part_sha256, wrapped_key, wrapped_to, run_id, batch_id)
		SELECT h, 'archived', $6, $7, $8, $9, o, l, s, k, $10, (SELECT run_id FROM lethe.batch WHERE id = $11), $11
		FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::bytea[]) AS u (h, o, l, s, k)`,
		hmacs, offsets, lengths, sums, wrapped, pp.Name, now, retain, segID, m.MastersFingerprint, batchID); err != nil {
		return nil, 0, nil, fmt.Errorf("error recording manifest: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE lethe.segment SET state = 'committed', version_id = $2, committed_at = now() WHERE id = $1`,
		segID, stored.VersionID); err != nil {
		return nil, 0, nil, fmt.Errorf("error committing segment: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM lethe.work_item WHERE subject_hmac = ANY ($1)`, claimed); err != nil {
		return nil, 0, nil, fmt.Errorf("error dropping work items: %w", err)
	}
	var bytes int64
	for _, s := range subjects {
		bytes += s.part.Length
	}
	if _, err := tx.Exec(ctx, `
		UPDATE lethe.batch SET archived = archived + $2, rows_moved = rows_moved + $3, bytes = bytes + $4, blocked = blocked + $5 WHERE id = $1`,
		batchID, len(subjects), rows, bytes, len(blocked)); err != nil {
		return nil, 0, nil, fmt.Errorf("error counting batch: %w", err)
	}
	// The audit append locks the chain's head until the commit: last, so
	// that concurrent batches wait on each other as briefly as possible.
	if err := audit.Append(ctx, tx, entries...); err != nil {
		return nil, 0, nil, err
	}
	if err := m.faults.At(FaultBeforeCommit); err != nil {
		return nil, 0, nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, 0, nil, fmt.Errorf("error committing archive: %w", err)
	}
	if err := m.faults.At(FaultAfterCommit); err != nil {
		return nil, 0, nil, err
	}
	return nil, rows, blocked, nil
}

// destroyedKey is a manifest entry whose key was destroyed.
type destroyedKey struct {
	id   int64
	hmac string
}

// supersede marks, in tx, the live entries of subjects archived again as
// superseded, and destroys their keys, except those of held subjects: a
// held subject's older copy stays readable until its hold is released.
func supersede(ctx context.Context, tx pgx.Tx, hmacs []string, held map[string]bool) ([]destroyedKey, error) {
	var free []string
	for _, h := range hmacs {
		if !held[h] {
			free = append(free, h)
		}
	}
	rows, err := tx.Query(ctx, `
		UPDATE lethe.manifest SET state = 'superseded',
			wrapped_key = CASE WHEN subject_hmac = ANY ($2) THEN NULL ELSE wrapped_key END,
			destroyed_at = CASE WHEN subject_hmac = ANY ($2) THEN now() END,
			destroyed_by = CASE WHEN subject_hmac = ANY ($2) THEN 'superseded' END
		WHERE subject_hmac = ANY ($1) AND state = 'archived' AND part = 'subject'
		RETURNING id, subject_hmac, wrapped_key IS NULL`, hmacs, free)
	if err != nil {
		return nil, fmt.Errorf("error superseding older copies: %w", err)
	}
	var out []destroyedKey
	var d destroyedKey
	var gone bool
	if _, err := pgx.ForEachRow(rows, []any{&d.id, &d.hmac, &gone}, func() error {
		if gone {
			out = append(out, d)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("error superseding older copies: %w", err)
	}
	return out, nil
}

// letGo releases the batch's items that keep does not name (no longer due,
// or nothing left to do), counting them as skipped.
func (m *batchRun) letGo(ctx context.Context, batchID int64, items []item, keep map[string]bool, res *BatchResult) error {
	gone := slices.DeleteFunc(slices.Clone(items), func(it item) bool { return keep[it.hmac] })
	if err := m.release(ctx, batchID, gone); err != nil {
		return err
	}
	res.Skipped += len(gone)
	return nil
}

// segmentLock is the Object Lock of a segment that pp writes at now.
func (m *batchRun) segmentLock(pp *PolicyPlan, now time.Time) archive.Lock {
	lock := archive.Lock{Mode: m.LockMode}
	if pp.ArchiveRetainDays > 0 {
		lock.RetainUntil = now.Add(pp.ArchiveRetainDays.Duration())
	}
	return lock
}

package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/internal/audit"
)

// archiver is what moving a subject needs of the object store;
// *archive.Archiver is one.
type archiver interface {
	ObjectKey(subjectHMAC string) string
	Put(ctx context.Context, subjectHMAC string, b *archive.Bundle, legalHold bool) (*archive.Stored, error)
	Versions(ctx context.Context, subjectHMAC string) ([]archive.Version, error)
	DeleteVersions(ctx context.Context, subjectHMAC string, vs []archive.Version) ([]string, error)
	Prune(ctx context.Context, subjectHMAC, keep string) ([]string, error)
	SetLegalHold(ctx context.Context, subjectHMAC string, on bool) (int, error)
}

var _ archiver = (*archive.Archiver)(nil)

// Batch actions.
const (
	ActionArchive = "archive" // move to the archive, then delete
	ActionDelete  = "delete"  // a then: delete policy: delete without a copy
	ActionErase   = "erase"   // a subject erased on request, found again: delete without a copy
)

// ErrBatchBusy is returned by RunBatch when another worker holds the batch.
var ErrBatchBusy = errors.New("batch is being worked by another worker")

// Fault points, at which tests inject a failure (see Mover.Fault).
const (
	FaultBeforePut    = "before_put"    // puts counted, nothing put
	FaultAfterPut     = "after_put"     // objects put and verified, nothing committed
	FaultDuringDelete = "during_delete" // inside the commit, after the first table's delete
	FaultBeforeCommit = "before_commit" // everything done but COMMIT
	FaultAfterCommit  = "after_commit"  // committed, older versions not yet pruned
)

// Mover works batches: it archives (or destroys) the subjects a sweep
// claimed.
type Mover struct {
	pool        *pgxpool.Pool
	plan        *Plan
	store       archiver
	logger      *slog.Logger
	concurrency int

	// Now returns the current time; tests move it.
	Now func() time.Time
	// Fault, when set, is called at each fault point; an error it returns
	// aborts the batch there as a crash would. Tests only.
	Fault func(point string) error
	// QueryTimeout bounds each statement.
	QueryTimeout time.Duration
}

// NewMover returns a Mover that puts up to concurrency objects at once.
func NewMover(pool *pgxpool.Pool, plan *Plan, store archiver, concurrency int, logger *slog.Logger) *Mover {
	return &Mover{pool: pool, plan: plan, store: store, logger: logger, concurrency: concurrency, Now: time.Now, QueryTimeout: 2 * time.Minute}
}

func (m *Mover) fault(point string) error {
	if m.Fault == nil {
		return nil
	}
	if err := m.Fault(point); err != nil {
		return fmt.Errorf("fault injected at %s: %w", point, err)
	}
	return nil
}

// BatchResult counts what one call of RunBatch did.
type BatchResult struct {
	Archived  int
	Destroyed int
	// Skipped subjects were no longer due when the batch ran.
	Skipped int
	// Held subjects were due for destruction but a legal hold covers them.
	Held int
	// Pending subjects are left for the next attempt (a failed put, or rows
	// that changed while the batch ran).
	Pending int
	Rows    int64
	Bytes   int64
	// RunID is the run the batch belongs to.
	RunID int64
	// Policy is the batch's policy.
	Policy string
}

// batchRun is one call of RunBatch: the Mover and the one connection the
// batch holds its lock on and does all its database work over, so that a
// batch never needs a second connection while it holds one.
type batchRun struct {
	*Mover
	db *pgxpool.Conn
}

type item struct {
	hmac, key, state string
	puts             int
}

// RunBatch works every remaining subject of a batch. It is idempotent and
// safe to call again after a failure or crash at any point: work items are
// the record of what is unsettled. It returns an error while any subject is
// left pending, so that the job is retried.
func (m *Mover) RunBatch(ctx context.Context, batchID int64) (*BatchResult, error) {
	conn, err := m.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("error acquiring connection: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, batchLockKey(batchID)).Scan(&locked); err != nil {
		return nil, fmt.Errorf("error locking batch: %w", err)
	}
	if !locked {
		return nil, ErrBatchBusy
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, batchLockKey(batchID)); err != nil {
			conn.Conn().Close(uctx) //nolint:errcheck // closing drops the lock
		}
	}()

	b := &batchRun{Mover: m, db: conn}
	res := &BatchResult{}
	var policyName, action string
	err = conn.QueryRow(ctx, `SELECT run_id, policy, action FROM lethe.batch WHERE id = $1`, batchID).Scan(&res.RunID, &policyName, &action)
	if errors.Is(err, pgx.ErrNoRows) {
		return res, nil // nothing to do: the batch was never committed
	}
	if err != nil {
		return nil, fmt.Errorf("error reading batch: %w", err)
	}
	res.Policy = policyName
	items, err := b.items(ctx, batchID)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `UPDATE lethe.batch SET attempts = attempts + 1 WHERE id = $1`, batchID); err != nil {
		return nil, fmt.Errorf("error recording attempt: %w", err)
	}

	var claimed, committed []item
	for _, it := range items {
		if it.state == "committed" {
			committed = append(committed, it)
		} else {
			claimed = append(claimed, it)
		}
	}
	// Subjects archived by an earlier attempt that crashed before pruning.
	if err := b.settle(ctx, committed); err != nil {
		return res, err
	}

	pp := m.plan.Policy(policyName)
	switch {
	case len(claimed) == 0:
	case action == ActionErase:
		if err := b.destroy(ctx, batchID, nil, claimed, res); err != nil {
			return res, err
		}
	case pp == nil:
		// The policy left the config since the claim: release the
		// subjects, removing anything put for them.
		m.logger.Warn("batch names a policy that is no longer configured; releasing its subjects", "batch_id", batchID, "policy", policyName)
		if err := b.release(ctx, batchID, claimed); err != nil {
			return res, err
		}
		res.Skipped += len(claimed)
	case action == ActionDelete || !pp.Archive():
		if err := b.destroy(ctx, batchID, pp, claimed, res); err != nil {
			return res, err
		}
	default:
		if err := b.archive(ctx, batchID, pp, claimed, res); err != nil {
			return res, err
		}
	}

	if res.Pending > 0 {
		return res, fmt.Errorf("error archiving batch %d: %d subjects left for the next attempt", batchID, res.Pending)
	}
	tag, err := conn.Exec(ctx, `
		UPDATE lethe.batch SET state = 'done', finished_at = now(), last_error = NULL
		WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM lethe.work_item WHERE batch_id = $1)`, batchID)
	if err != nil {
		return res, fmt.Errorf("error finishing batch: %w", err)
	}
	if tag.RowsAffected() == 1 {
		if _, err := FinishRun(ctx, conn, res.RunID); err != nil {
			return res, err
		}
	}
	return res, nil
}

func (m *batchRun) items(ctx context.Context, batchID int64) ([]item, error) {
	rows, err := m.db.Query(ctx, `
		SELECT subject_hmac, subject_key, state, puts FROM lethe.work_item
		WHERE batch_id = $1 ORDER BY subject_hmac`, batchID)
	if err != nil {
		return nil, fmt.Errorf("error reading work items: %w", err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (item, error) {
		var it item
		return it, r.Scan(&it.hmac, &it.key, &it.state, &it.puts)
	})
	if err != nil {
		return nil, fmt.Errorf("error reading work items: %w", err)
	}
	return items, nil
}

// RecordFailure notes a failed attempt on the batch; final marks the batch
// failed, which lets its run finish. The next sweep requeues a failed batch.
func (m *Mover) RecordFailure(ctx context.Context, batchID int64, cause error, final bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	state := "queued"
	if final {
		state = "failed"
	}
	var runID int64
	err := m.pool.QueryRow(ctx, `
		UPDATE lethe.batch SET last_error = $2, state = $3,
			finished_at = CASE WHEN $3 = 'failed' THEN now() END
		WHERE id = $1 AND state <> 'done' RETURNING run_id`, batchID, cause.Error(), state).Scan(&runID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("error recording batch failure: %w", err)
	}
	if final {
		_, err = FinishRun(ctx, m.pool, runID)
	}
	return err
}

// settle prunes, for subjects whose archive is committed, every object
// version but the one the manifest names, then drops their work items.
func (m *batchRun) settle(ctx context.Context, items []item) error {
	if len(items) == 0 {
		return nil
	}
	hmacs := make([]string, len(items))
	for i, it := range items {
		hmacs[i] = it.hmac
	}
	rows, err := m.db.Query(ctx, `SELECT subject_hmac, version_id FROM lethe.manifest WHERE subject_hmac = ANY ($1)`, hmacs)
	if err != nil {
		return fmt.Errorf("error reading manifest: %w", err)
	}
	keep := map[string]string{}
	for rows.Next() {
		var h, v string
		if err := rows.Scan(&h, &v); err != nil {
			rows.Close()
			return fmt.Errorf("error reading manifest: %w", err)
		}
		keep[h] = v
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("error reading manifest: %w", err)
	}
	held, err := heldAmong(ctx, m.db, hmacs)
	if err != nil {
		return err
	}
	var done []string
	var pruned []audit.Entry
	for _, it := range items {
		if held[it.hmac] {
			// Held: keep every version. Releasing the last hold prunes them.
			done = append(done, it.hmac)
			continue
		}
		v, ok := keep[it.hmac]
		if !ok {
			// A committed item always has a manifest row: they are written
			// together. Without one, keep everything and say so.
			m.logger.Error("committed work item has no manifest entry; leaving its object alone", "subject_hmac", it.hmac)
			continue
		}
		deleted, err := m.store.Prune(ctx, it.hmac, v)
		if err != nil {
			return fmt.Errorf("error pruning object versions: %w", err)
		}
		if len(deleted) > 0 {
			pruned = append(pruned, audit.Entry{Kind: audit.KindRecovery, Actor: "lethe", SubjectHMAC: it.hmac,
				Detail: map[string]any{"kept_version": v, "deleted_versions": deleted}})
		}
		done = append(done, it.hmac)
	}
	return m.dropItems(ctx, done, pruned)
}

// release gives up claimed subjects: any version put for them that the
// manifest does not name is deleted, and their work items are dropped.
func (m *batchRun) release(ctx context.Context, batchID int64, items []item) error {
	hmacs := make([]string, len(items))
	for i, it := range items {
		hmacs[i] = it.hmac
	}
	held, err := heldAmong(ctx, m.db, hmacs)
	if err != nil {
		return err
	}
	var done []string
	var pruned []audit.Entry
	for _, it := range items {
		if it.puts > 0 && !held[it.hmac] {
			var keep string
			err := m.db.QueryRow(ctx, `SELECT version_id FROM lethe.manifest WHERE subject_hmac = $1`, it.hmac).Scan(&keep)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("error reading manifest: %w", err)
			}
			deleted, err := m.store.Prune(ctx, it.hmac, keep)
			if err != nil {
				return fmt.Errorf("error removing unneeded object versions: %w", err)
			}
			if len(deleted) > 0 {
				pruned = append(pruned, audit.Entry{Kind: audit.KindRecovery, Actor: "lethe", SubjectHMAC: it.hmac,
					Detail: map[string]any{"batch_id": batchID, "kept_version": keep, "deleted_versions": deleted, "reason": "no longer due"}})
			}
		}
		done = append(done, it.hmac)
	}
	if err := m.dropItems(ctx, done, pruned); err != nil {
		return err
	}
	_, err = m.db.Exec(ctx, `UPDATE lethe.batch SET skipped = skipped + $2 WHERE id = $1`, batchID, len(items))
	return err
}

func (m *batchRun) dropItems(ctx context.Context, hmacs []string, entries []audit.Entry) error {
	if len(hmacs) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, m.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM lethe.work_item WHERE subject_hmac = ANY ($1)`, hmacs); err != nil {
			return fmt.Errorf("error dropping work items: %w", err)
		}
		return audit.Append(ctx, tx, entries...)
	})
}

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
	if err := m.fault(FaultBeforePut); err != nil {
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
	if err := m.fault(FaultAfterPut); err != nil {
		return err
	}
	if len(stored) > 0 {
		t2 := time.Now()
		if err := m.commitArchive(ctx, batchID, pp, stored, now, res); err != nil {
			return err
		}
		m.logger.Debug("batch phases", "batch_id", batchID, "subjects", len(subjects), "read_ms", tRead.Milliseconds(),
			"put_ms", tPut.Milliseconds(), "commit_ms", time.Since(t2).Milliseconds())
	}
	if putErr != nil {
		return putErr
	}
	return nil
}

// read reads the graph of every still-due subject among items in one
// snapshot and builds their bundles.
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
	rows, err := tx.Query(ctx, m.plan.sql.readRoot[pp.Name], keys, pp.Cutoff(now))
	if err != nil {
		return nil, fmt.Errorf("error reading subjects: %w", err)
	}
	nodes := m.plan.Nodes
	bySubject := map[string]*due{}
	var subjects []*due
	for rows.Next() {
		var key string
		var agg []byte
		var digest string
		if err := rows.Scan(&key, &agg, &digest); err != nil {
			rows.Close()
			return nil, fmt.Errorf("error reading subjects: %w", err)
		}
		it, ok := byKey[key]
		if !ok {
			continue
		}
		d := &due{item: it, digests: make([]string, len(nodes)), bundle: &archive.Bundle{
			Subject: key, Policy: pp.Name, ArchivedAt: now, Tables: make([]archive.TableRows, len(nodes)),
		}}
		for i, n := range nodes {
			d.bundle.Tables[i].Table = n.Name
		}
		d.bundle.Tables[0].Rows, d.digests[0] = agg, digest
		bySubject[key] = d
		subjects = append(subjects, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("error reading subjects: %w", err)
	}
	if len(subjects) == 0 {
		return subjects, nil
	}
	if len(nodes) == 1 {
		return subjects, m.markHeld(ctx, tx, subjects)
	}
	dueKeys := make([]string, len(subjects))
	for i, d := range subjects {
		dueKeys[i] = d.key
	}
	var b pgx.Batch
	for _, q := range m.plan.sql.read[1:] {
		b.Queue(q, dueKeys)
	}
	br := tx.SendBatch(ctx, &b)
	for i := 1; i < len(nodes); i++ {
		rows, err := br.Query()
		if err != nil {
			br.Close()
			return nil, fmt.Errorf("error reading %s: %w", nodes[i].Name, err)
		}
		for rows.Next() {
			var key string
			var agg []byte
			var digest string
			if err := rows.Scan(&key, &agg, &digest); err != nil {
				rows.Close()
				br.Close()
				return nil, fmt.Errorf("error reading %s: %w", nodes[i].Name, err)
			}
			if d := bySubject[key]; d != nil {
				d.bundle.Tables[i].Rows, d.digests[i] = agg, digest
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			br.Close()
			return nil, fmt.Errorf("error reading %s: %w", nodes[i].Name, err)
		}
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("error reading subjects: %w", err)
	}
	return subjects, m.markHeld(ctx, tx, subjects)
}

// markHeld flags the subjects a legal hold covers.
func (m *batchRun) markHeld(ctx context.Context, tx pgx.Tx, subjects []*due) error {
	hmacs := make([]string, len(subjects))
	for i, d := range subjects {
		hmacs[i] = d.hmac
	}
	held, err := heldAmong(ctx, tx, hmacs)
	if err != nil {
		return err
	}
	for _, d := range subjects {
		d.held = held[d.hmac]
	}
	return nil
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
	for range min(m.concurrency, len(subjects)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				st, err := m.store.Put(ctx, d.hmac, d.bundle, d.held)
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
			return m.settleNew(ctx, subjects)
		}
		m.logger.Warn("rows changed while they were archived; those subjects will be read again", "batch_id", batchID, "subjects", len(changed))
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
	if _, err := tx.Exec(ctx, m.plan.sql.lockRoots, keys); err != nil {
		return nil, 0, fmt.Errorf("error locking subjects: %w", err)
	}
	del, rows, err := m.plan.deleteGraph(ctx, tx, keys, func() error { return m.fault(FaultDuringDelete) })
	if err != nil {
		return nil, 0, err
	}
	changed = map[string]bool{}
	for _, s := range subjects {
		for i, d := range del[s.key] {
			if d.digest != s.digests[i] {
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
			"sha256": s.stored.SHA256, "size": s.stored.Size, "rows": m.plan.rowsByTable(del[s.key]),
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
		WITH s AS (UPDATE lethe.work_item SET state = 'committed' WHERE subject_hmac = ANY ($2) RETURNING subject_hmac)
		DELETE FROM lethe.work_item WHERE subject_hmac = ANY ($1) AND subject_hmac <> ALL ($2)`, hmacs, settle); err != nil {
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
	if err := m.fault(FaultBeforeCommit); err != nil {
		return nil, 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, 0, fmt.Errorf("error committing archive: %w", err)
	}
	if err := m.fault(FaultAfterCommit); err != nil {
		return nil, 0, err
	}
	for _, s := range subjects {
		if slices.Contains(settle, s.hmac) {
			s.state = "committed"
		}
	}
	return nil, rows, nil
}

// settleNew prunes the subjects just committed that may have other
// versions.
func (m *batchRun) settleNew(ctx context.Context, subjects []*due) error {
	var items []item
	for _, s := range subjects {
		if s.state == "committed" {
			items = append(items, s.item)
		}
	}
	return m.settle(ctx, items)
}

func (m *batchRun) destroy(ctx context.Context, batchID int64, pp *PolicyPlan, items []item, res *BatchResult) error {
	ctx, cancel := context.WithTimeout(ctx, m.QueryTimeout)
	defer cancel()
	hmacOf := make(map[string]string, len(items))
	hmacs := make([]string, len(items))
	for i, it := range items {
		hmacOf[it.key] = it.hmac
		hmacs[i] = it.hmac
	}
	now := m.Now()
	return pgx.BeginFunc(ctx, m.db, func(tx pgx.Tx) error {
		// The subjects' locks order this against holds being placed.
		if err := lockSubjectsTx(ctx, tx, hmacs); err != nil {
			return err
		}
		held, err := heldAmong(ctx, tx, hmacs)
		if err != nil {
			return err
		}
		var keys []string
		for _, it := range items {
			if !held[it.hmac] {
				keys = append(keys, it.key)
			}
		}
		var lrows pgx.Rows
		if pp != nil {
			lrows, err = tx.Query(ctx, m.plan.sql.lockDue[pp.Name], keys, pp.Cutoff(now))
		} else {
			lrows, err = tx.Query(ctx, m.plan.sql.lockRoots, keys)
		}
		if err != nil {
			return fmt.Errorf("error locking subjects: %w", err)
		}
		dueKeys, err := pgx.CollectRows(lrows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("error locking subjects: %w", err)
		}
		del, total, err := m.plan.deleteGraph(ctx, tx, dueKeys, func() error { return m.fault(FaultDuringDelete) })
		if err != nil {
			return err
		}
		entries := make([]audit.Entry, 0, len(dueKeys))
		for _, k := range dueKeys {
			e := audit.Entry{Kind: audit.KindDestroy, Actor: "lethe", SubjectHMAC: hmacOf[k],
				Detail: map[string]any{"batch_id": batchID, "rows": m.plan.rowsByTable(del[k])}}
			if pp != nil {
				e.Detail.(map[string]any)["policy"] = pp.Name
			} else {
				e.Kind = audit.KindSuppressed
				e.Detail.(map[string]any)["reason"] = "erased on request earlier; found again in the hot tables"
			}
			entries = append(entries, e)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM lethe.work_item WHERE subject_hmac = ANY ($1)`, hmacs); err != nil {
			return fmt.Errorf("error dropping work items: %w", err)
		}
		skipped := len(keys) - len(dueKeys)
		if _, err := tx.Exec(ctx, `UPDATE lethe.batch SET destroyed = destroyed + $2, skipped = skipped + $3, held = held + $4, rows_moved = rows_moved + $5 WHERE id = $1`,
			batchID, len(dueKeys), skipped, len(held), total); err != nil {
			return fmt.Errorf("error counting batch: %w", err)
		}
		if err := audit.Append(ctx, tx, entries...); err != nil {
			return err
		}
		if err := m.fault(FaultBeforeCommit); err != nil {
			return err
		}
		res.Destroyed += len(dueKeys)
		res.Skipped += skipped
		res.Held += len(held)
		res.Rows += total
		return nil
	})
}

// deleted is what one delete statement removed of one subject.
type deleted struct {
	count  int64
	digest string // md5 of the rows as archived; "" when there were none
}

// deleteGraph deletes the subjects' rows from every table, children before
// parents, and returns per subject what was deleted from each node (indexed
// as Plan.Nodes) and the total of rows. afterFirst, if set, runs after the
// first delete (a fault point for tests).
func (p *Plan) deleteGraph(ctx context.Context, tx pgx.Tx, keys []string, afterFirst func() error) (map[string][]deleted, int64, error) {
	out := make(map[string][]deleted, len(keys))
	for _, k := range keys {
		out[k] = make([]deleted, len(p.Nodes))
	}
	if len(keys) == 0 {
		return out, 0, nil
	}
	var total int64
	for i := len(p.Nodes) - 1; i >= 0; i-- {
		n := p.Nodes[i]
		rows, err := tx.Query(ctx, p.sql.delete[i], keys)
		if err != nil {
			return nil, 0, fmt.Errorf("error deleting from %s: %w", n.Name, err)
		}
		for rows.Next() {
			var key string
			var d deleted
			if err := rows.Scan(&key, &d.count, &d.digest); err != nil {
				rows.Close()
				return nil, 0, fmt.Errorf("error deleting from %s: %w", n.Name, err)
			}
			if ds := out[key]; ds != nil {
				ds[i] = d
				total += d.count
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, 0, fmt.Errorf("error deleting from %s: %w", n.Name, err)
		}
		if i == len(p.Nodes)-1 && afterFirst != nil {
			if err := afterFirst(); err != nil {
				return nil, 0, err
			}
		}
	}
	return out, total, nil
}

// rowsByTable turns deleteGraph's result for one subject into counts by
// table name, for audit entries and receipts; nil gives every table 0.
func (p *Plan) rowsByTable(ds []deleted) map[string]int64 {
	out := make(map[string]int64, len(p.Nodes))
	for i, n := range p.Nodes {
		if i < len(ds) {
			out[n.Name] = ds[i].count
		} else {
			out[n.Name] = 0
		}
	}
	return out
}

// ReadAndDelete runs, for the subjects with keys, the SQL an archive batch
// runs — the bundle reads in one snapshot, the root locks and the deletes,
// children first, in one transaction — with no encryption, no object store,
// no manifest and no audit. It is the database half of the pipeline alone,
// which lethe bench measures. It returns how many subjects were due and
// deleted.
func (m *Mover) ReadAndDelete(ctx context.Context, policy string, keys []string) (int, error) {
	pp := m.plan.Policy(policy)
	if pp == nil {
		return 0, fmt.Errorf("no policy %q", policy)
	}
	conn, err := m.pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("error acquiring connection: %w", err)
	}
	defer conn.Release()
	b := &batchRun{Mover: m, db: conn}
	items := make([]item, len(keys))
	for i, k := range keys {
		items[i] = item{key: k, hmac: m.plan.hasher.HMAC(k), state: "claimed"}
	}
	subjects, err := b.read(ctx, pp, items, m.Now().UTC())
	if err != nil {
		return 0, err
	}
	due := make([]string, len(subjects))
	for i, s := range subjects {
		due[i] = s.key
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, m.plan.sql.lockRoots, due); err != nil {
			return fmt.Errorf("error locking subjects: %w", err)
		}
		_, _, err := m.plan.deleteGraph(ctx, tx, due, nil)
		return err
	})
	return len(due), err
}

package retention

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/internal/config"
)

// A then: minimize policy keeps a subject's rows and changes named columns
// of one table of its graph in place: null sets NULL, hash replaces a text
// with "hmac-sha256:" and the hex HMAC-SHA256 of it under key_secret (so
// equal values stay equal), keep_last:N masks all but the last N characters
// with '*'. A row is due when its clock has passed and any of its columns
// is not minimised yet; a value already minimised is never touched again,
// so a second sweep finds nothing. The sweep claims the subjects with due
// rows, held ones left out, in batches; a batch changes its subjects' rows
// in one transaction with one audit entry that counts them. With archive:
// true, the original values (and the rows' primary keys) first go into the
// subject's part of a segment, which is put and verified before anything
// changes, as archiving does.

// minimizeSQL is the SQL of one then: minimize policy.
type minimizeSQL struct {
	claim  string // $1 cutoff, $2 the last key or NULL, $3 limit -> key (subjects with due rows, in key order)
	count  string // $1 cutoff, $2-$4 HMAC pads -> subjects, rows, held subjects
	read   string // $1 keys, $2 cutoff -> key, values (JSON array), md5
	lock   string // $1 keys, $2 cutoff -> key, md5 of the values; locks the rows
	update string // $1 keys, $2 cutoff, $3-$5 value HMAC pads -> key of each row changed
}

// findNode returns the node of the graph that table names, comparing the
// tables in the catalog, not as spelt.
func (k *Kind) findNode(ctx context.Context, tx pgx.Tx, table string) (*Node, error) {
	oid, _, _, err := lookupTable(ctx, tx, table)
	if err != nil {
		return nil, err
	}
	for _, n := range k.Nodes {
		if n.OID == oid {
			return n, nil
		}
	}
	var root uint32
	if err := tx.QueryRow(ctx, `SELECT coalesce(pg_partition_root($1::oid), $1::oid)::oid`, oid).Scan(&root); err != nil {
		return nil, fmt.Errorf("error reading partitions: %w", err)
	}
	for _, n := range k.Nodes {
		if n.OID == root {
			return nil, &config.Error{Msg: fmt.Sprintf("%s is a partition of %s: name the partitioned table, which covers all its partitions", table, n.Name)}
		}
	}
	return nil, &config.Error{Msg: fmt.Sprintf("%s is not a table of the graph of kind %s: lethe minimises only rows it knows the subject of; add the table to the graph", table, k.Name)}
}

// checkColumns checks a then: minimize policy's columns against its
// table, and reads the table's primary key.
func (pp *PolicyPlan) checkColumns(ctx context.Context, tx pgx.Tx) error {
	n := pp.Node
	pk, err := Collect(ctx, tx, "reading the primary key", `
		SELECT a.attname FROM pg_catalog.pg_index i, unnest(i.indkey) WITH ORDINALITY AS u (attnum, pos)
		JOIN pg_catalog.pg_attribute a ON a.attrelid = $1 AND a.attnum = u.attnum
		WHERE i.indrelid = $1 AND i.indisprimary ORDER BY u.pos`, pgx.RowTo[string], n.OID)
	if err != nil {
		return err
	}
	pp.PrimaryKey = pk
	// Columns that tie rows together, and the clock, stay as they are.
	keys := map[string]string{pp.Clock: "the policy's clock"}
	for _, c := range pk {
		keys[c] = "in the primary key"
	}
	if n.Parent == nil {
		keys[pp.Kind.keyCol] = "the subject's key"
	} else {
		keys[n.ChildCol] = "the join to " + n.Parent.Name
	}
	for _, c := range pp.Kind.Nodes {
		if c.Parent == n {
			keys[c.ParentCol] = "the join of " + c.Name
		}
	}
	var errs []error
	for _, m := range pp.Minimize {
		c, ok := n.columns[m.Column]
		switch {
		case !ok:
			errs = append(errs, config.Errorf(m.Key, "column %q does not exist in %s", m.Column, n.Name))
		case keys[m.Column] != "":
			errs = append(errs, config.Errorf(m.Key, "column %q of %s is %s: lethe does not minimise a column that names rows or ties them together", m.Column, n.Name, keys[m.Column]))
		case m.Action == config.MinimizeNull && c.notNull:
			errs = append(errs, config.Errorf(m.Key, "column %q of %s is NOT NULL, so null cannot minimise it: use hash or keep_last:N, or drop the constraint", m.Column, n.Name))
		case m.Action != config.MinimizeNull && c.typ != "text" && c.typ != "character varying":
			errs = append(errs, config.Errorf(m.Key, "column %q of %s is %s: %s needs a text or varchar column (null works on any nullable column)", m.Column, n.Name, c.typ, m.Action))
		case m.Action == config.MinimizeHash && c.typmod >= 4 && c.typmod-4 < hashedLength:
			errs = append(errs, config.Errorf(m.Key, "column %q of %s is varchar(%d), too short for a hash (%d characters): use keep_last:N or null, or widen it", m.Column, n.Name, c.typmod-4, hashedLength))
		}
	}
	if pp.Policy.Archive && len(pk) == 0 {
		errs = append(errs, config.Errorf(pp.ConfigKey+".archive", "needs a primary key on %s, to name the rows whose original values it archives: add one, or set archive: false", n.Name))
	}
	return errors.Join(errs...)
}

// hashedLength is the length of a hashed value: "hmac-sha256:" and 64 hex
// digits.
const hashedLength = len(hashedPrefix) + 64

const hashedPrefix = "hmac-sha256:"

// buildMinimize builds the SQL of then: minimize policy pp of kind k.
func (k *Kind) buildMinimize(pp *PolicyPlan) minimizeSQL {
	n := pp.Node
	key := quote(k.keyCol)
	keys := "$1::text[]::" + k.KeyType + "[]"
	// The chain from the table up to the root, as joins (for selects) and
	// as a USING list with conditions (for the update).
	var joins, using, conds []string
	alias := "t"
	for c, i := n, 1; c.Parent != nil; c, i = c.Parent, i+1 {
		pa := fmt.Sprintf("p%d", i)
		joins = append(joins, fmt.Sprintf("JOIN %s %s ON %s.%s = %s.%s", c.Parent.Ident.Sanitize(), pa, alias, quote(c.ChildCol), pa, quote(c.ParentCol)))
		using = append(using, fmt.Sprintf("%s %s", c.Parent.Ident.Sanitize(), pa))
		conds = append(conds, fmt.Sprintf("%s.%s = %s.%s", alias, quote(c.ChildCol), pa, quote(c.ParentCol)))
		alias = pa
	}
	rootKey := alias + "." + key
	from := n.Ident.Sanitize() + " t " + strings.Join(joins, " ")

	var needs, sets, values []string
	for _, m := range pp.Minimize {
		c := "t." + quote(m.Column)
		var need, set string
		switch m.Action {
		case config.MinimizeNull:
			need, set = c+" IS NOT NULL", "NULL"
		case config.MinimizeHash:
			need = fmt.Sprintf("%s !~ '^%s[0-9a-f]{64}$'", c, hashedPrefix)
			set = fmt.Sprintf("'%s' || %s", hashedPrefix, hmacSQL(c, 3))
		case config.MinimizeKeepLast:
			need = fmt.Sprintf("(length(%[1]s) > %[2]d AND left(%[1]s, -%[2]d) ~ '[^*]')", c, m.Keep)
			set = fmt.Sprintf("repeat('*', length(%[1]s) - %[2]d) || right(%[1]s, %[2]d)", c, m.Keep)
		}
		needs = append(needs, need)
		if m.Action != config.MinimizeNull {
			set = fmt.Sprintf("CASE WHEN %s THEN %s ELSE %s END", need, set, c)
		}
		sets = append(sets, quote(m.Column)+" = "+set)
		values = append(values, literal(m.Column)+", "+c)
	}
	for _, c := range slices.Backward(pp.PrimaryKey) {
		values = append([]string{literal(c) + ", t." + quote(c)}, values...)
	}
	// The row's own columns are the innermost scope of the predicate, so
	// that a column it names is never taken for a parent's of the same
	// name.
	dueAt := func(param int) string {
		due := fmt.Sprintf("t.%s < $%d::timestamptz AND (%s)", quote(pp.Clock), param, strings.Join(needs, " OR "))
		if strings.TrimSpace(pp.Where) != "" {
			due += " AND EXISTS (SELECT FROM (SELECT t.*) AS r WHERE (" + pp.Where + "))"
		}
		return due
	}
	value := "jsonb_build_object(" + strings.Join(values, ", ") + ")"

	held := fmt.Sprintf("%s IN (SELECT subject_hmac FROM lethe.hold WHERE released_at IS NULL)", hmacSQL(k.keyText(rootKey), 2))
	s := minimizeSQL{
		claim: fmt.Sprintf("SELECT %[1]s FROM (SELECT DISTINCT %[2]s AS v FROM %[3]s WHERE %[4]s AND ($2::text IS NULL OR %[2]s > $2::text::%[5]s)) d ORDER BY d.v LIMIT $3",
			k.keyText("d.v"), rootKey, from, dueAt(1), k.KeyType),
		count: fmt.Sprintf("SELECT count(DISTINCT %[1]s), count(*), count(DISTINCT %[1]s) FILTER (WHERE %[2]s) FROM %[3]s WHERE %[4]s",
			rootKey, held, from, dueAt(1)),
		read: fmt.Sprintf("SELECT %[1]s, agg::text, md5(agg::text) FROM (SELECT s, jsonb_agg(j ORDER BY j::text) AS agg FROM "+
			"(SELECT %[2]s AS s, %[3]s AS j FROM %[4]s WHERE %[2]s = ANY (%[5]s) AND %[6]s) v GROUP BY s) r",
			k.keyText("s"), rootKey, value, from, keys, dueAt(2)),
		lock: fmt.Sprintf("SELECT %[1]s, md5(agg::text) FROM (SELECT s, jsonb_agg(j ORDER BY j::text) AS agg FROM "+
			"(SELECT %[2]s AS s, %[3]s AS j FROM %[4]s WHERE %[2]s = ANY (%[5]s) AND %[6]s FOR UPDATE OF t) v GROUP BY s) r",
			k.keyText("s"), rootKey, value, from, keys, dueAt(2)),
	}
	where := fmt.Sprintf("%s = ANY (%s) AND %s", rootKey, keys, dueAt(2))
	if len(conds) > 0 {
		s.update = fmt.Sprintf("UPDATE %s t SET %s FROM %s WHERE %s AND %s RETURNING %s",
			n.Ident.Sanitize(), strings.Join(sets, ", "), strings.Join(using, ", "), strings.Join(conds, " AND "), where, k.keyText(rootKey))
	} else {
		s.update = fmt.Sprintf("UPDATE %s t SET %s WHERE %s RETURNING %s",
			n.Ident.Sanitize(), strings.Join(sets, ", "), where, k.keyText(rootKey))
	}
	return s
}

// literal quotes s as an SQL string literal.
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// claimMinimize claims the subjects with rows that then: minimize policy
// pp finds due, held ones left out, at most limit unless limit is 0.
func (s *Sweeper) claimMinimize(ctx context.Context, runID int64, pp *PolicyPlan, cutoff time.Time, queue BatchQueue, limit int) (batches, claimed int, err error) {
	q := pp.Kind.sql.minimize[pp.Name]
	var last *string
	for {
		size := s.BatchSize
		if limit > 0 {
			if size = min(size, limit-claimed); size <= 0 {
				return batches, claimed, nil
			}
		}
		page, n, err := s.claimMinimizePage(ctx, runID, pp, q.claim, cutoff, last, size, queue)
		if err != nil {
			return batches, claimed, fmt.Errorf("error claiming subjects of policy %s: %w", pp.Name, err)
		}
		if n > 0 {
			batches++
			claimed += n
		}
		if len(page) < size {
			return batches, claimed, nil
		}
		last = &page[len(page)-1]
	}
}

func (s *Sweeper) claimMinimizePage(ctx context.Context, runID int64, pp *PolicyPlan, claim string, cutoff time.Time, last *string, size int,
	queue BatchQueue) ([]string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.QueryTimeout)
	defer cancel()
	tx, err := s.Pool.Begin(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	keys, err := Collect(ctx, tx, "finding rows to minimise", claim, pgx.RowTo[string], cutoff, last, size)
	if err != nil {
		return nil, 0, err
	}
	hmacs := make([]string, len(keys))
	for i, key := range keys {
		hmacs[i] = pp.Kind.HMAC(key)
	}
	held, err := s.Holds.HeldAmong(ctx, tx, hmacs)
	if err != nil {
		return nil, 0, err
	}
	k, h := withoutHeld(keys, hmacs, held)
	n, err := claimInto(ctx, tx, runID, pp.Name, pp.Kind.Name, ActionMinimize, k, h, queue)
	if err != nil {
		return nil, 0, err
	}
	return keys, n, tx.Commit(ctx)
}

// minimized is a subject whose rows a minimise batch changes.
type minimized struct {
	item
	bundle *archive.Bundle
	digest string
	part   archive.Part
}

// minimize works a batch of then: minimize policy pp.
func (m *batchRun) minimize(ctx context.Context, batchID int64, pp *PolicyPlan, items []item, res *BatchResult) error {
	now := m.Now().UTC().Truncate(time.Microsecond)
	if !pp.Archive() {
		subjects := make([]*minimized, len(items))
		for i, it := range items {
			subjects[i] = &minimized{item: it}
		}
		// A row changed under the update fails it; the job's next attempt
		// runs it again.
		changed, err := m.commitMinimize(ctx, batchID, pp, nil, nil, subjects, items, now, res)
		res.Pending += len(changed)
		return err
	}

	subjects, err := m.readMinimize(ctx, pp, items, now)
	if err != nil {
		return err
	}
	// Subjects with nothing left to minimise, or held since the claim, are
	// let go.
	found := map[string]bool{}
	for _, s := range subjects {
		found[s.hmac] = true
	}
	if err := m.letGo(ctx, batchID, items, found, res); err != nil || len(subjects) == 0 {
		return err
	}

	seg := m.Store.NewSegment()
	lock := m.segmentLock(pp, now)
	for _, s := range subjects {
		if s.part, err = seg.Add(s.bundle); err != nil {
			return err
		}
		s.bundle = nil
	}
	name := archive.SegmentName(m.Store.Prefix(), now)
	segID, err := m.recordSegment(ctx, batchID, name, seg, lock)
	if err != nil {
		return err
	}
	if err := m.faults.At(FaultBeforePut); err != nil {
		return err
	}
	stored, err := m.Store.Put(ctx, name, seg.Bytes(), lock)
	if err != nil {
		res.Pending += len(subjects)
		return fmt.Errorf("error archiving batch %d: %w", batchID, err)
	}
	if err := m.faults.At(FaultAfterPut); err != nil {
		return err
	}
	claimed := make([]item, len(subjects))
	for i, s := range subjects {
		claimed[i] = s.item
	}
	for attempt := 0; len(subjects) > 0; attempt++ {
		changed, err := m.commitMinimize(ctx, batchID, pp, &segID, stored, subjects, claimed, now, res)
		if err != nil {
			return err
		}
		if len(changed) == 0 {
			return nil
		}
		m.Logger.Warn("rows changed while their values were archived; those subjects will be read again", "batch_id", batchID, "subjects", len(changed))
		res.Pending += len(changed)
		subjects = slices.DeleteFunc(subjects, func(s *minimized) bool { return changed[s.hmac] })
		claimed = slices.DeleteFunc(claimed, func(it item) bool { return changed[it.hmac] })
		if attempt == 3 {
			res.Pending += len(subjects)
			return nil
		}
	}
	return nil
}

// readMinimize reads, in one snapshot, the values that pp will change of
// every subject among items that no hold covers, as bundles.
func (m *batchRun) readMinimize(ctx context.Context, pp *PolicyPlan, items []item, now time.Time) ([]*minimized, error) {
	ctx, cancel := context.WithTimeout(ctx, m.QueryTimeout)
	defer cancel()
	tx, err := m.db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("error reading values to minimise: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	hmacs := make([]string, len(items))
	for i, it := range items {
		hmacs[i] = it.hmac
	}
	held, err := m.Holds.HeldAmong(ctx, tx, hmacs)
	if err != nil {
		return nil, err
	}
	byKey := map[string]item{}
	var keys []string
	for _, it := range items {
		if !held[it.hmac] {
			byKey[it.key] = it
			keys = append(keys, it.key)
		}
	}
	rows, err := tx.Query(ctx, pp.Kind.sql.minimize[pp.Name].read, keys, pp.Cutoff(now))
	if err != nil {
		return nil, fmt.Errorf("error reading values to minimise: %w", err)
	}
	var out []*minimized
	var key, values, digest string
	if _, err := pgx.ForEachRow(rows, []any{&key, &values, &digest}, func() error {
		it, ok := byKey[key]
		if !ok {
			return nil
		}
		out = append(out, &minimized{item: it, digest: digest, bundle: &archive.Bundle{Kind: archive.KindMinimized, Subject: key,
			Policy: pp.Name, ArchivedAt: now, Tables: []archive.TableRows{{Table: pp.Node.Name, Rows: []byte(values)}}}})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("error reading values to minimise: %w", err)
	}
	return out, nil
}

// commitMinimize changes the subjects' rows in one transaction, with the
// batch's audit entry and, when segID is set, their manifest entries. A
// subject held since it was claimed is left as it is. With archived values
// (segID set), a subject whose values differ from those archived is left
// out: the transaction rolls back and returns those subjects. claimed are
// the work items the transaction settles.
func (m *batchRun) commitMinimize(ctx context.Context, batchID int64, pp *PolicyPlan, segID *int64, stored *archive.Stored,
	subjects []*minimized, claimed []item, now time.Time, res *BatchResult) (map[string]bool, error) {
	// Concurrent batches append to the one audit chain. The transaction
	// takes the chain's head early (after its subjects' locks), so that no
	// append moves it under its repeatable-read snapshot; if one did while
	// it waited, the transaction fails at once, having done nothing, and is
	// run again with a new snapshot. Rows that changed are not retried here:
	// they come back as changed.
	for try := 1; ; try++ {
		changed, err := m.commitMinimizeTx(ctx, batchID, pp, segID, stored, subjects, claimed, now, res)
		var pgErr *pgconn.PgError
		if try < 50 && errors.As(err, &pgErr) && pgErr.Code == "40001" {
			continue
		}
		if errors.As(err, &pgErr) && pgErr.Code == "40001" {
			return serializationChanged(err, subjects)
		}
		return changed, err
	}
}

// commitMinimizeTx is one try of commitMinimize.
func (m *batchRun) commitMinimizeTx(ctx context.Context, batchID int64, pp *PolicyPlan, segID *int64, stored *archive.Stored,
	subjects []*minimized, claimed []item, now time.Time, res *BatchResult) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, m.QueryTimeout)
	defer cancel()
	// Repeatable read: the rows the update changes are those the check
	// saw, and a row changed after the snapshot fails the check instead.
	tx, err := m.db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return nil, fmt.Errorf("error minimising: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op

	all := make([]string, len(claimed))
	for i, it := range claimed {
		all[i] = it.hmac
	}
	if err := LockSubjects(ctx, tx, all); err != nil {
		return nil, err
	}
	if err := audit.LockHead(ctx, tx); err != nil {
		return nil, err
	}
	hmacs := make([]string, len(subjects))
	for i, s := range subjects {
		hmacs[i] = s.hmac
	}
	held, err := m.Holds.HeldAmong(ctx, tx, hmacs)
	if err != nil {
		return nil, err
	}
	var keys []string
	byKey := map[string]*minimized{}
	for _, s := range subjects {
		if !held[s.hmac] {
			keys = append(keys, s.key)
			byKey[s.key] = s
		}
	}
	cutoff := pp.Cutoff(now)
	q := pp.Kind.sql.minimize[pp.Name]
	changed := map[string]bool{}
	if segID != nil {
		rows, err := tx.Query(ctx, q.lock, keys, cutoff)
		if err != nil {
			return serializationChanged(err, subjects)
		}
		current := map[string]string{}
		var key, digest string
		if _, err := pgx.ForEachRow(rows, []any{&key, &digest}, func() error { current[key] = digest; return nil }); err != nil {
			return serializationChanged(err, subjects)
		}
		for _, key := range keys {
			if current[key] != byKey[key].digest {
				changed[byKey[key].hmac] = true
			}
		}
		if len(changed) > 0 {
			return changed, nil
		}
	}
	args := append([]any{keys, cutoff}, pp.Kind.valuep.args()...)
	rows, err := tx.Query(ctx, q.update, args...)
	if err != nil {
		return serializationChanged(err, subjects)
	}
	perKey := map[string]int64{}
	var key string
	if _, err := pgx.ForEachRow(rows, []any{&key}, func() error { perKey[key]++; return nil }); err != nil {
		return serializationChanged(err, subjects)
	}
	var total int64
	for _, n := range perKey {
		total += n
	}

	detail := map[string]any{"policy": pp.Name, "kind": pp.Kind.Name, "table": pp.Node.Name, "batch_id": batchID,
		"subjects": len(perKey), "rows": total, "held": len(held), "columns": columnActions(pp)}
	var partBytes int64
	if segID != nil {
		offsets := make([]int64, 0, len(keys))
		lengths := make([]int64, 0, len(keys))
		sums := make([]string, 0, len(keys))
		wrapped := make([][]byte, 0, len(keys))
		live := make([]string, 0, len(keys))
		for _, key := range keys {
			s := byKey[key]
			offsets, lengths, sums = append(offsets, s.part.Offset), append(lengths, s.part.Length), append(sums, s.part.SHA256)
			wrapped, live = append(wrapped, s.part.WrappedKey), append(live, s.hmac)
			partBytes += s.part.Length
		}
		var retain *time.Time
		if pp.ArchiveRetainDays > 0 {
			r := now.Add(pp.ArchiveRetainDays.Duration())
			retain = &r
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO lethe.manifest (subject_hmac, state, part, policy, archived_at, retain_until, segment_id,
				part_offset, part_length, part_sha256, wrapped_key, wrapped_to, run_id, batch_id)
			SELECT h, 'archived', 'minimized', $6, $7, $8, $9, o, l, s, k, $10, (SELECT run_id FROM lethe.batch WHERE id = $11), $11
			FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::bytea[]) AS u (h, o, l, s, k)`,
			live, offsets, lengths, sums, wrapped, pp.Name, now, retain, *segID, m.MastersFingerprint, batchID); err != nil {
			return nil, fmt.Errorf("error recording manifest: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE lethe.segment SET state = 'committed', version_id = $2, committed_at = now() WHERE id = $1`,
			*segID, stored.VersionID); err != nil {
			return nil, fmt.Errorf("error committing segment: %w", err)
		}
		detail["segment"], detail["version_id"] = stored.Name, stored.VersionID
	}
	if _, err := tx.Exec(ctx, `DELETE FROM lethe.work_item WHERE subject_hmac = ANY ($1)`, all); err != nil {
		return nil, fmt.Errorf("error dropping work items: %w", err)
	}
	// Skipped, as for a delete batch: held subjects and those with nothing
	// left to minimise.
	skipped := len(claimed) - len(perKey)
	if _, err := tx.Exec(ctx, `UPDATE lethe.batch SET minimized = minimized + $2, minimized_rows = minimized_rows + $3,
		held = held + $4, skipped = skipped + $5, bytes = bytes + $6 WHERE id = $1`, batchID, len(perKey), total, len(held), skipped, partBytes); err != nil {
		return nil, fmt.Errorf("error counting batch: %w", err)
	}
	if len(perKey) > 0 {
		if err := audit.Append(ctx, tx, audit.Entry{Kind: audit.KindMinimize, Actor: "lethe", Detail: detail}); err != nil {
			return nil, err
		}
	}
	if err := m.faults.At(FaultBeforeCommit); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("error committing minimisation: %w", err)
	}
	res.Minimized += len(perKey)
	res.MinimizedRows += total
	res.Bytes += partBytes
	res.Held += len(held)
	res.Skipped += skipped
	return nil, nil
}

// serializationChanged turns a serialization failure (a row changed after
// the transaction's snapshot) into every subject changed, to be tried
// again; any other error is returned as it is.
func serializationChanged(err error, subjects []*minimized) (map[string]bool, error) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "40001" {
		return nil, fmt.Errorf("error minimising: %w", err)
	}
	changed := make(map[string]bool, len(subjects))
	for _, s := range subjects {
		changed[s.hmac] = true
	}
	return changed, nil
}

// columnActions is the policy's columns as the config writes them, for the
// audit log.
func columnActions(pp *PolicyPlan) map[string]string {
	out := make(map[string]string, len(pp.Minimize))
	for _, m := range pp.Minimize {
		out[m.Column] = m.String()
	}
	return out
}

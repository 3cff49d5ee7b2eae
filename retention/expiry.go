package retention

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/audit"
)

// Expirer destroys the keys of archived copies that have outlived their
// retain_until (archived_at plus their policy's archive_retain), unless a
// hold covers the subject. It calls no S3 API: the segment is removed by the
// bucket's lifecycle rule once its Object Lock retention ends.
type Expirer struct {
	ExpirerConfig
}

// NewExpirer returns an Expirer, or an error naming the setting at fault.
func NewExpirer(cfg ExpirerConfig) (*Expirer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Expirer{ExpirerConfig: cfg}, nil
}

// ExpireResult counts what Expire did.
type ExpireResult struct {
	// Expired copies had their key destroyed.
	Expired int `json:"expired"`
	// Held copies were due but a hold covers their subject.
	Held int `json:"held"`
	// Busy copies were due but their subject is being archived again; its
	// new copy supersedes this one.
	Busy int `json:"busy"`
	// ByPolicy counts the expired copies of each policy.
	ByPolicy map[string]int `json:"by_policy"`
}

// expiring is a live manifest entry past its retain_until.
type expiring struct {
	id           int64
	hmac, policy string
	archivedAt   time.Time
	retainUntil  time.Time
}

// Expire destroys the key of every expired, unheld archived copy, a page at
// a time, each page in one transaction with its audit entries. It is safe
// to run again at any point.
func (x *Expirer) Expire(ctx context.Context) (*ExpireResult, error) {
	res := &ExpireResult{ByPolicy: map[string]int{}}
	now := x.Now()
	for last := int64(0); ; {
		page, err := x.page(ctx, now, last)
		if err != nil {
			return res, err
		}
		if len(page) == 0 {
			break
		}
		if err := x.expirePage(ctx, page, res); err != nil {
			return res, err
		}
		if len(page) < x.PageSize {
			break
		}
		last = page[len(page)-1].id
	}
	if res.Expired+res.Held+res.Busy > 0 {
		x.Logger.Info("archive expiry done", "expired", res.Expired, "held", res.Held, "busy", res.Busy)
	}
	return res, nil
}

func (x *Expirer) page(ctx context.Context, now time.Time, after int64) ([]expiring, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	rows, err := x.Pool.Query(ctx, `
		SELECT id, subject_hmac, policy, archived_at, retain_until FROM lethe.manifest
		WHERE state = 'archived' AND retain_until < $1 AND id > $2 ORDER BY id LIMIT $3`, now, after, x.PageSize)
	if err != nil {
		return nil, fmt.Errorf("error reading expired copies: %w", err)
	}
	page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (expiring, error) {
		var e expiring
		return e, r.Scan(&e.id, &e.hmac, &e.policy, &e.archivedAt, &e.retainUntil)
	})
	if err != nil {
		return nil, fmt.Errorf("error reading expired copies: %w", err)
	}
	return page, nil
}

func (x *Expirer) expirePage(ctx context.Context, page []expiring, res *ExpireResult) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	hmacs := make([]string, len(page))
	for i, e := range page {
		hmacs[i] = e.hmac
	}
	return pgx.BeginFunc(ctx, x.Pool, func(tx pgx.Tx) error {
		if err := LockSubjects(ctx, tx, hmacs); err != nil {
			return err
		}
		held, err := x.Holds.HeldAmong(ctx, tx, hmacs)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT subject_hmac FROM lethe.work_item WHERE subject_hmac = ANY ($1)`, hmacs)
		if err != nil {
			return fmt.Errorf("error reading work items: %w", err)
		}
		claimed, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("error reading work items: %w", err)
		}
		var ids []int64
		var entries []audit.Entry
		for _, e := range page {
			switch {
			case held[e.hmac]:
				res.Held++
				continue
			case slices.Contains(claimed, e.hmac):
				res.Busy++
				continue
			}
			ids = append(ids, e.id)
			entries = append(entries, audit.Entry{Kind: audit.KindExpire, Actor: "lethe", SubjectHMAC: e.hmac, Detail: map[string]any{
				"manifest_id": e.id, "policy": e.policy, "archived_at": e.archivedAt.UTC(), "retain_until": e.retainUntil.UTC(),
			}})
		}
		tag, err := tx.Exec(ctx, `
			UPDATE lethe.manifest SET state = 'expired', wrapped_key = NULL, destroyed_at = now(), destroyed_by = 'expiry'
			WHERE id = ANY ($1) AND state = 'archived'`, ids)
		if err != nil {
			return fmt.Errorf("error recording expiry: %w", err)
		}
		if int(tag.RowsAffected()) != len(ids) {
			return fmt.Errorf("error recording expiry: %d of %d copies changed while they expired", len(ids)-int(tag.RowsAffected()), len(ids))
		}
		for _, e := range page {
			if !held[e.hmac] && !slices.Contains(claimed, e.hmac) {
				res.Expired++
				res.ByPolicy[e.policy]++
			}
		}
		return audit.Append(ctx, tx, entries...)
	})
}

package retention

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/audit"
)

// expirer is what expiry needs of the object store; *archive.Archiver is
// one.
type expirer interface {
	ObjectKey(subjectHMAC string) string
	Prune(ctx context.Context, subjectHMAC, keep string) ([]string, error)
}

// Expirer destroys archived copies that have outlived their policy's
// archive_retain, unless a hold covers the subject.
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
	// Expired copies were destroyed: every version, and the manifest entry.
	Expired int `json:"expired"`
	// Held copies were due but a hold covers their subject.
	Held int `json:"held"`
	// Busy copies were due but their subject was being worked on; the next
	// run takes them.
	Busy int `json:"busy"`
	// ByPolicy counts the expired copies of each policy.
	ByPolicy map[string]int `json:"by_policy"`
}

// Expire destroys every expired, unheld archived copy. Each destruction is
// audited with the versions deleted. It is safe to run again at any point.
func (x *Expirer) Expire(ctx context.Context) (*ExpireResult, error) {
	res := &ExpireResult{ByPolicy: map[string]int{}}
	now := x.Now()
	for _, pp := range x.Plan.Policies {
		if !pp.Archive() || pp.ArchiveRetainDays == 0 {
			continue
		}
		cutoff := now.Add(-pp.ArchiveRetainDays.Duration())
		last := ""
		for {
			type entry struct {
				hmac, version string
				archivedAt    time.Time
			}
			rows, err := x.Pool.Query(ctx, `
				SELECT subject_hmac, version_id, archived_at FROM lethe.manifest
				WHERE policy = $1 AND archived_at < $2 AND subject_hmac > $3
				ORDER BY subject_hmac LIMIT $4`, pp.Name, cutoff, last, x.PageSize)
			if err != nil {
				return res, fmt.Errorf("error reading expired copies: %w", err)
			}
			entries, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (entry, error) {
				var e entry
				return e, r.Scan(&e.hmac, &e.version, &e.archivedAt)
			})
			if err != nil {
				return res, fmt.Errorf("error reading expired copies: %w", err)
			}
			for _, e := range entries {
				if err := x.expireOne(ctx, pp, e.hmac, e.version, e.archivedAt, res); err != nil {
					return res, err
				}
				last = e.hmac
			}
			if len(entries) < x.PageSize {
				break
			}
		}
	}
	if res.Expired+res.Held+res.Busy > 0 {
		x.Logger.Info("archive expiry done", "expired", res.Expired, "held", res.Held, "busy", res.Busy)
	}
	return res, nil
}

func (x *Expirer) expireOne(ctx context.Context, pp *PolicyPlan, hmac, version string, archivedAt time.Time, res *ExpireResult) error {
	sess, err := TrySubject(ctx, x.Pool, hmac)
	if err != nil {
		return err
	}
	if sess == nil {
		res.Busy++
		return nil
	}
	defer sess.Release(ctx)
	held, err := x.Holds.HeldAmong(ctx, sess.Conn, []string{hmac})
	if err != nil {
		return err
	}
	claimed, err := Claimed(ctx, sess.Conn, hmac)
	if err != nil {
		return err
	}
	switch {
	case held[hmac]:
		res.Held++
		return nil
	case claimed:
		res.Busy++ // archived again right now; its new copy has a new clock
		return nil
	}
	deleted, err := x.Store.Prune(ctx, hmac, "")
	if err != nil {
		return fmt.Errorf("error deleting expired copy: %w", err)
	}
	tx, err := sess.Conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("error recording expiry: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	tag, err := tx.Exec(ctx, `DELETE FROM lethe.manifest WHERE subject_hmac = $1 AND version_id = $2`, hmac, version)
	if err != nil {
		return fmt.Errorf("error recording expiry: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return errors.New("error recording expiry: the manifest entry changed while it expired")
	}
	if err := audit.Append(ctx, tx, audit.Entry{Kind: audit.KindExpire, Actor: "lethe", SubjectHMAC: hmac, Detail: map[string]any{
		"policy": pp.Name, "archive_retain": pp.ArchiveRetainDays.String(), "archived_at": archivedAt.UTC(),
		"object_key": x.Store.ObjectKey(hmac), "deleted_versions": deleted,
	}}); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("error recording expiry: %w", err)
	}
	res.Expired++
	res.ByPolicy[pp.Name]++
	return nil
}

package retention_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/audit"
	"github.com/lethehq/lethe/retention"
)

// privacy is env with the request, hold and expiry services.
type privacy struct {
	*env
	q        *recorder
	requests *retention.Requests
	holds    *retention.Holds
	expirer  *retention.Expirer
}

func setupPrivacy(t *testing.T) *privacy {
	t.Helper()
	e := setup(t, withSQL(t, crmSchema), crmConfig)
	logger := slog.New(slog.NewTextHandler(e.logs, nil))
	return &privacy{env: e, q: &recorder{},
		requests: retention.NewRequests(e.db.Pool, e.plan, e.arch, logger),
		holds:    retention.NewHolds(e.db.Pool, e.plan, e.arch, logger),
		expirer:  retention.NewExpirer(e.db.Pool, e.plan, e.arch, logger),
	}
}

// work drains the queue as workers would: batches, requests and hold syncs,
// trying a busy one again shortly, until nothing is left.
func (p *privacy) work(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for range 200 {
		jobs := p.q.taken()
		if len(jobs.batches)+len(jobs.requests)+len(jobs.syncs) == 0 {
			return
		}
		for _, id := range jobs.batches {
			_, err := p.mover.RunBatch(ctx, id)
			require.NoError(t, err)
		}
		for _, h := range jobs.syncs {
			if err := p.holds.Sync(ctx, h); errors.Is(err, retention.ErrRetryLater) {
				p.q.syncs = append(p.q.syncs, h)
			} else {
				require.NoError(t, err)
			}
		}
		for _, id := range jobs.requests {
			if err := p.requests.Process(ctx, id); errors.Is(err, retention.ErrRetryLater) {
				p.q.requests = append(p.q.requests, id)
			} else {
				require.NoError(t, err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the queue did not drain")
}

func (p *privacy) submit(t *testing.T, key, ticket string, force bool) *retention.Request {
	t.Helper()
	req, created, err := p.requests.Submit(context.Background(), p.q, key, ticket, "privacy-team", force)
	require.NoError(t, err)
	require.True(t, created)
	return req
}

func (p *privacy) get(t *testing.T, id int64) *retention.Request {
	t.Helper()
	req, err := p.requests.Get(context.Background(), id)
	require.NoError(t, err)
	return req
}

func receiptOf(t *testing.T, req *retention.Request) retention.Receipt {
	t.Helper()
	require.NotNil(t, req.Receipt, "request %d has no receipt", req.ID)
	var rc retention.Receipt
	require.NoError(t, json.Unmarshal(*req.Receipt, &rc))
	return rc
}

func (p *privacy) objectVersions(t *testing.T, key string) []string {
	t.Helper()
	return p.versions(t)[p.arch.ObjectKey(p.plan.Hasher().HMAC(key))]
}

func (p *privacy) legalHold(t *testing.T, key, version string) types.ObjectLockLegalHoldStatus {
	t.Helper()
	out, err := p.root.GetObjectLegalHold(context.Background(), &s3.GetObjectLegalHoldInput{
		Bucket: aws.String(p.bucket.Name), Key: aws.String(p.arch.ObjectKey(p.plan.Hasher().HMAC(key))), VersionId: aws.String(version),
	})
	require.NoError(t, err)
	return out.LegalHold.Status
}

func (p *privacy) auditKinds(t *testing.T) map[string]int {
	t.Helper()
	rows, err := p.db.Pool.Query(context.Background(), `SELECT kind, count(*) FROM lethe.audit_log GROUP BY kind`)
	require.NoError(t, err)
	out := map[string]int{}
	for rows.Next() {
		var k string
		var n int
		require.NoError(t, rows.Scan(&k, &n))
		out[k] = n
	}
	require.NoError(t, rows.Err())
	return out
}

func (p *privacy) requireAuditIntact(t *testing.T) {
	t.Helper()
	v, err := audit.Verify(context.Background(), p.db.Pool)
	require.NoError(t, err)
	require.True(t, v.OK, v.Problem)
}

func TestRequestStateMachine(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := setupPrivacy(t)
	groups := p.seedCRM(t, 4)
	before := p.crmSnapshot(t)
	p.mustSweep(t)
	archived := groups["due"][1]
	require.Len(t, p.objectVersions(t, archived), 1)
	version := p.objectVersions(t, archived)[0]

	// An archived subject: every version and the manifest entry go.
	r1 := p.submit(t, archived, "T-1", false)
	require.Equal(t, retention.StateReceived, r1.State)
	require.Equal(t, archived, *r1.Subject)
	require.Equal(t, []int64{r1.ID}, p.q.requests)
	require.WithinDuration(t, r1.ReceivedAt.Add(45*24*time.Hour), r1.Deadline, time.Second)
	require.Equal(t, 45, r1.DaysLeft)
	p.work(t)
	r1 = p.get(t, r1.ID)
	require.Equal(t, retention.StateCompleted, r1.State)
	require.Nil(t, r1.Subject, "lethe must forget the key once the request ends")
	rc := receiptOf(t, r1)
	require.True(t, rc.Found)
	require.True(t, rc.ManifestEntryDeleted)
	require.Equal(t, []retention.ObjectVersion{{Key: p.arch.ObjectKey(p.plan.Hasher().HMAC(archived)), VersionID: version}}, rc.ObjectVersionsDeleted)
	require.Empty(t, p.objectVersions(t, archived), "every version is gone, as the root account sees it")
	require.NotContains(t, p.manifest(t), p.plan.Hasher().HMAC(archived))
	require.NotContains(t, string(*r1.Receipt), archived)

	// A protected subject is rejected, and nothing changes.
	active := groups["active"][2]
	r2 := p.submit(t, active, "T-2", false)
	p.work(t)
	r2 = p.get(t, r2.ID)
	require.Equal(t, retention.StateRejected, r2.State)
	require.Equal(t, "protected", *r2.Reason)
	require.Nil(t, r2.Subject)
	require.Equal(t, before[active], p.crmSnapshot(t)[active])

	// Forced, it is deleted from every table, and the receipt counts them.
	r3 := p.submit(t, active, "T-3", true)
	p.work(t)
	r3 = p.get(t, r3.ID)
	require.Equal(t, retention.StateCompleted, r3.State)
	require.NotContains(t, p.crmSnapshot(t), active)
	rc = receiptOf(t, r3)
	for _, table := range crmTables {
		require.Equal(t, int64(len(before[active][table])), rc.RowsDeleted[table], table)
	}
	require.False(t, rc.ManifestEntryDeleted)
	require.Empty(t, rc.ObjectVersionsDeleted)

	// A subject lethe never saw completes with nothing deleted, and says so.
	r4 := p.submit(t, "never-seen", "T-4", false)
	p.work(t)
	rc = receiptOf(t, p.get(t, r4.ID))
	require.False(t, rc.Found)
	require.Contains(t, rc.Summary, "nothing was deleted")

	// Idempotent per ticket: the same ticket returns the same request and
	// queues nothing; a ticket cannot be reused for another subject.
	again, created, err := p.requests.Submit(ctx, p.q, active, "T-3", "privacy-team", true)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, r3.ID, again.ID)
	require.Empty(t, p.q.taken().requests)
	_, _, err = p.requests.Submit(ctx, p.q, "someone else", "T-3", "privacy-team", false)
	require.ErrorIs(t, err, retention.ErrTicketReused)

	// Bad input changes nothing.
	for _, bad := range []struct{ key, ticket, by string }{{"  \t", "T-9", "x"}, {"k", "", "x"}, {"k", "T-9", " "}} {
		_, _, err := p.requests.Submit(ctx, p.q, bad.key, bad.ticket, bad.by, false)
		require.ErrorIs(t, err, retention.ErrBadInput)
	}
	list, err := p.requests.List(ctx, "", 100)
	require.NoError(t, err)
	require.Len(t, list, 4)

	// Two tickets for one subject complete together.
	twice := groups["recent"][0]
	a := p.submit(t, twice, "T-5", false)
	b := p.submit(t, twice, "T-6", false)
	p.work(t)
	ra, rb := receiptOf(t, p.get(t, a.ID)), receiptOf(t, p.get(t, b.ID))
	require.Equal(t, []int64{b.ID}, ra.CompletedWith)
	require.Equal(t, []int64{a.ID}, rb.CompletedWith)
	require.Equal(t, ra.RowsDeleted, rb.RowsDeleted)
	require.Equal(t, int64(1), ra.RowsDeleted["crm.customers"])

	// A request that uses up its retries fails, with the error.
	f := p.submit(t, groups["recent"][1], "T-7", false)
	require.NoError(t, p.requests.Fail(ctx, f.ID, errors.New("object store unreachable")))
	f = p.get(t, f.ID)
	require.Equal(t, retention.StateFailed, f.State)
	require.Equal(t, "object store unreachable", *f.Reason)
	require.Nil(t, f.Subject)

	kinds := p.auditKinds(t)
	require.Equal(t, 7, kinds[audit.KindRequestReceived])
	require.Equal(t, 5, kinds[audit.KindRequestCompleted])
	require.Equal(t, 1, kinds[audit.KindRequestRejected])
	require.Equal(t, 1, kinds[audit.KindRequestFailed])
	p.requireAuditIntact(t)
}

func TestHeldSubjectIsNeverDestroyed(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := setupPrivacy(t)
	groups := p.seedCRM(t, 3)
	p.mustSweep(t)
	held := groups["due"][0]
	free := groups["due"][1]
	version := p.objectVersions(t, held)[0]

	// Placing the hold locks the archived object, through the sync job. A
	// subject named twice is held once.
	res, err := p.holds.Place(ctx, p.q, "Doe v. Carrier", []string{held, held}, "litigation", "legal")
	require.NoError(t, err)
	require.Len(t, res.Placed, 1)
	require.Zero(t, res.Already)
	p.work(t)
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, p.legalHold(t, held, version))
	// The lock is real: the worker's own credentials cannot delete it.
	_, err = p.bucket.Server.Client(p.bucket.Server.Writer).DeleteObject(ctx, &s3.DeleteObjectInput{
		Bucket: aws.String(p.bucket.Name), Key: aws.String(p.arch.ObjectKey(p.plan.Hasher().HMAC(held))), VersionId: aws.String(version)})
	require.Error(t, err, "deleting a held version must be refused")

	// A deletion request waits.
	r := p.submit(t, held, "T-1", false)
	p.work(t)
	require.Equal(t, retention.StateBlockedByHold, p.get(t, r.ID).State)
	require.Contains(t, *p.get(t, r.ID).Reason, "Doe v. Carrier")
	require.Equal(t, []string{version}, p.objectVersions(t, held))

	// Archive expiry skips it, and expires the unheld copy.
	p.expirer.Now = func() time.Time { return time.Now().Add(8 * 365 * 24 * time.Hour) }
	exp, err := p.expirer.Expire(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, exp.Held)
	require.Equal(t, len(groups["due"])-1, exp.Expired)
	require.Equal(t, []string{version}, p.objectVersions(t, held))
	require.Empty(t, p.objectVersions(t, free))
	require.NotContains(t, p.manifest(t), p.plan.Hasher().HMAC(free))
	require.Equal(t, len(groups["due"])-1, p.auditKinds(t)[audit.KindExpire])

	// A then: delete policy skips a held subject.
	spam := groups["spam"][0]
	_, err = p.holds.Place(ctx, p.q, "Spam probe", []string{spam}, "investigation", "legal")
	require.NoError(t, err)
	_, err = p.db.Pool.Exec(ctx, crmInsertSpam, spam)
	require.NoError(t, err)
	p.mustSweep(t)
	require.Contains(t, p.crmSnapshot(t), spam)

	// Overlapping holds: releasing one matter leaves the other.
	_, err = p.holds.Place(ctx, p.q, "Second matter", []string{held}, "another", "legal")
	require.NoError(t, err)
	rel, err := p.holds.Release(ctx, p.q, "Doe v. Carrier", nil, "legal")
	require.NoError(t, err)
	require.Equal(t, 1, rel.Released)
	require.Zero(t, rel.Freed)
	require.Zero(t, rel.Resumed)
	p.work(t)
	require.Equal(t, retention.StateBlockedByHold, p.get(t, r.ID).State)
	require.Equal(t, "held under matter Second matter", *p.get(t, r.ID).Reason, "the reason names the matters left")
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, p.legalHold(t, held, version))

	// Bad releases change nothing.
	_, err = p.holds.Release(ctx, p.q, "No such matter", nil, "legal")
	require.ErrorIs(t, err, retention.ErrNoSuchMatter)
	_, err = p.holds.Release(ctx, p.q, "Second matter", []string{free}, "legal")
	require.ErrorIs(t, err, retention.ErrNotHeld)
	holds, err := p.holds.List(ctx, "", "")
	require.NoError(t, err)
	require.Len(t, holds, 2)

	// Releasing the last hold unlocks the object and the request resumes
	// by itself.
	rel, err = p.holds.Release(ctx, p.q, "Second matter", []string{held}, "legal")
	require.NoError(t, err)
	require.Equal(t, 1, rel.Freed)
	require.Equal(t, 1, rel.Resumed)
	require.Equal(t, []int64{r.ID}, p.q.requests)
	p.work(t)
	done := p.get(t, r.ID)
	require.Equal(t, retention.StateCompleted, done.State)
	require.Empty(t, p.objectVersions(t, held))
	rc := receiptOf(t, done)
	require.Len(t, rc.ObjectVersionsDeleted, 1)
	require.True(t, rc.ManifestEntryDeleted)
	kinds := p.auditKinds(t)
	require.Equal(t, 3, kinds[audit.KindHoldPlaced])
	require.Equal(t, 2, kinds[audit.KindHoldReleased])
	require.Equal(t, 1, kinds[audit.KindRequestBlocked])
	require.Equal(t, 1, kinds[audit.KindRequestResumed])
	p.requireAuditIntact(t)
}

// crmInsertSpam makes sure a spam subject exists (it may have been destroyed
// by an earlier sweep).
const crmInsertSpam = `INSERT INTO crm.customers (code, status, created_at) VALUES ($1, 'spam', now() - interval '40 days') ON CONFLICT DO NOTHING`

func TestHoldPlacedBeforeTheSubjectExistsLocksItsArchive(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := setupPrivacy(t)
	key := `future O'Neil "x"`
	_, err := p.holds.Place(ctx, p.q, "Early matter", []string{key}, "preservation notice", "legal")
	require.NoError(t, err)
	p.work(t) // the sync finds nothing to lock yet
	_, err = p.db.Pool.Exec(ctx, `INSERT INTO crm.customers (code, status, closed_at, created_at) VALUES ($1, 'closed', now() - interval '800 days', now() - interval '3000 days')`, key)
	require.NoError(t, err)
	p.mustSweep(t) // archiving still moves a held subject
	vs := p.objectVersions(t, key)
	require.Len(t, vs, 1)
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, p.legalHold(t, key, vs[0]))
	holds, err := p.holds.List(ctx, "", key)
	require.NoError(t, err)
	require.Len(t, holds, 1)
	require.Equal(t, key, holds[0].Subject)
}

func TestErasedSubjectThatReappearsIsErasedAgain(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := setupPrivacy(t)
	groups := p.seedCRM(t, 2)
	gone := groups["active"][0]
	r := p.submit(t, gone, "T-1", true)
	p.work(t)
	require.Equal(t, retention.StateCompleted, p.get(t, r.ID).State)

	// A restore from backup brings the customer back, as active: no policy
	// would touch it, but the suppression does.
	_, err := p.db.Pool.Exec(ctx, `INSERT INTO crm.customers (code, status, created_at) VALUES ($1, 'active', now())`, gone)
	require.NoError(t, err)
	_, err = p.db.Pool.Exec(ctx, `INSERT INTO crm.notes (customer_code, body) VALUES ($1, 'restored from backup')`, gone)
	require.NoError(t, err)
	res := p.mustSweep(t)
	require.Equal(t, 1, res.Claimed[retention.PolicySuppressed])
	require.NotContains(t, p.crmSnapshot(t), gone)
	require.Empty(t, p.objectVersions(t, gone), "an erased subject is never archived")
	require.Equal(t, 1, p.auditKinds(t)[audit.KindSuppressed])

	// Under a hold it is left alone.
	_, err = p.holds.Place(ctx, p.q, "Matter", []string{gone}, "hold", "legal")
	require.NoError(t, err)
	_, err = p.db.Pool.Exec(ctx, `INSERT INTO crm.customers (code, status, created_at) VALUES ($1, 'active', now())`, gone)
	require.NoError(t, err)
	p.mustSweep(t)
	require.Contains(t, p.crmSnapshot(t), gone)
	p.requireAuditIntact(t)
}

// Requests that arrive while a sweep archives the same subjects must leave
// nothing behind once they complete.
func TestRequestsRacingASweepLeaveNothingBehind(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := setupPrivacy(t)
	groups := p.seedCRM(t, 24)
	p.sweeper.BatchSize = 4
	run, err := p.sweeper.StartRun(ctx, retention.TriggerCLI, 0)
	require.NoError(t, err)
	_, err = p.sweeper.Sweep(ctx, run, p.q)
	require.NoError(t, err)
	batches := p.q.taken().batches
	require.NotEmpty(t, batches)

	// Half the due subjects get a deletion request while their batches run.
	targets := groups["due"][:12]
	var wg sync.WaitGroup
	errs := make(chan error, len(batches)+len(targets))
	for _, id := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
			_, err := p.mover.RunBatch(ctx, id)
			errs <- err
		}()
	}
	for i, key := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
			req, _, err := p.requests.Submit(ctx, &recorder{}, key, fmt.Sprintf("race-%d", i), "privacy-team", false)
			if err != nil {
				errs <- err
				return
			}
			for {
				err := p.requests.Process(ctx, req.ID)
				if !errors.Is(err, retention.ErrRetryLater) {
					errs <- err
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	vers := p.versions(t)
	man := p.manifest(t)
	hot := p.crmSnapshot(t)
	for _, key := range targets {
		h := p.plan.Hasher().HMAC(key)
		require.NotContains(t, vers, p.arch.ObjectKey(h), "an object of %q outlived its completed request", key)
		require.NotContains(t, man, h)
		require.NotContains(t, hot, key)
	}
	for _, key := range groups["due"][12:] {
		h := p.plan.Hasher().HMAC(key)
		require.Equal(t, []string{man[h]}, vers[p.arch.ObjectKey(h)])
	}
	list, err := p.requests.List(ctx, retention.StateCompleted, 100)
	require.NoError(t, err)
	require.Len(t, list, len(targets))
	require.Equal(t, 0, p.workItems(t))
	p.requireAuditIntact(t)
}

// A hold placed after the sweep claimed a subject for destruction, but
// before its batch runs, still saves it.
func TestHoldPlacedAfterTheClaimStillSavesTheSubject(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := setupPrivacy(t)
	groups := p.seedCRM(t, 3)
	run, err := p.sweeper.StartRun(ctx, retention.TriggerCLI, 0)
	require.NoError(t, err)
	_, err = p.sweeper.Sweep(ctx, run, p.q)
	require.NoError(t, err)
	spam := groups["spam"][1]
	_, err = p.holds.Place(ctx, p.q, "Late matter", []string{spam}, "late", "legal")
	require.NoError(t, err)
	p.work(t)
	hot := p.crmSnapshot(t)
	require.Contains(t, hot, spam, "a held subject must survive its then: delete batch")
	for _, k := range groups["spam"] {
		if k != spam {
			require.NotContains(t, hot, k)
		}
	}
	var held int
	require.NoError(t, p.db.Pool.QueryRow(ctx, `SELECT sum(held) FROM lethe.batch WHERE run_id = $1`, run).Scan(&held))
	require.Equal(t, 1, held)
}

package request_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe"
	"github.com/lethehq/lethe/audit"
	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/internal/lethetest"
	"github.com/lethehq/lethe/request"
	"github.com/lethehq/lethe/retention"
)

func TestRequestStateMachine(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := p.SeedCRM(t, 4)
	before := p.CRMSnapshot(t)
	p.MustSweep(t)
	archived := groups["due"][1]
	entry := p.Locate(t, archived)
	require.Equal(t, retention.CopyArchived, entry.State)
	bucket := p.Versions(t)

	// An archived subject: its rows are gone already; its key is destroyed,
	// and the bucket is not touched.
	r1 := p.Submit(t, archived, "T-1", false)
	require.Equal(t, request.StateReceived, r1.State)
	require.Equal(t, archived, *r1.Subject)
	require.Equal(t, []int64{r1.ID}, p.Queue.Requests)
	require.WithinDuration(t, r1.ReceivedAt.Add(45*24*time.Hour), r1.Deadline, time.Second)
	require.Equal(t, 45, r1.DaysLeft)
	p.Work(t)
	r1 = p.Get(t, r1.ID)
	require.Equal(t, request.StateCompleted, r1.State)
	require.Nil(t, r1.Subject, "lethe must forget the key once the request ends")
	rc := lethetest.ReceiptOf(t, r1)
	require.True(t, rc.Found)
	require.Equal(t, []request.PartRef{{Segment: entry.Segment, VersionID: entry.VersionID}}, rc.PartsMadeUnreadable)
	require.Equal(t, 1, rc.ArchivedCopies)
	require.Contains(t, rc.Summary, "destroyed the keys of 1 archived copy")
	erased := p.Locate(t, archived)
	require.Equal(t, retention.CopyErased, erased.State)
	require.Nil(t, erased.WrappedKey, "the key is destroyed")
	require.NotNil(t, erased.DestroyedAt)
	require.Equal(t, fmt.Sprintf("request %d", r1.ID), *erased.DestroyedBy)
	_, err := p.TryRestore(archived)
	require.Error(t, err, "an erased subject cannot be restored")
	require.Equal(t, bucket, p.Versions(t), "erasure calls no S3 API: the segment is where it was")
	require.NotContains(t, string(*r1.Receipt), archived)

	// A protected subject is rejected, and nothing changes.
	active := groups["active"][2]
	r2 := p.Submit(t, active, "T-2", false)
	p.Work(t)
	r2 = p.Get(t, r2.ID)
	require.Equal(t, request.StateRejected, r2.State)
	require.Equal(t, "protected", *r2.Reason)
	require.Nil(t, r2.Subject)
	require.Equal(t, before[active], p.CRMSnapshot(t)[active])

	// Forced, it is deleted from every table, and the receipt counts them.
	r3 := p.Submit(t, active, "T-3", true)
	p.Work(t)
	r3 = p.Get(t, r3.ID)
	require.Equal(t, request.StateCompleted, r3.State)
	require.NotContains(t, p.CRMSnapshot(t), active)
	rc = lethetest.ReceiptOf(t, r3)
	for _, table := range lethetest.CRMTables {
		require.Equal(t, int64(len(before[active][table])), rc.RowsDeleted[table], table)
	}
	require.Empty(t, rc.PartsMadeUnreadable)
	require.Zero(t, rc.ArchivedCopies)

	// A subject lethe never saw completes with nothing deleted, and says so.
	r4 := p.Submit(t, "never-seen", "T-4", false)
	p.Work(t)
	rc = lethetest.ReceiptOf(t, p.Get(t, r4.ID))
	require.False(t, rc.Found)
	require.Contains(t, rc.Summary, "nothing was deleted")

	// Idempotent per ticket: the same ticket returns the same request and
	// queues nothing; a ticket cannot be reused for another subject.
	again, created, err := p.Intake.Submit(ctx, request.Submission{Key: active, Ticket: "T-3", By: "privacy-team", Force: true})
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, r3.ID, again.ID)
	require.Empty(t, p.Queue.Taken().Requests)
	_, _, err = p.Intake.Submit(ctx, request.Submission{Key: "someone else", Ticket: "T-3", By: "privacy-team"})
	require.ErrorIs(t, err, request.ErrTicketReused)

	// Bad input changes nothing.
	for _, bad := range []struct{ key, ticket, by string }{{"  \t", "T-9", "x"}, {"k", "", "x"}, {"k", "T-9", " "}} {
		_, _, err := p.Intake.Submit(ctx, request.Submission{Key: bad.key, Ticket: bad.ticket, By: bad.by})
		require.ErrorIs(t, err, lethe.ErrBadInput)
	}
	list, err := p.Intake.List(ctx, "", 100)
	require.NoError(t, err)
	require.Len(t, list, 4)

	// Two tickets for one subject complete together.
	twice := groups["recent"][0]
	a := p.Submit(t, twice, "T-5", false)
	b := p.Submit(t, twice, "T-6", false)
	p.Work(t)
	ra, rb := lethetest.ReceiptOf(t, p.Get(t, a.ID)), lethetest.ReceiptOf(t, p.Get(t, b.ID))
	require.Equal(t, []int64{b.ID}, ra.CompletedWith)
	require.Equal(t, []int64{a.ID}, rb.CompletedWith)
	require.Equal(t, ra.RowsDeleted, rb.RowsDeleted)
	require.Equal(t, int64(1), ra.RowsDeleted["crm.customers"])

	// A request that uses up its retries fails, with the error.
	f := p.Submit(t, groups["recent"][1], "T-7", false)
	require.NoError(t, p.Eraser.Fail(ctx, f.ID, errors.New("object store unreachable")))
	f = p.Get(t, f.ID)
	require.Equal(t, request.StateFailed, f.State)
	require.Equal(t, "object store unreachable", *f.Reason)
	require.Nil(t, f.Subject)

	kinds := p.AuditKinds(t)
	require.Equal(t, 7, kinds[audit.KindRequestReceived])
	require.Equal(t, 5, kinds[audit.KindRequestCompleted])
	require.Equal(t, 1, kinds[audit.KindRequestRejected])
	require.Equal(t, 1, kinds[audit.KindRequestFailed])
	p.RequireAuditIntact(t)
}

func TestErasedSubjectThatReappearsIsErasedAgain(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := p.SeedCRM(t, 2)
	gone := groups["active"][0]
	r := p.Submit(t, gone, "T-1", true)
	p.Work(t)
	require.Equal(t, request.StateCompleted, p.Get(t, r.ID).State)

	// A restore from backup brings the customer back, as active: no policy
	// would touch it, but the suppression does.
	_, err := p.DB.Pool.Exec(ctx, `INSERT INTO crm.customers (code, status, created_at) VALUES ($1, 'active', now())`, gone)
	require.NoError(t, err)
	_, err = p.DB.Pool.Exec(ctx, `INSERT INTO crm.notes (customer_code, body) VALUES ($1, 'restored from backup')`, gone)
	require.NoError(t, err)
	res := p.MustSweep(t)
	require.Equal(t, 1, res.Claimed[retention.PolicySuppressed])
	require.NotContains(t, p.CRMSnapshot(t), gone)
	require.NotContains(t, p.Manifest(t), p.Kind.HMAC(gone), "an erased subject is never archived")
	require.Equal(t, 1, p.AuditKinds(t)[audit.KindSuppressed])

	// Under a hold it is left alone.
	_, err = p.Holds.Place(ctx, "", "Matter", []string{gone}, "hold", "legal")
	require.NoError(t, err)
	_, err = p.DB.Pool.Exec(ctx, `INSERT INTO crm.customers (code, status, created_at) VALUES ($1, 'active', now())`, gone)
	require.NoError(t, err)
	p.MustSweep(t)
	require.Contains(t, p.CRMSnapshot(t), gone)
	p.RequireAuditIntact(t)
}

// Requests that arrive while a sweep archives the same subjects must leave
// nothing behind once they complete.
func TestRequestsRacingASweepLeaveNothingBehind(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := p.SeedCRM(t, 24)
	p.Sweeper.BatchSize = 4
	run, err := p.Sweeper.StartRun(ctx, retention.TriggerCLI, 0)
	require.NoError(t, err)
	_, err = p.Sweeper.Sweep(ctx, run, p.Queue)
	require.NoError(t, err)
	batches := p.Queue.Taken().Batches
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
			_, err := p.Mover.RunBatch(ctx, id)
			errs <- err
		}()
	}
	for i, key := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
			req, _, err := p.Intake.Submit(ctx, request.Submission{Key: key, Ticket: fmt.Sprintf("race-%d", i), By: "privacy-team"})
			if err != nil {
				errs <- err
				return
			}
			for {
				err := p.Eraser.Process(ctx, req.ID)
				if !errors.Is(err, request.ErrRetryLater) {
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

	man := p.Manifest(t)
	hot := p.CRMSnapshot(t)
	for _, key := range targets {
		h := p.Kind.HMAC(key)
		if state, ok := man[h]; ok {
			require.Equal(t, retention.CopyErased, state, "the archived copy of %q outlived its completed request", key)
		}
		_, err := p.TryRestore(key)
		require.Error(t, err)
		require.NotContains(t, hot, key)
	}
	for _, key := range groups["due"][12:] {
		require.Equal(t, retention.CopyArchived, man[p.Kind.HMAC(key)])
		p.Restore(t, key)
	}
	p.RequireNothingUnnamedReadable(t)
	list, err := p.Intake.List(ctx, request.StateCompleted, 100)
	require.NoError(t, err)
	require.Len(t, list, len(targets))
	require.Equal(t, 0, p.Count(t, `SELECT count(*) FROM lethe.work_item`))
	p.RequireAuditIntact(t)
}

// One request's job erases, in its transaction, the other requests that
// wait in the queue, each as its own job would: held ones wait, protected
// ones are refused, ones a sweep is archiving are left for later. The
// others' jobs then find them done.
func TestOneJobErasesTheWaitingRequestsTogether(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := p.SeedCRM(t, 6)
	p.MustSweep(t)
	held, active := groups["recent"][0], groups["active"][0]
	_, err := p.Holds.Place(ctx, "", "M-1", []string{held}, "litigation", "legal")
	require.NoError(t, err)
	p.Queue.Taken()
	var reqs []*request.Request
	for i, k := range append(append([]string{}, groups["due"]...), groups["recent"]...) {
		reqs = append(reqs, p.Submit(t, k, fmt.Sprintf("T-%d", i), false))
	}
	rActive := p.Submit(t, active, "T-active", false)
	twice := p.Submit(t, groups["due"][0], "T-again", false)
	jobs := p.Queue.Taken().Requests
	require.Len(t, jobs, len(reqs)+2)
	kinds := p.AuditKinds(t)

	require.NoError(t, p.Eraser.Process(ctx, jobs[0]))
	for _, r := range reqs {
		got := p.Get(t, r.ID)
		if *r.Subject == held {
			require.Equal(t, request.StateBlockedByHold, got.State)
			continue
		}
		require.Equal(t, request.StateCompleted, got.State, "request for %q", *r.Subject)
		rc := lethetest.ReceiptOf(t, got)
		require.Equal(t, r.ID, rc.RequestID)
		require.Equal(t, p.Kind.HMAC(*r.Subject), rc.SubjectHMAC)
		require.True(t, rc.Found)
	}
	require.Equal(t, request.StateRejected, p.Get(t, rActive.ID).State)
	rc := lethetest.ReceiptOf(t, p.Get(t, twice.ID))
	require.Equal(t, []int64{reqs[0].ID}, rc.CompletedWith, "two tickets of one subject complete together")
	require.Len(t, rc.PartsMadeUnreadable, 1)
	after := p.AuditKinds(t)
	require.Equal(t, len(reqs), after[audit.KindRequestCompleted]-kinds[audit.KindRequestCompleted])
	require.Equal(t, 1, after[audit.KindRequestBlocked]-kinds[audit.KindRequestBlocked])
	for _, id := range jobs[1:] {
		require.NoError(t, p.Eraser.Process(ctx, id), "the others' jobs find nothing left to do")
	}
	require.Equal(t, after, p.AuditKinds(t))
	p.RequireAuditIntact(t)
}

// A subject whose erasure fails does not hold up the others: the batch
// fails, the job erases its own subject alone, and the failing one fails
// on its own job.
func TestAFailingSubjectDoesNotHoldUpTheOthers(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := p.SeedCRM(t, 3)
	bad := groups["recent"][1]
	_, err := p.DB.Pool.Exec(ctx, `
		CREATE FUNCTION crm.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'notes of this customer cannot be deleted'; END $$;
		CREATE TRIGGER refuse BEFORE DELETE ON crm.notes FOR EACH ROW WHEN (OLD.customer_code = '`+strings.ReplaceAll(bad, "'", "''")+`')
		EXECUTE FUNCTION crm.refuse()`)
	require.NoError(t, err)
	_, err = p.DB.Pool.Exec(ctx, `INSERT INTO crm.notes (customer_code, body) VALUES ($1, 'kept')`, bad)
	require.NoError(t, err)
	good := p.Submit(t, groups["recent"][0], "T-1", false)
	failing := p.Submit(t, bad, "T-2", false)
	other := p.Submit(t, groups["recent"][2], "T-3", false)

	require.NoError(t, p.Eraser.Process(ctx, good.ID), "the batch failed on another subject: this one alone")
	require.Equal(t, request.StateCompleted, p.Get(t, good.ID).State)
	require.Equal(t, request.StateReceived, p.Get(t, failing.ID).State)
	require.ErrorContains(t, p.Eraser.Process(ctx, failing.ID), "cannot be deleted")
	require.Equal(t, request.StateReceived, p.Get(t, failing.ID).State)
	require.NoError(t, p.Eraser.Process(ctx, other.ID))
	require.Equal(t, request.StateCompleted, p.Get(t, other.ID).State)
	p.RequireAuditIntact(t)
}

// A crash before a request's commit changes nothing: the rows, the key and
// the request are as they were, and the request completes when it runs
// again.
func TestRequestCrashBeforeCommitChangesNothing(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	p := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig)
	groups := p.SeedCRM(t, 3)
	p.MustSweep(t)
	archived, hot := groups["due"][0], groups["recent"][0]
	before := p.CRMSnapshot(t)
	kinds := p.AuditKinds(t)
	request.SetFault(p.Eraser, func(point string) error {
		if point == request.FaultRequestBeforeCommit {
			return errors.New("injected")
		}
		return nil
	})
	ra, rh := p.Submit(t, archived, "T-1", false), p.Submit(t, hot, "T-2", false)
	for _, id := range p.Queue.Taken().Requests {
		require.ErrorContains(t, p.Eraser.Process(ctx, id), "injected")
	}
	require.Equal(t, before, p.CRMSnapshot(t))
	require.Equal(t, retention.CopyArchived, p.Locate(t, archived).State)
	p.Restore(t, archived)
	require.Equal(t, request.StateReceived, p.Get(t, ra.ID).State)
	require.Zero(t, p.Count(t, `SELECT count(*) FROM lethe.suppression`))
	require.Equal(t, kinds[audit.KindRequestCompleted], p.AuditKinds(t)[audit.KindRequestCompleted])

	request.SetFault(p.Eraser, nil)
	for _, id := range []int64{ra.ID, rh.ID} {
		require.NoError(t, p.Eraser.Process(ctx, id))
		require.Equal(t, request.StateCompleted, p.Get(t, id).State)
	}
	require.Equal(t, retention.CopyErased, p.Locate(t, archived).State)
	require.NotContains(t, p.CRMSnapshot(t), hot)
	p.RequireAuditIntact(t)
}

// An archived subject is named by its canonical key, so a request under
// another spelling finds and erases its archived copy.
func TestARequestUnderAnotherSpellingErasesTheArchivedCopy(t *testing.T) {
	lethetest.EachKeyCase(t, func(t *testing.T, kc lethetest.KeyCase, p *lethetest.Env) {
		p.MustSweep(t)
		hmac := p.Kind.HMAC(kc.Canonical)
		require.Contains(t, p.Manifest(t), hmac, "archived under the canonical key")
		bundle := p.Restore(t, kc.Canonical)
		require.Len(t, bundle["k.notes"], 1)

		req := p.Submit(t, kc.Spellings[len(kc.Spellings)-1], "T-1", false)
		p.Work(t)
		rc := lethetest.ReceiptOf(t, p.Get(t, req.ID))
		require.True(t, rc.Found, rc.Summary)
		require.Len(t, rc.PartsMadeUnreadable, 1)
		require.Equal(t, retention.CopyErased, p.Manifest(t)[hmac])
	})
}

// Rows an earlier version stored under the spelling a caller typed are made
// canonical; ended requests, whose key is gone, are reported.
func TestRepairKeysMakesStoredKeysCanonical(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := lethetest.NewKeys(t, "bigint", "111")
	h := p.Kind.Hasher()
	// As the earlier version stored them: the key as typed, hashed as typed.
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO lethe.hold (matter, subject_hmac, subject_key, reason, placed_by) VALUES
			('M-1', $1, '0111', 'litigation', 'legal'), ('M-1', $2, '111', 'litigation', 'legal'),
			('M-2', $3, ' +83 ', 'audit', 'legal')`, []any{h.HMAC("0111"), h.HMAC("111"), h.HMAC(" +83 ")}},
		{`INSERT INTO lethe.request (ticket, subject_hmac, subject_key, requested_by, state, reason, deadline) VALUES
			('T-1', $1, '00111', 'privacy', 'blocked_by_hold', 'held under matter M-9', now() + interval '45 days')`, []any{h.HMAC("00111")}},
		{`INSERT INTO lethe.request (ticket, subject_hmac, requested_by, state, deadline, completed_at, receipt) VALUES
			('T-2', $1, 'privacy', 'completed', now(), now(), '{"found": false}'),
			('T-3', $1, 'privacy', 'completed', now(), now(), '{"found": true}')`, []any{h.HMAC("anything")}},
	} {
		_, err := p.DB.Pool.Exec(ctx, q.sql, q.args...)
		require.NoError(t, err)
	}

	repair := func() (*hold.KeyRepair, *request.KeyRepair) {
		var hr *hold.KeyRepair
		var rr *request.KeyRepair
		require.NoError(t, pgx.BeginFunc(ctx, p.DB.Pool, func(tx pgx.Tx) error {
			var err error
			if hr, err = hold.RepairKeys(ctx, tx, p.Plan, p.Queue); err != nil {
				return err
			}
			rr, err = request.RepairKeys(ctx, tx, p.Plan, p.Queue)
			return err
		}))
		return hr, rr
	}
	hr, rr := repair()
	require.Equal(t, 1, hr.Rewritten, "' +83 ' becomes 83")
	require.Equal(t, 1, hr.Merged, "0111 is the subject M-1 already holds as 111")
	require.Equal(t, 1, rr.Rewritten)
	require.Equal(t, 1, rr.Resumed, "it waited on a hold of another spelling")
	require.Equal(t, 2, rr.Unverifiable)
	require.Len(t, rr.FoundNothing, 1)

	list, err := p.Holds.List(ctx, "", "", "111")
	require.NoError(t, err)
	require.Len(t, list, 1)
	list, err = p.Holds.List(ctx, "", "M-2", "83")
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "83", list[0].Subject)

	req, err := p.Intake.ByTicket(ctx, "T-1")
	require.NoError(t, err)
	require.Equal(t, "111", *req.Subject)
	require.Equal(t, h.HMAC("111"), req.SubjectHMAC)
	require.Equal(t, request.StateReceived, req.State)
	// The request is queued again, and the canonical hold blocks it now.
	p.Work(t)
	req, err = p.Intake.ByTicket(ctx, "T-1")
	require.NoError(t, err)
	require.Equal(t, request.StateBlockedByHold, req.State)
	require.Equal(t, 2, p.SubjectRows(t))
	require.Contains(t, p.AuditKinds(t), "key_repaired")
	p.RequireAuditIntact(t)

	hr, rr = repair()
	require.Zero(t, hr.Rewritten+hr.Merged+rr.Rewritten, "a second repair finds nothing to do")
}

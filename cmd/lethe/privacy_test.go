package main_test

// Exec tests of the privacy team's and legal's workflows: deletion requests
// and legal holds, from the command line, carried out by a running
// `lethe worker` against a real PostgreSQL and a real versitygw.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/stretchr/testify/require"
)

// privacy is a shop with, unless asked otherwise, a running worker.
type privacy struct {
	*shop
	w *worker
}

func newPrivacy(t *testing.T, withWorker bool) *privacy {
	t.Helper()
	p := &privacy{shop: newShop(t, 0)}
	if withWorker {
		p.w = startWorker(t, p.cfgPath)
	}
	return p
}

// run runs lethe with args and the shop's config.
func (p *privacy) run(t *testing.T, args ...string) result {
	t.Helper()
	return lethe(t, append(args, "--config", p.cfgPath)...)
}

func (p *privacy) workerOutput() string {
	if p.w == nil {
		return "(no worker)"
	}
	return p.w.output()
}

// requestView is `lethe request show --json` (and an element of `request
// list --json`).
type requestView struct {
	ID          int64           `json:"id"`
	Ticket      string          `json:"ticket"`
	Subject     *string         `json:"subject"`
	SubjectHMAC string          `json:"subject_hmac"`
	State       string          `json:"state"`
	Reason      *string         `json:"reason"`
	RequestedBy string          `json:"requested_by"`
	Force       bool            `json:"force"`
	ReceivedAt  time.Time       `json:"received_at"`
	Deadline    time.Time       `json:"deadline"`
	Receipt     json.RawMessage `json:"receipt"`
}

// receiptView is a request's receipt.
type receiptView struct {
	RequestID           int64            `json:"request_id"`
	Ticket              string           `json:"ticket"`
	SubjectHMAC         string           `json:"subject_hmac"`
	RequestedBy         string           `json:"requested_by"`
	CompletedAt         time.Time        `json:"completed_at"`
	Found               *bool            `json:"found"`
	RowsDeleted         map[string]int64 `json:"rows_deleted"`
	PartsMadeUnreadable []partRef        `json:"parts_made_unreadable"`
	ArchivedCopies      *int             `json:"archived_copies"`
	CompletedWith       []int64          `json:"completed_with"`
	Summary             string           `json:"summary"`
}

// partRef names a part whose key an erasure destroyed.
type partRef struct {
	Segment   string `json:"segment"`
	VersionID string `json:"version_id"`
}

// requireKeys fails unless raw is a JSON object with every key of keys.
func requireKeys(t *testing.T, raw []byte, keys ...string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &m), "not a JSON object: %s", raw)
	for _, k := range keys {
		require.Contains(t, m, k, "key %q missing in %s", k, raw)
	}
	return m
}

// decodeRequest checks the fields the README promises in `request show
// --json` and decodes the object.
func decodeRequest(t *testing.T, r result) requestView {
	t.Helper()
	requireOK(t, r)
	requireKeys(t, []byte(r.stdout), "id", "ticket", "subject", "state", "reason", "deadline", "receipt")
	var v requestView
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v), "%s", r)
	return v
}

func (v requestView) receipt(t *testing.T) receiptView {
	t.Helper()
	require.NotEmpty(t, v.Receipt)
	require.NotEqual(t, "null", string(v.Receipt), "request %d has no receipt", v.ID)
	requireKeys(t, v.Receipt, "subject_hmac", "rows_deleted", "parts_made_unreadable", "archived_copies", "found", "completed_at")
	var rc receiptView
	require.NoError(t, json.Unmarshal(v.Receipt, &rc))
	require.Equal(t, v.ID, rc.RequestID)
	require.Equal(t, v.Ticket, rc.Ticket)
	return rc
}

// deleteRequest runs `request delete ... --wait --json` and decodes its
// result.
func (p *privacy) deleteRequest(t *testing.T, subject, ticket string, extra ...string) requestView {
	t.Helper()
	args := append([]string{"request", "delete", "--subject", subject, "--ticket", ticket, "--by", "privacy", "--wait", "--json"}, extra...)
	r := p.run(t, args...)
	require.Equal(t, 0, r.code, "%s\nworker:\n%s", r, p.workerOutput())
	return decodeRequest(t, r)
}

// showRequest runs `request show ID --json`.
func (p *privacy) showRequest(t *testing.T, id int64) requestView {
	t.Helper()
	return decodeRequest(t, p.run(t, "request", "show", fmt.Sprint(id), "--json"))
}

// waitState polls `request show ID --json` until the request is in state
// want; it fails at once if the request ends in another state.
func (p *privacy) waitState(t *testing.T, id int64, want string) requestView {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		v := p.showRequest(t, id)
		if v.State == want {
			return v
		}
		if slices.Contains([]string{"completed", "rejected", "failed"}, v.State) {
			require.FailNow(t, "request ended in the wrong state", "request %d is %s (reason %v), want %s\nworker:\n%s", id, v.State, deref(v.Reason), want, p.workerOutput())
		}
		if time.Now().After(deadline) {
			require.FailNow(t, "request did not reach its state in time", "request %d is %s, want %s\nworker:\n%s", id, v.State, want, p.workerOutput())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// statusJSON runs `status --json` and returns its top-level keys.
func (p *privacy) statusJSON(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	r := p.run(t, "status", "--json")
	requireOK(t, r)
	m := requireKeys(t, []byte(r.stdout), "requests", "requests_near_deadline", "holds", "pending_hold_syncs", "failed_jobs")
	for _, k := range []string{"requests", "requests_near_deadline", "holds", "pending_hold_syncs", "failed_jobs"} {
		require.True(t, strings.HasPrefix(string(m[k]), "["), "status --json %s is not an array: %s", k, m[k])
	}
	return m
}

// waitHoldsSynced polls `status --json` until no hold sync is pending.
func (p *privacy) waitHoldsSynced(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		m := p.statusJSON(t)
		if string(m["pending_hold_syncs"]) == "[]" {
			return
		}
		if time.Now().After(deadline) {
			require.FailNow(t, "hold syncs still pending", "%s\nworker:\n%s", m["pending_hold_syncs"], p.workerOutput())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// legalHold is the S3 legal-hold status of an object version, as the
// bucket's root account reads it.
func (p *privacy) legalHold(t *testing.T, key, versionID string) types.ObjectLockLegalHoldStatus {
	t.Helper()
	root := p.bucket.Server.Client(p.bucket.Server.Root)
	out, err := root.GetObjectLegalHold(context.Background(), &s3.GetObjectLegalHoldInput{
		Bucket: aws.String(p.bucket.Name), Key: aws.String(key), VersionId: aws.String(versionID)})
	if err != nil {
		return types.ObjectLockLegalHoldStatus("error: " + err.Error())
	}
	if out.LegalHold == nil {
		return ""
	}
	return out.LegalHold.Status
}

// counts are the row counts of lethe's tables, request and hold tables
// included, for "nothing changed" checks.
func (p *privacy) counts(t *testing.T) map[string]int64 {
	t.Helper()
	out := letheState(t, p.db.Pool)
	for _, table := range []string{"request", "hold", "hold_sync", "suppression"} {
		var n int64
		require.NoError(t, p.db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM lethe."+table).Scan(&n))
		out[table] = n
	}
	// The leader inserts a reconcile job every minute, and an anchor job
	// whenever the audit log has grown, whatever the test does: count only
	// the jobs that requests and holds queue.
	var jobs int64
	require.NoError(t, p.db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM lethe.river_job WHERE kind NOT IN ('lethe.reconcile', 'lethe.anchor')`).Scan(&jobs))
	out["river_job"] = jobs
	return out
}

// requireAuditIntact runs `lethe audit verify`.
func (p *privacy) requireAuditIntact(t *testing.T) {
	t.Helper()
	r := p.run(t, "audit", "verify")
	requireOK(t, r)
	require.Contains(t, r.stdout, "audit log intact", "%s", r)
}

// richest returns the subject of category cat with the most rows in the
// shop's graph, the first by key on ties.
func (p *privacy) richest(d shopDump, cat string, not ...string) string {
	best, most := "", -1
	for _, k := range p.keys(cat) {
		if slices.Contains(not, k) {
			continue
		}
		n := 0
		for _, table := range shopTables {
			n += d.count(table, k)
		}
		if n > most {
			best, most = k, n
		}
	}
	return best
}

// rowCounts are the subject's rows per table of the graph.
func rowCounts(d shopDump, key string) map[string]int64 {
	out := map[string]int64{}
	for _, table := range shopTables {
		out[table] = int64(d.count(table, key))
	}
	return out
}

// requestJobs counts the lethe.request jobs of one request.
func (p *privacy) requestJobs(t *testing.T, id int64) int {
	t.Helper()
	var n int
	require.NoError(t, p.db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM lethe.river_job WHERE kind = 'lethe.request' AND (args ->> 'request_id')::bigint = $1`, id).Scan(&n))
	return n
}

// TestPrivacyRequestBlockedReleasedCompleted follows a deletion request for
// an archived subject under a legal hold: it waits while the hold stands,
// the bucket refuses to delete the held segment, and once legal releases
// the hold the running worker completes it by itself, destroying the
// subject's key without touching the bucket.
func TestPrivacyRequestBlockedReleasedCompleted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPrivacy(t, true)
	const (
		subject = `O'Brien "x" 1`
		unknown = "not-yet-a-customer 42" // held before lethe ever sees it
		matter  = "ACME v. Shop 2024-017"
		reason  = "litigation hold: preserve all records"
	)

	// Archive the due subjects.
	r := p.run(t, "sweep", "--wait")
	requireOK(t, r)
	goneDue := p.keys(catGoneDue)
	require.Contains(t, goneDue, subject)
	loc := p.locate(t, subject)
	require.Equal(t, "archived", loc.State)
	require.NotEmpty(t, loc.WrappedKey)
	segment, version := loc.Segment, loc.VersionID
	bucket := listVersions(t, p.bucket)
	// (versitygw answers NoSuchObjectLockConfiguration for a version that
	// never had a legal hold.)
	require.NotEqual(t, types.ObjectLockLegalHoldStatusOn, p.legalHold(t, segment, version), "a segment of unheld subjects has no legal hold")

	// Legal places the hold.
	r = p.run(t, "hold", "place", "--matter", matter, "--subject", subject, "--subject", unknown, "--reason", reason, "--by", "legal", "--json")
	requireOK(t, r)
	var placed struct {
		Placed []json.RawMessage `json:"placed"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &placed), "%s", r)
	require.Len(t, placed.Placed, 2, "%s", r)
	var placedSubjects []string
	for _, raw := range placed.Placed {
		requireKeys(t, raw, "matter", "subject", "reason", "placed_by", "placed_at")
		var h struct {
			Matter, Subject, Reason string
			PlacedBy                string    `json:"placed_by"`
			PlacedAt                time.Time `json:"placed_at"`
		}
		require.NoError(t, json.Unmarshal(raw, &h))
		require.Equal(t, matter, h.Matter)
		require.Equal(t, reason, h.Reason)
		require.Equal(t, "legal", h.PlacedBy)
		require.WithinDuration(t, time.Now(), h.PlacedAt, time.Minute)
		placedSubjects = append(placedSubjects, h.Subject)
	}
	require.ElementsMatch(t, []string{subject, unknown}, placedSubjects)

	r = p.run(t, "hold", "list", "--json")
	requireOK(t, r)
	var list []json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list), "hold list --json is not an array\n%s", r)
	require.Len(t, list, 2, "%s", r)
	var listed []string
	for _, raw := range list {
		requireKeys(t, raw, "matter", "subject", "reason", "placed_by", "placed_at")
		var h struct{ Matter, Subject, Reason, PlacedBy string }
		require.NoError(t, json.Unmarshal(raw, &h))
		require.Equal(t, matter, h.Matter)
		listed = append(listed, h.Subject)
	}
	require.ElementsMatch(t, []string{subject, unknown}, listed)
	r = p.run(t, "hold", "list", "--subject", subject, "--json")
	requireOK(t, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list), "%s", r)
	require.Len(t, list, 1, "hold list --subject\n%s", r)

	// The worker switches the S3 legal hold on.
	deadline := time.Now().Add(45 * time.Second)
	for p.legalHold(t, segment, version) != types.ObjectLockLegalHoldStatusOn {
		if time.Now().After(deadline) {
			require.FailNow(t, "the S3 legal hold was not set", "status %q\nworker:\n%s", p.legalHold(t, segment, version), p.workerOutput())
		}
		time.Sleep(250 * time.Millisecond)
	}
	p.waitHoldsSynced(t)

	// The bucket refuses a delete of the held segment, even to its owner.
	root := p.bucket.Server.Client(p.bucket.Server.Root)
	_, err := root.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(p.bucket.Name), Key: aws.String(segment), VersionId: aws.String(version)})
	require.Error(t, err, "the bucket's owner deleted a held segment")
	require.Equal(t, bucket, listVersions(t, p.bucket))

	// The privacy team's request waits for the hold.
	req := p.deleteRequest(t, subject, "T1")
	require.Equal(t, "blocked_by_hold", req.State)
	require.NotNil(t, req.Reason)
	require.Contains(t, *req.Reason, matter)
	require.Equal(t, bucket, listVersions(t, p.bucket), "a held segment was deleted")
	require.Equal(t, types.ObjectLockLegalHoldStatusOn, p.legalHold(t, segment, version))
	require.Equal(t, loc, p.locate(t, subject), "a held subject's key was touched")

	shown := decodeRequest(t, p.run(t, "request", "show", "--ticket", "T1", "--json"))
	require.Equal(t, req.ID, shown.ID)
	require.Equal(t, "T1", shown.Ticket)
	require.NotNil(t, shown.Subject)
	require.Equal(t, subject, *shown.Subject)
	require.Equal(t, "blocked_by_hold", shown.State)
	require.Contains(t, deref(shown.Reason), matter)
	require.Equal(t, "null", string(shown.Receipt), "an open request has no receipt")
	require.WithinDuration(t, shown.ReceivedAt.Add(45*24*time.Hour), shown.Deadline, time.Minute, "the deadline is 45 days after receipt")
	require.Equal(t, p.hmacOf(subject), shown.SubjectHMAC)

	r = p.run(t, "request", "show", "--ticket", "T1")
	requireOK(t, r)
	require.Contains(t, r.stdout, "blocked_by_hold")
	require.Contains(t, r.stdout, matter)
	t.Logf("transcript: $ lethe request show --ticket T1   (before the hold is released)\n%s", r.stdout)

	// Legal releases the matter; nobody touches the request again.
	r = p.run(t, "hold", "release", "--matter", matter, "--by", "legal")
	requireOK(t, r)
	require.Contains(t, r.stdout, "2 holds released", "%s", r)
	require.Contains(t, r.stdout, "1 waiting deletion request resumed", "%s", r)

	done := p.waitState(t, req.ID, "completed")
	require.Nil(t, done.Subject, "the subject key stays in lethe's records after completion")
	require.Nil(t, done.Reason)
	rc := done.receipt(t)
	require.Equal(t, p.hmacOf(subject), rc.SubjectHMAC)
	require.Equal(t, "privacy", rc.RequestedBy)
	require.True(t, *rc.Found)
	require.Equal(t, rowCounts(dumpShop(t, p.db.Pool), subject), rc.RowsDeleted, "rows per table (none left hot: the subject was archived)")
	for _, table := range shopTables {
		require.Contains(t, rc.RowsDeleted, table)
	}
	require.Equal(t, []partRef{{Segment: segment, VersionID: version}}, rc.PartsMadeUnreadable, "the receipt names the segment that was held")
	require.Equal(t, 1, *rc.ArchivedCopies)
	require.Empty(t, rc.CompletedWith)
	require.WithinDuration(t, time.Now(), rc.CompletedAt, time.Minute)
	requireNoNeedles(t, p.shop, "the receipt", string(done.Receipt))
	requireNoNeedles(t, p.shop, "request show --json after completion", p.run(t, "request", "show", fmt.Sprint(req.ID), "--json").stdout)

	// The key is destroyed; the segment stays, and the hold on it is lifted.
	erased := p.locate(t, subject)
	require.Equal(t, "erased", erased.State)
	require.Nil(t, erased.WrappedKey)
	require.Equal(t, bucket, listVersions(t, p.bucket), "the erasure touched the bucket")
	r = p.run(t, "restore", "--subject", subject, "--identity", p.idPath)
	requireOneLineError(t, r, 1, "was erased by deletion request")
	require.Contains(t, r.stderr, "(ticket T1)", "%s", r)
	p.waitHoldsSynced(t)
	require.Equal(t, types.ObjectLockLegalHoldStatusOff, p.legalHold(t, segment, version), "no held subject's live part is left in the segment")

	// Flags may stand before the id as well as after it.
	require.Equal(t, "completed", decodeRequest(t, p.run(t, "request", "show", "--json", fmt.Sprint(req.ID))).State)

	r = p.run(t, "request", "show", fmt.Sprint(req.ID))
	requireOK(t, r)
	require.Contains(t, r.stdout, "state completed")
	require.Contains(t, r.stdout, "erased from lethe's records")
	require.Contains(t, r.stdout, version)
	requireNoNeedles(t, p.shop, "request show after completion", r.stdout)
	t.Logf("transcript: $ lethe request show %d   (after completion)\n%s", req.ID, r.stdout)

	r = p.run(t, "hold", "list", "--json")
	requireOK(t, r)
	require.Equal(t, "[]", strings.TrimSpace(r.stdout), "holds left after the matter was released")

	// The audit log says who placed and released the hold, and why.
	rows, err := p.db.Pool.Query(ctx, `SELECT kind, actor, detail::jsonb ->> 'matter', coalesce(detail::jsonb ->> 'reason', '') FROM lethe.audit_log
		WHERE kind IN ('hold_placed', 'hold_released') AND subject_hmac = $1 ORDER BY seq`, p.hmacOf(subject))
	require.NoError(t, err)
	var holdAudit []string
	for rows.Next() {
		var kind, actor, m, why string
		require.NoError(t, rows.Scan(&kind, &actor, &m, &why))
		holdAudit = append(holdAudit, strings.Join([]string{kind, actor, m, why}, "|"))
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"hold_placed|legal|" + matter + "|" + reason, "hold_released|legal|" + matter + "|"}, holdAudit)

	// lethe forgot the key everywhere but in the hot tables.
	for _, table := range []string{"lethe.request", "lethe.hold", "lethe.audit_log", "lethe.river_job", "lethe.hold_sync"} {
		for _, row := range tableDump(t, p.shop, table) {
			requireNoNeedles(t, p.shop, table, row)
		}
	}
	requireNoNeedles(t, p.shop, "the worker's log", p.w.output())
	p.requireAuditIntact(t)
}

// TestPrivacyIdempotentTicketAndTogether checks that a request is
// idempotent per ticket, that a second ticket for a subject whose request
// waits on a hold is accepted and completed with it, and that a ticket
// cannot be reused for another subject.
func TestPrivacyIdempotentTicketAndTogether(t *testing.T) {
	t.Parallel()
	p := newPrivacy(t, true)
	before := dumpShop(t, p.db.Pool)
	subject := p.richest(before, catGoneRecent) // never due: it has hot rows only
	other := p.richest(before, catGoneRecent, subject)
	require.Positive(t, before.count("shop.contracts", subject))

	r := p.run(t, "hold", "place", "--matter", "M-2", "--subject", subject, "--reason", "regulator inquiry", "--by", "legal")
	requireOK(t, r)
	// The hold's sync job audits when it is done: let it finish before
	// the tables are compared below.
	p.waitHoldsSynced(t)

	first := p.deleteRequest(t, subject, "TK-1")
	require.Equal(t, "blocked_by_hold", first.State)

	// The same ticket again: the same request, nothing new queued.
	state := p.counts(t)
	r = p.run(t, "request", "delete", "--subject", subject, "--ticket", "TK-1", "--by", "privacy")
	requireOK(t, r)
	require.Contains(t, r.stderr, "nothing new was queued", "%s", r)
	require.Contains(t, r.stderr, fmt.Sprint(first.ID), "%s", r)
	require.Contains(t, r.stdout, fmt.Sprintf("request %d ", first.ID), "%s", r)
	r = p.run(t, "request", "delete", "--subject", subject, "--ticket", "TK-1", "--by", "privacy", "--json")
	again := decodeRequest(t, r)
	require.Equal(t, first.ID, again.ID)
	require.Equal(t, state, p.counts(t), "a repeated ticket changed lethe's tables")
	require.Equal(t, 1, p.requestJobs(t, first.ID), "a repeated ticket queued another job")

	// The same ticket for another subject is refused.
	r = p.run(t, "request", "delete", "--subject", other, "--ticket", "TK-1", "--by", "privacy")
	requireOneLineError(t, r, 2, "TK-1")
	require.Equal(t, state, p.counts(t), "a reused ticket changed lethe's tables")

	// A new ticket for the same subject is accepted and waits too.
	second := p.deleteRequest(t, subject, "TK-2")
	require.NotEqual(t, first.ID, second.ID)
	require.Equal(t, "blocked_by_hold", second.State)
	require.Equal(t, before, dumpShop(t, p.db.Pool), "a held subject's rows were deleted")

	r = p.run(t, "hold", "release", "--matter", "M-2", "--by", "legal")
	requireOK(t, r)
	require.Contains(t, r.stdout, "2 waiting deletion requests resumed", "%s", r)

	a := p.waitState(t, first.ID, "completed")
	b := p.waitState(t, second.ID, "completed")
	ra, rb := a.receipt(t), b.receipt(t)
	require.Equal(t, []int64{second.ID}, ra.CompletedWith)
	require.Equal(t, []int64{first.ID}, rb.CompletedWith)
	require.Equal(t, rowCounts(before, subject), ra.RowsDeleted)
	require.Equal(t, ra.RowsDeleted, rb.RowsDeleted)
	require.True(t, *ra.Found)
	require.Zero(t, *ra.ArchivedCopies)
	require.Empty(t, ra.PartsMadeUnreadable)
	require.Equal(t, before.without([]string{subject}), dumpShop(t, p.db.Pool))
	requireNoNeedles(t, p.shop, "the receipt", string(a.Receipt))

	// After completion the ticket still names the same request.
	state = p.counts(t)
	again = decodeRequest(t, p.run(t, "request", "delete", "--subject", subject, "--ticket", "TK-1", "--by", "privacy", "--json"))
	require.Equal(t, first.ID, again.ID)
	require.Equal(t, "completed", again.State)
	require.Equal(t, state, p.counts(t))
	p.requireAuditIntact(t)
}

// TestPrivacyBadInput checks that bad request and hold command lines exit
// with one line on stderr and change nothing.
func TestPrivacyBadInput(t *testing.T) {
	t.Parallel()
	b := newBadInput(t)
	p := &privacy{shop: b.shop}
	key := p.keys(catGoneRecent)[0]
	r := p.run(t, "hold", "place", "--matter", "M", "--subject", key, "--reason", "r", "--by", "legal")
	requireOK(t, r)
	b.state = letheState(t, p.db.Pool)
	counts := p.counts(t)

	cases := []struct {
		name string
		code int
		args []string
		want []string
	}{
		{"request without --ticket", 2, []string{"request", "delete", "--subject", key, "--by", "privacy"}, []string{"--ticket"}},
		{"request with an empty --ticket", 2, []string{"request", "delete", "--subject", key, "--ticket", "", "--by", "privacy"}, []string{"--ticket"}},
		{"request with a blank --ticket", 2, []string{"request", "delete", "--subject", key, "--ticket", "  ", "--by", "privacy"}, []string{"--ticket"}},
		{"request without --by", 2, []string{"request", "delete", "--subject", key, "--ticket", "B1"}, []string{"--by"}},
		{"request with an empty --by", 2, []string{"request", "delete", "--subject", key, "--ticket", "B1", "--by", ""}, []string{"--by"}},
		{"request with a blank --by", 2, []string{"request", "delete", "--subject", key, "--ticket", "B1", "--by", " \t "}, []string{"--by"}},
		{"request with a blank --subject", 2, []string{"request", "delete", "--subject", "   ", "--ticket", "B1", "--by", "privacy"}, []string{"--subject"}},
		{"request without --subject", 2, []string{"request", "delete", "--ticket", "B1", "--by", "privacy"}, []string{"--subject"}},
		{"hold without --reason", 2, []string{"hold", "place", "--matter", "M2", "--subject", key, "--by", "legal"}, []string{"--reason"}},
		{"hold with a blank --reason", 2, []string{"hold", "place", "--matter", "M2", "--subject", key, "--reason", " ", "--by", "legal"}, []string{"--reason"}},
		{"hold without --by", 2, []string{"hold", "place", "--matter", "M2", "--subject", key, "--reason", "r"}, []string{"--by"}},
		{"hold without --matter", 2, []string{"hold", "place", "--subject", key, "--reason", "r", "--by", "legal"}, []string{"--matter"}},
		{"hold with a blank --matter", 2, []string{"hold", "place", "--matter", "  ", "--subject", key, "--reason", "r", "--by", "legal"}, []string{"--matter"}},
		{"hold with a blank subject", 2, []string{"hold", "place", "--matter", "M2", "--subject", key, "--subject", "  ", "--reason", "r", "--by", "legal"}, []string{"--subject"}},
		{"hold without a subject", 2, []string{"hold", "place", "--matter", "M2", "--reason", "r", "--by", "legal"}, []string{"--subject"}},
		{"release of an unknown matter", 2, []string{"hold", "release", "--matter", "does-not-exist", "--by", "x"}, []string{"does-not-exist"}},
		{"release of a subject not held", 2, []string{"hold", "release", "--matter", "M", "--subject", "not-held", "--by", "x"}, []string{"not-held"}},
		{"release of a held and a not held subject", 2, []string{"hold", "release", "--matter", "M", "--subject", key, "--subject", "not-held", "--by", "x"}, []string{"not-held"}},
		{"release without --by", 2, []string{"hold", "release", "--matter", "M"}, []string{"--by"}},
		{"list of a bogus state", 2, []string{"request", "list", "--state", "bogus"}, []string{"bogus"}},
		{"list with a negative limit", 2, []string{"request", "list", "--limit", "-1"}, []string{"--limit"}},
		{"show with two ids", 2, []string{"request", "show", "1", "--json", "2"}, []string{"2"}},
		{"show of a bad id", 2, []string{"request", "show", "abc"}, []string{"abc"}},
		{"show without id or ticket", 2, []string{"request", "show"}, []string{"--ticket"}},
		{"show of an unknown id", 1, []string{"request", "show", "999999"}, []string{"999999"}},
		{"show of an unknown ticket", 1, []string{"request", "show", "--ticket", "NOPE-1"}, []string{"NOPE-1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := p.run(t, tc.args...)
			requireOneLineError(t, r, tc.code, tc.want...)
			require.Empty(t, r.stdout, "%s", r)
			b.requireUnchanged(t)
			require.Equal(t, counts, p.counts(t), "lethe's request or hold tables changed")
		})
	}
	r = p.run(t, "hold", "list", "--json")
	requireOK(t, r)
	var holds []json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &holds))
	require.Len(t, holds, 1, "the hold of matter M stays\n%s", r)
	p.requireAuditIntact(t)
}

// TestPrivacyProtectedAndForce checks that requests.protect refuses a
// deletion unless it is forced, and that a forced one deletes every row.
func TestPrivacyProtectedAndForce(t *testing.T) {
	t.Parallel()
	p := newPrivacy(t, true)
	before := dumpShop(t, p.db.Pool)
	subject := p.richest(before, catActive)
	require.Positive(t, before.count("shop.contracts", subject))

	rejected := p.deleteRequest(t, subject, "P-1")
	require.Equal(t, "rejected", rejected.State)
	require.Equal(t, "protected", deref(rejected.Reason))
	require.Equal(t, "null", string(rejected.Receipt))
	require.Equal(t, before, dumpShop(t, p.db.Pool), "a rejected request deleted rows")

	forced := p.deleteRequest(t, subject, "P-2", "--force")
	require.Equal(t, "completed", forced.State)
	require.True(t, forced.Force)
	rc := forced.receipt(t)
	require.Equal(t, rowCounts(before, subject), rc.RowsDeleted)
	require.True(t, *rc.Found)
	require.Empty(t, rc.CompletedWith, "a rejected request is not completed with a forced one")
	after := dumpShop(t, p.db.Pool)
	for _, table := range shopTables {
		require.Zero(t, after.count(table, subject), "%s still has rows of the subject", table)
	}
	require.Equal(t, before.without([]string{subject}), after)

	r := p.run(t, "request", "list", "--state", "rejected", "--json")
	requireOK(t, r)
	var list []requestView
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list), "%s", r)
	require.Len(t, list, 1, "%s", r)
	require.Equal(t, rejected.ID, list[0].ID)
	require.Equal(t, "P-1", list[0].Ticket)
	require.Equal(t, "protected", deref(list[0].Reason))
	require.Nil(t, list[0].Subject, "a rejected request keeps the subject key")
	for _, raw := range mustArray(t, r.stdout) {
		requireKeys(t, raw, "id", "ticket", "subject", "state", "reason", "deadline", "receipt")
	}
	r = p.run(t, "request", "list", "--state", "completed", "--json")
	requireOK(t, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list), "%s", r)
	require.Len(t, list, 1, "%s", r)
	require.Equal(t, forced.ID, list[0].ID)
	r = p.run(t, "request", "list", "--state", "failed", "--json")
	requireOK(t, r)
	require.Equal(t, "[]", strings.TrimSpace(r.stdout))
	p.requireAuditIntact(t)
}

func mustArray(t *testing.T, s string) []json.RawMessage {
	t.Helper()
	var out []json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(s), &out), "not a JSON array: %s", s)
	return out
}

// TestPrivacyUnknownSubject checks that a request for a subject lethe never
// saw completes with nothing deleted, and says so.
func TestPrivacyUnknownSubject(t *testing.T) {
	t.Parallel()
	p := newPrivacy(t, true)
	before := dumpShop(t, p.db.Pool)
	versions := listVersions(t, p.bucket)

	req := p.deleteRequest(t, "never-seen 🦄 7", "U-1")
	require.Equal(t, "completed", req.State)
	require.Nil(t, req.Subject)
	rc := req.receipt(t)
	require.False(t, *rc.Found)
	require.Zero(t, *rc.ArchivedCopies)
	require.Empty(t, rc.PartsMadeUnreadable)
	for _, table := range shopTables {
		require.Contains(t, rc.RowsDeleted, table)
		require.Zero(t, rc.RowsDeleted[table])
	}
	require.NotContains(t, string(req.Receipt), "🦄")
	require.Equal(t, before, dumpShop(t, p.db.Pool))
	require.Equal(t, versions, listVersions(t, p.bucket))

	r := p.run(t, "request", "show", "--ticket", "U-1")
	requireOK(t, r)
	require.Contains(t, r.stdout, "state completed")
	require.Contains(t, r.stdout, "nothing was deleted", "%s", r)
	require.NotContains(t, r.stdout, "🦄")
	p.requireAuditIntact(t)
}

// TestPrivacyStatus checks the requests and holds that `lethe status`
// reports, and that a request close to its deadline is flagged.
func TestPrivacyStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPrivacy(t, true)
	before := dumpShop(t, p.db.Pool)
	held := p.richest(before, catGoneRecent)
	second := p.richest(before, catGoneRecent, held)

	requireOK(t, p.run(t, "hold", "place", "--matter", "LIT-9", "--subject", held, "--reason", "suit", "--by", "legal"))
	requireOK(t, p.run(t, "hold", "place", "--matter", "AUDIT-2", "--subject", held, "--subject", second, "--reason", "audit", "--by", "legal"))
	urgent := p.deleteRequest(t, held, "S-1")
	calm := p.deleteRequest(t, held, "S-2")
	require.Equal(t, "blocked_by_hold", urgent.State)
	require.Equal(t, "blocked_by_hold", calm.State)
	done := p.deleteRequest(t, "nobody-at-all", "S-3")
	require.Equal(t, "completed", done.State)
	_, err := p.db.Pool.Exec(ctx, `UPDATE lethe.request SET deadline = now() + interval '3 days' WHERE id = $1`, urgent.ID)
	require.NoError(t, err)
	p.waitHoldsSynced(t)

	r := p.run(t, "status")
	requireOK(t, r)
	t.Logf("$ lethe status\n%s", r.stdout)
	section := func(title string) string {
		t.Helper()
		i := strings.Index(r.stdout, "\n"+title+"\n")
		require.GreaterOrEqual(t, i, 0, "no %s section\n%s", title, r.stdout)
		s := r.stdout[i+len(title)+2:]
		if j := strings.Index(s, "\n\n"); j >= 0 {
			s = s[:j]
		}
		return s
	}
	requests := section("DELETION REQUESTS")
	require.Regexp(t, `(?m)^\s+blocked_by_hold\s+2$`, requests)
	require.Regexp(t, `(?m)^\s+completed\s+1$`, requests)
	holds := section("ACTIVE HOLDS")
	require.Contains(t, holds, "matter LIT-9: 1 subject,")
	require.Contains(t, holds, "matter AUDIT-2: 2 subjects")
	near := section("REQUESTS WITHIN 10 DAYS OF THEIR DEADLINE")
	require.Contains(t, near, fmt.Sprintf("request %d (ticket S-1)", urgent.ID))
	require.NotContains(t, near, "S-2")
	require.NotContains(t, near, "S-3")
	requireNoNeedles(t, p.shop, "lethe status", r.stdout)

	m := p.statusJSON(t)
	var counts []struct {
		State string `json:"state"`
		Count int    `json:"count"`
	}
	require.NoError(t, json.Unmarshal(m["requests"], &counts))
	got := map[string]int{}
	for _, c := range counts {
		got[c.State] = c.Count
	}
	require.Equal(t, map[string]int{"blocked_by_hold": 2, "completed": 1}, got)
	var atRisk []struct {
		ID       int64   `json:"id"`
		Ticket   string  `json:"ticket"`
		State    string  `json:"state"`
		DaysLeft float64 `json:"days_left"`
	}
	require.NoError(t, json.Unmarshal(m["requests_near_deadline"], &atRisk))
	require.Len(t, atRisk, 1, "%s", m["requests_near_deadline"])
	require.Equal(t, urgent.ID, atRisk[0].ID)
	require.Equal(t, "S-1", atRisk[0].Ticket)
	require.Equal(t, "blocked_by_hold", atRisk[0].State)
	require.InDelta(t, 3, atRisk[0].DaysLeft, 0.2)
	var matters []struct {
		Matter   string `json:"matter"`
		Subjects int    `json:"subjects"`
	}
	require.NoError(t, json.Unmarshal(m["holds"], &matters))
	gotHolds := map[string]int{}
	for _, h := range matters {
		gotHolds[h.Matter] = h.Subjects
	}
	require.Equal(t, map[string]int{"LIT-9": 1, "AUDIT-2": 2}, gotHolds)
	require.Equal(t, "[]", string(m["pending_hold_syncs"]))
	require.Equal(t, "[]", string(m["failed_jobs"]), "failed jobs\nworker:\n%s", p.workerOutput())
	p.requireAuditIntact(t)
}

package demo

import (
	"math/big"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

const (
	day  = 24 * time.Hour
	year = 365 * day
)

// Subscriber statuses.
const (
	statusActive   = "active"
	statusFormer   = "former"
	statusProspect = "prospect"
)

// generator makes the rows of one subject at a time. Each subject draws from
// its own random stream, seeded from (Options.Seed, subscriber id), so a
// subject's rows depend on nothing else: not on Subjects, not on the chunk it
// falls in, not on which goroutine made it.
type generator struct {
	allDue bool
	seed   uint64
	now    time.Time
	src    rand.PCG
	r      *rand.Rand
	buf    []byte
}

func newGenerator(seed int64, now time.Time) *generator {
	g := &generator{seed: splitmix64(uint64(seed)), now: now.UTC(), buf: make([]byte, 0, 64)}
	g.r = rand.New(&g.src)
	return g
}

// splitmix64 scrambles a seed so that neighbouring ids start unrelated streams.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// subject appends the rows of subscriber id to b and returns its status.
// Child ids are derived from the parent id (parent*10 + n), so they never
// collide across subscribers, whichever Seed call made them.
func (g *generator) subject(id int64, b *batch) string {
	g.src.Seed(g.seed, splitmix64(uint64(id)))
	now := g.now

	var status string
	switch u := g.r.Float64(); {
	case g.allDue:
		status = statusFormer
	case u < 0.60:
		status = statusActive
	case u < 0.85:
		status = statusFormer
	default:
		status = statusProspect
	}

	var created time.Time
	var closed any // nil, or the time.Time a former subscriber left
	end := now     // when the subscriber's accounts stopped or stop running
	switch status {
	case statusActive:
		created = now.Add(-g.duration(0, 10*year))
	case statusFormer:
		// Draw the closing first so that two thirds close more than two
		// years before now, then a start at least 60 days before it.
		closedAgo := g.duration(day, 6*year)
		if g.allDue {
			closedAgo = g.duration(731*day, 6*year)
		}
		created = now.Add(-g.duration(max(2*year, closedAgo+60*day), 12*year))
		end = now.Add(-closedAgo)
		closed = end
	case statusProspect:
		created = now.Add(-g.duration(0, 2*year))
	}

	gi, fi := g.r.IntN(len(givenNames)), g.r.IntN(len(familyNames))
	area := g.pick(areaCodes)
	state := g.pick(states)
	city := g.pick(cities)
	optIn := g.chance(0.35)
	if status != statusActive {
		optIn = g.chance(0.15)
	}

	b.add(tSubscribers,
		id, status, givenNames[gi], familyNames[fi],
		dateOf(created.Add(-g.duration(18*year, 75*year))),
		g.ssn(), g.email(givenASCII[gi], familyASCII[fi]), g.phone(area),
		created, closed, optIn,
	)

	b.add(tAddresses, id*10, id, "billing", g.street(), city, state, g.postalCode())
	if status != statusProspect && g.chance(0.2) {
		b.add(tAddresses, id*10+1, id, "service", g.street(), city, state, g.postalCode())
	}

	if status == statusProspect || g.chance(0.9) {
		g.identityDocument(id, state, b)
	}

	if status == statusProspect {
		g.prospectCreditChecks(id, created, b)
		return status
	}
	if g.chance(0.8) {
		checked := created.Add(-g.duration(0, 2*day))
		score := 620 + g.r.IntN(231)
		decision := "approved"
		if score < 660 {
			decision = "review"
		}
		b.add(tCreditChecks, id*10, id, g.pick(bureaus), int32(score), decision, checked, g.report(score))
	}

	accounts := 1
	if g.chance(0.12) {
		accounts = 2
	}
	for a := range int64(accounts) {
		accountID := id*10 + a
		opened := created
		if a > 0 {
			opened = created.Add(g.duration(0, end.Sub(created)))
		}
		var accountClosed any
		accountEnd := now
		if status == statusFormer {
			accountClosed, accountEnd = end, end
		} else if a > 0 && g.chance(0.25) {
			accountEnd = opened.Add(g.duration(0, now.Sub(opened)))
			accountClosed = accountEnd
		}
		b.add(tAccounts, accountID, id, g.accountNumber(), g.pick(plans), g.balance(status), opened, accountClosed)

		lines := 1
		if g.chance(0.3) {
			lines = 2
		}
		for l := range int64(lines) {
			activated := opened.Add(g.duration(0, 2*day))
			if activated.After(accountEnd) {
				activated = accountEnd
			}
			b.add(tLines, accountID*10+l, accountID, g.msisdn(), g.imei(), g.imsi(), g.pick(devices),
				activated, accountClosed)
		}
	}
	return status
}

func (g *generator) identityDocument(id int64, state string, b *batch) {
	kind, prefix, digits, issuer := "drivers_license", "DEMO-DL-", 8, state
	switch u := g.r.Float64(); {
	case u < 0.15:
		kind, prefix, digits, issuer = "passport", "DEMO-PP-", 9, "US"
	case u < 0.30:
		kind, prefix, digits = "state_id", "DEMO-ID-", 8
	}
	expires := dateOf(g.now.Add(g.duration(0, 10*year) - 2*year))
	b.add(tIdentityDocuments, id*10, id, kind, g.digits(prefix, digits), issuer, expires)
}

// prospectCreditChecks adds the credit check a prospect applied with, minutes
// after it was created, and sometimes a second one weeks later.
func (g *generator) prospectCreditChecks(id int64, created time.Time, b *batch) {
	checked := g.notAfterNow(created.Add(g.duration(0, 10*time.Minute)))
	checks := 1
	if g.chance(0.2) {
		checks = 2
	}
	for k := range int64(checks) {
		if k > 0 {
			checked = g.notAfterNow(checked.Add(g.duration(day, 45*day)))
		}
		score := 300 + g.r.IntN(461) // 300..760: prospects skew low
		decision := "approved"
		switch {
		case score < 580:
			decision = "declined"
		case score < 660:
			decision = "review"
		}
		b.add(tCreditChecks, id*10+k, id, g.pick(bureaus), int32(score), decision, checked, g.report(score))
	}
}

func (g *generator) notAfterNow(t time.Time) time.Time {
	if t.After(g.now) {
		return g.now
	}
	return t
}

// duration returns a uniformly drawn duration in [lo, hi], in whole seconds.
func (g *generator) duration(lo, hi time.Duration) time.Duration {
	span := int64((hi - lo) / time.Second)
	if span <= 0 {
		return lo
	}
	return lo + time.Duration(g.r.Int64N(span+1))*time.Second
}

func (g *generator) chance(p float64) bool { return g.r.Float64() < p }

func (g *generator) pick(list []string) string { return list[g.r.IntN(len(list))] }

// appendDigits appends n random decimal digits to g.buf.
func (g *generator) appendDigits(n int) {
	for range n {
		g.buf = append(g.buf, byte('0'+g.r.IntN(10)))
	}
}

// digits returns prefix followed by n random decimal digits.
func (g *generator) digits(prefix string, n int) string {
	g.buf = append(g.buf[:0], prefix...)
	g.appendDigits(n)
	return string(g.buf)
}

// ssn returns a social security number in the 900-999 area, which the SSA
// never issues.
func (g *generator) ssn() string {
	g.buf = strconv.AppendInt(g.buf[:0], int64(900+g.r.IntN(100)), 10)
	g.buf = append(g.buf, '-')
	g.buf = appendPadded(g.buf, 1+g.r.IntN(99), 2)
	g.buf = append(g.buf, '-')
	g.buf = appendPadded(g.buf, 1+g.r.IntN(9999), 4)
	return string(g.buf)
}

// email returns an address at example.com, .net or .org (RFC 2606).
func (g *generator) email(given, family string) string {
	g.buf = append(g.buf[:0], given...)
	g.buf = append(g.buf, '.')
	g.buf = append(g.buf, family...)
	g.buf = strconv.AppendInt(g.buf, int64(1+g.r.IntN(9999)), 10)
	g.buf = append(g.buf, '@')
	g.buf = append(g.buf, g.pick(emailDomains)...)
	return string(g.buf)
}

// phone returns +1-AAA-555-01XX, a number in the range reserved for fiction.
func (g *generator) phone(area string) string {
	g.buf = append(g.buf[:0], "+1-"...)
	g.buf = append(g.buf, area...)
	g.buf = append(g.buf, "-555-01"...)
	g.appendDigits(2)
	return string(g.buf)
}

// msisdn returns a line's number as E.164 digits, 1AAA55501XX.
func (g *generator) msisdn() string {
	g.buf = append(g.buf[:0], '1')
	g.buf = append(g.buf, g.pick(areaCodes)...)
	g.buf = append(g.buf, "55501"...)
	g.appendDigits(2)
	return string(g.buf)
}

// imei returns 15 digits whose last is the Luhn check digit of the first 14.
// They start with 00, which marks them as demo devices at a glance.
func (g *generator) imei() string {
	g.buf = append(g.buf[:0], "00"...)
	g.appendDigits(12)
	g.buf = append(g.buf, luhnDigit(g.buf))
	return string(g.buf)
}

// imsi returns 15 digits starting with the United States country code 310.
func (g *generator) imsi() string {
	return g.digits("310", 12)
}

func (g *generator) street() string {
	g.buf = strconv.AppendInt(g.buf[:0], int64(1+g.r.IntN(9999)), 10)
	g.buf = append(g.buf, ' ')
	g.buf = append(g.buf, g.pick(streetStems)...)
	g.buf = append(g.buf, ' ')
	g.buf = append(g.buf, g.pick(streetSuffixes)...)
	return string(g.buf)
}

// postalCode returns a ZIP code in the unassigned 000xx range.
func (g *generator) postalCode() string { return g.digits("000", 2) }

func (g *generator) accountNumber() string { return g.digits("DA", 10) }

// balance returns what the account owes: mostly a current bill for active
// subscribers, mostly nothing (sometimes a debt in collection) for former ones.
func (g *generator) balance(status string) pgtype.Numeric {
	var cents int64
	switch {
	case status == statusActive && g.chance(0.7):
		cents = 2000 + g.r.Int64N(23000)
	case status == statusFormer && g.chance(0.15):
		cents = 1000 + g.r.Int64N(49000)
	}
	return pgtype.Numeric{Int: big.NewInt(cents), Exp: -2, Valid: true}
}

// report returns a small synthetic credit report as JSON text.
func (g *generator) report(score int) string {
	b := append(g.buf[:0], `{"ref": "SYN-`...)
	for range 10 {
		b = append(b, byte('0'+g.r.IntN(10)))
	}
	b = append(b, `", "model": "DemoScore 2"`...)
	b = append(b, `, "score": `...)
	b = strconv.AppendInt(b, int64(score), 10)
	b = append(b, `, "tradelines": `...)
	b = strconv.AppendInt(b, int64(g.r.IntN(25)), 10)
	b = append(b, `, "inquiries_6m": `...)
	b = strconv.AppendInt(b, int64(g.r.IntN(6)), 10)
	b = append(b, `, "delinquencies_24m": `...)
	b = strconv.AppendInt(b, int64(g.r.IntN(4)), 10)
	b = append(b, `, "utilization_pct": `...)
	b = strconv.AppendInt(b, int64(g.r.IntN(101)), 10)
	b = append(b, `, "synthetic": true}`...)
	g.buf = b
	return string(b)
}

// luhnDigit returns the Luhn check digit for the decimal digits in payload.
func luhnDigit(payload []byte) byte {
	sum := 0
	for i := len(payload) - 1; i >= 0; i -= 2 { // double every other digit, from the right
		d := int(payload[i]-'0') * 2
		if d > 9 {
			d -= 9
		}
		sum += d
	}
	for i := len(payload) - 2; i >= 0; i -= 2 {
		sum += int(payload[i] - '0')
	}
	return byte('0' + (10-sum%10)%10)
}

func appendPadded(b []byte, n, width int) []byte {
	s := strconv.Itoa(n)
	for range width - len(s) {
		b = append(b, '0')
	}
	return append(b, s...)
}

// dateOf returns t's calendar day in UTC, at midnight.
func dateOf(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

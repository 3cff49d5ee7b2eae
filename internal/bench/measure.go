package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lethehq/lethe/archive"
	"github.com/lethehq/lethe/internal/demo"
	"github.com/lethehq/lethe/request"
	"github.com/lethehq/lethe/retention"
)

// rawDB measures the database half alone: on a second scratch schema, what a
// batch does in the database (the graph read in one snapshot, the root
// locks, the deletes, the manifest entries and their wrapped keys), with the
// same concurrency and batch size, and no encryption or object store.
func (b *run) rawDB(ctx context.Context) error {
	n := min(b.opts.Subjects, 50000)
	b.opts.Progress("measuring the database alone: read and delete %d subjects", n)
	if _, err := demo.Seed(ctx, b.pool, demo.Options{Schema: b.rawSchema, Subjects: n, AllDue: true}); err != nil {
		return fmt.Errorf("error seeding: %w", err)
	}
	if err := analyze(ctx, b.pool, b.rawSchema); err != nil {
		return err
	}
	subject, policies, requests := demo.Graph(b.rawSchema, PolicyName)
	rcfg, err := b.cfg.WithGraph(subject, policies, requests)
	if err != nil {
		return err
	}
	plan, err := retention.Compile(ctx, b.pool, rcfg)
	if err != nil {
		return err
	}
	pp := plan.Policy(PolicyName)
	batch := rcfg.Archive.BatchSize
	// A wrapped key is an age file to the masters: random bytes of its size
	// stand in for one.
	wrapped := make([]byte, wrappedKeySize(len(rcfg.Archive.ParsedRecipients)))
	_, _ = rand.Read(wrapped)
	start := time.Now()
	var mu sync.Mutex
	done := 0
	pages := (n + batch - 1) / batch
	err = each(ctx, pages, rcfg.Worker.Concurrency*b.opts.Workers, func(p int) error {
		page := make([]string, 0, batch)
		for id := p*batch + 1; id <= min((p+1)*batch, n); id++ {
			page = append(page, strconv.Itoa(id))
		}
		k, err := b.readAndDelete(ctx, plan, pp, page, wrapped)
		mu.Lock()
		done += k
		mu.Unlock()
		return err
	})
	if err != nil {
		return err
	}
	if done != n {
		return fmt.Errorf("the database measure deleted %d subjects of %d", done, n)
	}
	b.res.RawDBPerSec = float64(done) / time.Since(start).Seconds()
	return nil
}

// readAndDelete is a batch's database work for keys: the graph read in one
// snapshot, then, in one transaction, the root locks, the deletes (children
// first), and a manifest entry with its wrapped key per subject, in a
// segment recorded for the measure. It returns how many subjects were due
// and deleted.
func (b *run) readAndDelete(ctx context.Context, plan *retention.Plan, pp *retention.PolicyPlan, keys []string, wrapped []byte) (int, error) {
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("error acquiring connection: %w", err)
	}
	defer conn.Release()
	var due []string
	err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		graphs, err := pp.Kind.ReadGraph(ctx, tx, pp, keys, time.Now())
		for _, g := range graphs {
			due = append(due, g.Key)
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	hmacs := make([]string, len(due))
	for i, k := range due {
		hmacs[i] = pp.Kind.HMAC(k)
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := pp.Kind.LockRoots(ctx, tx, due); err != nil {
			return err
		}
		if _, _, err := pp.Kind.DeleteGraph(ctx, tx, due, nil); err != nil {
			return err
		}
		var seg int64
		if err := tx.QueryRow(ctx, `INSERT INTO lethe.segment (name, size, sha256, lock_mode) VALUES ($1, 0, '', 'none') RETURNING id`,
			b.prefix+"raw-db/"+randomHex(8)).Scan(&seg); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
			INSERT INTO lethe.manifest (subject_hmac, state, policy, archived_at, segment_id, part_offset, part_length, part_sha256, wrapped_key, wrapped_to)
			SELECT h, 'archived', $2, now(), $3, 0, 1, '', $4, '' FROM unnest($1::text[]) AS h`, hmacs, rawDBPolicy, seg, wrapped)
		return err
	})
	return len(due), err
}

// rawDBPolicy is the policy of the manifest entries the database measure
// writes, which cleanup removes.
const rawDBPolicy = "bench-raw-db"

// wrappedKeySize is the size of an age file of an X25519 identity (74
// bytes) encrypted to masters X25519 recipients.
func wrappedKeySize(masters int) int {
	const header, stanza, identity = 90, 120, 74 + 16 + 24
	return header + masters*stanza + identity
}

// rawPut measures the object store alone: plain puts of objects of the
// mean segment's size, as the pipeline puts segments (the same client,
// checksum, echo check and If-None-Match, no Object Lock), as many in flight
// as the pipeline keeps.
func (b *run) rawPut(ctx context.Context) error {
	size := max(b.res.MeanObjectSize, 1)
	inflight := b.cfg.Worker.Concurrency * b.opts.Workers
	n := max(4*inflight, min(b.res.Segments, 64))
	b.opts.Progress("measuring the object store alone: %d puts of %d bytes, %d in flight", n, size, inflight)
	store, err := b.app.Store(ctx, false)
	if err != nil {
		return err
	}
	body := make([]byte, size)
	_, _ = rand.Read(body)
	// The same put as a segment's: its checksum, If-None-Match and lock, a
	// day's retention like the bench's segments.
	lock := archive.Lock{Mode: b.cfg.Archive.LockMode, RetainUntil: time.Now().Add(24 * time.Hour)}
	start := time.Now()
	err = each(ctx, n, inflight, func(i int) error {
		_, err := store.Put(ctx, store.Prefix()+"raw-put/"+randomHex(8), body, lock)
		return err
	})
	if err != nil {
		return err
	}
	took := time.Since(start).Seconds()
	b.res.RawPutPerSec = float64(n) / took
	b.res.RawPutBytesPerSec = float64(n) * float64(size) / took
	return nil
}

// requests queues deletion requests for archived subjects, then measures
// how fast the workers carry them out: the erasure's own rate, from a full
// queue. How fast the requests were queued (eight clients at once, as the
// API and scripts would) is reported apart.
func (b *run) requests(ctx context.Context) error {
	n := min(b.opts.Requests, b.opts.Subjects)
	if n <= 0 {
		return nil
	}
	b.opts.Progress("queueing %d deletion requests", n)
	svc, client, err := b.app.Working(ctx, nil, false)
	if err != nil {
		return err
	}
	queued := time.Now()
	err = each(ctx, n, 8, func(i int) error {
		_, _, err := svc.Intake.Submit(ctx, request.Submission{Key: strconv.Itoa(i + 1), Ticket: b.ticket(i + 1), By: "lethe bench"})
		return err
	})
	if err != nil {
		return err
	}
	b.res.RequestIntakePerSec = float64(n) / time.Since(queued).Seconds()
	stopProfile, err := b.profile(b.opts.CPUProfile + ".requests")
	if err != nil {
		return err
	}
	defer stopProfile()
	start := time.Now()
	if err := client.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	defer stopClient(client)
	for {
		var open, failed int
		err := b.pool.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE state IN ($2, $3, $4)), count(*) FILTER (WHERE state IN ($5, $6))
			FROM lethe.request WHERE ticket LIKE $1`, b.ticket(-1), request.StateReceived, request.StateProcessing,
			request.StateBlockedByHold, request.StateFailed, request.StateRejected).Scan(&open, &failed)
		if err != nil {
			return fmt.Errorf("error reading requests: %w", err)
		}
		if failed > 0 {
			return fmt.Errorf("%d bench deletion requests failed: see lethe request list --state failed", failed)
		}
		if open == 0 {
			break
		}
		b.opts.Progress("deletion requests: %d of %d open", open, n)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	b.res.Requests = n
	b.res.RequestsPerSec = float64(n) / time.Since(start).Seconds()
	return nil
}

// ticket is the ticket of the bench's ith request; -1 gives the LIKE
// pattern of all of them.
func (b *run) ticket(i int) string {
	if i < 0 {
		return "bench-" + b.id + "-%"
	}
	return fmt.Sprintf("bench-%s-%d", b.id, i)
}

// each runs fn(i) for every i from 0 to n-1, workers at a time, and returns
// the first error; after one, it starts no more.
func each(ctx context.Context, n, workers int, fn func(i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
	wg.Wait()
	return first
}

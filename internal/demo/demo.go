// Package demo owns the demo data set: a telecom carrier's customer tables
// (subscribers, their accounts and lines, addresses, identity documents and
// credit checks) filled with synthetic customers for the demo, tests and
// benchmarks. It never holds or produces real data.
//
// Every value is made up and recognisable as such: social security numbers
// are in the 900-999 area the SSA never issues, phone numbers are in the
// fictional 555-01XX range, e-mail addresses are at example.com, .net and
// .org, streets and cities are invented, and document numbers start with
// DEMO-. The data is deterministic: the same Options give the same rows.
package demo

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const (
	// chunkSize is how many subjects Seed generates and copies per
	// transaction; it bounds the memory Seed uses, whatever Subjects is.
	chunkSize = 5000
	// progressEvery is roughly how many subjects pass between Progress calls.
	progressEvery = 10000
	// maxWorkers caps how many chunks Seed copies at the same time.
	maxWorkers = 4
	// maxSubscriberID keeps the derived child ids (up to id*100+99) in an int64.
	maxSubscriberID = (1<<63 - 1) / 100
)

// Options for Seed. The zero value seeds 10,000 subjects into schema "demo".
type Options struct {
	// Schema is the PostgreSQL schema to create and fill. Default "demo".
	Schema string

	// Subjects is how many subscribers to create. Default 10000.
	Subjects int

	// Seed seeds the random generator. The same Seed, Now and ids give the
	// same rows. Default (and for 0) 1.
	Seed int64

	// Now is the instant the generated dates are relative to. Default
	// time.Now(); set it for reproducible data.
	Now time.Time

	// FirstID is the first subscriber id; Seed creates FirstID through
	// FirstID+Subjects-1. A later call with a range that does not overlap
	// adds subjects without colliding. Default 1.
	FirstID int64

	// Progress, if set, is called about every 10,000 subjects and once at the
	// end, one call at a time, with done increasing up to total.
	Progress func(done, total int)

	// AllDue makes every subscriber a former customer who left more than
	// 730 days before Now, so that the demo config archives all of them:
	// what a benchmark wants.
	AllDue bool
}

// withDefaults returns opts with the defaults applied.
func (opts Options) withDefaults() Options {
	if opts.Schema == "" {
		opts.Schema = "demo"
	}
	if opts.Subjects == 0 {
		opts.Subjects = 10000
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.FirstID == 0 {
		opts.FirstID = 1
	}
	return opts
}

// validate checks opts after withDefaults and names the field at fault.
func (opts Options) validate() error {
	switch {
	case opts.Subjects < 0:
		return fmt.Errorf("demo: Subjects must not be negative, got %d", opts.Subjects)
	case opts.FirstID < 0:
		return fmt.Errorf("demo: FirstID must be positive, got %d", opts.FirstID)
	case opts.FirstID > maxSubscriberID-int64(opts.Subjects)+1:
		return fmt.Errorf("demo: FirstID+Subjects-1 must not exceed %d", int64(maxSubscriberID))
	}
	return nil
}

// Stats says what Seed inserted.
type Stats struct {
	// Subjects is the number of subscribers inserted: Active+Former+Prospects.
	Subjects int
	// Active, Former and Prospects count the subscribers by status.
	Active, Former, Prospects int
	// Rows maps each table name (unqualified, as in Tables) to the rows inserted.
	Rows map[string]int64
}

func (s *Stats) add(b *batch) {
	s.Subjects += b.active + b.former + b.prospects
	s.Active += b.active
	s.Former += b.former
	s.Prospects += b.prospects
	for i, t := range tables {
		s.Rows[t.name] += int64(len(b.rows[i]))
	}
}

// Seed creates the schema if needed and inserts opts.Subjects synthetic
// subjects with COPY, a chunk of subjects per transaction, several chunks at
// a time. Memory use does not grow with Subjects. If Seed fails part way, the
// chunks already committed stay and the returned Stats count them; drop the
// schema and seed again.
func Seed(ctx context.Context, db *pgxpool.Pool, opts Options) (*Stats, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("error seeding demo data: %w", err)
	}
	if err := CreateSchema(ctx, db, opts.Schema); err != nil {
		return nil, fmt.Errorf("error seeding demo data: %w", err)
	}

	chunks := (opts.Subjects + chunkSize - 1) / chunkSize
	workers := min(maxWorkers, runtime.GOMAXPROCS(0), int(db.Config().MaxConns), chunks)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var (
		mu       sync.Mutex
		next     int // next chunk to take
		done     int // subjects committed
		reported int // done at the last Progress call
		stats    = &Stats{Rows: make(map[string]int64, len(tables))}
		wg       sync.WaitGroup
	)
	for _, t := range tables {
		stats.Rows[t.name] = 0
	}
	for range workers {
		wg.Go(func() {
			g := newGenerator(opts.Seed, opts.Now)
			g.allDue = opts.AllDue
			b := new(batch)
			for ctx.Err() == nil {
				mu.Lock()
				chunk := next
				next++
				mu.Unlock()
				if chunk >= chunks {
					return
				}
				first := opts.FirstID + int64(chunk)*chunkSize
				n := min(chunkSize, opts.Subjects-chunk*chunkSize)
				b.reset()
				for id := first; id < first+int64(n); id++ {
					b.count(g.subject(id, b))
				}
				if err := b.copy(ctx, db, opts.Schema); err != nil {
					cancel(fmt.Errorf("error copying subjects %d to %d: %w", first, first+int64(n)-1, err))
					return
				}
				mu.Lock()
				stats.add(b)
				done += n
				if opts.Progress != nil && (done-reported >= progressEvery || done == opts.Subjects) {
					reported = done
					opts.Progress(done, opts.Subjects)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return stats, fmt.Errorf("error seeding demo data: %w", err)
	}
	return stats, nil
}

// batch holds the rows of one chunk of subjects, table by table. Its slices
// are reused from chunk to chunk.
type batch struct {
	rows                      [numTables][][]any
	active, former, prospects int
}

func (b *batch) reset() {
	for i := range b.rows {
		b.rows[i] = b.rows[i][:0]
	}
	b.active, b.former, b.prospects = 0, 0, 0
}

func (b *batch) count(status string) {
	switch status {
	case statusActive:
		b.active++
	case statusFormer:
		b.former++
	case statusProspect:
		b.prospects++
	}
}

// add appends a row to table t, reusing a row slice left by an earlier chunk.
func (b *batch) add(t int, values ...any) {
	rows := b.rows[t]
	if n := len(rows); n < cap(rows) && rows[:n+1][n] != nil {
		rows = rows[:n+1]
		copy(rows[n], values)
	} else {
		rows = append(rows, append(make([]any, 0, len(values)), values...))
	}
	b.rows[t] = rows
}

// copy inserts the batch in one transaction, parents before children.
func (b *batch) copy(ctx context.Context, db *pgxpool.Pool, schema string) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		for i, t := range tables {
			n, err := tx.CopyFrom(ctx, pgx.Identifier{schema, t.name}, t.columns, pgx.CopyFromRows(b.rows[i]))
			if err != nil {
				return fmt.Errorf("error copying into %s: %w", t.name, err)
			}
			if n != int64(len(b.rows[i])) {
				return fmt.Errorf("error copying into %s: copied %d rows of %d", t.name, n, len(b.rows[i]))
			}
		}
		return nil
	})
}

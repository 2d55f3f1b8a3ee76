// Package workload owns the simulated application used by the demo, the
// tests and the benchmarks: a writer on the article's users table that
// inserts and updates rows the way the application version of the moment
// would (v1 writes full_name only; v2 writes full_name and the derived
// first_name/last_name too).
package workload

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Version is the application version whose writes the writer imitates.
type Version int32

// Application versions.
const (
	V1      Version = 1 // before the migration: full_name only
	V2      Version = 2 // during the window: full_name, first_name, last_name
	Retired Version = 0 // writes nothing
)

var firstNames = []string{"Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Leslie"}
var lastNames = []string{"Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman", "Lamport"}

// CreateUsers creates the article's users table with n rows.
func CreateUsers(ctx context.Context, pool *pgxpool.Pool, n int) error {
	_, err := pool.Exec(ctx, fmt.Sprintf(`
		CREATE TABLE users (
			id bigserial PRIMARY KEY,
			full_name text NOT NULL,
			email text NOT NULL,
			created_at timestamptz NOT NULL DEFAULT now()
		);
		INSERT INTO users (full_name, email)
		SELECT (ARRAY['Ada','Alan','Grace','Edsger','Barbara','Donald','Frances','Ken','Radia','Leslie'])[1 + i %% 10]
		       || ' ' || (ARRAY['Lovelace','Turing','Hopper','Dijkstra','Liskov','Knuth','Allen','Thompson','Perlman','Lamport'])[1 + (i / 10) %% 10]
		       || CASE WHEN i %% 7 = 0 THEN ' Jr' ELSE '' END,
		       'user' || i || '@example.com'
		FROM generate_series(1, %d) AS i;
		ANALYZE users;`, n))
	return err
}

// Stats summarises what the writer did.
type Stats struct {
	Inserts, Updates, Errors int64
	P50, P99, Max            time.Duration
	LastErr                  error
}

// Writer plays the application.
type Writer struct {
	pool    *pgxpool.Pool
	rate    int // operations per second per worker; 0 = as fast as possible
	workers int

	version atomic.Int32
	mu      sync.Mutex
	lat     []time.Duration
	stats   Stats
	maxID   atomic.Int64

	switchMu sync.RWMutex // held for reading by an operation, for writing by SetVersion
}

// NewWriter returns a writer doing about rate operations per second with
// the given number of concurrent connections.
func NewWriter(pool *pgxpool.Pool, rate, workers int, v Version) *Writer {
	w := &Writer{pool: pool, rate: rate, workers: max(workers, 1)}
	w.version.Store(int32(v))
	return w
}

// SetVersion switches the application version. It returns once no
// operation of the previous version is in flight, so a caller can rely on
// every later write being of the new version.
func (w *Writer) SetVersion(v Version) {
	w.switchMu.Lock()
	w.version.Store(int32(v))
	w.switchMu.Unlock()
}

// Run writes until ctx is done.
func (w *Writer) Run(ctx context.Context) {
	var maxID int64
	if err := w.pool.QueryRow(ctx, "SELECT coalesce(max(id), 1) FROM users").Scan(&maxID); err != nil {
		w.mu.Lock()
		w.stats.Errors++
		w.stats.LastErr = err
		w.mu.Unlock()
		return
	}
	w.maxID.Store(maxID)
	var wg sync.WaitGroup
	for i := 0; i < w.workers; i++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			w.loop(ctx, rand.New(rand.NewPCG(seed, seed*7+1)))
		}(uint64(i + 1))
	}
	wg.Wait()
}

func (w *Writer) loop(ctx context.Context, rng *rand.Rand) {
	var tick *time.Ticker
	if w.rate > 0 {
		tick = time.NewTicker(time.Second / time.Duration(w.rate))
		defer tick.Stop()
	}
	for ctx.Err() == nil {
		if tick != nil {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		w.once(ctx, rng)
	}
}

func (w *Writer) once(ctx context.Context, rng *rand.Rand) {
	w.switchMu.RLock()
	defer w.switchMu.RUnlock()
	v := Version(w.version.Load())
	if v == Retired {
		return
	}
	name := firstNames[rng.IntN(len(firstNames))] + " " + lastNames[rng.IntN(len(lastNames))]
	if rng.IntN(5) == 0 {
		name += " " + lastNames[rng.IntN(len(lastNames))]
	}
	insert := rng.IntN(3) == 0
	start := time.Now()
	var err error
	switch {
	case insert && v == V1:
		var id int64
		err = w.pool.QueryRow(ctx, "INSERT INTO users (full_name, email) VALUES ($1, $2) RETURNING id", name, "app@example.com").Scan(&id)
		w.bumpMax(id)
	case insert:
		var id int64
		err = w.pool.QueryRow(ctx, `INSERT INTO users (full_name, email, first_name, last_name)
			VALUES ($1, $2, split_part($1, ' ', 1), substring($1 from position(' ' in $1) + 1)) RETURNING id`, name, "app@example.com").Scan(&id)
		w.bumpMax(id)
	case v == V1:
		_, err = w.pool.Exec(ctx, "UPDATE users SET full_name = $2 WHERE id = $1", 1+rng.Int64N(w.maxID.Load()), name)
	default:
		_, err = w.pool.Exec(ctx, `UPDATE users SET full_name = $2, first_name = split_part($2, ' ', 1),
			last_name = substring($2 from position(' ' in $2) + 1) WHERE id = $1`, 1+rng.Int64N(w.maxID.Load()), name)
	}
	d := time.Since(start)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if !errors.Is(err, context.Canceled) && ctx.Err() == nil {
			w.stats.Errors++
			w.stats.LastErr = err
		}
		return
	}
	if insert {
		w.stats.Inserts++
	} else {
		w.stats.Updates++
	}
	w.lat = append(w.lat, d)
}

func (w *Writer) bumpMax(id int64) {
	for {
		cur := w.maxID.Load()
		if id <= cur || w.maxID.CompareAndSwap(cur, id) {
			return
		}
	}
}

// Mark returns a position in the writer's record of operations, for
// StatsRange.
func (w *Writer) Mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.lat)
}

// Stats returns the counts and latency percentiles so far.
func (w *Writer) Stats() Stats { return w.StatsRange(0, -1) }

// StatsRange returns the latency percentiles of the successful operations
// between two marks (to < 0: up to now); counts are those of the whole run.
func (w *Writer) StatsRange(from, to int) Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	if to < 0 || to > len(w.lat) {
		to = len(w.lat)
	}
	if to > from {
		l := append([]time.Duration(nil), w.lat[from:to]...)
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		s.P50 = l[len(l)/2]
		s.P99 = l[min(len(l)-1, len(l)*99/100)]
		s.Max = l[len(l)-1]
	}
	return s
}

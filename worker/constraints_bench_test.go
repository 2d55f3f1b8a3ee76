package worker_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/ddl"
	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/throttle"
	"github.com/refit-dev/refit/worker"
)

// BenchmarkConstraintsUnderWriter adds a CHECK, a foreign key and a unique
// constraint to a 1M-row table (and its 1M-row child) while an application
// writes about 500 transactions a second on its own pool, and reports what
// the application paid: the max and p99 latency of its transactions during
// the migration, and the longest wait of any of its sessions on a lock that
// a refit session held or queued ahead of it for (pg_locks.waitstart and
// pg_blocking_pids, sampled every 10 ms). refit runs with lock_timeout 1s.
//
//	go test ./worker/ -run '^$' -bench BenchmarkConstraintsUnderWriter -benchtime 1x -timeout 20m
func BenchmarkConstraintsUnderWriter(b *testing.B) {
	const rows = 1_000_000
	ctx := context.Background()
	for range b.N {
		b.StopTimer()
		dsn := pgtest.NewDB(b)
		pool, err := worker.Connect(ctx, dsn, 10)
		if err != nil {
			b.Fatal(err)
		}
		setup := time.Now()
		for _, sql := range []string{
			`CREATE TABLE items (id bigint PRIMARY KEY, sku text NOT NULL, price numeric NOT NULL)`,
			fmt.Sprintf(`INSERT INTO items SELECT i, 'sku-' || i, i %% 1000 FROM generate_series(1, %d) i`, rows),
			`CREATE TABLE item_events (id bigint PRIMARY KEY, item_id bigint, kind text NOT NULL)`,
			fmt.Sprintf(`INSERT INTO item_events SELECT i, 1 + (i::bigint * 7919) %% %d, 'k' || i %% 5 FROM generate_series(1, %d) i`, rows, rows),
			`VACUUM ANALYZE items`, `VACUUM ANALYZE item_events`,
		} {
			if _, err := pool.Exec(ctx, sql); err != nil {
				b.Fatalf("%s: %v", sql, err)
			}
		}
		b.Logf("built %d items and %d item_events in %s", rows, rows, time.Since(setup).Round(time.Millisecond))

		m, err := migration.Parse("bench.yaml", []byte(`name: bench_constraints
operations:
  - add_check: {table: items, name: items_price_nonneg, expression: "price >= 0"}
  - add_foreign_key: {table: item_events, name: item_events_item_fk, columns: [item_id], references: {table: items, columns: [id]}}
  - add_unique: {table: items, name: items_sku_key, columns: [sku]}
`))
		if err != nil {
			b.Fatal(err)
		}
		r := benchRunner(b, pool)
		phases := map[state.Phase]time.Time{}
		var phaseMu sync.Mutex
		r.OnPhase = func(_ *state.Job, ph state.Phase) {
			phaseMu.Lock()
			defer phaseMu.Unlock()
			if _, ok := phases[ph]; !ok {
				phases[ph] = time.Now()
			}
		}

		app := startBenchWriter(b, dsn, rows, 500)
		waits := startLockSampler(b, dsn, 10*time.Millisecond)
		time.Sleep(2 * time.Second) // the writer's steady state before refit starts
		app.mark()

		start := time.Now()
		_, elapsed := runBenchMigration(b, r, m)

		time.Sleep(500 * time.Millisecond)
		lat, worst, appErr := app.stop()
		longest, blocked := waits.stop()
		pool.Close()
		if appErr != nil {
			b.Fatalf("the application saw an error: %v", appErr)
		}
		if len(lat) == 0 {
			b.Fatal("the application wrote nothing during the migration")
		}
		slices.Sort(lat)
		p99 := lat[min(len(lat)-1, len(lat)*99/100)]
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		b.ReportMetric(ms(lat[len(lat)-1]), "writer-max-ms")
		b.ReportMetric(ms(p99), "writer-p99-ms")
		b.ReportMetric(ms(lat[len(lat)/2]), "writer-p50-ms")
		b.ReportMetric(ms(longest), "lock-wait-max-ms")
		b.ReportMetric(elapsed.Seconds(), "migration-s")
		b.ReportMetric(float64(len(lat))/(elapsed.Seconds()+0.5), "writes/s")
		b.Logf("migration %s; %d application transactions during it (p50 %s, p99 %s, max %s); %d lock waits behind refit sessions, longest %s; ddl retries %d",
			elapsed.Round(time.Millisecond), len(lat), lat[len(lat)/2], p99, lat[len(lat)-1], blocked, longest, r.DDL.Retries())
		phaseMu.Lock()
		in := "validation (submit)"
		for _, ph := range []state.Phase{state.PhaseExpanding, state.PhaseBackfilling, state.PhaseSyncing, state.PhaseContracting} {
			if at, ok := phases[ph]; ok {
				b.Logf("  %-12s from %s", ph, at.Sub(start).Round(time.Millisecond))
				if !worst.Before(at) {
					in = ph.String()
				}
			}
		}
		phaseMu.Unlock()
		b.Logf("the slowest application transaction started %s after refit did, while %s", worst.Sub(start).Round(time.Millisecond), in)
	}
}

// benchRunner is refit's runner of the benchmarks: default settings,
// lock_timeout 1s, the gate polled every 100 ms, no log.
func benchRunner(b *testing.B, pool *pgxpool.Pool) *worker.Runner {
	b.Helper()
	store, err := state.Open(context.Background(), pool)
	if err != nil {
		b.Fatal(err)
	}
	log := zap.NewNop()
	cfg := ddl.DefaultConfig()
	cfg.LockTimeout = time.Second
	return &worker.Runner{Pool: pool, Store: store, DDL: ddl.New(pool, cfg, log), Backfill: backfill.DefaultConfig(),
		Replication: replication.DefaultConfig(), Throttle: throttle.DefaultConfig(), Log: log, Actor: "bench",
		GatePoll: 100 * time.Millisecond}
}

// runBenchMigration submits m (contract now) and runs it to completion,
// timed (the benchmark's timer runs only meanwhile); it returns the job's
// id and the time it took.
func runBenchMigration(b *testing.B, r *worker.Runner, m *migration.Migration) (int64, time.Duration) {
	b.Helper()
	ctx := context.Background()
	b.StartTimer()
	start := time.Now()
	sub, err := worker.Submit(ctx, r.Pool, m, migration.ContractNow, "bench")
	if err != nil {
		b.Fatal(err)
	}
	out, err := r.Run(ctx, sub.Job.ID)
	if err != nil || out != worker.OutcomeCompleted {
		b.Fatalf("migration: %v %v", out, err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	return sub.Job.ID, elapsed
}

// benchWriter is the application of the benchmark: an open-loop writer
// that starts a transaction every 1/rate seconds whether or not earlier
// ones have finished (so a blocked statement does not slow the arrivals),
// on its own pool, and records each one's latency (waiting for a
// connection included).
type benchWriter struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	lat    []time.Duration
	at     []time.Time // when each recorded transaction started
	worst  time.Time   // when the slowest recorded transaction started
	worstD time.Duration
	from   time.Time
	err    error
	seq    atomic.Int64
}

// benchStmt is one kind of transaction of a benchWriter: its statement
// and its arguments from a random existing id and a new one.
type benchStmt struct {
	sql  string
	args func(id, next int64) []any
}

func startBenchWriter(b *testing.B, dsn string, rows int64, rate int) *benchWriter {
	// Each transaction's statement and arguments, from a random existing
	// item and a new id; every one keeps the constraints the benchmark adds.
	return startBenchWriterWith(b, dsn, rows, rate, []benchStmt{
		{"UPDATE items SET price = price + 1 WHERE id = $1", func(id, _ int64) []any { return []any{id} }},
		{"INSERT INTO items (id, sku, price) VALUES ($1, $2, 1)", func(_, next int64) []any { return []any{next, fmt.Sprintf("new-%d", next)} }},
		{"INSERT INTO item_events (id, item_id, kind) VALUES ($1, $2, 'new')", func(id, next int64) []any { return []any{next, id} }},
		{"UPDATE item_events SET kind = 'u' WHERE id = $1", func(id, _ int64) []any { return []any{id} }},
	})
}

// startBenchWriterWith starts a benchWriter running stmts in turn.
func startBenchWriterWith(b *testing.B, dsn string, rows int64, rate int, stmts []benchStmt) *benchWriter {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		b.Fatal(err)
	}
	pc.ConnConfig.RuntimeParams["application_name"] = "bench-app"
	pc.MaxConns = 32
	pc.MinConns = 8
	app, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		b.Fatal(err)
	}
	w := &benchWriter{cancel: cancel}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer app.Close()
		var inflight sync.WaitGroup
		defer inflight.Wait()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			stmt := stmts[i%len(stmts)]
			args := stmt.args(1+rand.Int64N(rows), 10*rows+w.seq.Add(1))
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				start := time.Now()
				_, err := app.Exec(ctx, stmt.sql, args...)
				d := time.Since(start)
				w.mu.Lock()
				defer w.mu.Unlock()
				if err != nil {
					if ctx.Err() == nil && w.err == nil {
						w.err = fmt.Errorf("%s: %w", stmt.sql, err)
					}
					return
				}
				if !w.from.IsZero() && !start.Before(w.from) {
					if d > w.worstD {
						w.worst, w.worstD = start, d
					}
					w.lat = append(w.lat, d)
					w.at = append(w.at, start)
				}
			}()
		}
	}()
	return w
}

// mark starts recording latencies (transactions started from now on).
func (w *benchWriter) mark() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.from = time.Now()
}

// stop ends the writer and returns the latencies recorded, when the
// slowest transaction started, and the first error.
func (w *benchWriter) stop() ([]time.Duration, time.Time, error) {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lat, w.worst, w.err
}

// lockSampler watches the application's sessions for lock waits behind a
// refit session (one that holds the lock or is queued ahead for it).
type lockSampler struct {
	cancel  context.CancelFunc
	done    chan struct{}
	longest time.Duration
	waits   map[string]time.Duration // pid@waitstart → longest seen
}

func startLockSampler(b *testing.B, dsn string, every time.Duration) *lockSampler {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		b.Fatal(err)
	}
	pc.ConnConfig.RuntimeParams["application_name"] = "bench-sampler"
	pc.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		b.Fatal(err)
	}
	s := &lockSampler{cancel: cancel, done: make(chan struct{}), waits: map[string]time.Duration{}}
	go func() {
		defer close(s.done)
		defer pool.Close()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			rows, err := pool.Query(ctx, `
				SELECT l.pid::text || '@' || l.waitstart::text, (extract(epoch FROM clock_timestamp() - l.waitstart) * 1e6)::bigint
				FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
				WHERE NOT l.granted AND l.waitstart IS NOT NULL AND a.application_name = 'bench-app'
				  AND EXISTS (SELECT FROM pg_stat_activity r WHERE r.pid = ANY (pg_blocking_pids(l.pid)) AND r.application_name = 'refit')`)
			if err != nil {
				continue // cancelled at the end
			}
			for rows.Next() {
				var key string
				var us int64
				if rows.Scan(&key, &us) != nil {
					continue
				}
				d := time.Duration(us) * time.Microsecond
				if d > s.waits[key] {
					s.waits[key] = d
				}
				s.longest = max(s.longest, d)
			}
			rows.Close()
		}
	}()
	return s
}

// stop returns the longest wait seen and the number of waits.
func (s *lockSampler) stop() (time.Duration, int) {
	s.cancel()
	<-s.done
	return s.longest, len(s.waits)
}

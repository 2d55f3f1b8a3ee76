package worker_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// BenchmarkAlterColumnSwap changes orders.amount from integer to bigint on
// a 1M-row table (with a 1M-row child referencing orders.id and an index
// on amount) while an application writes about 300 transactions a second
// on its own pool, and reports: application errors (must be 0), its
// latency (p50/p99/max) during the whole migration and within 1 s of the
// swap, the longest wait of any of its sessions on a lock a refit session
// held or queued for (sampled every 10 ms), the lock held by each swap
// attempt (from job_events), and the migration's time against an
// ALTER TABLE … TYPE bigint of a copy of the table (the offline limit,
// which holds ACCESS EXCLUSIVE throughout). BENCH_ROWS overrides the size.
//
//	go test ./worker/ -run '^$' -bench BenchmarkAlterColumnSwap -benchtime 1x -timeout 30m
func BenchmarkAlterColumnSwap(b *testing.B) {
	rows := int64(1_000_000)
	if n := envInt("BENCH_ROWS"); n > 0 {
		rows = int64(n)
	}
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
			`CREATE TABLE orders (id bigint PRIMARY KEY, amount integer NOT NULL DEFAULT 0, note text)`,
			fmt.Sprintf(`INSERT INTO orders SELECT i, (i %% 100000)::int, 'o' || i FROM generate_series(1, %d) i`, rows),
			`CREATE INDEX orders_amount_idx ON orders (amount)`,
			`CREATE TABLE order_lines (id bigint PRIMARY KEY, order_id bigint REFERENCES orders (id), qty int NOT NULL)`,
			fmt.Sprintf(`INSERT INTO order_lines SELECT i, 1 + (i::bigint * 7919) %% %d, i %% 9 FROM generate_series(1, %d) i`, rows, rows),
			`VACUUM ANALYZE orders`, `VACUUM ANALYZE order_lines`,
			`CREATE TABLE orders_copy AS SELECT * FROM orders`,
			`ALTER TABLE orders_copy ADD PRIMARY KEY (id)`,
			`CREATE INDEX orders_copy_amount_idx ON orders_copy (amount)`,
		} {
			if _, err := pool.Exec(ctx, sql); err != nil {
				b.Fatalf("%s: %v", sql, err)
			}
		}
		b.Logf("built %d orders and %d order_lines (and a copy) in %s", rows, rows, time.Since(setup).Round(time.Millisecond))
		offline := time.Now()
		if _, err := pool.Exec(ctx, `ALTER TABLE orders_copy ALTER COLUMN amount TYPE bigint`); err != nil {
			b.Fatal(err)
		}
		offlineD := time.Since(offline)
		if _, err := pool.Exec(ctx, `DROP TABLE orders_copy`); err != nil {
			b.Fatal(err)
		}

		m, err := migration.Parse("bench.yaml", []byte("name: bench_amount_bigint\noperations:\n  - alter_column: {table: orders, column: amount, type: bigint}\n"))
		if err != nil {
			b.Fatal(err)
		}
		r := benchRunner(b, pool)
		store := r.Store
		var swapAt time.Time
		var swapMu sync.Mutex
		r.OnSwapped = func(*state.Job) {
			swapMu.Lock()
			defer swapMu.Unlock()
			swapAt = time.Now()
		}
		app := startBenchWriterWith(b, dsn, rows, 300, []benchStmt{
			{"UPDATE orders SET amount = amount + 1 WHERE id = $1", func(id, _ int64) []any { return []any{id} }},
			{"INSERT INTO orders (id, amount, note) VALUES ($1::bigint, ($1::bigint % 1000)::int, 'new')", func(_, next int64) []any { return []any{next} }},
			{"INSERT INTO order_lines (id, order_id, qty) VALUES ($1, $2, 1)", func(id, next int64) []any { return []any{next, id} }},
			{"UPDATE orders SET note = 'u' WHERE id = $1", func(id, _ int64) []any { return []any{id} }},
		})
		waits := startLockSampler(b, dsn, 10*time.Millisecond)
		time.Sleep(2 * time.Second)
		app.mark()

		jobID, elapsed := runBenchMigration(b, r, m)

		time.Sleep(500 * time.Millisecond)
		lat, _, appErr := app.stop()
		longest, blocked := waits.stop()
		if appErr != nil {
			b.Fatalf("the application saw an error: %v", appErr)
		}
		events, err := store.Events(ctx, jobID)
		if err != nil {
			b.Fatal(err)
		}
		var attempts []string
		for _, e := range events {
			if strings.HasPrefix(e.Message, "swap attempt") {
				attempts = append(attempts, e.Message)
			}
		}
		pool.Close()
		app.mu.Lock()
		var near []time.Duration
		for i, at := range app.at {
			if !swapAt.IsZero() && at.After(swapAt.Add(-time.Second)) && at.Before(swapAt.Add(time.Second)) {
				near = append(near, app.lat[i])
			}
		}
		app.mu.Unlock()
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		pct := func(l []time.Duration) (p50, p99, mx time.Duration) {
			if len(l) == 0 {
				return 0, 0, 0
			}
			l = slices.Clone(l)
			slices.Sort(l)
			return l[len(l)/2], l[min(len(l)-1, len(l)*99/100)], l[len(l)-1]
		}
		p50, p99, mx := pct(lat)
		n50, n99, nmx := pct(near)
		b.ReportMetric(ms(mx), "writer-max-ms")
		b.ReportMetric(ms(p99), "writer-p99-ms")
		b.ReportMetric(ms(nmx), "swap-writer-max-ms")
		b.ReportMetric(ms(longest), "lock-wait-max-ms")
		b.ReportMetric(elapsed.Seconds(), "migration-s")
		b.ReportMetric(offlineD.Seconds(), "offline-alter-s")
		b.Logf("migration %s (ALTER TABLE … TYPE bigint of a copy: %s, holding ACCESS EXCLUSIVE throughout); application: %d transactions, 0 errors, p50 %s p99 %s max %s; within 1s of the swap: %d, p50 %s p99 %s max %s; %d lock waits behind refit, longest %s",
			elapsed.Round(time.Millisecond), offlineD.Round(time.Millisecond), len(lat), p50, p99, mx, len(near), n50, n99, nmx, blocked, longest)
		for _, a := range attempts {
			b.Logf("  %s", a)
		}
	}
}

// envInt reads a positive integer from the environment (0 if unset or bad).
func envInt(name string) int {
	var n int
	if _, err := fmt.Sscan(os.Getenv(name), &n); err != nil || n < 0 {
		return 0
	}
	return n
}

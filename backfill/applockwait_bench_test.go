package backfill_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/throttle"
)

// Benchmark workload: the table's rows and the writer's rate.
const (
	benchRows       = 200_000
	benchWriterRate = 500 // updates per second, on random rows
	benchWriters    = 16  // the writer's connections
	benchRounds     = 3   // fresh tables backfilled per setting
)

// BenchmarkAppLockWait measures what throttle.max_app_lock_wait trades: the
// backfill's rate against the latency of an application writing to the
// table meanwhile, for the signal off and three limits. Each setting
// backfills its own fresh 200k-row table with the default backfill
// configuration while a writer (its own pool) updates random rows of it at
// 500/s. The writer is open-loop: each update's latency counts from when it
// was due, so updates queued behind a stalled one count their wait too.
//
//	go test ./backfill -run '^$' -bench BenchmarkAppLockWait -benchtime 1x
func BenchmarkAppLockWait(b *testing.B) {
	ctx := context.Background()
	dsn := pgtest.NewDB(b)
	admin, err := pgxpool.New(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	store, err := state.Open(ctx, admin)
	if err != nil {
		b.Fatal(err)
	}
	settings := []struct {
		name  string
		limit time.Duration
	}{{"off", 0}, {"50ms", 50 * time.Millisecond}, {"20ms", 20 * time.Millisecond}, {"5ms", 5 * time.Millisecond}}
	for i := 0; i < b.N; i++ {
		// Several fresh tables per setting (one backfill lasts about a
		// second, too few writes for a p99), the settings interleaved so
		// that the database's drift (buffers, checkpoints) is shared.
		results := make([]appLockWaitResult, len(settings))
		for round := range benchRounds {
			for j, s := range settings {
				results[j].add(runAppLockWaitBench(b, admin, store, fmt.Sprintf("t_%s_%d_%d", s.name, i, round), s.limit))
			}
		}
		for j, s := range settings {
			r := &results[j]
			r.summarize()
			b.ReportMetric(r.rowsPerSec, "rows/s_"+s.name)
			b.ReportMetric(ms(r.p99), "p99_ms_"+s.name)
			fmt.Printf("max_app_lock_wait=%-4s backfill %7.0f rows/s (%d tables, %d batches, sizes %d..%d, %s); writer %d updates p50 %.1f ms p99 %.1f ms max %.1f ms; holds %d (%.2f s held)\n",
				s.name, r.rowsPerSec, benchRounds, r.batches, r.minSize, r.maxSize, r.took.Round(time.Millisecond),
				len(r.lat), ms(r.p50), ms(r.p99), ms(r.max), r.holds, r.held.Seconds())
		}
	}
}

type appLockWaitResult struct {
	rowsPerSec       float64
	took             time.Duration
	batches          int
	minSize, maxSize int
	holds            int
	held             time.Duration
	lat              []time.Duration
	p50, p99, max    time.Duration
}

// add accumulates the result of one table.
func (r *appLockWaitResult) add(o appLockWaitResult) {
	if r.batches == 0 {
		r.minSize = o.minSize
	}
	r.took += o.took
	r.batches += o.batches
	r.minSize, r.maxSize = min(r.minSize, o.minSize), max(r.maxSize, o.maxSize)
	r.holds += o.holds
	r.held += o.held
	r.lat = append(r.lat, o.lat...)
}

// summarize computes the rate and the percentiles.
func (r *appLockWaitResult) summarize() {
	r.rowsPerSec = float64(benchRows*benchRounds) / r.took.Seconds()
	slices.Sort(r.lat)
	if len(r.lat) > 0 {
		r.p50, r.p99, r.max = r.lat[len(r.lat)/2], r.lat[len(r.lat)*99/100], r.lat[len(r.lat)-1]
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func runAppLockWaitBench(b *testing.B, admin *pgxpool.Pool, store *state.Store, table string, limit time.Duration) appLockWaitResult {
	b.Helper()
	ctx := context.Background()
	q := pgx.Identifier{table}.Sanitize()
	for _, sql := range []string{
		fmt.Sprintf("CREATE TABLE %s (id int PRIMARY KEY, v text NOT NULL, w int NOT NULL DEFAULT 0, n text)", q),
		fmt.Sprintf("INSERT INTO %s (id, v) SELECT i, 'v' || i FROM generate_series(1, %d) i", q, benchRows),
		"VACUUM ANALYZE " + q,
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
	}
	job, err := store.CreateJob(ctx, state.NewJob{Name: table, Checksum: "x", Source: []byte("x"), ContractMode: "now", Actor: "bench"})
	if err != nil {
		b.Fatal(err)
	}

	// The writer: its own pool, named like an application.
	wcfg, err := pgxpool.ParseConfig(admin.Config().ConnString())
	if err != nil {
		b.Fatal(err)
	}
	wcfg.MaxConns, wcfg.MinConns = benchWriters, benchWriters
	wcfg.ConnConfig.RuntimeParams["application_name"] = "shop"
	writers, err := pgxpool.NewWithConfig(ctx, wcfg)
	if err != nil {
		b.Fatal(err)
	}
	defer writers.Close()
	wctx, stopWriter := context.WithCancel(ctx)
	due := make(chan time.Time, 100_000)
	type sample struct {
		due time.Time
		lat time.Duration
	}
	var mu sync.Mutex
	var samples []sample
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the schedule: one update due every 1/rate s
		defer wg.Done()
		defer close(due)
		tick := time.NewTicker(time.Second / benchWriterRate)
		defer tick.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case t := <-tick.C:
				due <- t
			}
		}
	}()
	update := fmt.Sprintf("UPDATE %s SET w = w + 1 WHERE id = $1", q)
	for range benchWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range due {
				if _, err := writers.Exec(ctx, update, 1+rand.IntN(benchRows)); err != nil {
					b.Error(err)
					return
				}
				d := time.Since(t)
				mu.Lock()
				samples = append(samples, sample{t, d})
				mu.Unlock()
			}
		}()
	}

	// The backfill: its own pool, sessions named as refit names them.
	bpool, err := pgxpool.New(ctx, admin.Config().ConnString())
	if err != nil {
		b.Fatal(err)
	}
	defer bpool.Close()
	bf := backfill.New(bpool, store, job.ID, backfill.DefaultConfig(), zap.NewNop())
	bf.Session = func(ctx context.Context, conn *pgx.Conn, rangeID int) error {
		_, err := conn.Exec(ctx, "SELECT set_config('application_name', $1, false)", replication.AppName(job.ID, fmt.Sprintf("b%d", rangeID)))
		return err
	}
	tcfg := throttle.DefaultConfig()
	tcfg.MaxAppLockWait = limit
	th := throttle.New(bpool, tcfg)
	th.SetJob(job.ID)
	var r appLockWaitResult
	var since time.Time
	bf.Throttle = func(ctx context.Context) error {
		return th.Wait(ctx, func(reason string) {
			switch reason {
			case throttle.ReasonAppLockWait:
				r.holds++
				since = time.Now()
			case "":
				if !since.IsZero() {
					r.held += time.Since(since)
					since = time.Time{}
				}
			}
		}, nil)
	}
	r.minSize = 1 << 30
	bf.OnBatch = func(p backfill.Progress) {
		th.Observe(p.BatchRows)
		r.batches++
		r.minSize, r.maxSize = min(r.minSize, p.BatchSize), max(r.maxSize, p.BatchSize)
	}

	time.Sleep(time.Second) // the writer warms up, unmeasured
	start := time.Now()
	err = bf.Run(ctx, backfill.Table{Name: migration.TableName{Name: table}, Key: []migration.KeyColumn{{Name: "id", Type: "integer"}},
		Sets: []migration.ColumnSet{{Column: "n", Expr: "upper(v)"}}})
	end := time.Now()
	r.took = end.Sub(start)
	stopWriter()
	wg.Wait()
	if err != nil {
		b.Fatal(err)
	}
	// The updates due while the backfill ran.
	var lat []time.Duration
	for _, s := range samples {
		if !s.due.Before(start) && s.due.Before(end) {
			lat = append(lat, s.lat)
		}
	}
	r.lat = lat
	return r
}

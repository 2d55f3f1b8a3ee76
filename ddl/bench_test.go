package ddl_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/refit-dev/refit/ddl"
	"github.com/refit-dev/refit/internal/pgtest"
)

// BenchmarkBlockedDDLWriterQueue measures what a blocked ALTER TABLE costs
// an application writing about 300 single-row UPDATEs a second on its own
// pool, arriving on a fixed schedule whatever the latency (an open loop, so
// queued writes pile up as they would in a service). When the DDL starts, a
// reader holds ACCESS SHARE on the table for 3 s: the writes do not conflict
// with it, but every write that arrives while refit's ACCESS EXCLUSIVE
// request waits queues behind that request. It runs two executors in the
// same run, each on a fresh database:
//
//   - fixed: ddl.lock_timeout_initial = ddl.lock_timeout = 1s (the old
//     behaviour: every attempt waits up to 1 s);
//   - escalating: ddl.lock_timeout_initial 50ms doubling up to 1s.
//
// It reports, for the writes that arrived from the DDL's start until 200 ms
// after it ended: queued-s, the sum over writes of their latency above the
// baseline (the median latency before the DDL started), i.e. the time the
// application's writes spent queued behind refit; stalled-ms, the wall
// time during which at least one write was queued; the writes' count,
// p50, p99 and max latency; and queued-ratio, fixed over escalating.
// Figures, not assertions: the retry backoff is jittered, so they vary
// from run to run.
//
//	go test ./ddl -run '^$' -bench BenchmarkBlockedDDLWriterQueue -benchtime 1x
func BenchmarkBlockedDDLWriterQueue(b *testing.B) {
	cases := []struct {
		name    string
		initial time.Duration
	}{
		{"fixed", time.Second},
		{"esc", 50 * time.Millisecond},
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for range b.N {
		res := make([]queueResult, len(cases))
		for i, c := range cases {
			res[i] = runBlockedDDL(b, c.initial, time.Second)
			r := res[i]
			b.ReportMetric(r.queued.Seconds(), c.name+"-queued-s")
			b.ReportMetric(ms(r.stalled), c.name+"-stalled-ms")
			b.ReportMetric(float64(r.count), c.name+"-writes")
			b.ReportMetric(ms(r.p50), c.name+"-p50-ms")
			b.ReportMetric(ms(r.p99), c.name+"-p99-ms")
			b.ReportMetric(ms(r.max), c.name+"-max-ms")
			b.Logf("%-5s lock_timeout %s -> 1s: DDL took %s, attempts waited up to %v; %d writes during it: queued %.2f s in all (baseline %s), stalled %s, p50 %s, p99 %s, max %s",
				c.name, c.initial, r.elapsed.Round(time.Millisecond), r.attempts, r.count, r.queued.Seconds(), r.baseline.Round(10*time.Microsecond),
				r.stalled.Round(time.Millisecond), r.p50.Round(10*time.Microsecond), r.p99.Round(time.Millisecond), r.max.Round(time.Millisecond))
		}
		if res[1].queued > 0 {
			b.ReportMetric(res[0].queued.Seconds()/res[1].queued.Seconds(), "queued-ratio")
		}
		if res[1].stalled > 0 {
			b.ReportMetric(float64(res[0].stalled)/float64(res[1].stalled), "stalled-ratio")
		}
		b.Logf("writes queued behind refit: fixed 1s %.2f s, escalating 50ms->1s %.2f s (%.1fx less); stalled %s vs %s",
			res[0].queued.Seconds(), res[1].queued.Seconds(), res[0].queued.Seconds()/max(res[1].queued.Seconds(), 1e-9),
			res[0].stalled.Round(time.Millisecond), res[1].stalled.Round(time.Millisecond))
	}
}

type queueResult struct {
	elapsed         time.Duration   // Run's duration
	attempts        []time.Duration // each attempt's lock_timeout
	count           int
	baseline        time.Duration
	queued, stalled time.Duration
	p50, p99, max   time.Duration
}

type write struct {
	at  time.Time // when it was due (the schedule, not when it started)
	lat time.Duration
}

func runBlockedDDL(b *testing.B, initial, lockTimeout time.Duration) queueResult {
	b.Helper()
	const (
		rows  = 10_000
		rate  = 300
		block = 3 * time.Second
	)
	ctx := context.Background()
	dsn := pgtest.NewDB(b)
	admin := connect(b, dsn)
	exec(b, admin, `CREATE TABLE bench (id int PRIMARY KEY, v bigint NOT NULL DEFAULT 0)`)
	exec(b, admin, `INSERT INTO bench (id) SELECT g FROM generate_series(1, $1) g`, rows)
	exec(b, admin, `VACUUM ANALYZE bench`)

	core, logs := observer.New(zapcore.InfoLevel)
	cfg := ddl.DefaultConfig()
	cfg.LockTimeout, cfg.LockTimeoutInitial = lockTimeout, initial
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	ex := ddl.New(newPool(b, dsn, 4, map[string]string{"application_name": "bench-refit"}), cfg, zap.New(core))

	// The application: an UPDATE due every 1/rate s, each on its own
	// goroutine, on a pool of 50 connections (a write that finds them all
	// busy waits for one, as it would in a service).
	appPool := newPool(b, dsn, 50, map[string]string{"application_name": "bench-writer"})
	if err := appPool.Ping(ctx); err != nil {
		b.Fatal(err)
	}
	var (
		mu     sync.Mutex
		writes []write
		wErr   error
		wg     sync.WaitGroup
	)
	stop := make(chan struct{})
	tickerDone := make(chan struct{})
	go func() {
		defer close(tickerDone)
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case due := <-tick.C:
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := update(ctx, appPool, rand.N(rows)+1)
					lat := time.Since(due)
					mu.Lock()
					defer mu.Unlock()
					writes = append(writes, write{due, lat})
					if err != nil && wErr == nil {
						wErr = err
					}
				}()
			}
		}
	}()
	time.Sleep(1500 * time.Millisecond) // steady state, and the baseline

	// The reader: ACCESS SHARE on bench for 3 s from the DDL's start.
	a := holdLock(b, dsn, "SELECT count(*) FROM bench", block)
	start := time.Now()
	err := ex.Run(ctx, ddl.Statement{SQL: "ALTER TABLE bench ADD COLUMN note text", Description: "add column bench.note", Transactional: true}, nil)
	end := time.Now()
	a.stop()
	if err != nil {
		b.Fatalf("Run: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-tickerDone
	wg.Wait()
	if wErr != nil {
		b.Fatalf("the application saw an error: %v", wErr)
	}

	r := queueResult{elapsed: end.Sub(start)}
	for _, e := range logs.FilterMessageSnippet("ddl").All() {
		if d, ok := e.ContextMap()["lock_timeout"].(time.Duration); ok {
			r.attempts = append(r.attempts, d)
		}
	}
	if len(r.attempts) == 0 { // succeeded at once: nothing logged
		r.attempts = []time.Duration{cfg.AttemptLockTimeout(0)}
	}
	var before, during []time.Duration
	var window []write
	for _, w := range writes {
		switch {
		case w.at.Before(start):
			before = append(before, w.lat)
		case w.at.Before(end.Add(200 * time.Millisecond)):
			during = append(during, w.lat)
			window = append(window, w)
		}
	}
	if len(before) == 0 || len(during) == 0 {
		b.Fatalf("%d writes before the DDL, %d during it", len(before), len(during))
	}
	slices.Sort(before)
	r.baseline = before[len(before)/2]
	for _, lat := range during {
		r.queued += max(0, lat-r.baseline)
	}
	r.stalled = stalled(window, r.baseline)
	slices.Sort(during)
	r.count = len(during)
	r.p50, r.p99, r.max = during[len(during)/2], during[min(len(during)-1, len(during)*99/100)], during[len(during)-1]
	return r
}

func update(ctx context.Context, pool *pgxpool.Pool, id int) error {
	if _, err := pool.Exec(ctx, "UPDATE bench SET v = v + 1 WHERE id = $1", id); err != nil {
		return fmt.Errorf("update %d: %w", id, err)
	}
	return nil
}

// stalled is the wall time covered by the writes that took longer than
// their baseline plus 5 ms, each from its due time plus the baseline to
// its end: the time during which the application had a write queued.
func stalled(ws []write, baseline time.Duration) time.Duration {
	type span struct{ from, to time.Time }
	var spans []span
	for _, w := range ws {
		if w.lat > baseline+5*time.Millisecond {
			spans = append(spans, span{w.at.Add(baseline), w.at.Add(w.lat)})
		}
	}
	slices.SortFunc(spans, func(x, y span) int { return x.from.Compare(y.from) })
	var total time.Duration
	var cur span
	for i, s := range spans {
		switch {
		case i == 0:
			cur = s
		case !s.from.After(cur.to):
			if s.to.After(cur.to) {
				cur.to = s.to
			}
		default:
			total += cur.to.Sub(cur.from)
			cur = s
		}
	}
	if len(spans) > 0 {
		total += cur.to.Sub(cur.from)
	}
	return total
}

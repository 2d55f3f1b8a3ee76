package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/examples"
	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/internal/workload"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// benchResult is what `refit bench` measures, printed as markdown and JSON.
type benchResult struct {
	Rows              int     `json:"rows"`
	PostgresVersion   int     `json:"postgres_version"`
	WriterRate        int     `json:"writer_rate_per_s"`
	SingleUpdateS     float64 `json:"single_update_s"`
	SingleUpdateRowsS float64 `json:"single_update_rows_per_s"`
	BackfillS         float64 `json:"backfill_s"`
	BackfillRowsS     float64 `json:"backfill_rows_per_s"`
	BackfillRatio     float64 `json:"backfill_vs_single_update"`
	// Throttled is the time batches waited on throttle signals (by
	// reason); Unthrottled* is the rate over the rest of the time.
	Throttled          map[string]float64 `json:"backfill_throttled_s"`
	UnthrottledRowsS   float64            `json:"backfill_unthrottled_rows_per_s"`
	UnthrottledRatio   float64            `json:"backfill_unthrottled_vs_single_update"`
	Baseline           latency            `json:"writer_baseline"`
	During             latency            `json:"writer_during_migration"`
	DuringBackfill     latency            `json:"writer_during_backfill"`
	DuringWindow       latency            `json:"writer_during_window"`
	WriterP99Ratio     float64            `json:"writer_p99_ratio"`
	SyncLag            latency            `json:"sync_lag"`
	SyncTransactions   int64              `json:"sync_transactions_applied"`
	SyncKeys           int64              `json:"sync_keys_applied"`
	MaxLockWaitMS      float64            `json:"max_lock_wait_on_refit_ms"`
	LockTimeoutMS      float64            `json:"lock_timeout_ms"`
	TotalS             float64            `json:"migration_total_s"`
	Parallel2S         float64            `json:"backfill_parallelism2_s"`
	Parallel2RowsS     float64            `json:"backfill_parallelism2_rows_per_s"`
	Parallel2Ratio     float64            `json:"backfill_parallelism2_vs_single_update"`
	Parallel2Throttled map[string]float64 `json:"backfill_parallelism2_throttled_s"`
	PeakRSSMiB         float64            `json:"peak_rss_mib"`
	// PeakRSSCumulative is set when, in a --versions run, the peak RSS
	// could not be reset between versions: it then includes theirs.
	PeakRSSCumulative bool `json:"peak_rss_includes_earlier_versions,omitempty"`
	// WriterErrors counts the writer's failed writes during the migration
	// (omitted when none, as before it was recorded).
	WriterErrors  int64  `json:"writer_errors,omitempty"`
	WriterLastErr string `json:"writer_last_error,omitempty"`
	// Peer is the same migration done by another tool (--peer) in the same
	// run, on an identical table in its own database of the same cluster.
	Peer *peerResult `json:"peer,omitempty"`
}

// benchOptions are the flags of `refit bench`.
type benchOptions struct {
	rows, rate       int
	baseline, window time.Duration
	peer             *peerSpec // nil: refit alone
}

type latency struct {
	Count int64   `json:"count"`
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	MaxMS float64 `json:"max_ms"`
}

func newBenchCmd(a *app) *cobra.Command {
	var o benchOptions
	var jsonOut, cpuProfile, peer, versions, pgFetch string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure backfill throughput, sync lag and the application's latency on a throwaway PostgreSQL",
		Long: `Build a users table of --rows rows on a throwaway PostgreSQL and measure, in
one run on the same data:
  - a single UPDATE of every row (on a copy): the in-database limit;
  - refit's backfill of the example migration with default settings;
  - a writer at --rate writes/s playing the old application (it writes only
    the old column): its latency with no migration (--baseline) and during
    backfill and sync, and the sync lag from its commits to the new columns
    being applied;
  - the longest time any session was seen waiting on a lock held by refit.
Prints a markdown table; --json writes the figures as JSON.

--peer pgroll=PATH also runs the pgroll binary at PATH on an identical table
in another database of the same cluster (pgroll init, baseline, start,
complete) with the same writer, and prints both tools side by side.
--versions 14,15,16,17,18 repeats the whole bench on each PostgreSQL major,
with the server builds of scripts/pg-fetch (REFIT_PG_BIN is set for each in
turn); --json then writes a list of results.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if peer != "" {
				p, err := parsePeer(peer)
				if err != nil {
					return usageError{err}
				}
				o.peer = &p
			}
			majors, err := parseVersions(versions)
			if err != nil {
				return usageError{err}
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			if len(majors) == 0 {
				res, err := a.bench(cmd.Context(), o)
				if err != nil {
					return err
				}
				printBench(a.out, res)
				return writeBenchJSON(jsonOut, res)
			}
			results, err := a.benchVersions(cmd.Context(), o, pgFetch, majors)
			if err != nil {
				return err
			}
			return writeBenchJSON(jsonOut, results)
		},
	}
	cmd.Flags().IntVar(&o.rows, "rows", 1_000_000, "rows in the table")
	cmd.Flags().IntVar(&o.rate, "rate", 500, "writes per second of the application writer")
	cmd.Flags().DurationVar(&o.baseline, "baseline", 10*time.Second, "how long to measure the writer without a migration")
	cmd.Flags().DurationVar(&o.window, "window", 5*time.Second, "how long the writer keeps writing in the window after the backfill")
	cmd.Flags().StringVar(&jsonOut, "json", "", "also write the results as JSON to this file")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile of refit to this file")
	cmd.Flags().Int("batch-size", 0, "rows per backfill batch (backfill.batch_size)")
	cmd.Flags().StringVar(&peer, "peer", "", "also run another tool side by side: pgroll=PATH (a pgroll binary)")
	cmd.Flags().StringVar(&versions, "versions", "", "repeat the bench on these PostgreSQL majors, e.g. 14,15,16,17,18 (builds of --pg-fetch)")
	cmd.Flags().StringVar(&pgFetch, "pg-fetch", "scripts/pg-fetch", "the script printing \"MAJOR BIN-DIR\" lines for --versions")
	return cmd
}

// writeBenchJSON writes v as indented JSON to path, if path is set.
func writeBenchJSON(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func (a *app) bench(ctx context.Context, o benchOptions) (res benchResult, err error) {
	rows, rate, baseline, window := o.rows, o.rate, o.baseline, o.window
	res.Rows, res.WriterRate, res.LockTimeoutMS = rows, rate, ms(a.cfg.DDL.LockTimeout)
	log := a.errOut
	fmt.Fprintln(log, "bench: starting a throwaway PostgreSQL")
	cluster, err := pgtest.Start(ctx, pgtest.Options{Logger: a.log})
	if err != nil {
		return res, err
	}
	defer func() {
		if stopErr := cluster.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	res.PostgresVersion = cluster.Version()
	dsn, err := cluster.CreateDatabase(ctx, "refit_bench")
	if err != nil {
		return res, err
	}
	a.cfg.DSN = dsn
	pool, err := a.connect(ctx)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	appPool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return res, err
	}
	defer appPool.Close()

	fmt.Fprintf(log, "bench: creating users with %d rows\n", rows)
	if err := workload.CreateUsers(ctx, pool, rows); err != nil {
		return res, err
	}
	// A copy of the original rows for the parallel run (c), made now: the
	// main migration drops full_name.
	if _, err := pool.Exec(ctx, `CREATE TABLE users_p2 AS SELECT id, full_name, email, created_at FROM users;
		ALTER TABLE users_p2 ADD PRIMARY KEY (id)`); err != nil {
		return res, fmt.Errorf("copy for the parallel run: %w", err)
	}
	var peerPool *pgxpool.Pool
	var peerDSN string
	if o.peer != nil {
		// The peer's identical table lives in a database of its own: pgroll
		// installs event triggers per database, which must not see refit's
		// DDL.
		peerDSN, err = cluster.CreateDatabase(ctx, o.peer.database())
		if err != nil {
			return res, err
		}
		if peerPool, err = pgxpool.New(ctx, peerDSN); err != nil {
			return res, err
		}
		defer peerPool.Close()
		fmt.Fprintf(log, "bench: creating users with %d rows for %s\n", rows, o.peer.Tool)
		if err := workload.CreateUsers(ctx, peerPool, rows); err != nil {
			return res, err
		}
		if err := quiesce(ctx, peerPool); err != nil {
			return res, err
		}
	}
	// Every measurement starts from a quiet database: no autovacuum of an
	// earlier run's dead rows, no checkpoint of its dirty buffers in
	// progress. Otherwise whichever runs second pays for the first.
	if err := quiesce(ctx, pool); err != nil {
		return res, err
	}
	fmt.Fprintln(log, "bench: single UPDATE of every row (on a copy)")
	single, err := singleUpdate(ctx, pool)
	if err != nil {
		return res, err
	}
	res.SingleUpdateS, res.SingleUpdateRowsS = single.Seconds(), float64(rows)/single.Seconds()

	if err := quiesce(ctx, pool); err != nil {
		return res, err
	}
	workers := 4
	perWorker := max(rate/workers, 1)
	fmt.Fprintf(log, "bench: writer baseline, %d writes/s for %s\n", perWorker*workers, baseline)
	base := workload.NewWriter(appPool, perWorker, workers, workload.V1)
	bctx, bcancel := context.WithTimeout(ctx, baseline)
	// The lock sampler runs in the baseline too, so that both phases carry
	// the same observer's cost.
	sampled := make(chan struct{})
	go func() { sampleSessions(bctx, dsn, refitApp, ""); close(sampled) }()
	base.Run(bctx)
	bcancel()
	<-sampled
	res.Baseline = latencyOf(base.Stats())

	m, err := migration.Parse("examples/split_full_name.yaml", examples.SplitFullName)
	if err != nil {
		return res, err
	}
	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, actor("bench"))
	if err != nil {
		return res, err
	}
	store, err := state.Open(ctx, pool)
	if err != nil {
		return res, err
	}
	w := workload.NewWriter(appPool, perWorker, workers, workload.V1)
	wctx, wstop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.Run(wctx) }()
	var maxWait time.Duration
	go func() { defer wg.Done(); maxWait = sampleSessions(wctx, dsn, refitApp, "").longestWait }()
	stopWriter := sync.OnceFunc(func() { wstop(); wg.Wait() })
	defer stopWriter()

	r := a.runner(pool, store, nil)
	r.GatePoll = 100 * time.Millisecond
	var mu sync.Mutex
	var bfStart, bfEnd time.Time
	var syncStats replication.Stats
	windowMark := -1
	r.OnPhase = func(job *state.Job, ph state.Phase) {
		fmt.Fprintf(log, "bench: phase %s\n", ph)
		mu.Lock()
		defer mu.Unlock()
		switch ph {
		case state.PhaseBackfilling:
			bfStart = time.Now()
		case state.PhaseSyncing:
			windowMark = w.Mark()
			go func() {
				time.Sleep(window)
				stopWriter()
				if err := store.OpenContract(ctx, job.ID, actor("bench")); err != nil {
					fmt.Fprintln(log, "bench: open contract:", err)
				}
			}()
		}
	}
	r.OnBatch = func(_ *state.Job, _ backfill.Progress) {
		mu.Lock()
		bfEnd = time.Now()
		mu.Unlock()
	}
	r.OnSyncStopped = func(s replication.Stats) {
		mu.Lock()
		defer mu.Unlock()
		if s.TxApplied >= syncStats.TxApplied {
			syncStats = s
		}
	}
	start := time.Now()
	if _, err := r.Run(ctx, sub.Job.ID); err != nil {
		return res, err
	}
	res.TotalS = time.Since(start).Seconds()
	stopWriter()
	mu.Lock()
	res.BackfillS = bfEnd.Sub(bfStart).Seconds()
	res.BackfillRowsS = float64(rows) / res.BackfillS
	res.BackfillRatio = res.BackfillRowsS / res.SingleUpdateRowsS
	var held float64
	res.Throttled, held = seconds(r.Held())
	if free := res.BackfillS - held; free > 0 {
		res.UnthrottledRowsS = float64(rows) / free
		res.UnthrottledRatio = res.UnthrottledRowsS / res.SingleUpdateRowsS
	}
	ws := w.Stats()
	res.During = latencyOf(ws)
	res.WriterErrors = ws.Errors
	if ws.LastErr != nil {
		res.WriterLastErr = ws.LastErr.Error()
	}
	if windowMark >= 0 {
		end := w.Mark()
		res.DuringBackfill = latencyOf(w.StatsRange(0, windowMark))
		res.DuringBackfill.Count = int64(windowMark)
		res.DuringWindow = latencyOf(w.StatsRange(windowMark, end))
		res.DuringWindow.Count = int64(end - windowMark)
	}
	if res.Baseline.P99ms > 0 {
		res.WriterP99Ratio = res.During.P99ms / res.Baseline.P99ms
	}
	res.SyncLag = latencyOfDurations(syncStats.Lags)
	res.SyncTransactions, res.SyncKeys = syncStats.TxApplied, syncStats.KeysApplied
	res.MaxLockWaitMS = ms(maxWait)
	mu.Unlock()

	// (c) the same backfill with two parallel ranges, on a copy of the
	// original rows, without the writer.
	if err := quiesce(ctx, pool); err != nil {
		return res, err
	}
	fmt.Fprintln(log, "bench: backfill with parallelism 2 (on a copy)")
	p2 := `name: bench_parallel2
settings:
  backfill.parallelism: 2
operations:
  - add_column:
      table: users_p2
      column: {name: first_name, type: varchar(100)}
      up: split_part(full_name, ' ', 1)
  - add_column:
      table: users_p2
      column: {name: last_name, type: varchar(100)}
      up: substring(full_name from position(' ' in full_name) + 1)
`
	pm, err := migration.Parse("bench_parallel2.yaml", []byte(p2))
	if err != nil {
		return res, err
	}
	psub, err := worker.Submit(ctx, pool, pm, migration.ContractNow, actor("bench"))
	if err != nil {
		return res, err
	}
	pr := a.runner(pool, store, nil)
	var pStart, pEnd time.Time
	var pRows int64
	var pmu sync.Mutex
	pr.OnPhase = func(_ *state.Job, ph state.Phase) {
		if ph == state.PhaseBackfilling {
			pmu.Lock()
			pStart = time.Now()
			pmu.Unlock()
		}
	}
	pr.OnBatch = func(_ *state.Job, p backfill.Progress) {
		pmu.Lock()
		pEnd, pRows = time.Now(), p.RowsDone
		pmu.Unlock()
	}
	if _, err := pr.Run(ctx, psub.Job.ID); err != nil {
		return res, err
	}
	pmu.Lock()
	res.Parallel2S = pEnd.Sub(pStart).Seconds()
	res.Parallel2RowsS = float64(pRows) / res.Parallel2S
	res.Parallel2Ratio = res.Parallel2RowsS / res.SingleUpdateRowsS
	res.Parallel2Throttled, _ = seconds(pr.Held())
	pmu.Unlock()
	// The peak RSS is the address space's high-water mark (VmHWM), not
	// getrusage's maxrss: a process exec'ed by a vfork-ing parent (`go run`)
	// inherits in maxrss the parent's peak (the go command's, ~40 MiB).
	var ru syscall.Rusage
	if kib, ok := readVmHWM("/proc/self/status"); ok {
		res.PeakRSSMiB = float64(kib) / 1024
	} else if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		res.PeakRSSMiB = float64(ru.Maxrss) / 1024 // Linux reports KiB
	}
	if o.peer != nil {
		// Whatever refit's runs left behind (dead rows, dirty buffers) is
		// cleaned up first in its database too, so that the peer does not
		// pay for it.
		if err := quiesce(ctx, pool); err != nil {
			return res, err
		}
		peer, err := a.benchPeer(ctx, *o.peer, peerRun{
			dsn: peerDSN, admin: peerPool, sampleDSN: dsn,
			rows: rows, rate: rate, baseline: baseline, window: window,
			singleRowsS: res.SingleUpdateRowsS, refitRowsS: res.BackfillRowsS,
		})
		if err != nil {
			return res, err
		}
		res.Peer = &peer
	}
	return res, nil
}

// seconds converts held times to seconds and returns their sum.
func seconds(held map[string]time.Duration) (map[string]float64, float64) {
	out := make(map[string]float64, len(held))
	var sum float64
	for k, d := range held {
		out[k] = d.Seconds()
		sum += d.Seconds()
	}
	return out, sum
}

// quiesce vacuums and analyzes the database and forces a checkpoint, so that
// the next measurement does not share the machine with background work left
// by the previous one.
func quiesce(ctx context.Context, pool *pgxpool.Pool) error {
	for _, q := range []string{"VACUUM ANALYZE", "CHECKPOINT"} {
		if _, err := pool.Exec(ctx, q); err != nil {
			return fmt.Errorf("bench: %s: %w", q, err)
		}
	}
	return nil
}

// refitApp is the application_name pattern of refit's sessions.
const refitApp = "refit%"

// sessionSamples is what sampleSessions saw.
type sessionSamples struct {
	// longestWait is the longest wait seen of any session on a lock held by
	// one of the tool's sessions.
	longestWait time.Duration
	// firstBatch and lastBatch are the first and last samples at which a
	// session of the tool was running a statement matching the batch
	// pattern (zero if none was seen).
	firstBatch, lastBatch time.Time
}

// sampleSessions polls pg_locks and pg_stat_activity every 10 ms until ctx
// ends. Sessions are the tool's when their application_name is LIKE app;
// batch, if not empty, is a LIKE pattern of the tool's backfill statement.
// Both views are cluster-wide, so dsn may name any database.
func sampleSessions(ctx context.Context, dsn, app, batch string) sessionSamples {
	var s sessionSamples
	conn, err := pgx.Connect(context.WithoutCancel(ctx), dsn)
	if err != nil {
		return s
	}
	defer conn.Close(context.WithoutCancel(ctx))
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return s
		case <-t.C:
		}
		var us int64
		var inBatch bool
		err := conn.QueryRow(ctx, `SELECT coalesce((SELECT max(extract(epoch FROM clock_timestamp() - l.waitstart) * 1e6)
			FROM pg_locks l WHERE NOT l.granted AND l.waitstart IS NOT NULL
			  AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = ANY(pg_blocking_pids(l.pid)) AND a.application_name LIKE $1)), 0)::bigint,
			$2 <> '' AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name LIKE $1 AND a.state <> 'idle' AND a.query LIKE $2)`,
			app, batch).Scan(&us, &inBatch)
		if err != nil {
			continue
		}
		if d := time.Duration(us) * time.Microsecond; d > s.longestWait {
			s.longestWait = d
		}
		if inBatch {
			now := time.Now()
			if s.firstBatch.IsZero() {
				s.firstBatch = now
			}
			s.lastBatch = now
		}
	}
}

func latencyOf(s workload.Stats) latency {
	return latency{Count: s.Inserts + s.Updates, P50ms: ms(s.P50), P99ms: ms(s.P99), MaxMS: ms(s.Max)}
}

func latencyOfDurations(d []time.Duration) latency {
	if len(d) == 0 {
		return latency{}
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return latency{Count: int64(len(s)), P50ms: ms(s[len(s)/2]), P99ms: ms(s[min(len(s)-1, len(s)*99/100)]), MaxMS: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func printBench(w io.Writer, r benchResult) {
	fmt.Fprintf(w, "## refit bench — %d rows, PostgreSQL %d, writer %d writes/s\n\n", r.Rows, r.PostgresVersion, r.WriterRate)
	fmt.Fprintln(w, "| measure | value |")
	fmt.Fprintln(w, "|---|---|")
	fmt.Fprintf(w, "| single UPDATE of all rows | %.2f s (%.0f rows/s) |\n", r.SingleUpdateS, r.SingleUpdateRowsS)
	fmt.Fprintf(w, "| refit backfill, default settings, writer running | %.2f s (%.0f rows/s, %.2f× single UPDATE) |\n", r.BackfillS, r.BackfillRowsS, r.BackfillRatio)
	fmt.Fprintf(w, "| … time batches waited on throttle signals | %s |\n", heldText(r.Throttled, r.UnthrottledRowsS, r.UnthrottledRatio))
	fmt.Fprintf(w, "| writer latency, no migration (n=%d) | p50 %.2f ms · p99 %.2f ms · max %.2f ms |\n", r.Baseline.Count, r.Baseline.P50ms, r.Baseline.P99ms, r.Baseline.MaxMS)
	fmt.Fprintf(w, "| writer latency, during backfill + sync (n=%d) | p50 %.2f ms · p99 %.2f ms · max %.2f ms (p99 %.2f× baseline) |\n", r.During.Count, r.During.P50ms, r.During.P99ms, r.During.MaxMS, r.WriterP99Ratio)
	fmt.Fprintf(w, "| … of which during the backfill (n=%d) | p50 %.2f ms · p99 %.2f ms · max %.2f ms |\n", r.DuringBackfill.Count, r.DuringBackfill.P50ms, r.DuringBackfill.P99ms, r.DuringBackfill.MaxMS)
	fmt.Fprintf(w, "| … of which in the window, sync only (n=%d) | p50 %.2f ms · p99 %.2f ms · max %.2f ms |\n", r.DuringWindow.Count, r.DuringWindow.P50ms, r.DuringWindow.P99ms, r.DuringWindow.MaxMS)
	fmt.Fprintf(w, "| sync lag, commit → new columns applied (%d transactions, %d keys) | p50 %.1f ms · p99 %.1f ms · max %.1f ms |\n", r.SyncTransactions, r.SyncKeys, r.SyncLag.P50ms, r.SyncLag.P99ms, r.SyncLag.MaxMS)
	fmt.Fprintf(w, "| longest wait of any session on a refit lock (sampled every 10 ms) | %.1f ms (lock_timeout %.0f ms) |\n", r.MaxLockWaitMS, r.LockTimeoutMS)
	fmt.Fprintf(w, "| migration total (expand → complete, incl. %s window) | %.2f s |\n", "the", r.TotalS)
	fmt.Fprintf(w, "| refit backfill, parallelism 2, no writer (copy of the table) | %.2f s (%.0f rows/s, %.2f× single UPDATE) |\n", r.Parallel2S, r.Parallel2RowsS, r.Parallel2Ratio)
	fmt.Fprintf(w, "| … time batches waited on throttle signals (summed over both ranges) | %s |\n", heldText(r.Parallel2Throttled, 0, 0))
	fmt.Fprintf(w, "| peak RSS of the bench process (refit + writer + sampler) | %.1f MiB |\n", r.PeakRSSMiB)
	if r.Peer != nil {
		printPeer(w, r)
	}
}

// heldText renders throttle wait times, and the rate outside them if known.
func heldText(held map[string]float64, rowsS, ratio float64) string {
	reasons := make([]string, 0, len(held))
	var sum float64
	for k, v := range held {
		reasons = append(reasons, fmt.Sprintf("%s %.2f s", k, v))
		sum += v
	}
	sort.Strings(reasons)
	if len(reasons) == 0 {
		return "none"
	}
	out := fmt.Sprintf("%.2f s (%s)", sum, strings.Join(reasons, ", "))
	if rowsS > 0 {
		out += fmt.Sprintf("; rate over the rest of the time %.0f rows/s, %.2f× single UPDATE", rowsS, ratio)
	}
	return out
}

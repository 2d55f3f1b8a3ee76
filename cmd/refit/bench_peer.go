package main

// `refit bench --peer pgroll=PATH`: the same migration done by pgroll, in the
// same run, on an identical table in another database of the same throwaway
// cluster, with the same old-application writer and the same lock sampler.
//
// pgroll is run as the user would run it — `init`, `baseline` (the table
// exists before pgroll's history does, and pgroll refuses to start a
// migration on such a schema without one), `start FILE`, then `complete`
// after the window — each as a child process whose sessions carry
// application_name=pgroll, so that the sampler can tell them apart from the
// writer's. pgroll's backfill runs inside `start`; its span is taken from the
// sampler: the first to the last sample (10 ms apart) at which a pgroll
// session was running its batch statement (on a table so small that every
// batch falls between two samples, start's wall time instead, and the result
// says which). `start`'s wall time (DDL and the backfill) is reported next
// to it.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/internal/workload"
)

// peerSpec is the tool of --peer.
type peerSpec struct {
	Tool string // only "pgroll"
	Path string // its binary
}

// database is the name of the peer's database in the bench cluster.
func (p peerSpec) database() string { return p.Tool + "_bench" }

// parsePeer parses --peer TOOL=PATH.
func parsePeer(s string) (peerSpec, error) {
	tool, path, ok := strings.Cut(s, "=")
	if !ok || path == "" {
		return peerSpec{}, fmt.Errorf("--peer %q: want TOOL=PATH, e.g. pgroll=/usr/local/bin/pgroll", s)
	}
	if tool != "pgroll" {
		return peerSpec{}, fmt.Errorf("--peer %q: unknown tool %q (known: pgroll)", s, tool)
	}
	return peerSpec{Tool: tool, Path: path}, nil
}

// Supported PostgreSQL majors (those of scripts/pg-fetch).
const minMajor, maxMajor = 14, 18

// parseVersions parses --versions 14,15,...: distinct majors in the order
// given. An empty string means none (one bench on the default server).
func parseVersions(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("--versions %q: %q is not a PostgreSQL major version", s, f)
		}
		if v < minMajor || v > maxMajor {
			return nil, fmt.Errorf("--versions %q: %d is not a supported major (%d-%d)", s, v, minMajor, maxMajor)
		}
		if slices.Contains(out, v) {
			return nil, fmt.Errorf("--versions %q: %d given twice", s, v)
		}
		out = append(out, v)
	}
	return out, nil
}

// pgBinDirs runs the pg-fetch script for majors and returns the bin
// directory of each, from its "MAJOR BIN-DIR" lines.
func pgBinDirs(ctx context.Context, script string, majors []int, stderr io.Writer) (map[int]string, error) {
	args := make([]string, len(majors))
	for i, m := range majors {
		args[i] = strconv.Itoa(m)
	}
	cmd := exec.CommandContext(ctx, script, args...)
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("bench: %s %s: %w", script, strings.Join(args, " "), err)
	}
	return parsePgFetch(out, majors)
}

// parsePgFetch reads pg-fetch's "MAJOR BIN-DIR" lines; every major of want
// must be there.
func parsePgFetch(out []byte, want []int) (map[int]string, error) {
	dirs := make(map[int]string)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		major, dir, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok {
			continue
		}
		if m, err := strconv.Atoi(major); err == nil && dir != "" {
			dirs[m] = strings.TrimSpace(dir)
		}
	}
	for _, m := range want {
		if dirs[m] == "" {
			return nil, fmt.Errorf("bench: pg-fetch printed no bin directory for PostgreSQL %d", m)
		}
	}
	return dirs, nil
}

// benchVersions repeats the bench on each major, printing each result as it
// comes. internal/pgtest takes its binaries from REFIT_PG_BIN, so that is set
// for each version in turn (and restored afterwards).
func (a *app) benchVersions(ctx context.Context, o benchOptions, script string, majors []int) ([]benchResult, error) {
	dirs, err := pgBinDirs(ctx, script, majors, a.errOut)
	if err != nil {
		return nil, err
	}
	prev, hadPrev := os.LookupEnv("REFIT_PG_BIN")
	defer func() {
		if hadPrev {
			os.Setenv("REFIT_PG_BIN", prev)
		} else {
			os.Unsetenv("REFIT_PG_BIN")
		}
	}()
	var results []benchResult
	for _, m := range majors {
		fmt.Fprintf(a.errOut, "bench: PostgreSQL %d from %s\n", m, dirs[m])
		if err := os.Setenv("REFIT_PG_BIN", dirs[m]); err != nil {
			return results, err
		}
		// The process's peak RSS (VmHWM) is that of its whole life: reset
		// it so that each version's figure is its own (Linux: writing 5 to
		// clear_refs resets VmHWM to the current RSS).
		resetErr := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
		if resetErr != nil && len(results) > 0 {
			fmt.Fprintf(a.errOut, "bench: cannot reset the peak RSS (%v): refit's figure includes the earlier versions'\n", resetErr)
		}
		res, err := a.bench(ctx, o)
		if err != nil {
			return results, fmt.Errorf("bench on PostgreSQL %d: %w", m, err)
		}
		res.PeakRSSCumulative = resetErr != nil && len(results) > 0
		if res.PostgresVersion != m {
			return results, fmt.Errorf("bench: asked for PostgreSQL %d, the cluster is %d", m, res.PostgresVersion)
		}
		printBench(a.out, res)
		fmt.Fprintln(a.out)
		results = append(results, res)
	}
	if len(results) > 1 {
		printVersionSummary(a.out, results)
	}
	return results, nil
}

// peerResult is what the bench measured of the peer tool.
type peerResult struct {
	Tool        string `json:"tool"`
	ToolVersion string `json:"tool_version"` // what `TOOL --version` printed
	Database    string `json:"database"`
	// WriterSearchPath is the old application's search_path: the old
	// version's schema.
	WriterSearchPath string `json:"writer_search_path"`
	// StartS is the wall time of `pgroll start` (expand DDL, backfill);
	// BackfillS the span of its batches as sampled.
	StartS    float64 `json:"start_s"`
	BackfillS float64 `json:"backfill_s"`
	// BackfillMeasure says where BackfillS comes from.
	BackfillMeasure string  `json:"backfill_measured_by"`
	BackfillRowsS   float64 `json:"backfill_rows_per_s"`
	BackfillRatio   float64 `json:"backfill_vs_single_update"`
	// RefitVsPeer is refit's backfill rate over the peer's, same run.
	RefitVsPeer    float64 `json:"refit_backfill_vs_peer"`
	CompleteS      float64 `json:"complete_s"`
	Baseline       latency `json:"writer_baseline"`
	During         latency `json:"writer_during_migration"`
	DuringBackfill latency `json:"writer_during_backfill"`
	DuringWindow   latency `json:"writer_during_window"`
	WriterP99Ratio float64 `json:"writer_p99_ratio"`
	WriterErrors   int64   `json:"writer_errors"`
	WriterLastErr  string  `json:"writer_last_error,omitempty"`
	MaxLockWaitMS  float64 `json:"max_lock_wait_on_peer_ms"`
	LockTimeoutMS  float64 `json:"lock_timeout_ms"`
	// PeakRSSMiB is the highest peak RSS of the peer's processes (init,
	// baseline, start, complete), from VmHWM sampled every 10 ms and the
	// kernel's maxrss of the exited child.
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// WrongRows counts rows whose new columns do not match the up
	// expressions after complete (0 when the tool did its job).
	WrongRows int64 `json:"rows_with_wrong_new_columns"`
	Rows      int64 `json:"rows_after_complete"`
}

// peerRun is the context of one peer run.
type peerRun struct {
	dsn         string        // the peer's database
	admin       *pgxpool.Pool // to it, for quiescing and checks
	sampleDSN   string        // where the sampler connects
	rows, rate  int
	baseline    time.Duration
	window      time.Duration
	singleRowsS float64 // the single UPDATE's rate of this run
	refitRowsS  float64 // refit's backfill rate of this run
}

// pgrollLockTimeoutMS is pgroll's --lock-timeout default, passed
// explicitly so the figure reported is the one used.
const pgrollLockTimeoutMS = 500

// pgrollMigration is the backfilled part of the example migration for
// pgroll: the two NOT NULL columns derived from full_name, as add_column with
// up. (refit's example also adds an enum-typed status column with a
// constant default, which needs no backfill, builds an index on last_name
// concurrently after its backfill, and drops full_name at contract.)
const pgrollMigration = `operations:
  - add_column:
      table: users
      up: split_part(full_name, ' ', 1)
      column:
        name: first_name
        type: varchar(100)
        nullable: false
  - add_column:
      table: users
      up: substring(full_name from position(' ' in full_name) + 1)
      column:
        name: last_name
        type: varchar(100)
        nullable: false
`

// pgrollBatchLike matches pgroll's backfill batch statement
// (pkg/backfill/templates: "WITH batch AS (SELECT … FOR NO KEY UPDATE) …").
const pgrollBatchLike = "WITH batch AS%"

func (a *app) benchPeer(ctx context.Context, p peerSpec, r peerRun) (res peerResult, err error) {
	log := a.errOut
	res.Tool, res.Database, res.LockTimeoutMS = p.Tool, p.database(), pgrollLockTimeoutMS
	path, err := exec.LookPath(p.Path)
	if err != nil {
		return res, fmt.Errorf("bench: --peer %s: %w", p.Tool, err)
	}
	if out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput(); err == nil {
		res.ToolVersion = strings.TrimSpace(string(out))
	} else {
		return res, fmt.Errorf("bench: %s --version: %w: %s", path, err, bytes.TrimSpace(out))
	}
	u, err := url.Parse(r.dsn)
	if err != nil {
		return res, fmt.Errorf("bench: peer DSN: %w", err)
	}
	q := u.Query()
	q.Set("application_name", p.Tool)
	u.RawQuery = q.Encode()
	pgURL := u.String()
	dir, err := os.MkdirTemp("", "refit-bench-"+p.Tool+"-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "01_split_full_name.yaml")
	if err := os.WriteFile(file, []byte(pgrollMigration), 0o644); err != nil {
		return res, err
	}
	var peakKiB int64
	var lastOut []byte
	run := func(args ...string) (time.Duration, error) {
		args = append(args, "--postgres-url", pgURL, "--lock-timeout", strconv.Itoa(pgrollLockTimeoutMS))
		d, kib, out, err := runChild(ctx, path, dir, args...)
		peakKiB, lastOut = max(peakKiB, kib), out
		return d, err
	}

	fmt.Fprintf(log, "bench: %s init, baseline\n", p.Tool)
	if _, err := run("init"); err != nil {
		return res, err
	}
	if _, err := run("baseline", "00_baseline", filepath.Join(dir, "baseline"), "--yes"); err != nil {
		return res, err
	}
	// The old application's search_path is the schema of the version
	// before the migration; a baseline has no version schema of its own, so
	// that is public, where the table is.
	res.WriterSearchPath = "public"
	var versioned []string
	rows, err := r.admin.Query(ctx, `SELECT nspname FROM pg_namespace WHERE nspname LIKE 'public\_%' ORDER BY nspname`)
	if err != nil {
		return res, fmt.Errorf("bench: version schemas: %w", err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return res, err
		}
		versioned = append(versioned, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, err
	}
	if len(versioned) > 0 {
		res.WriterSearchPath = versioned[len(versioned)-1]
	}
	cfg, err := pgxpool.ParseConfig(r.dsn)
	if err != nil {
		return res, err
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = res.WriterSearchPath
	appPool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return res, err
	}
	defer appPool.Close()

	if err := quiesce(ctx, r.admin); err != nil {
		return res, err
	}
	workers := 4
	perWorker := max(r.rate/workers, 1)
	fmt.Fprintf(log, "bench: %s writer baseline, %d writes/s for %s\n", p.Tool, perWorker*workers, r.baseline)
	base := workload.NewWriter(appPool, perWorker, workers, workload.V1)
	bctx, bcancel := context.WithTimeout(ctx, r.baseline)
	sampled := make(chan struct{})
	go func() { sampleSessions(bctx, r.sampleDSN, p.Tool, pgrollBatchLike); close(sampled) }()
	base.Run(bctx)
	bcancel()
	<-sampled
	res.Baseline = latencyOf(base.Stats())

	w := workload.NewWriter(appPool, perWorker, workers, workload.V1)
	wctx, wstop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var samples sessionSamples
	wg.Add(2)
	go func() { defer wg.Done(); w.Run(wctx) }()
	go func() { defer wg.Done(); samples = sampleSessions(wctx, r.sampleDSN, p.Tool, pgrollBatchLike) }()
	stopWriter := sync.OnceFunc(func() { wstop(); wg.Wait() })
	defer stopWriter()

	fmt.Fprintf(log, "bench: %s start\n", p.Tool)
	startD, err := run("start", file)
	if err != nil {
		return res, err
	}
	res.StartS = startD.Seconds()
	// pgroll start exits 0 after printing why it did not start (e.g. a
	// schema without history); the new version's schema says it did.
	var started bool
	if err := r.admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public_01_split_full_name')`).Scan(&started); err != nil {
		return res, fmt.Errorf("bench: check %s start: %w", p.Tool, err)
	}
	if !started {
		return res, fmt.Errorf("bench: %s start created no version schema public_01_split_full_name:\n%s", p.Tool, tail(lastOut, 4096))
	}
	windowMark := w.Mark()
	fmt.Fprintf(log, "bench: %s window, %s\n", p.Tool, r.window)
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(r.window):
	}
	stopWriter()
	end := w.Mark()
	fmt.Fprintf(log, "bench: %s complete\n", p.Tool)
	completeD, err := run("complete")
	if err != nil {
		return res, err
	}
	res.CompleteS = completeD.Seconds()

	// A small table's few batches can all fall between two samples; the
	// backfill's span is then bounded by start's wall time, and says so.
	res.BackfillS, res.BackfillMeasure = samples.lastBatch.Sub(samples.firstBatch).Seconds(), "sampled batches"
	if samples.firstBatch.IsZero() || res.BackfillS <= 0 {
		res.BackfillS, res.BackfillMeasure = res.StartS, "start wall time (no batch span sampled)"
	}
	if res.BackfillS > 0 {
		res.BackfillRowsS = float64(r.rows) / res.BackfillS
		res.BackfillRatio = res.BackfillRowsS / r.singleRowsS
		res.RefitVsPeer = r.refitRowsS / res.BackfillRowsS
	}
	ws := w.Stats()
	res.During = latencyOf(ws)
	res.WriterErrors = ws.Errors
	if ws.LastErr != nil {
		res.WriterLastErr = ws.LastErr.Error()
	}
	res.DuringBackfill = latencyOf(w.StatsRange(0, windowMark))
	res.DuringBackfill.Count = int64(windowMark)
	res.DuringWindow = latencyOf(w.StatsRange(windowMark, end))
	res.DuringWindow.Count = int64(end - windowMark)
	if res.Baseline.P99ms > 0 {
		res.WriterP99Ratio = res.During.P99ms / res.Baseline.P99ms
	}
	res.MaxLockWaitMS = ms(samples.longestWait)
	res.PeakRSSMiB = float64(peakKiB) / 1024

	err = r.admin.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE first_name IS DISTINCT FROM split_part(full_name, ' ', 1)
		OR last_name IS DISTINCT FROM substring(full_name from position(' ' in full_name) + 1)) FROM public.users`).Scan(&res.Rows, &res.WrongRows)
	if err != nil {
		return res, fmt.Errorf("bench: check %s's rows: %w", p.Tool, err)
	}
	return res, nil
}

// runChild runs path with args in dir and returns its wall time, its peak
// RSS in KiB — the highest VmHWM read from /proc every 10 ms while it runs,
// or the kernel's maxrss of the exited child if higher (the last growth may
// fall after the last read) — and its output, which is also in the error if
// it fails.
func runChild(ctx context.Context, path, dir string, args ...string) (time.Duration, int64, []byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, nil, fmt.Errorf("bench: %s %s: %w", filepath.Base(path), args[0], err)
	}
	done := make(chan struct{})
	var hwm int64
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if kib, ok := readVmHWM(status); ok && kib > hwm {
				hwm = kib
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	err := cmd.Wait()
	d := time.Since(start)
	close(done)
	sampler.Wait()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > hwm {
		hwm = ru.Maxrss // KiB on Linux
	}
	if err != nil {
		return d, hwm, out.Bytes(), fmt.Errorf("bench: %s %s: %w\n%s", filepath.Base(path), args[0], err, tail(out.Bytes(), 4096))
	}
	return d, hwm, out.Bytes(), nil
}

// readVmHWM returns the VmHWM line of a /proc/PID/status file in KiB.
func readVmHWM(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	return parseVmHWM(b)
}

func parseVmHWM(status []byte) (int64, bool) {
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				return 0, false
			}
			kib, err := strconv.ParseInt(f[0], 10, 64)
			return kib, err == nil
		}
	}
	return 0, false
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

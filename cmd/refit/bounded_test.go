package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/internal/pgtest"
)

// refitProcess is a `refit run` started in the background.
type refitProcess struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when it exited; err is then set
	err  error
}

func startRun(t *testing.T, env []string, args ...string) *refitProcess {
	t.Helper()
	p := &refitProcess{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(refitBinary(t), append([]string{"run"}, args...)...)
	p.cmd.Env = append(append(os.Environ(), "REFIT_DSN="), env...)
	p.cmd.Dir = t.TempDir()
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("refit run %d output:\n%s", p.cmd.Process.Pid, p.out.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *refitProcess) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("refit run %d still runs after %s:\n%s", p.cmd.Process.Pid, timeout, p.out.String())
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// memoryKiB reads a field (VmRSS, VmHWM) of /proc/<pid>/status, in KiB.
func memoryKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s of %d: %v", field, pid, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// resetPeakRSS makes VmHWM start again from the current RSS (Linux 4.0+:
// clear_refs 5).
func resetPeakRSS(t *testing.T, pid int) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
}

// bigTable creates big(id, v) with n rows and a migration deriving v2 = v*2.
func bigTable(t *testing.T, pool *pgxpool.Pool, n int) string {
	t.Helper()
	if _, err := pool.Exec(context.Background(), fmt.Sprintf(`CREATE TABLE big (id bigint PRIMARY KEY, v int NOT NULL);
		INSERT INTO big SELECT i, i FROM generate_series(1, %d) i; ANALYZE big`, n)); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "big.yaml", `name: big_v2
operations:
  - add_column:
      table: big
      column: {name: v2, type: bigint, nullable: false}
      up: v::bigint * 2
`)
}

// waitRight waits until every row of big has v2 = v*2.
func waitRight(t *testing.T, pool *pgxpool.Pool, timeout time.Duration, p *refitProcess, sample func()) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if sample != nil {
			sample()
		}
		var bad int64
		if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM big WHERE v2 IS DISTINCT FROM v::bigint * 2").Scan(&bad); err != nil {
			t.Fatal(err)
		}
		if bad == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rows of big still wrong after %s:\n%s", bad, timeout, p.out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestRunawayTransactionMemory: an application transaction of the window
// that updates 1M rows at once must not make refit hold a million dirty
// keys in memory. The test logs refit's peak RSS (VmHWM of the refit
// process) during that transaction's sync, against its RSS before it.
func TestRunawayTransactionMemory(t *testing.T) {
	const rows = 1_000_000
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	file := bigTable(t, pool, rows)
	p := startRun(t, []string{"REFIT_DSN=" + dsn, "REFIT_BACKFILL_BATCH_SIZE=20000"}, file, "--contract", "manual")
	waitJobs(t, pool, 5*time.Minute, "EXISTS (SELECT FROM refit.jobs WHERE phase = 'syncing')")
	pid := p.cmd.Process.Pid
	backfillPeak := memoryKiB(t, pid, "VmHWM")
	before := memoryKiB(t, pid, "VmRSS")
	resetPeakRSS(t, pid)

	start := time.Now()
	if _, err := pool.Exec(ctx, "UPDATE big SET v = v + 1"); err != nil {
		t.Fatal(err)
	}
	written := time.Since(start)
	var maxRSS int64
	waitRight(t, pool, 10*time.Minute, p, func() { maxRSS = max(maxRSS, memoryKiB(t, pid, "VmRSS")) })
	synced := time.Since(start)
	peak := memoryKiB(t, pid, "VmHWM")
	t.Logf("refit RSS in the window before the transaction: %d MiB (backfill peak %d MiB); "+
		"peak RSS while a %d-row transaction was synced: %d MiB (largest VmRSS sampled %d MiB); transaction %s, synced after %s",
		before>>10, backfillPeak>>10, rows, peak>>10, maxRSS>>10, written.Round(time.Millisecond), synced.Round(time.Millisecond))
	// Not a measure of speed: a generous bound that the unbounded consumer
	// (every key of the transaction in memory, about 400-480 MiB here)
	// exceeds and the bounded one (about 25 MiB) is far from.
	if peak > 256<<10 {
		t.Errorf("refit's peak RSS while syncing one %d-row transaction is %d MiB: its keys are not bounded", rows, peak>>10)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.wait(t, time.Minute)
}

// slotRetained returns the retained WAL of the job slot of the database
// (-1 when there is none).
func slotRetained(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	var n int64 = -1
	err := pool.QueryRow(context.Background(), `SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn))::bigint, -1)
		FROM pg_replication_slots WHERE database = current_database() AND slot_name LIKE 'refit\_job\_%'`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStoppedConsumerHardLimit: the only process running a job in the
// window is stopped (SIGSTOP) while the application writes; its slot's
// retained WAL passes replication.max_retained_wal, then
// replication.fail_retained_wal. The stopped process enforces nothing, so
// another refit process must: a worker's periodic sweep, or the sweep of
// another `refit run` attempt. It fails the job and drops the slot. When
// the stopped process goes on, it stops, saying the job was failed
// elsewhere; `refit run` again backfills again (the slot's gap is lost) and
// completes with every row right.
func TestStoppedConsumerHardLimit(t *testing.T) {
	const (
		rows    = 50_000
		maxWAL  = 16 << 20
		failWAL = 48 << 20
	)
	for _, enforcer := range []string{"worker", "run"} {
		t.Run(enforcer, func(t *testing.T) {
			ctx := context.Background()
			dsn := pgtest.NewDB(t)
			pool, err := pgxpool.New(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			file := bigTable(t, pool, rows)
			if _, err := pool.Exec(ctx, "CREATE TABLE filler (id bigserial PRIMARY KEY, pad text)"); err != nil {
				t.Fatal(err)
			}
			limits := []string{"REFIT_DSN=" + dsn, fmt.Sprintf("REFIT_REPLICATION_MAX_RETAINED_WAL=%d", maxWAL),
				fmt.Sprintf("REFIT_REPLICATION_FAIL_RETAINED_WAL=%d", failWAL)}
			owner := startRun(t, limits, file, "--contract", "manual")
			waitJobs(t, pool, 2*time.Minute, "EXISTS (SELECT FROM refit.jobs WHERE phase = 'syncing')")
			if err := owner.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			stoppedAt := time.Now()

			// The application writes the synced table's old column, and
			// enough else to pass both limits.
			write := func() {
				t.Helper()
				if _, err := pool.Exec(ctx, `UPDATE big SET v = v + 1 WHERE id % 7 = 0;
					INSERT INTO filler (pad) SELECT repeat(md5(g::text), 32) FROM generate_series(1, 4000) g`); err != nil {
					t.Fatal(err)
				}
			}
			// What the application goes on writing afterwards: a few rows
			// of the synced table every 100 ms.
			trickle := func() {
				t.Helper()
				if _, err := pool.Exec(ctx, "UPDATE big SET v = v + 1 WHERE id % 1000 = $1", time.Now().UnixNano()%1000); err != nil {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			passedSoft := int64(0)
			for retained := slotRetained(t, pool); retained <= failWAL; retained = slotRetained(t, pool) {
				if retained < 0 {
					t.Fatal("the slot is gone before the hard limit")
				}
				if passedSoft == 0 && retained > maxWAL {
					passedSoft = retained
				}
				write()
			}
			t.Logf("consumer stopped; the slot retained %d bytes past max_retained_wal (%d), %d bytes past fail_retained_wal (%d), %s after the stop",
				passedSoft, maxWAL, slotRetained(t, pool), failWAL, time.Since(stoppedAt).Round(time.Millisecond))

			// The enforcer acts once the stopped consumer has been silent
			// for worker.UnresponsiveAfter; the application goes on writing.
			var other *refitProcess
			switch enforcer {
			case "worker":
				startDaemon(t, workerConfig(t, dsn), limits[1:]...)
			case "run":
				time.Sleep(time.Until(stoppedAt.Add(11 * time.Second)))
				other = startRun(t, limits, file, "--contract", "now")
			}
			deadline := time.Now().Add(time.Minute)
			for slotRetained(t, pool) >= 0 {
				if time.Now().After(deadline) {
					t.Fatalf("the slot retaining %d bytes was not dropped", slotRetained(t, pool))
				}
				trickle()
			}
			var phase, msg, actor string
			if err := pool.QueryRow(ctx, `SELECT j.phase, e.message, e.actor FROM refit.jobs j
				JOIN refit.job_events e ON e.job_id = j.id AND e.to_phase = 'failed' ORDER BY e.id DESC LIMIT 1`).Scan(&phase, &msg, &actor); err != nil {
				t.Fatal(err)
			}
			if phase != "failed" || actor != "sweep" || !strings.Contains(msg, "fail_retained_wal") {
				t.Fatalf("after the drop the job is %s, by %q: %s", phase, actor, msg)
			}
			t.Logf("dropped by the %s's sweep %s after the stop: %s", enforcer, time.Since(stoppedAt).Round(time.Millisecond), msg)
			if other != nil {
				if code := other.wait(t, time.Minute); code != 1 || !strings.Contains(other.out.String(), "being run by another refit process") {
					t.Fatalf("the other run: exit %d, want 1 (the job is claimed by the stopped one):\n%s", code, other.out.String())
				}
			}
			trickle()

			// The stopped process goes on: it stops, naming who failed the job.
			if err := owner.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			if code := owner.wait(t, time.Minute); code != 1 || !strings.Contains(owner.out.String(), "failed by another refit process (sweep)") {
				t.Fatalf("the stopped run after SIGCONT: exit %d, want 1 naming the sweep:\n%s", code, owner.out.String())
			}
			trickle()

			res := runRefit(t, limits, "run", file, "--contract", "now")
			if res.code != 0 || !strings.Contains(res.stdout, "completed") {
				t.Fatalf("run again: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
			}
			if !strings.Contains(res.stderr, "backfilling again") {
				t.Errorf("the run after the drop did not backfill again:\n%s", res.stderr)
			}
			var bad, nulls int64
			if err := pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE v2 IS DISTINCT FROM v::bigint * 2), count(*) FILTER (WHERE v2 IS NULL) FROM big").Scan(&bad, &nulls); err != nil {
				t.Fatal(err)
			}
			if bad != 0 || nulls != 0 {
				t.Fatalf("%d rows wrong after the re-backfill", bad)
			}
			if n := slotRetained(t, pool); n != -1 {
				t.Fatalf("a slot is left, retaining %d bytes", n)
			}
		})
	}
}

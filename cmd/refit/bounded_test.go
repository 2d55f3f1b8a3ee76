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
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.wait(t, time.Minute)
}

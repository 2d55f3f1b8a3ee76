package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/sqlstate"
)

// daemon is a real `refit worker` process.
type daemon struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	http string
	done chan struct{} // closed when the process exited; err is then set
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func startDaemon(t *testing.T, config string, env ...string) *daemon {
	t.Helper()
	d := &daemon{out: &syncBuffer{}, http: freeAddr(t), done: make(chan struct{})}
	d.cmd = exec.Command(refitBinary(t), "worker", "--config", config, "--http-listen", d.http)
	d.cmd.Env = append(append(os.Environ(), "REFIT_DSN="), env...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("worker %d output:\n%s", d.cmd.Process.Pid, d.out.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + d.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not ready:\n%s", d.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *daemon) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + d.http + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func workerConfig(t *testing.T, dsn string) string {
	return writeFile(t, "refit.yaml", fmt.Sprintf(`targets:
  - name: main
    dsn: %q
worker:
  poll_interval: 200ms
  max_jobs: 4
  shutdown_timeout: 10s
backfill:
  batch_size: 500
  target_batch_time: 0s   # fixed batches: the tests pace the backfill
  sleep: 10ms
log:
  format: json
`, dsn))
}

func tableMigration(name, table string) string {
	return fmt.Sprintf(`name: %s
operations:
  - add_column:
      table: %s
      column: {name: v_upper, type: text, nullable: false}
      up: upper(v)
`, name, table)
}

func createTables(t *testing.T, pool *pgxpool.Pool, rows map[string]int) {
	t.Helper()
	for table, n := range rows {
		if _, err := pool.Exec(context.Background(), fmt.Sprintf(`CREATE TABLE %s (id bigint PRIMARY KEY, v text NOT NULL);
			INSERT INTO %s SELECT i, 'value ' || i FROM generate_series(1, %d) i; ANALYZE %s`, table, table, n, table)); err != nil {
			t.Fatal(err)
		}
	}
}

type event struct {
	job      int64
	from, to string
	actor    string
	at       time.Time
}

func jobEvents(t *testing.T, pool *pgxpool.Pool) []event {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT job_id, coalesce(from_phase, ''), to_phase, actor, at FROM refit.job_events ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []event
	for rows.Next() {
		var e event
		if err := rows.Scan(&e.job, &e.from, &e.to, &e.actor, &e.at); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func waitJobs(t *testing.T, pool *pgxpool.Pool, timeout time.Duration, cond string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		if err := pool.QueryRow(context.Background(), "SELECT "+cond).Scan(&ok); err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			var s string
			_ = pool.QueryRow(context.Background(), "SELECT string_agg(id || ':' || name || ':' || phase || ':' || coalesce(error, ''), E'\\n') FROM refit.jobs").Scan(&s)
			t.Fatalf("timed out waiting for %s; jobs:\n%s", cond, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var pidRe = regexp.MustCompile(`/(\d+)$`)

// TestTwoDaemons: two worker processes, five jobs (two on the same table):
// each job runs once and to completion, jobs on one table run in submission
// order, the daemon owning a running job is killed and the other finishes
// it, /metrics moves, and SIGTERM exits 0 leaving a job that resumes later.
func TestTwoDaemons(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	createTables(t, pool, map[string]int{"t1": 60000, "t2": 5000, "t3": 5000, "t4": 5000})
	config := workerConfig(t, dsn)
	a := startDaemon(t, config)
	b := startDaemon(t, config)

	// Five jobs: four by CLI, one through SQL; t4 gets two jobs.
	var ids []int64
	for i, table := range []string{"t1", "t2", "t3", "t4"} {
		file := writeFile(t, fmt.Sprintf("m%d.yaml", i), tableMigration(fmt.Sprintf("m%d_%s", i, table), table))
		res := runRefit(t, []string{"REFIT_DSN=" + dsn}, "submit", file, "--contract", "now")
		if res.code != 0 {
			t.Fatalf("submit: %d %s", res.code, res.stderr)
		}
		id, err := strconv.ParseInt(strings.TrimSpace(res.stdout), 10, 64)
		if err != nil {
			t.Fatalf("submit printed %q", res.stdout)
		}
		ids = append(ids, id)
	}
	var sqlID int64
	second := strings.Replace(tableMigration("m4_t4_second", "t4"), "v_upper, type: text, nullable: false}\n      up: upper(v)", "v_len, type: int, nullable: false}\n      up: length(v)", 1)
	if err := pool.QueryRow(ctx, "SELECT refit.submit($1, $2, 'now')", "m4_t4_second", second).Scan(&sqlID); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, sqlID)

	// Kill the daemon that owns the big job while it backfills.
	waitJobs(t, pool, time.Minute, fmt.Sprintf("EXISTS (SELECT 1 FROM refit.jobs WHERE id = %d AND phase = 'backfilling' AND owner IS NOT NULL)", ids[0]))
	m1 := a.get(t, "/metrics") + b.get(t, "/metrics")
	var owner string
	if err := pool.QueryRow(ctx, "SELECT owner FROM refit.jobs WHERE id = $1", ids[0]).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	victim, survivor := a, b
	if pm := pidRe.FindStringSubmatch(owner); pm == nil || pm[1] != strconv.Itoa(a.cmd.Process.Pid) {
		victim, survivor = b, a
	}
	time.Sleep(300 * time.Millisecond)
	m2 := survivor.get(t, "/metrics") + victim.get(t, "/metrics")
	killedAt := time.Now()
	_ = victim.cmd.Process.Signal(syscall.SIGKILL)
	<-victim.done
	t.Logf("killed worker %d owning job %d", victim.cmd.Process.Pid, ids[0])

	waitJobs(t, pool, 3*time.Minute, "NOT EXISTS (SELECT 1 FROM refit.jobs WHERE phase <> 'completed')")
	// The survivor took the job over within the bound.
	var takeover time.Time
	if err := pool.QueryRow(ctx, `SELECT min(at) FROM refit.job_events WHERE job_id = $1 AND at > $2 AND actor LIKE $3`,
		ids[0], killedAt, "%/"+strconv.Itoa(survivor.cmd.Process.Pid)).Scan(&takeover); err != nil {
		t.Fatalf("no event by the survivor after the kill: %v", err)
	}
	t.Logf("job %d taken over %s after the kill", ids[0], takeover.Sub(killedAt).Round(time.Millisecond))
	if takeover.Sub(killedAt) > 30*time.Second {
		t.Fatalf("takeover took %s", takeover.Sub(killedAt))
	}

	// Each job went through each phase once, in order.
	want := []string{"pending", "expanding", "backfilling", "syncing", "contracting", "completed"}
	events := jobEvents(t, pool)
	for _, id := range ids {
		var phases []string
		for _, e := range events {
			if e.job == id && e.from != e.to {
				phases = append(phases, e.to)
			}
		}
		if strings.Join(phases, ",") != strings.Join(want, ",") {
			t.Errorf("job %d phases %v, want %v", id, phases, want)
		}
	}
	// Same table: the second t4 job started after the first completed.
	var firstDone, secondStart time.Time
	for _, e := range events {
		if e.job == ids[3] && e.to == "completed" {
			firstDone = e.at
		}
		if e.job == sqlID && e.to == "expanding" {
			secondStart = e.at
		}
	}
	if !secondStart.After(firstDone) {
		t.Errorf("jobs on t4 overlapped: second started %s, first completed %s", secondStart, firstDone)
	}
	for table, check := range map[string]string{"t1": "v_upper = upper(v)", "t2": "v_upper = upper(v)", "t3": "v_upper = upper(v)", "t4": "v_upper = upper(v) AND v_len = length(v)"} {
		var bad int
		if err := pool.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM %s WHERE NOT (%s)", table, check)).Scan(&bad); err != nil || bad != 0 {
			t.Errorf("%s: %d bad rows (%v)", table, bad, err)
		}
	}
	// Metrics moved while the job ran.
	rows := func(s string) float64 {
		var sum float64
		for _, line := range strings.Split(s, "\n") {
			if strings.HasPrefix(line, "refit_job_rows_done{") && strings.Contains(line, fmt.Sprintf(`job="%d"`, ids[0])) {
				f := strings.Fields(line)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				sum = max(sum, v)
			}
		}
		return sum
	}
	if r1, r2 := rows(m1), rows(m2); !(r2 > r1) {
		t.Errorf("refit_job_rows_done did not move: %v → %v", r1, r2)
	}
	for _, name := range []string{"refit_backfill_rows_total", "refit_backfill_batch_duration_seconds_bucket", "refit_sync_lag_bytes", "refit_slot_retained_wal_bytes", "refit_jobs{", "refit_ddl_lock_retries_total", "refit_backfill_batch_size"} {
		if !strings.Contains(m1+m2, name) {
			t.Errorf("metrics lack %s", name)
		}
	}

	// SIGTERM during a job: exit 0, the job stays resumable, a new worker finishes it.
	createTables(t, pool, map[string]int{"t5": 80000})
	res := runRefit(t, []string{"REFIT_DSN=" + dsn}, "submit", writeFile(t, "m5.yaml", tableMigration("m5", "t5")), "--contract", "now")
	if res.code != 0 {
		t.Fatal(res.stderr)
	}
	waitJobs(t, pool, time.Minute, "EXISTS (SELECT 1 FROM refit.jobs WHERE name = 'm5' AND phase = 'backfilling')")
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	_ = survivor.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-survivor.done:
		if survivor.err != nil {
			t.Fatalf("SIGTERM exit: %v\n%s", survivor.err, survivor.out.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("worker did not exit within 15 s of SIGTERM")
	}
	t.Logf("worker exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	var phase string
	if err := pool.QueryRow(ctx, "SELECT phase FROM refit.jobs WHERE name = 'm5'").Scan(&phase); err != nil || phase != "backfilling" {
		t.Fatalf("after SIGTERM the job is %q (%v)", phase, err)
	}
	startDaemon(t, config)
	waitJobs(t, pool, 2*time.Minute, "EXISTS (SELECT 1 FROM refit.jobs WHERE name = 'm5' AND phase = 'completed')")
	var bad int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM t5 WHERE v_upper IS DISTINCT FROM upper(v)").Scan(&bad); err != nil || bad != 0 {
		t.Fatalf("t5: %d bad rows (%v)", bad, err)
	}
}

func phaseOf(t *testing.T, pool *pgxpool.Pool, name string) (phase string, rows int64) {
	t.Helper()
	err := pool.QueryRow(context.Background(), `SELECT j.phase, coalesce((SELECT sum(rows_done) FROM refit.backfill_ranges r WHERE r.job_id = j.id), 0)::bigint
		FROM refit.jobs j WHERE j.name = $1 ORDER BY id DESC LIMIT 1`, name).Scan(&phase, &rows)
	if err != nil {
		t.Fatal(err)
	}
	return phase, rows
}

func schemaOf(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), `SELECT concat_ws('|',
		(SELECT string_agg(c.relname || '.' || a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull::text, ',' ORDER BY c.relname, a.attnum)
		   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped),
		(SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = 'public'::regnamespace),
		(SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE connamespace = 'public'::regnamespace),
		(SELECT count(*) FROM pg_replication_slots), (SELECT count(*) FROM pg_publication))`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDaemonControl: pause, resume, complete, abort and retry, each seen to
// take effect on a job run by a worker process; abort after contract is
// refused.
func TestDaemonControl(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	createTables(t, pool, map[string]int{"c1": 40000, "c2": 5000, "c3": 5000})
	if _, err := pool.Exec(ctx, "UPDATE c3 SET v = 'dup' WHERE id <= 2"); err != nil {
		t.Fatal(err)
	}
	env := []string{"REFIT_DSN=" + dsn}
	startDaemon(t, workerConfig(t, dsn))

	// pause → batches stop; resume → it goes on to the window (manual gate);
	// complete → it contracts.
	res := runRefit(t, env, "submit", writeFile(t, "p.yaml", tableMigration("pausable", "c1")), "--contract", "manual")
	if res.code != 0 {
		t.Fatal(res.stderr)
	}
	waitJobs(t, pool, time.Minute, "EXISTS (SELECT 1 FROM refit.jobs WHERE name = 'pausable' AND phase = 'backfilling' AND (SELECT sum(rows_done) FROM refit.backfill_ranges) > 0)")
	if res := runRefit(t, env, "pause", "pausable"); res.code != 0 {
		t.Fatalf("pause: %s", res.stderr)
	}
	time.Sleep(1500 * time.Millisecond) // the worker notices within a second
	phase, r1 := phaseOf(t, pool, "pausable")
	time.Sleep(time.Second)
	_, r2 := phaseOf(t, pool, "pausable")
	if phase != "paused" || r1 != r2 || r1 >= 40000 {
		t.Fatalf("after pause: phase %s, rows %d → %d", phase, r1, r2)
	}
	if res := runRefit(t, env, "resume", "pausable"); res.code != 0 {
		t.Fatalf("resume: %s", res.stderr)
	}
	waitJobs(t, pool, time.Minute, "EXISTS (SELECT 1 FROM refit.jobs WHERE name = 'pausable' AND phase = 'syncing')")
	time.Sleep(500 * time.Millisecond)
	if p, _ := phaseOf(t, pool, "pausable"); p != "syncing" {
		t.Fatalf("manual gate did not hold: %s", p)
	}
	if res := runRefit(t, env, "complete", "pausable"); res.code != 0 {
		t.Fatalf("complete: %s", res.stderr)
	}
	waitJobs(t, pool, time.Minute, "EXISTS (SELECT 1 FROM refit.jobs WHERE name = 'pausable' AND phase = 'completed')")
	if res := runRefit(t, env, "abort", "pausable"); res.code == 0 || !strings.Contains(res.stderr, "fix forward") {
		t.Fatalf("abort after contract: %d %s", res.code, res.stderr)
	}

	// abort in the window → the schema is exactly as before.
	before := schemaOf(t, pool)
	res = runRefit(t, env, "submit", writeFile(t, "a.yaml", tableMigration("abortable", "c2")), "--contract", "manual")
	if res.code != 0 {
		t.Fatal(res.stderr)
	}
	waitJobs(t, pool, time.Minute, "EXISTS (SELECT 1 FROM refit.jobs WHERE name = 'abortable' AND phase = 'syncing')")
	if res := runRefit(t, env, "abort", "abortable"); res.code != 0 || !strings.Contains(res.stdout, "aborted") {
		t.Fatalf("abort: %d %s %s", res.code, res.stdout, res.stderr)
	}
	if after := schemaOf(t, pool); after != before {
		t.Fatalf("abort changed the schema:\nbefore %s\nafter  %s", before, after)
	}

	// retry: a unique index over duplicates fails the job; fix the data, retry.
	uniq := `name: uniq
operations:
  - add_column:
      table: c3
      column: {name: v_upper, type: text}
      up: upper(v)
  - create_index:
      name: c3_v_upper_key
      table: c3
      columns: [v_upper]
      unique: true
`
	res = runRefit(t, env, "submit", writeFile(t, "u.yaml", uniq), "--contract", "now")
	if res.code != 0 {
		t.Fatal(res.stderr)
	}
	waitJobs(t, pool, time.Minute, "EXISTS (SELECT 1 FROM refit.jobs WHERE name = 'uniq' AND phase = 'failed')")
	var jobErr string
	if err := pool.QueryRow(ctx, "SELECT error FROM refit.jobs WHERE name = 'uniq'").Scan(&jobErr); err != nil || !strings.Contains(jobErr, sqlstate.UniqueViolation) {
		t.Fatalf("failure: %q %v", jobErr, err)
	}
	time.Sleep(time.Second)
	if p, _ := phaseOf(t, pool, "uniq"); p != "failed" {
		t.Fatalf("a failed job was retried without `refit retry`: %s", p)
	}
	if _, err := pool.Exec(ctx, "UPDATE c3 SET v = 'fixed ' || id WHERE v = 'dup'"); err != nil {
		t.Fatal(err)
	}
	if res := runRefit(t, env, "retry", "uniq"); res.code != 0 {
		t.Fatalf("retry: %s", res.stderr)
	}
	waitJobs(t, pool, time.Minute, "EXISTS (SELECT 1 FROM refit.jobs WHERE name = 'uniq' AND phase = 'completed')")
	var valid bool
	if err := pool.QueryRow(ctx, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'c3_v_upper_key'::regclass").Scan(&valid); err != nil || !valid {
		t.Fatalf("index after retry: %v %v", valid, err)
	}
}

// TestDaemonReloadsConfig: a worker whose config file caps the backfill at 1
// row/s holds the job; editing the file to lift the cap lets the running
// job finish without a restart.
func TestDaemonReloadsConfig(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	createTables(t, pool, map[string]int{"r1": 5000})
	base := workerConfig(t, dsn)
	body, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	capped := string(body) + "throttle:\n  max_rows_per_second: 1\n"
	if err := os.WriteFile(base, []byte(capped), 0o644); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, base)
	if res := runRefit(t, []string{"REFIT_DSN=" + dsn}, "submit", writeFile(t, "r.yaml", tableMigration("reload", "r1")), "--contract", "now"); res.code != 0 {
		t.Fatal(res.stderr)
	}
	waitJobs(t, pool, time.Minute, "EXISTS (SELECT 1 FROM refit.jobs WHERE name = 'reload' AND throttled_by = 'max_rows_per_second')")
	time.Sleep(500 * time.Millisecond)
	if p, _ := phaseOf(t, pool, "reload"); p != "backfilling" {
		t.Fatalf("job is %s, want held in backfilling", p)
	}
	if err := os.WriteFile(base, []byte(string(body)+"throttle:\n  max_rows_per_second: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitJobs(t, pool, time.Minute, "EXISTS (SELECT 1 FROM refit.jobs WHERE name = 'reload' AND phase = 'completed')")
}

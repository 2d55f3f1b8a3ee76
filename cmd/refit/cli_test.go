package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/internal/workload"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// refitBinary builds the real binary once per test run.
func refitBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "refit-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "refit")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = err
			binPath = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build refit: %v\n%s", buildErr, binPath)
	}
	return binPath
}

type result struct {
	code           int
	stdout, stderr string
}

func runRefit(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(refitBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = t.TempDir()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

func examplePath(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../../examples/split_full_name.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func newUsers(t *testing.T, rows int) (string, *pgxpool.Pool) {
	t.Helper()
	dsn := pgtest.NewDB(t)
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := workload.CreateUsers(context.Background(), pool, rows); err != nil {
		t.Fatal(err)
	}
	return dsn, pool
}

// TestBadInput: each invalid migration exits 2 with an error naming the file,
// the operation and the field, and changes nothing in the database (not even
// the refit schema is created).
func TestBadInput(t *testing.T) {
	dsn, pool := newUsers(t, 100)
	if _, err := pool.Exec(context.Background(), "CREATE TABLE nokey (a int, b text)"); err != nil {
		t.Fatal(err)
	}
	snapshot := func() string {
		var s string
		err := pool.QueryRow(context.Background(), `SELECT concat_ws('|',
			(SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = 'public'::regnamespace),
			(SELECT string_agg(attrelid::regclass::text || '.' || attname, ',' ORDER BY attrelid, attnum) FROM pg_attribute
			   WHERE attrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace) AND attnum > 0 AND NOT attisdropped),
			(SELECT string_agg(typname, ',' ORDER BY typname) FROM pg_type WHERE typnamespace = 'public'::regnamespace),
			(SELECT count(*) FROM pg_namespace WHERE nspname = 'refit'))`).Scan(&s)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := snapshot()
	cases := []struct {
		name, body string
		want       []string // substrings of stderr
	}{
		{"unknown operation", "name: x\noperations:\n  - add_colum:\n      table: users\n", []string{"operations[0]", `unknown operation "add_colum"`}},
		{"unknown field", "name: x\noperations:\n  - add_column:\n      table: users\n      column: {name: a, type: int, nulable: true}\n", []string{"operations[0] (add_column)", `"column.nulable"`, "unknown field"}},
		{"type rejected", "name: x\noperations:\n  - add_column:\n      table: users\n      column: {name: a, type: notatype}\n", []string{"operations[0] (add_column)", `"column.type"`, "does not exist"}},
		{"up not one expression", "name: x\noperations:\n  - add_column:\n      table: users\n      column: {name: a, type: text}\n      up: \"full_name; DROP TABLE users\"\n", []string{"operations[0] (add_column)", `"up"`, "one SQL expression"}},
		{"missing table", "name: x\noperations:\n  - add_column:\n      table: nope\n      column: {name: a, type: text}\n", []string{"operations[0] (add_column)", `"table"`, "does not exist"}},
		{"missing column in up", "name: x\noperations:\n  - create_enum:\n      name: e1\n      values: [a]\n  - add_column:\n      table: users\n      column: {name: a, type: text}\n      up: upper(no_such_column)\n", []string{"operations[1] (add_column)", `"up"`, "no_such_column"}},
		{"missing column to drop", "name: x\noperations:\n  - drop_column:\n      table: users\n      column: nope\n", []string{"operations[0] (drop_column)", `"column"`, "does not exist"}},
		{"table without key", "name: x\noperations:\n  - add_column:\n      table: nokey\n      column: {name: c, type: text}\n      up: upper(b)\n", []string{"operations[0] (add_column)", `"table"`, "no primary key"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, "bad.yaml", tc.body)
			for _, cmd := range [][]string{{"run", file, "--dsn", dsn}, {"plan", file, "--dsn", dsn}} {
				res := runRefit(t, nil, cmd...)
				if res.code != 2 {
					t.Fatalf("%s: exit %d, want 2\nstdout: %s\nstderr: %s", cmd[0], res.code, res.stdout, res.stderr)
				}
				for _, w := range append([]string{file}, tc.want...) {
					if !strings.Contains(res.stderr, w) {
						t.Errorf("%s: stderr lacks %q:\n%s", cmd[0], w, res.stderr)
					}
				}
			}
			if after := snapshot(); after != before {
				t.Fatalf("the database changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// TestKillDuringBackfill kills `refit run` with SIGKILL in the middle of the
// backfill and runs it again: the second run resumes from the checkpoint
// (no batch redone from zero) and every row ends correct.
func TestKillDuringBackfill(t *testing.T) {
	const rows = 100_000
	dsn, pool := newUsers(t, rows)
	ctx := context.Background()
	env := []string{"REFIT_DSN=" + dsn, "REFIT_BACKFILL_SLEEP=15ms", "REFIT_BACKFILL_BATCH_SIZE=1000", "REFIT_BACKFILL_TARGET_BATCH_TIME=0s"}
	cmd := exec.Command(refitBinary(t), "run", examplePath(t), "--contract", "manual", "--exit-at-window")
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var done int64
	deadline := time.Now().Add(60 * time.Second)
	for done < 30_000 {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("backfill did not progress; output:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
		_ = pool.QueryRow(ctx, "SELECT coalesce(sum(rows_done), 0)::bigint FROM refit.backfill_ranges").Scan(&done)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	var phase string
	var after []string
	var atKill int64
	if err := pool.QueryRow(ctx, `SELECT j.phase, r.after_key, r.rows_done FROM refit.jobs j JOIN refit.backfill_ranges r ON r.job_id = j.id`).Scan(&phase, &after, &atKill); err != nil {
		t.Fatal(err)
	}
	if phase != "backfilling" || len(after) != 1 || atKill < 30_000 || atKill >= rows {
		t.Fatalf("after SIGKILL: phase %s, checkpoint %v, rows %d", phase, after, atKill)
	}
	t.Logf("killed at checkpoint id > %s (%d rows done)", after[0], atKill)

	res := runRefit(t, []string{"REFIT_DSN=" + dsn}, "run", examplePath(t), "--contract", "manual", "--exit-at-window")
	if res.code != 0 {
		t.Fatalf("resume: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stdout, "resuming job") || !strings.Contains(res.stderr, "resuming backfill range") || !strings.Contains(res.stderr, `"after": ["`+after[0]+`"]`) {
		t.Fatalf("resume did not start from the checkpoint %v:\n%s\n%s", after, res.stdout, res.stderr)
	}
	var total, bad, n int64
	if err := pool.QueryRow(ctx, "SELECT sum(rows_done)::bigint FROM refit.backfill_ranges").Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total != rows {
		t.Fatalf("rows scanned over both runs %d, want exactly %d (a batch was redone)", total, rows)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE first_name IS DISTINCT FROM split_part(full_name, ' ', 1)
		OR last_name IS DISTINCT FROM substring(full_name from position(' ' in full_name) + 1)) FROM users`).Scan(&n, &bad); err != nil {
		t.Fatal(err)
	}
	if n != rows || bad != 0 {
		t.Fatalf("%d of %d rows wrong", bad, n)
	}
	res = runRefit(t, []string{"REFIT_DSN=" + dsn}, "run", examplePath(t), "--contract", "now")
	if res.code != 0 || !strings.Contains(res.stdout, "completed") {
		t.Fatalf("contract: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	res = runRefit(t, []string{"REFIT_DSN=" + dsn}, "run", examplePath(t))
	if res.code != 0 || !strings.Contains(res.stdout, "already applied") {
		t.Fatalf("re-run of an applied migration: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	res = runRefit(t, []string{"REFIT_DSN=" + dsn}, "status", "split_full_name", "--json")
	var st struct {
		Phase    string `json:"phase"`
		RowsDone int64  `json:"rows_done"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil || st.Phase != "completed" || st.RowsDone != rows {
		t.Fatalf("status: %v %+v\n%s", err, st, res.stdout)
	}
	res = runRefit(t, []string{"REFIT_DSN=" + dsn}, "abort", "split_full_name")
	if res.code == 0 || !strings.Contains(res.stderr, "fix forward") {
		t.Fatalf("abort after contract: exit %d\n%s", res.code, res.stderr)
	}
}

// TestPlanWithoutDatabase prints the plan offline.
func TestPlanWithoutDatabase(t *testing.T) {
	res := runRefit(t, []string{"REFIT_DSN="}, "plan", examplePath(t))
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	for _, w := range []string{
		`CREATE TYPE "user_status_enum" AS ENUM ('active', 'suspended', 'banned')`,
		`CREATE INDEX CONCURRENTLY "idx_users_last_name" ON "users" ("last_name")`,
		`VALIDATE CONSTRAINT`, "outside any transaction", "ACCESS EXCLUSIVE (brief)", "scans the table",
	} {
		if !strings.Contains(res.stdout, w) {
			t.Errorf("plan lacks %q", w)
		}
	}
}

// TestSecretsNotLogged: a DSN password never appears in output.
func TestSecretsNotLogged(t *testing.T) {
	res := runRefit(t, nil, "status", "--dsn", "postgres://app:s3cr3t-pw@127.0.0.1:1/db?sslmode=disable&connect_timeout=1", "--log-level", "debug")
	if res.code == 0 {
		t.Fatal("status against a closed port succeeded")
	}
	if strings.Contains(res.stdout+res.stderr, "s3cr3t-pw") {
		t.Fatalf("password leaked:\n%s%s", res.stdout, res.stderr)
	}
}

// TestKillConsumerRepeatedly: `refit run` is killed with SIGKILL several
// times, at random moments of the backfill and of the window, while the old
// application writes; each restart resumes from the slot's confirmed
// position. After `refit complete` every row is right and nothing is left.
func TestKillConsumerRepeatedly(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := workload.CreateDocs(ctx, pool, 20000); err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, "docs.yaml", workload.DocsMigration)
	app, err := workload.StartOldDocsApp(ctx, dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "REFIT_DSN="+dsn, "REFIT_BACKFILL_BATCH_SIZE=500", "REFIT_BACKFILL_SLEEP=5ms", "REFIT_BACKFILL_TARGET_BATCH_TIME=0s")
	start := func() (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(refitBinary(t), "run", file, "--contract", "manual")
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &out
	}
	phases := map[string]int{}
	for i, wait := range []time.Duration{700 * time.Millisecond, 1500 * time.Millisecond, 2500 * time.Millisecond, 1200 * time.Millisecond, 3 * time.Second} {
		cmd, out := start()
		time.Sleep(wait)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		var phase string
		_ = pool.QueryRow(ctx, "SELECT phase FROM refit.jobs").Scan(&phase)
		phases[phase]++
		if strings.Contains(out.String(), "job failed") {
			t.Logf("run %d output:\n%s", i, out.String())
		}
	}
	t.Logf("phases at the kills: %v", phases)
	cmd, out := start()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var phase string
		_ = pool.QueryRow(ctx, "SELECT phase FROM refit.jobs").Scan(&phase)
		if phase == "syncing" {
			break
		}
		if phase == "failed" || time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("job is %s; output:\n%s", phase, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	writes, errs, last := app.Stop()
	if errs > 0 {
		t.Fatalf("application errors: %d (last %v)", errs, last)
	}
	res := runRefit(t, []string{"REFIT_DSN=" + dsn}, "complete", "docs_derived")
	if res.code != 0 {
		t.Fatalf("complete: %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run after complete: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "completed") {
		t.Fatalf("run did not complete:\n%s", out.String())
	}
	var n, bad int64
	if err := pool.QueryRow(ctx, workload.VerifyDocsSQL).Scan(&n, &bad); err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Fatalf("%d of %d rows wrong after %d application writes and repeated SIGKILLs", bad, n, writes)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_origin WHERE substring(roname from '^refit_j([0-9]+)_')::bigint IN (SELECT id FROM refit.jobs))`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("replication objects left: %d %v", left, err)
	}
	t.Logf("%d rows verified after %d application writes", n, writes)
}

// TestKillParallelBackfill: a backfill split into 3 concurrent ranges is
// killed with SIGKILL; the re-run resumes every range from its checkpoint.
func TestKillParallelBackfill(t *testing.T) {
	const rows = 90_000
	dsn, pool := newUsers(t, rows)
	ctx := context.Background()
	env := []string{"REFIT_DSN=" + dsn, "REFIT_BACKFILL_SLEEP=10ms", "REFIT_BACKFILL_BATCH_SIZE=500",
		"REFIT_BACKFILL_TARGET_BATCH_TIME=0s", "REFIT_BACKFILL_PARALLELISM=3"}
	cmd := exec.Command(refitBinary(t), "run", examplePath(t), "--contract", "manual", "--exit-at-window")
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var started int
		_ = pool.QueryRow(ctx, "SELECT count(*) FROM refit.backfill_ranges WHERE rows_done >= 3000").Scan(&started)
		if started == 3 {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("ranges did not progress together:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	var done int64
	if err := pool.QueryRow(ctx, "SELECT sum(rows_done)::bigint FROM refit.backfill_ranges").Scan(&done); err != nil || done >= rows {
		t.Fatalf("after SIGKILL: %d rows done (%v)", done, err)
	}
	res := runRefit(t, env, "run", examplePath(t), "--contract", "manual", "--exit-at-window")
	if res.code != 0 || strings.Count(res.stderr, "resuming backfill range") != 3 {
		t.Fatalf("resume: exit %d, want 3 ranges resumed\n%s", res.code, res.stderr)
	}
	var total, bad int64
	if err := pool.QueryRow(ctx, "SELECT sum(rows_done)::bigint FROM refit.backfill_ranges").Scan(&total); err != nil || total != rows {
		t.Fatalf("rows counted %d, want exactly %d (%v)", total, rows, err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM users WHERE first_name IS DISTINCT FROM split_part(full_name, ' ', 1)`).Scan(&bad); err != nil || bad != 0 {
		t.Fatalf("%d rows wrong (%v)", bad, err)
	}
	t.Logf("killed at %d of %d rows in 3 ranges; resumed and finished", done, rows)
}

// TestSetCommand: refit set validates keys and values (exit 2, nothing
// stored) and stores good ones on the job; a bad settings key in a file is
// an invalid migration.
func TestSetCommand(t *testing.T) {
	dsn, pool := newUsers(t, 1000)
	env := []string{"REFIT_DSN=" + dsn}
	if res := runRefit(t, env, "submit", examplePath(t)); res.code != 0 {
		t.Fatalf("submit: %s", res.stderr)
	}
	for _, bad := range [][]string{{"backfill.batchsize=10"}, {"backfill.batch_size=ten"}, {"backfill.target_batch_time=fast"}, {"nokey"}} {
		res := runRefit(t, env, append([]string{"set", "split_full_name"}, bad...)...)
		if res.code != 2 {
			t.Errorf("set %v: exit %d, want 2 (%s)", bad, res.code, res.stderr)
		}
	}
	res := runRefit(t, env, "set", "split_full_name", "backfill.batch_size=2000", "throttle.max_rows_per_second=5000")
	if res.code != 0 {
		t.Fatalf("set: %d %s", res.code, res.stderr)
	}
	var settings string
	if err := pool.QueryRow(context.Background(), "SELECT settings::text FROM refit.jobs WHERE name = 'split_full_name'").Scan(&settings); err != nil {
		t.Fatal(err)
	}
	if settings != `{"backfill.batch_size": "2000", "throttle.max_rows_per_second": "5000"}` {
		t.Fatalf("stored settings %s", settings)
	}
	file := writeFile(t, "s.yaml", "name: s\nsettings:\n  backfill.batch_sise: 10\noperations:\n  - add_column:\n      table: users\n      column: {name: x, type: int}\n")
	if res := runRefit(t, env, "submit", file); res.code != 2 || !strings.Contains(res.stderr, "settings") {
		t.Fatalf("bad settings key in a file: exit %d %s", res.code, res.stderr)
	}
}

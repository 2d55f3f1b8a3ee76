package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

const upperJob = `name: a_upper
operations:
  - add_column:
      table: users
      column: {name: name_upper, type: text}
      up: upper(full_name)
`

const dropJob = `name: b_drop
operations:
  - drop_column: {table: users, column: full_name}
`

func columnExists(t *testing.T, dsn, table, column string) bool {
	t.Helper()
	var ok bool
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := pool.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped)", table, column).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestRunKeepsOneJobPerTable: `refit run` obeys the one-job-per-table rule
// the daemon keeps. With job A in its window on users, a run of B (which
// drops A's source column) exits 5 naming A and changes nothing; a B queued
// with `refit submit` stays pending under `refit run`; once A completes, B
// runs.
func TestRunKeepsOneJobPerTable(t *testing.T) {
	dsn, _ := newUsers(t, 2000)
	a := writeFile(t, "a.yaml", upperJob)
	b := writeFile(t, "b.yaml", dropJob)
	if res := runRefit(t, nil, "run", a, "--dsn", dsn, "--exit-at-window"); res.code != 0 {
		t.Fatalf("run A: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res := runRefit(t, nil, "run", b, "--dsn", dsn, "--contract", "now")
	if res.code != exitBlocked || !strings.Contains(res.stderr, "a_upper") || !strings.Contains(res.stderr, "public.users") {
		t.Fatalf("run B while A holds users: exit %d, want %d naming a_upper\n%s%s", res.code, exitBlocked, res.stdout, res.stderr)
	}
	if !columnExists(t, dsn, "users", "full_name") {
		t.Fatal("B dropped full_name while A was in its window")
	}
	if st := runRefit(t, nil, "status", "b_drop", "--dsn", dsn); !strings.Contains(st.stdout, "aborted") {
		t.Fatalf("the job run created should be aborted, status:\n%s%s", st.stdout, st.stderr)
	}
	// Queued by submit, then run: refused, and it stays queued.
	if res := runRefit(t, nil, "submit", b, "--dsn", dsn, "--contract", "now"); res.code != 0 {
		t.Fatalf("submit B: exit %d\n%s", res.code, res.stderr)
	}
	if res := runRefit(t, nil, "run", b, "--dsn", dsn); res.code != exitBlocked {
		t.Fatalf("run of the queued B: exit %d, want %d\n%s%s", res.code, exitBlocked, res.stdout, res.stderr)
	}
	if st := runRefit(t, nil, "status", "b_drop", "--dsn", dsn); !strings.Contains(st.stdout, "pending") {
		t.Fatalf("the queued job should stay pending, status:\n%s", st.stdout)
	}
	if res := runRefit(t, nil, "run", a, "--dsn", dsn, "--contract", "now"); res.code != 0 {
		t.Fatalf("complete A: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res := runRefit(t, nil, "run", b, "--dsn", dsn); res.code != 0 {
		t.Fatalf("run B after A: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if columnExists(t, dsn, "users", "full_name") {
		t.Fatal("B did not drop full_name")
	}
}

// TestRunExitCodes: a run whose job is aborted by another process exits 3,
// not 0 (CI must not read it as applied).
func TestRunExitCodes(t *testing.T) {
	dsn, _ := newUsers(t, 2000)
	a := writeFile(t, "a.yaml", upperJob)
	cmd := exec.Command(refitBinary(t), "run", a, "--dsn", dsn)
	cmd.Env = os.Environ()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(runRefit(t, nil, "status", "a_upper", "--dsn", dsn).stdout, "syncing") {
		if time.Now().After(deadline) {
			t.Fatalf("job never reached the window:\n%s", out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if res := runRefit(t, nil, "abort", "a_upper", "--dsn", dsn); res.code != 0 {
		t.Fatalf("abort: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("run did not end after the abort:\n%s", out.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != exitAborted {
		t.Fatalf("run of an aborted job exited %d, want %d:\n%s", code, exitAborted, out.String())
	}
}

// TestJobReferences: a migration name that reads as an id is refused; #ID
// always means an id; a reference that is both a job's id and another job's
// name (possible through refit.submit) is refused instead of guessed.
func TestJobReferences(t *testing.T) {
	dsn, pool := newUsers(t, 100)
	res := runRefit(t, nil, "plan", writeFile(t, "n.yaml", strings.Replace(upperJob, "a_upper", `"5000087"`, 1)))
	if res.code != exitInvalid || !strings.Contains(res.stderr, `"name"`) {
		t.Fatalf("numeric name: exit %d\n%s", res.code, res.stderr)
	}
	a := writeFile(t, "a.yaml", upperJob)
	if res := runRefit(t, nil, "submit", a, "--dsn", dsn); res.code != 0 {
		t.Fatalf("submit: exit %d\n%s", res.code, res.stderr)
	}
	var id int64
	if err := pool.QueryRow(context.Background(), "SELECT id FROM refit.jobs WHERE name = 'a_upper'").Scan(&id); err != nil {
		t.Fatal(err)
	}
	if st := runRefit(t, nil, "status", fmt.Sprintf("#%d", id), "--dsn", dsn); st.code != 0 || !strings.Contains(st.stdout, "a_upper") {
		t.Fatalf("status #%d: exit %d\n%s%s", id, st.code, st.stdout, st.stderr)
	}
	// A job named like a_upper's id, submitted through SQL.
	if _, err := pool.Exec(context.Background(), "SELECT refit.submit($1, $2)", fmt.Sprint(id), strings.Replace(upperJob, "a_upper", fmt.Sprintf("%q", fmt.Sprint(id)), 1)); err != nil {
		t.Fatal(err)
	}
	st := runRefit(t, nil, "abort", fmt.Sprint(id), "--dsn", dsn)
	if st.code == 0 || !strings.Contains(st.stderr, "ambiguous") || !strings.Contains(st.stderr, fmt.Sprintf("#%d", id)) {
		t.Fatalf("abort of an ambiguous reference: exit %d\n%s%s", st.code, st.stdout, st.stderr)
	}
	if st := runRefit(t, nil, "status", "a_upper", "--dsn", dsn); !strings.Contains(st.stdout, "pending") {
		t.Fatalf("a_upper was touched:\n%s", st.stdout)
	}
}

// TestAbortForce: an undo step that fails (its object was dropped by hand
// after expand) fails the abort, but the slot and publication are gone at
// once; `refit abort --force` skips the step with an event naming it and the
// job ends aborted with the rest of expand undone.
func TestAbortForce(t *testing.T) {
	dsn, pool := newUsers(t, 2000)
	f := writeFile(t, "side.yaml", `name: side_table
operations:
  - sql: {up: "CREATE TABLE side (id int)", down: "DROP TABLE side"}
  - add_column:
      table: users
      column: {name: name_upper, type: text}
      up: upper(full_name)
`)
	if res := runRefit(t, nil, "run", f, "--dsn", dsn, "--exit-at-window"); res.code != 0 {
		t.Fatalf("run: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "DROP TABLE side"); err != nil {
		t.Fatal(err)
	}
	replObjects := func() int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots WHERE database = current_database())
			+ (SELECT count(*) FROM pg_publication)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for i := 0; i < 2; i++ {
		res := runRefit(t, nil, "abort", "side_table", "--dsn", dsn)
		if res.code != exitFailed || !strings.Contains(res.stderr, "side") {
			t.Fatalf("abort %d with a failing undo: exit %d\n%s%s", i+1, res.code, res.stdout, res.stderr)
		}
		if n := replObjects(); n != 0 {
			t.Fatalf("abort %d failed but left %d slots/publications", i+1, n)
		}
	}
	if res := runRefit(t, nil, "abort", "--force", "side_table", "--dsn", dsn); res.code != 0 || !strings.Contains(res.stdout, "aborted") {
		t.Fatalf("abort --force: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if columnExists(t, dsn, "users", "name_upper") {
		t.Fatal("abort --force did not undo the rest of expand")
	}
	var skipped int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM refit.job_events WHERE message LIKE 'abort --force skipped rollback step%DROP TABLE%' OR message LIKE 'abort --force skipped rollback step%sql%'").Scan(&skipped); err != nil {
		t.Fatal(err)
	}
	if skipped != 1 {
		t.Fatalf("%d events name the skipped step, want 1", skipped)
	}
}

// TestAbortAfterFailedValidate: a row that breaks a new CHECK, written
// after the migration was validated, fails the job at VALIDATE (contract)
// with the row named; no contract step committed, so `refit abort` still
// rolls it back and the catalog is as before.
func TestAbortAfterFailedValidate(t *testing.T) {
	dsn, pool := newUsers(t, 500)
	ctx := context.Background()
	catalog := func() string {
		var s string
		if err := pool.QueryRow(ctx, `SELECT coalesce(string_agg(conname || ':' || convalidated::text, ',' ORDER BY conname), '')
			FROM pg_constraint WHERE conrelid = 'users'::regclass`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := catalog()
	f := writeFile(t, "check.yaml", `name: name_not_empty
operations:
  - add_check: {table: users, name: users_name_not_empty, expression: "full_name <> ''"}
`)
	if res := runRefit(t, nil, "submit", f, "--dsn", dsn, "--contract", "now"); res.code != 0 {
		t.Fatalf("submit: exit %d\n%s", res.code, res.stderr)
	}
	var key int64
	if err := pool.QueryRow(ctx, "INSERT INTO users (full_name, email) VALUES ('', 'x@example.com') RETURNING id").Scan(&key); err != nil {
		t.Fatal(err)
	}
	res := runRefit(t, nil, "run", f, "--dsn", dsn)
	if res.code != exitFailed || !strings.Contains(res.stderr, "users_name_not_empty") || !strings.Contains(res.stderr, fmt.Sprintf("(%d)", key)) {
		t.Fatalf("run with a violating row: exit %d, want %d naming the constraint and key %d\n%s%s", res.code, exitFailed, key, res.stdout, res.stderr)
	}
	if res := runRefit(t, nil, "abort", "name_not_empty", "--dsn", dsn); res.code != 0 || !strings.Contains(res.stdout, "aborted") {
		t.Fatalf("abort after the failed VALIDATE: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if after := catalog(); after != before {
		t.Fatalf("abort left constraints: before %q after %q", before, after)
	}
}

package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/internal/pgtest"
)

// TestVerifyCommand: refit verify compares a job's shadow column with its
// using expression in every row: 0 rows differ in the window; a row whose
// shadow is written behind the sync's back (by a session carrying refit's
// replication origin, whose writes the stream skips) is reported with its
// key and exit code 1; the swap, run by complete, refuses to start on it;
// once the row is written again by the application, retry completes.
func TestVerifyCommand(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE orders (id int PRIMARY KEY, amount int NOT NULL);
		INSERT INTO orders SELECT i, i FROM generate_series(1, 3000) i`); err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, "0007_amount_bigint.yaml", "name: amount_bigint\noperations:\n  - alter_column: {table: orders, column: amount, type: bigint}\n")
	env := []string{"REFIT_DSN=" + dsn}
	if r := runRefit(t, env, "run", file, "--contract", "manual", "--exit-at-window", "--log-level", "error"); r.code != 0 {
		t.Fatalf("run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r := runRefit(t, env, "verify", "amount_bigint", "--log-level", "error")
	if r.code != 0 || !strings.Contains(r.stdout, "0 rows differed, 0 still differ") {
		t.Fatalf("verify in the window: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	var jobID int64
	if err := pool.QueryRow(ctx, "SELECT id FROM refit.jobs WHERE name = 'amount_bigint'").Scan(&jobID); err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	origin := fmt.Sprintf("refit_j%d_test", jobID) // dropped with the job's origins
	for _, q := range []string{
		"SELECT pg_replication_origin_create('" + origin + "')",
		"SELECT pg_replication_origin_session_setup('" + origin + "')",
		"UPDATE orders SET refit_new_amount = 99 WHERE id = 17",
		"SELECT pg_replication_origin_session_reset()",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn.Release()
	r = runRefit(t, env, "verify", "amount_bigint", "--settle", "200ms", "--log-level", "error")
	if r.code != 1 || !strings.Contains(r.stderr+r.stdout, "1 rows differ, e.g. keys (17)") {
		t.Fatalf("verify with a wrong row: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = runRefit(t, env, "complete", "amount_bigint", "--log-level", "error")
	if r.code == 0 || !strings.Contains(r.stderr+r.stdout, "the swap does not start") {
		t.Fatalf("complete with a wrong row: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	var typ string
	if err := pool.QueryRow(ctx, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'amount'").Scan(&typ); err != nil || typ != "integer" {
		t.Fatalf("amount is %s (%v) after a refused swap, want integer", typ, err)
	}
	// Fixed (an update of the old column re-derives it), the job completes:
	// retry, then complete runs it in the foreground.
	if _, err := pool.Exec(ctx, "UPDATE orders SET amount = amount WHERE id = 17"); err != nil {
		t.Fatal(err)
	}
	r = runRefit(t, env, "retry", "amount_bigint", "--log-level", "error")
	if r.code != 0 {
		t.Fatalf("retry: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runRefit(t, env, "complete", "amount_bigint", "--log-level", "error"); r.code != 0 {
		t.Fatalf("complete after retry: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if err := pool.QueryRow(ctx, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'amount'").Scan(&typ); err != nil || typ != "bigint" {
		t.Fatalf("amount is %s (%v) after the retry, want bigint", typ, err)
	}
}

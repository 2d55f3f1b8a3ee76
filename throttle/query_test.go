package throttle_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/sqlstate"
	"github.com/refit-dev/refit/throttle"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.NewDB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func mustExec(t *testing.T, pool *pgxpool.Pool, sql string) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestValidateQuery: every way a throttle query can be wrong is refused
// with an error saying what is wrong (and the server's SQLSTATE when the
// server refused it), and refusing it changes nothing.
func TestValidateQuery(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	mustExec(t, pool, "CREATE SEQUENCE s; CREATE TABLE flag (hold boolean NOT NULL); INSERT INTO flag VALUES (true)")

	bad := []struct {
		query string
		code  string // SQLSTATE; "" when refit, not the server, refuses it
		want  string // in the message
	}{
		{"SELECT false; CREATE TABLE canary_tq ()", sqlstate.SyntaxError, "exactly one valid SQL statement"},
		{"SELECT 1/0 = 1", sqlstate.DivisionByZero, "failed when run"},
		{"SELECT 1", "", "one boolean column"},
		{"SELECT true, false", "", "2 columns"},
		{"SELECT true WHERE false", "", "exactly one row (it returned 0)"},
		{"SELECT hold FROM flag UNION ALL SELECT hold FROM flag", "", "exactly one row (it returned 2)"},
		{"SELECT NULL::boolean", "", "NULL"},
		{"CREATE TABLE x ()", "", "returns no columns"},
		{"SELECT nextval('s') > 0", sqlstate.ReadOnlySQLTransaction, "must not write"},
		{"WITH d AS (DELETE FROM flag RETURNING hold) SELECT bool_or(hold) FROM d", sqlstate.ReadOnlySQLTransaction, "must not write"},
		{"SELECT hold FROM flag FOR UPDATE", sqlstate.ReadOnlySQLTransaction, "must not write"},
		{"SELECT $1::boolean", "", "no parameters"},
		{"SELEC true", sqlstate.SyntaxError, "exactly one valid SQL statement"},
		{"SELECT hold FROM no_such_table", sqlstate.UndefinedTable, "could not be prepared"},
		{"", "", "is empty"},
		{"  \n ", "", "is empty"},
	}
	for _, tc := range bad {
		t.Run(tc.query, func(t *testing.T) {
			err := throttle.ValidateQuery(ctx, pool, tc.query)
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
			var qe *throttle.QueryError
			if !errors.As(err, &qe) || qe.Query != tc.query {
				t.Errorf("not a *throttle.QueryError of the query: %#v", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "throttle.query ") {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			code := sqlstate.Code(err)
			switch {
			case tc.code == "" && code != "":
				t.Errorf("server error %s, want refit's own refusal: %v", code, err)
			case tc.code != "" && code != tc.code:
				t.Errorf("want SQLSTATE %s: %v", tc.code, err)
			case tc.code != "" && !strings.Contains(err.Error(), "SQLSTATE "+tc.code):
				t.Errorf("message lacks the SQLSTATE: %v", err)
			}
		})
	}
	var canary, x bool
	var called bool
	var holds int
	if err := pool.QueryRow(ctx, `SELECT to_regclass('canary_tq') IS NOT NULL, to_regclass('x') IS NOT NULL,
		(SELECT is_called FROM s), (SELECT count(*) FROM flag)`).Scan(&canary, &x, &called, &holds); err != nil {
		t.Fatal(err)
	}
	if canary || x || called || holds != 1 {
		t.Fatalf("validation changed the database: canary_tq %v, x %v, sequence used %v, flag rows %d", canary, x, called, holds)
	}

	for _, good := range []string{
		"SELECT count(*) > 100 FROM pg_stat_activity",
		"SELECT hold FROM flag",
		"SELECT false;",
		"VALUES (true)",
		"SELECT now()::time BETWEEN '09:00' AND '18:00'",
	} {
		if err := throttle.ValidateQuery(ctx, pool, good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
}

// TestQueryTimeout: a query slower than QueryTimeout is refused.
func TestQueryTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("takes throttle.QueryTimeout")
	}
	err := throttle.ValidateQuery(context.Background(), newPool(t), "SELECT pg_sleep(60) IS NULL")
	if sqlstate.Code(err) != sqlstate.QueryCanceled || !strings.Contains(err.Error(), "statement_timeout") {
		t.Fatalf("slow query: %v", err)
	}
}

// TestThrottleQueryReadOnly: the throttle runs its query read-only, so one
// that passed validation and writes later (here a function whose behaviour
// depends on a table) is refused at run time and writes nothing.
func TestThrottleQueryReadOnly(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	mustExec(t, pool, `CREATE TABLE mode (write boolean NOT NULL); INSERT INTO mode VALUES (false);
		CREATE TABLE written (n int);
		CREATE FUNCTION busy() RETURNS boolean LANGUAGE plpgsql AS $$
		BEGIN
			IF (SELECT write FROM mode) THEN INSERT INTO written VALUES (1); END IF;
			RETURN true;
		END $$`)
	const query = "SELECT busy()"
	if err := throttle.ValidateQuery(ctx, pool, query); err != nil {
		t.Fatal(err)
	}
	cfg := throttle.DefaultConfig()
	cfg.Query = query
	th := throttle.New(pool, cfg)
	if reason, err := th.Check(ctx); err != nil || reason != throttle.ReasonQuery {
		t.Fatalf("check: %q %v, want %q", reason, err, throttle.ReasonQuery)
	}
	mustExec(t, pool, "UPDATE mode SET write = true")
	_, err := th.Check(ctx)
	if sqlstate.Code(err) != sqlstate.ReadOnlySQLTransaction || !strings.Contains(err.Error(), "must not write") {
		t.Fatalf("check of a query that writes: %v, want SQLSTATE 25006", err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM written").Scan(&n); err != nil || n != 0 {
		t.Fatalf("the throttle query wrote %d rows (%v)", n, err)
	}
}

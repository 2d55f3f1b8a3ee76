package worker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/ddl"
	"github.com/refit-dev/refit/examples"
	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/internal/workload"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/throttle"
	"github.com/refit-dev/refit/worker"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := worker.Connect(context.Background(), pgtest.NewDB(t), 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func newRunner(t *testing.T, pool *pgxpool.Pool, log *zap.Logger) *worker.Runner {
	t.Helper()
	store, err := state.Open(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ddl.DefaultConfig()
	cfg.LockTimeout = 500 * time.Millisecond
	bf := backfill.DefaultConfig()
	bf.BatchSize = 2000
	return &worker.Runner{Pool: pool, Store: store, DDL: ddl.New(pool, cfg, log), Backfill: bf,
		Replication: replication.DefaultConfig(), Throttle: throttle.DefaultConfig(), Log: log, Actor: "test", StopAtWindow: true}
}

func mustExec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestExampleWithConcurrentWriter runs the article's migration on 100k rows
// while the application writes: v1 (old columns) before expand, v2 (old and
// new columns) from the backfill on. Every row must match the up
// expressions in the window, and after contract the schema is final.
func TestExampleWithConcurrentWriter(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	const rows = 100_000
	if err := workload.CreateUsers(ctx, pool, rows); err != nil {
		t.Fatal(err)
	}
	m, err := migration.Parse("examples/split_full_name.yaml", examples.SplitFullName)
	if err != nil {
		t.Fatal(err)
	}
	writer := workload.NewWriter(pool, 0, 2, workload.V1) // as fast as it can
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); writer.Run(wctx) }()
	defer func() { stop(); wg.Wait() }()

	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	r.OnPhase = func(_ *state.Job, ph state.Phase) {
		if ph == state.PhaseBackfilling {
			writer.SetVersion(workload.V2)
		}
	}
	out, err := r.Run(ctx, sub.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if out != worker.OutcomeWaitingContract {
		t.Fatalf("outcome %s, want waiting for the contract gate", out)
	}
	// Let the new application version write in the window for a moment.
	time.Sleep(300 * time.Millisecond)
	writer.SetVersion(workload.Retired)
	ws := writer.Stats()
	if ws.Errors != 0 || ws.Updates == 0 || ws.Inserts == 0 {
		t.Fatalf("writer: %+v", ws)
	}
	t.Logf("writer during the migration: %d inserts, %d updates, p99 %s", ws.Inserts, ws.Updates, ws.P99)

	var n, bad int64
	err = pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE first_name IS DISTINCT FROM split_part(full_name, ' ', 1)
		OR last_name IS DISTINCT FROM substring(full_name from position(' ' in full_name) + 1) OR status IS DISTINCT FROM 'active')
		FROM users`).Scan(&n, &bad)
	if err != nil {
		t.Fatal(err)
	}
	if bad != 0 || n < rows {
		t.Fatalf("%d of %d rows do not match the up expressions", bad, n)
	}

	if err := r.Store.SetContractMode(ctx, sub.Job.ID, "now"); err != nil {
		t.Fatal(err)
	}
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeCompleted {
		t.Fatalf("contract: %v %v", out, err)
	}
	var notNull int
	var fullName, indexValid bool
	err = pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname IN ('first_name','last_name','status') AND attnotnull),
		EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'full_name' AND NOT attisdropped),
		coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('idx_users_last_name')), false)`).Scan(&notNull, &fullName, &indexValid)
	if err != nil {
		t.Fatal(err)
	}
	if notNull != 3 || fullName || !indexValid {
		t.Fatalf("NOT NULL columns %d/3, full_name present %v, index valid %v", notNull, fullName, indexValid)
	}
	var checks int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'users'::regclass AND conname LIKE 'refit_nn%'").Scan(&checks); err != nil || checks != 0 {
		t.Fatalf("helper checks left: %d %v", checks, err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO users (email, first_name, last_name) VALUES ('x', NULL, 'y')"); err == nil {
		t.Fatal("NOT NULL not enforced on first_name")
	}

	// History: re-running is a no-op, a changed file with the same name is refused.
	again, err := worker.Submit(ctx, pool, m, "", "test")
	if err != nil || !again.AlreadyApplied {
		t.Fatalf("re-submit: %+v %v", again, err)
	}
	changed, err := migration.Parse("changed.yaml", append(append([]byte(nil), examples.SplitFullName...), []byte("\n# changed\n")...))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := worker.Submit(ctx, pool, changed, "", "test"); !errors.Is(err, state.ErrChecksumMismatch) {
		t.Fatalf("changed file: %v, want ErrChecksumMismatch", err)
	}
}

// catalog is a snapshot of the public schema and its types, for comparing
// the database before a migration and after its abort.
func catalog(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), `SELECT concat_ws(E'\n',
		(SELECT string_agg(c.relname || ':' || c.relkind::text, ',' ORDER BY c.relname) FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace),
		(SELECT string_agg(c.relname || '.' || a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull::text || ':' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ',' ORDER BY c.relname, a.attnum)
		   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		   WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped),
		(SELECT string_agg(conname || ':' || pg_get_constraintdef(oid), ',' ORDER BY conname) FROM pg_constraint WHERE connamespace = 'public'::regnamespace),
		(SELECT string_agg(typname, ',' ORDER BY typname) FROM pg_type WHERE typnamespace = 'public'::regnamespace AND typtype = 'e'),
		(SELECT string_agg(indexrelid::regclass::text || ':' || indisvalid::text, ',' ORDER BY indexrelid::regclass::text) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'public'::regnamespace))`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tableData(t *testing.T, pool *pgxpool.Pool, table string) string {
	t.Helper()
	var s string
	if err := pool.QueryRow(context.Background(), fmt.Sprintf("SELECT coalesce(string_agg(x::text, ',' ORDER BY x::text), '') FROM %s x", table)).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestAbortAfterInterruptedExpand aborts a job whose expand was cut short:
// only what ran is undone and the catalog is as before.
func TestAbortAfterInterruptedExpand(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	if err := workload.CreateUsers(ctx, pool, 20_000); err != nil {
		t.Fatal(err)
	}
	before := catalog(t, pool)
	m, err := migration.Parse("examples/split_full_name.yaml", examples.SplitFullName)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := worker.Submit(ctx, pool, m, migration.ContractNow, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
	rctx, cancel := context.WithCancel(ctx)
	batches := 0
	r.OnBatch = func(*state.Job, backfill.Progress) {
		if batches++; batches == 3 {
			cancel()
		}
	}
	if _, err := r.Run(rctx, sub.Job.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	job, err := r.Store.Get(ctx, sub.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if job.Phase != state.PhaseBackfilling || job.RowsDone == 0 {
		t.Fatalf("job after interrupt: phase %s rows %d", job.Phase, job.RowsDone)
	}
	if err := r.Store.Transition(ctx, job.ID, job.Phase, state.PhaseAborting, "test", "abort"); err != nil {
		t.Fatal(err)
	}
	if out, err := r.Run(ctx, job.ID); err != nil || out != worker.OutcomeAborted {
		t.Fatalf("abort: %v %v", out, err)
	}
	if after := catalog(t, pool); after != before {
		t.Fatalf("abort left the catalog changed:\nbefore: %s\nafter:  %s", before, after)
	}
}

// TestJobBusy: a second runner on the same job is refused while the first holds it.
func TestJobBusy(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	if err := workload.CreateUsers(ctx, pool, 20_000); err != nil {
		t.Fatal(err)
	}
	m, err := migration.Parse("examples/split_full_name.yaml", examples.SplitFullName)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
	var busyErr error
	r.OnPhase = func(_ *state.Job, ph state.Phase) {
		if ph == state.PhaseBackfilling && busyErr == nil {
			r2 := newRunner(t, pool, zap.NewNop())
			_, busyErr = r2.Run(ctx, sub.Job.ID)
		}
	}
	if _, err := r.Run(ctx, sub.Job.ID); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(busyErr, worker.ErrJobBusy) {
		t.Fatalf("second runner: %v, want ErrJobBusy", busyErr)
	}
}

func init() {
	// Keep pgx from reading a developer's PG* environment into test pools.
	for _, k := range []string{"PGSERVICE", "PGSERVICEFILE"} {
		os.Unsetenv(k)
	}
}

// TestAbortAtEveryPhase aborts the same migration in each phase before
// contract and checks that the catalog is exactly as before.
func TestAbortAtEveryPhase(t *testing.T) {
	const src = `name: every_phase
operations:
  - create_enum: {name: item_kind, values: [a, b]}
  - add_column:
      table: items
      column: {name: kind, type: item_kind, default: "'a'"}
  - sql:
      up: SELECT pg_sleep(0.4)
  - add_column:
      table: items
      column: {name: name_upper, type: text, nullable: false}
      up: upper(name)
  - create_index: {name: items_name_upper, table: items, columns: [name_upper], unique: true}
`
	cases := []struct {
		name string
		stop func(r *worker.Runner, cancel context.CancelFunc) // arranges where the first run stops
		want state.Phase
	}{
		{"pending", nil, state.PhasePending},
		{"expanding", func(r *worker.Runner, cancel context.CancelFunc) {
			r.OnPhase = func(_ *state.Job, ph state.Phase) {
				if ph == state.PhaseExpanding {
					time.AfterFunc(200*time.Millisecond, cancel) // inside the pg_sleep step
				}
			}
		}, state.PhaseExpanding},
		{"backfilling", func(r *worker.Runner, cancel context.CancelFunc) {
			n := 0
			r.OnBatch = func(*state.Job, backfill.Progress) {
				if n++; n == 2 {
					cancel()
				}
			}
		}, state.PhaseBackfilling},
		{"syncing", func(*worker.Runner, context.CancelFunc) {}, state.PhaseSyncing},
		{"failed", func(*worker.Runner, context.CancelFunc) {}, state.PhaseFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			pool := newPool(t)
			mustExec(t, pool, `CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);
				INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 20000) i; ANALYZE items`)
			if tc.want == state.PhaseFailed {
				mustExec(t, pool, "UPDATE items SET name = 'dup' WHERE id <= 2") // the unique index build fails
			}
			before := catalog(t, pool)
			m, err := migration.Parse("every.yaml", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
			if err != nil {
				t.Fatal(err)
			}
			r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.FatalLevel)))
			r.Backfill.BatchSize = 1000
			if tc.stop != nil {
				rctx, cancel := context.WithCancel(ctx)
				tc.stop(r, cancel)
				_, _ = r.Run(rctx, sub.Job.ID) //nolint:errcheck // stopped on purpose
				cancel()
			}
			job, err := r.Store.Get(ctx, sub.Job.ID)
			if err != nil {
				t.Fatal(err)
			}
			if job.Phase != tc.want {
				t.Fatalf("first run stopped in %s, want %s", job.Phase, tc.want)
			}
			if err := r.Store.Transition(ctx, job.ID, job.Phase, state.PhaseAborting, "test", "abort"); err != nil {
				t.Fatal(err)
			}
			r = newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
			if out, err := r.Run(ctx, job.ID); err != nil || out != worker.OutcomeAborted {
				t.Fatalf("abort: %v %v", out, err)
			}
			if after := catalog(t, pool); after != before {
				t.Fatalf("catalog changed:\nbefore %s\nafter  %s", before, after)
			}
			var left int
			if err := pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication)").Scan(&left); err != nil || left != 0 {
				t.Fatalf("replication objects left: %d %v", left, err)
			}
		})
	}
}

package worker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/worker"
)

// goodsSchema adds to items the new application, which uses the table's new
// name, goods: through dynamic SQL in a function, so the writer can run
// before expand (it does nothing until the name exists).
const goodsSchema = itemsSchema + `
	CREATE FUNCTION new_app_goods(n bigint) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE
		got bigint;
	BEGIN
		IF to_regclass('goods') IS NULL THEN
			RETURN;
		END IF;
		EXECUTE 'INSERT INTO goods (id, name, price, legacy) VALUES ($1, $2, 1, $3) RETURNING id' INTO got USING 200000 + n, 'via goods ' || n, 'new';
		EXECUTE 'INSERT INTO goods AS g (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET price = g.price + 1' USING 200000 + n, 'again';
		EXECUTE 'UPDATE goods SET name = name || ''!'' WHERE id = $1' USING 1 + n % 5000;
		EXECUTE 'DELETE FROM goods WHERE id = $1' USING 200000 + n - 2;
	END $$;`

func TestLifecycleRenameTable(t *testing.T) {
	// The old application writes items, the new one goods, in turn.
	writer := append([]string{"SELECT new_app_goods($1)"}, itemsWriter...)
	tc := lifecycleCase{schema: goodsSchema, writer: writer, data: []string{"items"}, abortBackfill: true, ops: `
  - rename_table: {from: items, to: goods}`,
		expanded: `SELECT (SELECT relkind FROM pg_class WHERE oid = 'goods'::regclass) = 'v' AND (SELECT count(*) FROM goods) = 5000`,
		window: `SELECT (SELECT count(*) FROM items WHERE legacy = 'new' AND price > 1) > 0
			AND (SELECT count(*) FROM goods WHERE name LIKE 'renamed %') > 0`,
		done: `SELECT to_regclass('items') IS NULL AND (SELECT relkind FROM pg_class WHERE oid = 'goods'::regclass) = 'r'
			AND (SELECT count(*) FROM goods WHERE legacy = 'new') > 0`}
	if pgtest.Shared(t).Version() < 15 {
		// No security_invoker views: no view in the window (the new
		// application's writes wait for the name), the rename at contract.
		tc.expanded = `SELECT to_regclass('goods') IS NULL`
		tc.window = `SELECT (SELECT count(*) FROM items WHERE name LIKE 'renamed %') > 0 AND to_regclass('goods') IS NULL`
		tc.done = `SELECT to_regclass('items') IS NULL AND (SELECT relkind FROM pg_class WHERE oid = 'goods'::regclass) = 'r'`
	}
	runLifecycle(t, tc)
}

// The swap under load: in the window the old application (items) and the
// new one (goods, through the view) write side by side, as a role that is
// not the table's owner, with prepared statements; then the old one stops
// and the new one keeps writing while contract drops the view and renames
// the table. It must never see an error.
func TestLifecycleRenameTableSwap(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	mustExec(t, pool, itemsSchema)
	role := createRole(t, pool, "refit_goods_app", "", "GRANT SELECT, INSERT, UPDATE, DELETE ON items TO {role}")
	m, err := migration.Parse("rename.yaml", []byte("name: rename_items\noperations:\n  - rename_table: {from: items, to: goods}\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeWaitingContract {
		t.Fatalf("expand: %v %v", out, err)
	}

	oldApp := startApp(t, role.dsn, []string{
		"UPDATE items SET price = price + 1 WHERE id = 1 + $1 % 5000",
		"INSERT INTO items (id, name, price, legacy) VALUES (100000 + $1, 'old app', 1, 'old')",
	})
	newStmts := []string{
		"INSERT INTO goods (id, name, price, legacy) VALUES (300000 + $1, 'new app', 1, 'new') RETURNING id",
		"INSERT INTO goods AS g (id, name) VALUES (400000 + $1 % 10, 'upsert') ON CONFLICT (id) DO UPDATE SET price = g.price + 1 RETURNING id, price",
		"UPDATE goods SET name = 'new app ' || $1 WHERE id = 1 + $1 % 5000 RETURNING id",
		"SELECT id, name FROM goods WHERE id = 1 + $1 % 5000 FOR UPDATE",
		"DELETE FROM goods WHERE id = 300000 + $1 - 4",
	}
	// Before PostgreSQL 15 there is no view under the new name: the new
	// application can start only once contract renamed the table, and the
	// old one must not have seen an error up to then.
	window := pgtest.Shared(t).Version() >= 15
	var newApp *app
	if window {
		newApp = startApp(t, role.dsn, newStmts)
		newApp.waitWrites(t, 50)
	}
	oldApp.waitWrites(t, 50)
	oldWrites, err := oldApp.stop()
	if err != nil {
		t.Fatalf("the old application saw an error in the window: %v", err)
	}

	// Contract while the new application writes.
	if err := r.Store.OpenContract(ctx, sub.Job.ID, "test"); err != nil {
		t.Fatal(err)
	}
	var before int64
	if window {
		before = newApp.count()
	}
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeCompleted {
		t.Fatalf("contract: %v %v", out, err)
	}
	if !window {
		newApp = startApp(t, role.dsn, newStmts)
	}
	newApp.waitWrites(t, before+50)
	newWrites, err := newApp.stop()
	if err != nil {
		t.Fatalf("the new application saw an error: %v", err)
	}
	var kind string
	var gone bool
	var rows int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT relkind::text FROM pg_class WHERE oid = 'goods'::regclass), to_regclass('items') IS NULL,
			(SELECT count(*) FROM goods WHERE name LIKE 'new app%' OR legacy = 'new')`).Scan(&kind, &gone, &rows); err != nil {
		t.Fatal(err)
	}
	if kind != "r" || !gone || rows == 0 {
		t.Fatalf("after contract: goods is %q, items gone %v, %d rows of the new application", kind, gone, rows)
	}
	t.Logf("old application: %d writes in the window; new application: %d writes through the view and the renamed table, 0 errors", oldWrites, newWrites)
}

// app is an application writing in a loop on its own pool (prepared
// statements, pgx's default), one statement per transaction.
type app struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	writes atomic.Int64
	mu     sync.Mutex
	err    error
}

func startApp(t *testing.T, dsn string, stmts []string) *app {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	ctx, cancel := context.WithCancel(context.Background())
	a := &app{cancel: cancel}
	var seq atomic.Int64
	for range 2 {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				stmt := stmts[i%len(stmts)]
				rows, err := pool.Query(ctx, stmt, seq.Add(1))
				if err == nil {
					for rows.Next() {
					}
					rows.Close()
					err = rows.Err()
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					a.mu.Lock()
					a.err = fmt.Errorf("%s: %w", strings.Fields(stmt)[0], err)
					a.mu.Unlock()
					return
				}
				a.writes.Add(1)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	return a
}

func (a *app) count() int64 { return a.writes.Load() }

func (a *app) waitWrites(t *testing.T, n int64) {
	t.Helper()
	waitFor(t, 30*time.Second, "the application's writes", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.err != nil || a.writes.Load() >= n
	})
}

func (a *app) stop() (int64, error) {
	a.cancel()
	a.wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.writes.Load(), a.err
}

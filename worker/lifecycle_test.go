package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// lifecycleCase is one operation (or a few) taken through its whole life by
// runLifecycle. Every operation kind plugs its cases in here, in its own
// worker/op_<kind>_lifecycle_test.go.
type lifecycleCase struct {
	name   string
	schema string // SQL run first in a fresh database
	ops    string // the operations, as YAML list items (the text after "operations:")
	// writer holds statements the application runs in a loop, one per
	// transaction, in turn, from the end of the second run's expand through
	// its backfill and window; $1
	// (if used) is an increasing bigint, unique per execution. The
	// application must never see an error.
	writer []string
	// expanded, window and done are SQL queries returning one boolean:
	// after the first expand (job in the window), in the second run's window
	// after the writer ran and the stream drained, and after contract. Empty
	// = not checked.
	expanded, window, done string
	// data lists tables whose rows abort must leave exactly as before.
	data []string
	// abortBackfill also aborts a run at the start of its backfill (after
	// expand), comparing the catalog again.
	abortBackfill bool
}

// runLifecycle: expand → abort (catalog and data identical) → expand →
// backfill → window with a writer (the sync running) → contract, checking
// the case's conditions along the way.
func runLifecycle(t *testing.T, tc lifecycleCase) {
	t.Helper()
	ctx := context.Background()
	// refit runs as the least-privilege role of docs/safety.md, which owns
	// the tables (it runs the schema); the checks and the application use
	// the superuser's sessions (admin), another role than refit's.
	admin := newPool(t)
	pool := connectAs(t, createRole(t, admin, "refit_lc", "REPLICATION", leastPrivilegeGrants...))
	mustExec(t, pool, tc.schema)
	before := catalog(t, admin)
	data := map[string]string{}
	for _, d := range tc.data {
		data[d] = tableData(t, admin, d)
	}
	m, err := migration.Parse("lifecycle.yaml", []byte("name: lifecycle\noperations:"+tc.ops+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	r := newRunner(t, pool, log)
	checkUnchanged := func(when string) {
		t.Helper()
		if after := catalog(t, admin); after != before {
			t.Fatalf("%s left the catalog changed:\nbefore: %s\nafter:  %s", when, before, after)
		}
		for table, want := range data {
			if got := tableData(t, admin, table); got != want {
				t.Fatalf("%s changed the rows of %s:\nbefore: %.300s\nafter:  %.300s", when, table, want, got)
			}
		}
		if objs := replicationObjects(t, admin); objs != "" {
			t.Fatalf("%s left replication objects: %s", when, objs)
		}
	}
	abort := func(id int64, from state.Phase) {
		t.Helper()
		if err := r.Store.Transition(ctx, id, from, state.PhaseAborting, "test", "abort"); err != nil {
			t.Fatal(err)
		}
		if out, err := r.Run(ctx, id); err != nil || out != worker.OutcomeAborted {
			t.Fatalf("abort from %s: %v %v", from, out, err)
		}
	}

	// 1. expand (and backfill) → window → abort.
	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeWaitingContract {
		t.Fatalf("first run: %v %v", out, err)
	}
	checkCondition(t, admin, "after expand", tc.expanded)
	abort(sub.Job.ID, state.PhaseSyncing)
	checkUnchanged("abort in the window")

	// 1b. abort right after expand, before the first batch.
	if tc.abortBackfill {
		sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
		if err != nil {
			t.Fatal(err)
		}
		r2 := newRunner(t, pool, log)
		stopped := errors.New("stopped at the backfill")
		runCtx, cancel := context.WithCancelCause(ctx)
		r2.OnPhase = func(_ *state.Job, ph state.Phase) {
			if ph == state.PhaseBackfilling {
				cancel(stopped)
			}
		}
		_, _ = r2.Run(runCtx, sub.Job.ID) //nolint:errcheck // interrupted on purpose
		cancel(nil)
		j, err := r.Store.Get(ctx, sub.Job.ID)
		if err != nil {
			t.Fatal(err)
		}
		abort(sub.Job.ID, j.Phase)
		checkUnchanged("abort at the backfill")
	}

	// 2. expand again → backfill → window with the writer → contract.
	sub, err = worker.Submit(ctx, pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	// The application writes from the end of expand on: during the
	// backfill and the window, against the expanded shape (a writer of the
	// new version may rely on it, e.g. NULLs after drop_not_null).
	expanded := make(chan struct{})
	var once sync.Once
	r.OnPhase = func(_ *state.Job, ph state.Phase) {
		if ph >= state.PhaseBackfilling {
			once.Do(func() { close(expanded) })
		}
	}
	r.StopAtWindow = false
	r.GatePoll = 100 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		out, err := r.Run(ctx, sub.Job.ID)
		if err == nil && out != worker.OutcomeCompleted {
			err = fmt.Errorf("outcome %s", out)
		}
		done <- err
	}()
	select {
	case <-expanded:
	case err := <-done:
		t.Fatalf("second run ended before its backfill: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the second run never reached its backfill")
	}
	app := startWriter(t, admin, tc.writer)
	waitPhase(t, r.Store, sub.Job.ID, state.PhaseSyncing, 2*time.Minute)
	app.waitWrites(t, 20)
	writes, appErr := app.stop()
	if appErr != nil {
		t.Fatalf("the application saw an error during the migration: %v", appErr)
	}
	if tc.window != "" {
		waitFor(t, 30*time.Second, "the window condition "+tc.window, func() bool { return condition(t, admin, tc.window) })
	}
	if err := r.Store.OpenContract(ctx, sub.Job.ID, "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("second run: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the job did not complete")
	}
	checkCondition(t, admin, "after contract", tc.done)
	if objs := replicationObjects(t, admin); objs != "" {
		t.Fatalf("completed job left replication objects: %s", objs)
	}
	t.Logf("application wrote %d transactions during backfill and window, 0 errors", writes)
}

// condition evaluates a one-boolean query; NULL counts as false.
func condition(t *testing.T, pool *pgxpool.Pool, sql string) bool {
	t.Helper()
	var ok *bool
	if err := pool.QueryRow(context.Background(), sql).Scan(&ok); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return ok != nil && *ok
}

func checkCondition(t *testing.T, pool *pgxpool.Pool, when, sql string) {
	t.Helper()
	if sql != "" && !condition(t, pool, sql) {
		t.Fatalf("%s: %s is false%s", when, strings.TrimSpace(sql), falseParts(pool, sql))
	}
}

// falseParts says which of the top-level AND terms of a failed condition
// are false (or fail), so that a failure names its cause. Best effort: a
// condition whose terms are not expressions on their own (a top-level FROM)
// is reported as it is.
func falseParts(pool *pgxpool.Pool, sql string) string {
	expr := strings.TrimSpace(sql)
	if len(expr) < 7 || !strings.EqualFold(expr[:7], "SELECT ") {
		return ""
	}
	expr = expr[7:]
	var parts []string
	depth, start := 0, 0
	var quote rune
	for i, c := range expr {
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '(':
			depth++
		case c == ')':
			depth--
		case depth == 0 && (c == 'A' || c == 'a') && i > 0 && i+4 <= len(expr) &&
			strings.EqualFold(expr[i:i+3], "AND") && isSpace(expr[i-1]) && isSpace(expr[i+3]):
			parts = append(parts, expr[start:i])
			start = i + 3
		}
	}
	parts = append(parts, expr[start:])
	if len(parts) < 2 {
		return ""
	}
	var b strings.Builder
	for _, p := range parts {
		p = strings.TrimSpace(p)
		var ok *bool
		err := pool.QueryRow(context.Background(), "SELECT ("+p+")").Scan(&ok)
		switch {
		case err != nil:
			fmt.Fprintf(&b, "\n  term failed (%v): %s", err, p)
		case ok == nil:
			fmt.Fprintf(&b, "\n  term is NULL: %s", p)
		case !*ok:
			fmt.Fprintf(&b, "\n  term is false: %s", p)
		}
	}
	return b.String()
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' }

// writer is the application of a lifecycle test: its own pool (plain
// sessions, not refit's), one statement per transaction.
type writer struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	writes atomic.Int64
	mu     sync.Mutex
	err    error
}

func startWriter(t *testing.T, refitPool *pgxpool.Pool, stmts []string) *writer {
	t.Helper()
	w := &writer{}
	if len(stmts) == 0 {
		return w
	}
	app, err := pgxpool.New(context.Background(), refitPool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	var seq atomic.Int64
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			stmt := stmts[i%len(stmts)]
			var args []any
			if strings.Contains(stmt, "$1") {
				args = append(args, seq.Add(1))
			}
			if _, err := app.Exec(ctx, stmt, args...); err != nil {
				if ctx.Err() != nil {
					return
				}
				w.mu.Lock()
				w.err = fmt.Errorf("%s: %w", stmt, err)
				w.mu.Unlock()
				return
			}
			w.writes.Add(1)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return w
}

// waitWrites waits until the application has written n transactions (or
// has failed).
func (w *writer) waitWrites(t *testing.T, n int64) {
	t.Helper()
	if w.cancel == nil {
		return
	}
	waitFor(t, 30*time.Second, "the application's writes", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.err != nil || w.writes.Load() >= n
	})
}

func (w *writer) stop() (int64, error) {
	if w.cancel == nil {
		return 0, nil
	}
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes.Load(), w.err
}

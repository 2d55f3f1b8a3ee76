package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// noReplication holds while a job has nothing to sync: a data fix alone
// needs no publication and no slot.
const noReplication = `NOT EXISTS (SELECT FROM pg_publication) AND NOT EXISTS (SELECT FROM pg_replication_slots)`

// A data fix changes rows, not the catalog: the harness's data check does not
// apply (the first run's abort leaves the fixed rows), so each case checks the
// rows it cares about itself. The fixes are idempotent: the harness runs the
// migration twice.
func TestLifecycleBackfill(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "where", schema: itemsSchema, writer: itemsWriter, abortBackfill: true, ops: `
  - backfill:
      table: items
      set: {legacy: upper(legacy)}
      where: id <= 5000`,
			expanded: `SELECT NOT EXISTS (SELECT FROM items WHERE legacy <> 'OLD') AND ` + noReplication,
			// The application's rows (inserted with 'old') are outside the where.
			window: `SELECT NOT EXISTS (SELECT FROM items WHERE (id <= 5000) <> (legacy = 'OLD'))
				AND EXISTS (SELECT FROM items WHERE id > 5000) AND ` + noReplication,
			done: `SELECT NOT EXISTS (SELECT FROM items WHERE (id <= 5000) <> (legacy = 'OLD'))`},
		{name: "two columns, no where", schema: itemsSchema, writer: itemsWriter, ops: `
  - backfill:
      table: public.items
      set: {legacy: "'fixed'", price: round(price)}`,
			expanded: `SELECT NOT EXISTS (SELECT FROM items WHERE legacy <> 'fixed' OR price <> round(price)) AND ` + noReplication,
			// The application renames rows and gives them prices ending in
			// .5: those written after their batch keep the application's price.
			window: `SELECT NOT EXISTS (SELECT FROM items WHERE id <= 5000
				AND (legacy <> 'fixed' OR (name NOT LIKE 'renamed %' AND price <> round(price)))) AND ` + noReplication,
			done: `SELECT NOT EXISTS (SELECT FROM items WHERE id <= 5000
				AND (legacy <> 'fixed' OR (name NOT LIKE 'renamed %' AND price <> round(price))))`},
		{name: "sharing the pass of an add_column up", schema: itemsSchema, writer: itemsWriter, abortBackfill: true, ops: `
  - add_column:
      table: items
      column: {name: name_upper, type: text}
      up: upper(name)
  - backfill:
      table: items
      set: {legacy: "'fixed'"}
      where: id <= 5000`,
			expanded: `SELECT NOT EXISTS (SELECT FROM items WHERE name_upper IS DISTINCT FROM upper(name) OR legacy <> 'fixed')`,
			// The derived column is synced (the writer renames rows), the fix
			// is not (the application's rows keep 'old'); the table is
			// published because of the derived column.
			window: `SELECT NOT EXISTS (SELECT FROM items WHERE name_upper IS DISTINCT FROM upper(name) OR (id <= 5000) <> (legacy = 'fixed'))
				AND EXISTS (SELECT FROM pg_publication_tables WHERE tablename = 'items')`,
			done: `SELECT NOT EXISTS (SELECT FROM items WHERE name_upper IS DISTINCT FROM upper(name) OR (id <= 5000) <> (legacy = 'fixed'))`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

// fixSource is a data fix of table fx in batches of 100 rows of fixed size.
func fixSource(ops string) []byte {
	return []byte(`name: fix
settings: {backfill.batch_size: 100, backfill.target_batch_time: 0s}
operations:` + ops + "\n")
}

func submitFix(t *testing.T, pool *pgxpool.Pool, ops string) *worker.Submission {
	t.Helper()
	m, err := migration.Parse("fix.yaml", fixSource(ops))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := worker.Submit(context.Background(), pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

func queryInt(t *testing.T, pool *pgxpool.Pool, sql string) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestBackfillFixAndApplicationWrites: the fix is applied once per row, when
// its batch reaches it, and never again. A row the application writes after
// its batch passed keeps the application's value; one it writes before its
// batch is reached gets the fix on top if it still matches the where; a row
// inserted before the end of the pass is fixed, one inserted in the window
// is not.
func TestBackfillFixAndApplicationWrites(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	mustExec(t, pool, `CREATE TABLE fx (id bigint PRIMARY KEY, status text, note text);
		INSERT INTO fx SELECT i, 'actv', '' FROM generate_series(1, 1000) i; ANALYZE fx`)
	sub := submitFix(t, pool, `
  - backfill: {table: fx, set: {status: "'active'"}, where: "status = 'actv'"}`)
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	var once sync.Once
	var appErr error
	r.OnBatch = func(_ *state.Job, p backfill.Progress) {
		if p.Batches != 1 {
			return
		}
		once.Do(func() {
			// Rows 1..100 are done, the rest not reached yet.
			for _, q := range []string{
				"UPDATE fx SET status = 'actv' WHERE id = 60",                // passed: the application's value stays
				"UPDATE fx SET note = 'app' WHERE id = 600",                  // not reached, still matches: fixed on top
				"UPDATE fx SET status = 'paused' WHERE id = 700",             // not reached, no longer matches: left alone
				"INSERT INTO fx VALUES (2000, 'actv', 'inserted during it')", // reached later: fixed
			} {
				if _, err := pool.Exec(ctx, q); err != nil && appErr == nil {
					appErr = fmt.Errorf("%s: %w", q, err)
				}
			}
		})
	}
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeWaitingContract {
		t.Fatalf("run to the window: %v %v", out, err)
	}
	if appErr != nil {
		t.Fatal(appErr)
	}
	if !condition(t, pool, "SELECT "+noReplication) {
		t.Fatal("a data fix alone created replication objects")
	}
	// The window: the application writes the fixed column; nothing syncs it.
	mustExec(t, pool, "INSERT INTO fx VALUES (3000, 'actv', 'inserted in the window')")
	mustExec(t, pool, "UPDATE fx SET status = 'actv' WHERE id = 61")
	if err := r.Store.OpenContract(ctx, sub.Job.ID, "test"); err != nil {
		t.Fatal(err)
	}
	r.StopAtWindow = false
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeCompleted {
		t.Fatalf("complete: %v %v", out, err)
	}
	got := map[int64]string{}
	rows, err := pool.Query(ctx, "SELECT id, status || '/' || note FROM fx WHERE status <> 'active' OR note <> '' ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		var s string
		if err := rows.Scan(&id, &s); err != nil {
			t.Fatal(err)
		}
		got[id] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := map[int64]string{
		60:   "actv/",
		61:   "actv/",
		600:  "active/app",
		700:  "paused/",
		2000: "active/inserted during it",
		3000: "actv/inserted in the window",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rows that are not simply fixed:\n got %v\nwant %v", got, want)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM fx WHERE status = 'active'"); n != 1000-3+1 {
		t.Errorf("%d rows fixed, want %d", n, 1000-3+1)
	}
	if objs := replicationObjects(t, pool); objs != "" {
		t.Fatalf("completed job left replication objects: %s", objs)
	}
}

// TestBackfillResume interrupts a fix in the middle of its pass (the
// runner's context is cancelled after some batches) and runs it again: it
// continues from its checkpoint. The fix doubles a value, so a batch applied
// twice would show; the rows scanned by both runs add up to the table.
func TestBackfillResume(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	const rows = 20000
	mustExec(t, pool, fmt.Sprintf(`CREATE TABLE fx (id bigint PRIMARY KEY, orig int NOT NULL, v int);
		INSERT INTO fx SELECT i, i, i FROM generate_series(1, %d) i; ANALYZE fx`, rows))
	sub := submitFix(t, pool, `
  - backfill: {table: fx, set: {v: v * 2}}`)
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))

	// 1. Interrupted after 30 batches.
	r1 := newRunner(t, pool, log)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var scanned1, batches1 int64
	r1.OnBatch = func(_ *state.Job, p backfill.Progress) {
		scanned1 += p.BatchRows
		batches1++
		if p.BatchSize != 100 {
			t.Errorf("batch of %d rows, want the file's 100", p.BatchSize)
		}
		if batches1 == 30 {
			cancel()
		}
	}
	if _, err := r1.Run(runCtx, sub.Job.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v, want context.Canceled", err)
	}
	j, err := r1.Store.Get(ctx, sub.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.Phase != state.PhaseBackfilling {
		t.Fatalf("job is %s after the interruption, want backfilling", j.Phase)
	}
	if j.RowsDone != scanned1 || j.RowsDone == 0 || j.RowsDone >= rows {
		t.Fatalf("checkpoint says %d rows done, the batches reported %d (of %d)", j.RowsDone, scanned1, rows)
	}
	// Exactly the rows up to the checkpoint are fixed.
	if n := queryInt(t, pool, "SELECT count(*) FROM fx WHERE v = orig * 2"); n != j.RowsDone {
		t.Fatalf("%d rows fixed, the checkpoint says %d", n, j.RowsDone)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM fx WHERE v <> orig AND v <> orig * 2"); n != 0 {
		t.Fatalf("%d rows neither fixed nor untouched", n)
	}

	// 2. Run again: it resumes from the checkpoint.
	r2 := newRunner(t, pool, log)
	var scanned2, resumedFrom int64 = 0, -1
	r2.OnBatch = func(_ *state.Job, p backfill.Progress) {
		if resumedFrom < 0 {
			resumedFrom = p.RowsDone - p.BatchRows
		}
		scanned2 += p.BatchRows
	}
	if out, err := r2.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeWaitingContract {
		t.Fatalf("resumed run: %v %v", out, err)
	}
	if resumedFrom != j.RowsDone {
		t.Errorf("the resumed run started after %d rows, the checkpoint was at %d", resumedFrom, j.RowsDone)
	}
	if scanned1+scanned2 != rows {
		t.Errorf("rows scanned: %d + %d, want %d", scanned1, scanned2, rows)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM fx WHERE v = orig * 2"); n != rows {
		t.Errorf("%d of %d rows fixed exactly once", n, rows)
	}
	j, err = r2.Store.Get(ctx, sub.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.RowsDone != rows || j.RowsUpdated != rows {
		t.Errorf("job: %d rows done, %d updated, want %d and %d", j.RowsDone, j.RowsUpdated, rows, rows)
	}

	// 3. Contract: nothing to do for a fix; nothing is applied again.
	if err := r2.Store.OpenContract(ctx, sub.Job.ID, "test"); err != nil {
		t.Fatal(err)
	}
	r2.StopAtWindow = false
	if out, err := r2.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeCompleted {
		t.Fatalf("complete: %v %v", out, err)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM fx WHERE v = orig * 2"); n != rows {
		t.Errorf("after contract %d of %d rows fixed exactly once", n, rows)
	}
}

// TestBackfillAbort: a fix has no undo. Abort before the backfill leaves the
// table as it was; abort after it (in the window) leaves the fixed rows.
func TestBackfillAbort(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	mustExec(t, pool, `CREATE TABLE fx (id bigint PRIMARY KEY, v int);
		INSERT INTO fx SELECT i, i FROM generate_series(1, 1000) i; ANALYZE fx`)
	const ops = `
  - backfill: {table: fx, set: {v: -v}, where: v > 0}`
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	before := catalog(t, pool)
	data := tableData(t, pool, "fx")
	abort := func(r *worker.Runner, id int64) {
		t.Helper()
		j, err := r.Store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Store.Transition(ctx, id, j.Phase, state.PhaseAborting, "test", "abort"); err != nil {
			t.Fatal(err)
		}
		if out, err := r.Run(ctx, id); err != nil || out != worker.OutcomeAborted {
			t.Fatalf("abort from %s: %v %v", j.Phase, out, err)
		}
		if after := catalog(t, pool); after != before {
			t.Fatalf("abort changed the catalog:\nbefore: %s\nafter:  %s", before, after)
		}
	}

	// Before the first batch.
	sub := submitFix(t, pool, ops)
	r := newRunner(t, pool, log)
	runCtx, cancel := context.WithCancelCause(ctx)
	r.OnPhase = func(_ *state.Job, ph state.Phase) {
		if ph == state.PhaseBackfilling {
			cancel(errors.New("stopped at the backfill"))
		}
	}
	_, _ = r.Run(runCtx, sub.Job.ID) //nolint:errcheck // interrupted on purpose
	cancel(nil)
	r.OnPhase = nil
	abort(r, sub.Job.ID)
	if got := tableData(t, pool, "fx"); got != data {
		t.Fatalf("abort before the backfill changed rows: %.200s", got)
	}

	// In the window, after the backfill: the fixed rows stay (fix forward).
	sub = submitFix(t, pool, ops)
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeWaitingContract {
		t.Fatalf("run to the window: %v %v", out, err)
	}
	abort(r, sub.Job.ID)
	if n := queryInt(t, pool, "SELECT count(*) FROM fx WHERE v < 0"); n != 1000 {
		t.Fatalf("after an abort in the window %d of 1000 rows are fixed, want all (a fix is not undone)", n)
	}
	if objs := replicationObjects(t, pool); objs != "" {
		t.Fatalf("abort left replication objects: %s", objs)
	}
}

package worker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

const noteNotNull = `SELECT attnotnull AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname LIKE 'refit_nn%')
	FROM pg_attribute WHERE attrelid = 'meta_items'::regclass AND attname = 'note'`

func TestLifecycleSetNotNull(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "existing column", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, abortBackfill: true, ops: `
  - set_not_null: {table: meta_items, column: note}`,
			expanded: `SELECT NOT attnotnull FROM pg_attribute WHERE attrelid = 'meta_items'::regclass AND attname = 'note'`,
			done:     noteNotNull},
		{name: "beside a synced column", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, ops: `
  - add_column:
      table: meta_items
      column: {name: note_upper, type: text, nullable: false}
      up: upper(note)
  - set_not_null: {table: meta_items, column: note}`,
			window: `SELECT count(*) = 0 FROM meta_items WHERE note_upper IS DISTINCT FROM upper(note)`,
			done:   noteNotNull + ` AND (SELECT attnotnull FROM pg_attribute WHERE attrelid = 'meta_items'::regclass AND attname = 'note_upper')`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

// TestSetNotNullLateNull: a NULL written after validation (by an old
// application still running) fails the contract with the row named; once
// it is fixed, the job completes from where it stopped.
func TestSetNotNullLateNull(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	mustExec(t, pool, metaSchema)
	r, id := metaToWindow(t, pool, `
  - set_not_null: {table: meta_items, column: note}`)
	mustExec(t, pool, "INSERT INTO meta_items (id, name, price, note) VALUES (900001, 'late', 1, NULL)")
	if err := r.Store.OpenContract(ctx, id, "test"); err != nil {
		t.Fatal(err)
	}
	r.StopAtWindow = false
	_, err := r.Run(ctx, id)
	if err == nil || !strings.Contains(err.Error(), `operations[0] (set_not_null): 1 rows violate NOT NULL on column "note", e.g. keys (900001)`) {
		t.Fatalf("contract with a NULL: %v", err)
	}
	if j, err := r.Store.Get(ctx, id); err != nil || j.Phase != state.PhaseFailed {
		t.Fatalf("job: %+v %v", j, err)
	}
	mustExec(t, pool, "UPDATE meta_items SET note = 'fixed' WHERE note IS NULL")
	if out, err := r.Run(ctx, id); err != nil || out != worker.OutcomeCompleted {
		t.Fatalf("retry: %v %v", out, err)
	}
	checkCondition(t, pool, "after the retry", noteNotNull)
}

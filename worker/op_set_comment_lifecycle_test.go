package worker_test

import (
	"context"
	"testing"

	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// metaComments renders the comments of meta_items and its columns.
const metaComments = `SELECT coalesce(obj_description('meta_items'::regclass, 'pg_class'), '-') || ' | ' ||
	coalesce((SELECT string_agg(a.attname || '=' || d.description, ',' ORDER BY a.attnum)
	            FROM pg_description d JOIN pg_attribute a ON a.attrelid = d.objoid AND a.attnum = d.objsubid
	           WHERE d.objoid = 'meta_items'::regclass AND d.classoid = 'pg_class'::regclass), '-')`

const setCommentOps = `
  - set_comment: {table: meta_items, comment: "things we sell, and rent"}
  - set_comment: {table: meta_items, column: note, comment: null}
  - set_comment: {table: meta_items, column: price, comment: "it's in cents"}`

func TestLifecycleSetComment(t *testing.T) {
	runLifecycle(t, lifecycleCase{name: "table and columns", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, abortBackfill: true,
		ops:      setCommentOps,
		expanded: metaComments + ` = 'things we sell, and rent | price=it''s in cents'`,
		done:     metaComments + ` = 'things we sell, and rent | price=it''s in cents'`})
}

// TestSetCommentAbortRestores: the lifecycle's catalog compare does not
// cover comments; abort puts each one back, or clears it.
func TestSetCommentAbortRestores(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	mustExec(t, pool, metaSchema)
	var before string
	if err := pool.QueryRow(ctx, metaComments).Scan(&before); err != nil {
		t.Fatal(err)
	}
	if before != "things we sell | note=free text" {
		t.Fatalf("comments before = %q", before)
	}
	r, id := metaToWindow(t, pool, setCommentOps)
	checkCondition(t, pool, "in the window", metaComments+` <> '`+before+`'`)
	if err := r.Store.Transition(ctx, id, state.PhaseSyncing, state.PhaseAborting, "test", "abort"); err != nil {
		t.Fatal(err)
	}
	if out, err := r.Run(ctx, id); err != nil || out != worker.OutcomeAborted {
		t.Fatalf("abort: %v %v", out, err)
	}
	var after string
	if err := pool.QueryRow(ctx, metaComments).Scan(&after); err != nil || after != before {
		t.Fatalf("comments after abort = %q (%v), want %q", after, err, before)
	}
}

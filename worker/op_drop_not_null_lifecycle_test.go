package worker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// metaSchema is the table the metadata operations' lifecycle cases change
// (drop_not_null, set_not_null, set_default, drop_default,
// drop_constraint, drop_index, rename_constraint, set_comment).
const metaSchema = `
	CREATE SEQUENCE meta_seq;
	CREATE TABLE meta_parents (id bigint PRIMARY KEY);
	INSERT INTO meta_parents SELECT generate_series(1, 10);
	CREATE TABLE meta_items (
		id bigint PRIMARY KEY,
		name text NOT NULL,
		price numeric CONSTRAINT price_positive CHECK (price >= 0),
		note text,
		qty int NOT NULL DEFAULT 1,
		code bigint DEFAULT nextval('meta_seq'),
		parent_id bigint CONSTRAINT meta_items_parent_fk REFERENCES meta_parents (id),
		sku text CONSTRAINT meta_items_sku_key UNIQUE
	);
	INSERT INTO meta_items (id, name, price, note, parent_id, sku)
		SELECT i, 'item ' || i, i * 1.5, 'n' || i, 1 + i % 10, 'sku' || i FROM generate_series(1, 5000) i;
	CREATE INDEX meta_items_name_idx ON meta_items (name);
	COMMENT ON TABLE meta_items IS 'things we sell';
	COMMENT ON COLUMN meta_items.note IS 'free text';
	ANALYZE meta_items;`

// metaWriter is the old application: it updates and inserts, never NULL
// where the column is NOT NULL, prices never negative, leaving qty and
// code to their defaults.
var metaWriter = []string{
	"UPDATE meta_items SET name = 'renamed ' || $1, price = ($1 % 97) + 0.5 WHERE id = 1 + $1 % 5000",
	"INSERT INTO meta_items (id, name, price, note, parent_id, sku) VALUES (100000 + $1, 'new ' || $1, $1 % 50, 'n', 1 + $1 % 10, 'new' || $1)",
}

func TestLifecycleDropNotNull(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "new application writes NULL in the window", schema: metaSchema, data: []string{"meta_items"}, abortBackfill: true,
			writer: append([]string{"INSERT INTO meta_items (id, name, price) VALUES (200000 + $1, NULL, 1)"}, metaWriter...), ops: `
  - drop_not_null: {table: meta_items, column: name}`,
			expanded: `SELECT NOT attnotnull FROM pg_attribute WHERE attrelid = 'meta_items'::regclass AND attname = 'name'`,
			window:   `SELECT EXISTS (SELECT 1 FROM meta_items WHERE name IS NULL)`,
			done: `SELECT NOT attnotnull AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname LIKE 'refit_nn%')
				FROM pg_attribute WHERE attrelid = 'meta_items'::regclass AND attname = 'name'`},
		{name: "beside a synced column", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, ops: `
  - add_column:
      table: meta_items
      column: {name: name_upper, type: text}
      up: upper(name)
  - drop_not_null: {table: meta_items, column: qty}`,
			window: `SELECT count(*) = 0 FROM meta_items WHERE name_upper IS DISTINCT FROM upper(name)`,
			done: `SELECT NOT attnotnull FROM pg_attribute WHERE attrelid = 'meta_items'::regclass AND attname = 'qty'
				AND (SELECT count(*) = 0 FROM meta_items WHERE name_upper IS DISTINCT FROM upper(name))`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

// TestDropNotNullAbortAfterNulls: abort cannot put NOT NULL back while rows
// written in the window hold NULL. It fails naming them, with the column
// still nullable and no helper check left (the new application's NULL
// writes keep working); once they are fixed, the abort completes and the
// catalog is as before.
func TestDropNotNullAbortAfterNulls(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	mustExec(t, pool, metaSchema)
	before := catalog(t, pool)
	r, id := metaToWindow(t, pool, `
  - drop_not_null: {table: meta_items, column: name}`)
	mustExec(t, pool, "INSERT INTO meta_items (id, name, price) VALUES (900001, NULL, 1), (900002, NULL, 2)")

	if err := r.Store.Transition(ctx, id, state.PhaseSyncing, state.PhaseAborting, "test", "abort"); err != nil {
		t.Fatal(err)
	}
	_, err := r.Run(ctx, id)
	if err == nil || !strings.Contains(err.Error(), "cannot restore NOT NULL on column name of public.meta_items: 2 rows hold NULL (written since expand), e.g. keys (900001) (900002)") {
		t.Fatalf("abort with NULLs in the column: %v", err)
	}
	j, err := r.Store.Get(ctx, id)
	if err != nil || j.Phase != state.PhaseFailed {
		t.Fatalf("job: %+v %v", j, err)
	}
	checkCondition(t, pool, "after the refused abort", `SELECT NOT attnotnull AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname LIKE 'refit_nn%')
		FROM pg_attribute WHERE attrelid = 'meta_items'::regclass AND attname = 'name'`)
	mustExec(t, pool, "INSERT INTO meta_items (id, name, price) VALUES (900003, NULL, 3)") // still allowed

	mustExec(t, pool, "UPDATE meta_items SET name = 'fixed' WHERE name IS NULL")
	if out, err := r.Run(ctx, id); err != nil || out != worker.OutcomeAborted {
		t.Fatalf("abort retried: %v %v", out, err)
	}
	if after := catalog(t, pool); after != before {
		t.Fatalf("abort left the catalog changed:\nbefore: %s\nafter:  %s", before, after)
	}
}

// metaToWindow submits a migration and runs it to the window (the contract
// gate closed).
func metaToWindow(t *testing.T, pool *pgxpool.Pool, ops string) (*worker.Runner, int64) {
	t.Helper()
	ctx := context.Background()
	m, err := migration.Parse("meta.yaml", []byte("name: meta\noperations:"+ops+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeWaitingContract {
		t.Fatalf("run to the window: %v %v", out, err)
	}
	return r, sub.Job.ID
}

package worker_test

import "testing"

func TestLifecycleAddCheck(t *testing.T) {
	const validated = `SELECT convalidated FROM pg_constraint WHERE conrelid = 'orders'::regclass AND conname = 'orders_qty_positive'`
	for _, tc := range []lifecycleCase{
		{name: "check", schema: shopSchema, writer: shopWriter, data: []string{"orders"}, abortBackfill: true, ops: `
  - add_check: {table: orders, name: orders_qty_positive, expression: "qty > 0 AND qty < 100"}`,
			// NOT VALID from expand on: every write is checked, the
			// existing rows are not scanned yet.
			expanded: `SELECT NOT (` + validated + `)`,
			window:   `SELECT NOT (` + validated + `)`,
			done:     validated},
		{name: "over a column the migration backfills", schema: shopSchema, writer: shopWriter, data: []string{"orders"}, ops: `
  - add_column:
      table: orders
      column: {name: total, type: int}
      up: qty * 10
  - add_check: {table: orders, name: orders_total_positive, expression: "total > 0"}`,
			window: `SELECT count(*) = 0 FROM orders WHERE total IS DISTINCT FROM qty * 10`,
			done: `SELECT (SELECT convalidated FROM pg_constraint WHERE conname = 'orders_total_positive')
				AND NOT EXISTS (SELECT FROM orders WHERE total IS DISTINCT FROM qty * 10)`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

// A CHECK refuses every row written from expand on, so the only rows that
// can break it at VALIDATE are written between validation and expand: the
// job fails at VALIDATE naming them, the NOT VALID check still guards new
// writes, and abort removes it.
func TestLifecycleAddCheckViolation(t *testing.T) {
	runViolation(t, violationCase{schema: shopSchema,
		ops: `
  - add_check: {table: orders, name: orders_qty_positive, expression: "qty > 0"}`,
		bad:    "INSERT INTO orders (id, customer_id, code, qty) VALUES (900001, 1, 'bad', 0)",
		want:   []string{"operations[0] (add_check)", `1 rows violate check "orders_qty_positive", e.g. keys (900001)`, "SQLSTATE 23514"},
		failed: `SELECT NOT convalidated FROM pg_constraint WHERE conname = 'orders_qty_positive'`})
}

package worker_test

import "testing"

func TestLifecycleAddUnique(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "unique", schema: shopSchema, writer: shopWriter, data: []string{"orders"}, abortBackfill: true, ops: `
  - add_unique: {table: orders, name: orders_code_key, columns: [code]}`,
			// The index is built (and refuses duplicates) after the
			// backfill; the constraint is attached at contract.
			expanded: `SELECT (SELECT indisvalid AND indisunique FROM pg_index WHERE indexrelid = 'orders_code_key'::regclass)
				AND NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'orders_code_key')`,
			done: `SELECT contype = 'u' AND conindid = 'orders_code_key'::regclass FROM pg_constraint WHERE conname = 'orders_code_key'`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

// A duplicate the application writes before the index is built fails the
// build, which names the rows; the INVALID index it leaves is dropped and
// abort leaves the catalog as it was.
func TestLifecycleAddUniqueViolation(t *testing.T) {
	runViolation(t, violationCase{schema: shopSchema,
		ops: `
  - add_unique: {table: orders, name: orders_code_key, columns: [code]}`,
		bad:    "INSERT INTO orders (id, customer_id, code, qty) VALUES (900001, 1, 'o42', 1)",
		want:   []string{"operations[0] (add_unique)", `2 rows violate unique "orders_code_key", e.g. keys (42) (900001)`, "SQLSTATE 23505"},
		failed: `SELECT to_regclass('orders_code_key') IS NULL`})
}

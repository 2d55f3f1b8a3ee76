package worker_test

import "testing"

func TestLifecycleAddForeignKey(t *testing.T) {
	const validated = `SELECT convalidated FROM pg_constraint WHERE conrelid = 'orders'::regclass AND conname = 'orders_customer_fk'`
	for _, tc := range []lifecycleCase{
		{name: "foreign key", schema: shopSchema, writer: shopWriter, data: []string{"orders", "customers"}, abortBackfill: true, ops: `
  - add_foreign_key:
      table: orders
      name: orders_customer_fk
      columns: [customer_id]
      references: {table: customers, columns: [id]}
      on_delete: restrict`,
			expanded: `SELECT NOT (` + validated + `)`,
			window:   `SELECT NOT (` + validated + `)`,
			done:     `SELECT (` + validated + `) AND (SELECT confdeltype = 'r' FROM pg_constraint WHERE conname = 'orders_customer_fk')`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

// The NOT VALID foreign key checks every row written from expand on (and
// protects the referenced rows): an orphan written between validation and
// expand is what VALIDATE finds.
func TestLifecycleAddForeignKeyViolation(t *testing.T) {
	runViolation(t, violationCase{schema: shopSchema,
		ops: `
  - add_foreign_key: {table: orders, name: orders_customer_fk, columns: [customer_id], references: {table: customers, columns: [id]}}`,
		bad:    "INSERT INTO orders (id, customer_id, code, qty) VALUES (900001, 777777, 'orphan', 1), (900002, NULL, 'no customer', 1)",
		want:   []string{"operations[0] (add_foreign_key)", `1 rows violate foreign key "orders_customer_fk", e.g. keys (900001)`, "SQLSTATE 23503"},
		failed: `SELECT NOT convalidated FROM pg_constraint WHERE conname = 'orders_customer_fk'`})
}

// In the window the NOT VALID foreign key protects the referenced rows,
// except from a session that skips triggers (session_replication_role =
// replica: a logical-replication apply, a data load): the parent it deletes
// leaves orphans, which VALIDATE finds.
func TestLifecycleAddForeignKeyViolationInWindow(t *testing.T) {
	runViolation(t, violationCase{schema: shopSchema, inWindow: true,
		ops: `
  - add_foreign_key: {table: orders, name: orders_customer_fk, columns: [customer_id], references: {table: customers, columns: [id]}}`,
		bad: `BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM customers WHERE id = 43; COMMIT`,
		// Orders 42, 2042 and 4042 have customer 43 (1 + id % 2000).
		want:   []string{"operations[0] (add_foreign_key)", `3 rows violate foreign key "orders_customer_fk", e.g. keys (42) (2042) (4042)`},
		failed: `SELECT NOT convalidated FROM pg_constraint WHERE conname = 'orders_customer_fk'`})
}

package worker_test

import "testing"

// ordersSchema adds to items the new application's writes to orders, a
// table the migration creates: through dynamic SQL in a function, so the
// writer can run before expand (it does nothing until the table exists).
const ordersSchema = itemsSchema + `
	CREATE FUNCTION new_app_order(n bigint) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		IF to_regclass('orders') IS NULL THEN
			RETURN;
		END IF;
		EXECUTE 'INSERT INTO orders (item_id, qty) VALUES ($1, $2)' USING 1 + n % 5000, 1 + n % 7;
		EXECUTE 'UPDATE orders SET qty = qty + 1 WHERE id = (SELECT max(id) FROM orders)';
		EXECUTE 'DELETE FROM orders WHERE id = (SELECT min(id) FROM orders) AND (SELECT count(*) FROM orders) > 20';
	END $$;`

func TestLifecycleCreateTable(t *testing.T) {
	writer := append([]string{"SELECT new_app_order($1)"}, itemsWriter...)
	for _, tc := range []lifecycleCase{
		{name: "with a foreign key", schema: ordersSchema, writer: writer, data: []string{"items"}, abortBackfill: true, ops: `
  - create_table:
      name: orders
      comment: what was ordered
      columns:
        - {name: id, type: bigint, identity: always, primary_key: true}
        - {name: item_id, type: bigint, nullable: false}
        - {name: qty, type: int, nullable: false, default: "1"}
        - {name: placed_at, type: timestamptz, nullable: false, default: now()}
      checks: [{name: qty_positive, expression: "qty > 0"}]
      foreign_keys: [{columns: [item_id], references: {table: items}, on_delete: cascade}]`,
			expanded: `SELECT to_regclass('orders') IS NOT NULL AND obj_description('orders'::regclass, 'pg_class') = 'what was ordered'
				AND (SELECT string_agg(contype::text, '' ORDER BY contype) FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype <> 'n') = 'cfp'`,
			window: `SELECT count(*) > 0 AND bool_and(qty > 0) FROM orders`,
			done:   `SELECT count(*) > 0 AND NOT EXISTS (SELECT FROM orders o LEFT JOIN items i ON i.id = o.item_id WHERE i.id IS NULL) FROM orders`},
		{name: "with an index and seed rows", schema: itemsSchema, writer: itemsWriter, data: []string{"items"}, ops: `
  - create_table:
      name: statuses
      columns:
        - {name: id, type: int, identity: by_default}
        - {name: code, type: text, nullable: false, unique: true}
        - {name: label, type: text}
      primary_key: {name: statuses_key, columns: [id]}
  - bulk_insert: {table: statuses, rows: [{id: 1, code: new, label: New}, {id: 2, code: done}]}
  - create_index: {name: statuses_label, table: statuses, columns: [label]}
  - add_column:
      table: items
      column: {name: status_id, type: int, nullable: false, default: "1"}`,
			expanded: `SELECT (SELECT count(*) FROM statuses) = 2`,
			window:   `SELECT NOT EXISTS (SELECT FROM items WHERE status_id IS DISTINCT FROM 1)`,
			done: `SELECT (SELECT count(*) FROM statuses) = 2 AND (SELECT indisvalid FROM pg_index WHERE indexrelid = 'statuses_label'::regclass)
				AND (SELECT attnotnull FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'status_id')`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

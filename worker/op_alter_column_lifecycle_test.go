package worker_test

import "testing"

// amountsSchema is a table whose amount column is int, NOT NULL, with a
// default, a plain index and a unique constraint over it; note mirrors
// amount in every write of the application (the writer sets both in one
// statement), so after the swap every row's amount can be checked against
// what the application wrote.
const amountsSchema = `
	CREATE TABLE orders (id bigint PRIMARY KEY, amount integer NOT NULL DEFAULT 0, note text, ref text);
	CREATE INDEX orders_amount_idx ON orders (amount DESC);
	ALTER TABLE orders ADD CONSTRAINT orders_ref_amount_key UNIQUE (ref, amount);
	INSERT INTO orders SELECT i, i * 3, (i * 3)::text, 'r' || i FROM generate_series(1, 6000) i;
	ANALYZE orders;`

// amountsWriter is the old application: it writes amount (int) and note.
var amountsWriter = []string{
	`UPDATE orders SET amount = ($1 % 100000)::int, note = ($1 % 100000)::text WHERE id = 1 + $1 % 6000`,
	`INSERT INTO orders (id, amount, note, ref) VALUES (100000 + $1, ($1 % 7)::int, ($1 % 7)::text, 'n' || $1)`,
	`INSERT INTO orders (id, note, ref) VALUES (200000 + $1, '0', 'd' || $1)`,
	`DELETE FROM orders WHERE id = 100000 + $1 - 5`,
}

const amountsConverged = `NOT EXISTS (SELECT 1 FROM orders WHERE note IS DISTINCT FROM amount::text)`

func TestLifecycleAlterColumn(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "int to bigint, NOT NULL, default and indexes", schema: amountsSchema, writer: amountsWriter, data: []string{"orders"}, abortBackfill: true, ops: `
  - alter_column: {table: orders, column: amount, type: bigint}`,
			expanded: `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'refit_new_amount' AND NOT attnotnull)`,
			window:   `SELECT NOT EXISTS (SELECT 1 FROM orders WHERE refit_new_amount IS DISTINCT FROM amount::bigint)`,
			done: `SELECT ` + amountsConverged + `
				AND (SELECT format_type(atttypid, atttypmod) = 'bigint' AND attnotnull FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'amount')
				AND (SELECT pg_get_expr(adbin, adrelid) = '0' FROM pg_attrdef WHERE adrelid = 'orders'::regclass
				     AND adnum = (SELECT attnum FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'amount'))
				AND NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname LIKE 'refit%' AND NOT attisdropped)
				AND (SELECT indisvalid FROM pg_index WHERE indexrelid = 'orders_amount_idx'::regclass)
				AND pg_get_indexdef('orders_amount_idx'::regclass) LIKE '%(amount DESC)'
				AND (SELECT pg_get_constraintdef(oid) = 'UNIQUE (ref, amount)' FROM pg_constraint WHERE conname = 'orders_ref_amount_key')
				AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype = 'c')
				AND NOT EXISTS (SELECT 1 FROM pg_class WHERE relname LIKE 'refit%' AND relkind = 'i')`},
		{name: "text to int with using, nullable", schema: `
			CREATE TABLE codes (id int PRIMARY KEY, code text, mirror int);
			INSERT INTO codes SELECT i, (i * 7)::text, i * 7 FROM generate_series(1, 3000) i;
			INSERT INTO codes VALUES (3001, NULL, NULL);`,
			writer: []string{
				`UPDATE codes SET code = ($1 % 1000)::text, mirror = ($1 % 1000)::int WHERE id = 1 + $1 % 3000`,
				`INSERT INTO codes VALUES (10000 + $1, ' ' || $1::text || ' ', $1::int)`,
			},
			data: []string{"codes"}, ops: `
  - alter_column:
      table: codes
      column: code
      type: integer
      using: nullif(btrim(code), '')::integer`,
			window: `SELECT NOT EXISTS (SELECT 1 FROM codes WHERE refit_new_code IS DISTINCT FROM mirror)`,
			done: `SELECT NOT EXISTS (SELECT 1 FROM codes WHERE code IS DISTINCT FROM mirror)
				AND (SELECT format_type(atttypid, atttypmod) = 'integer' AND NOT attnotnull FROM pg_attribute WHERE attrelid = 'codes'::regclass AND attname = 'code')`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

package worker_test

import "testing"

// itemsSchema is the table most lifecycle cases change.
const itemsSchema = `
	CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, price numeric, legacy text);
	INSERT INTO items SELECT i, 'item ' || i, i * 1.5, 'old' FROM generate_series(1, 5000) i;
	ANALYZE items;`

// itemsWriter is the old application: updates and inserts of the old columns.
var itemsWriter = []string{
	"UPDATE items SET name = 'renamed ' || $1, price = ($1 % 97) + 0.5 WHERE id = 1 + $1 % 5000",
	"INSERT INTO items (id, name, price, legacy) VALUES (100000 + $1, 'new ' || $1, $1 % 50, 'old')",
}

func TestLifecycleAddColumn(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "nullable with up", schema: itemsSchema, writer: itemsWriter, data: []string{"items"}, abortBackfill: true, ops: `
  - add_column:
      table: items
      column: {name: name_upper, type: text}
      up: upper(name)`,
			expanded: `SELECT count(*) = 0 FROM items WHERE name_upper IS DISTINCT FROM upper(name)`,
			window:   `SELECT count(*) = 0 FROM items WHERE name_upper IS DISTINCT FROM upper(name)`,
			done:     `SELECT count(*) = 0 FROM items WHERE name_upper IS DISTINCT FROM upper(name)`},
		{name: "not null", schema: itemsSchema, writer: itemsWriter, data: []string{"items"}, ops: `
  - add_column:
      table: items
      column: {name: cents, type: bigint, nullable: false}
      up: (price * 100)::bigint`,
			window: `SELECT NOT EXISTS (SELECT 1 FROM items WHERE cents IS DISTINCT FROM (price * 100)::bigint)`,
			done: `SELECT (SELECT attnotnull FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'cents')
				AND NOT EXISTS (SELECT 1 FROM items WHERE cents IS DISTINCT FROM (price * 100)::bigint)`},
		{name: "volatile default", schema: itemsSchema, writer: itemsWriter, data: []string{"items"}, ops: `
  - add_column:
      table: items
      column: {name: touched_at, type: timestamptz, nullable: false, default: clock_timestamp()}`,
			done: `SELECT (SELECT attnotnull FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'touched_at')
				AND NOT EXISTS (SELECT 1 FROM items WHERE touched_at IS NULL)`},
		{name: "one table spelled two ways", schema: itemsSchema, writer: itemsWriter, data: []string{"items"}, ops: `
  - add_column:
      table: items
      column: {name: a, type: text}
      up: upper(name)
  - add_column:
      table: public.items
      column: {name: b, type: text}
      up: lower(name)
  - create_index: {name: items_a_b, table: public.items, columns: [a, b]}`,
			window: `SELECT count(*) = 0 FROM items WHERE a IS DISTINCT FROM upper(name) OR b IS DISTINCT FROM lower(name)`,
			done: `SELECT count(*) = 0 FROM items WHERE a IS DISTINCT FROM upper(name) OR b IS DISTINCT FROM lower(name)
				AND (SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_a_b'::regclass)`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

package worker_test

import "testing"

func TestLifecycleSQL(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "expand with down", schema: itemsSchema, writer: itemsWriter, data: []string{"items"}, abortBackfill: true, ops: `
  - sql:
      up: CREATE TABLE audit (id int PRIMARY KEY); CREATE INDEX audit_id ON audit (id)
      down: DROP TABLE audit`,
			expanded: `SELECT to_regclass('audit') IS NOT NULL`,
			done:     `SELECT to_regclass('audit') IS NOT NULL`},
		{name: "contract phase", schema: itemsSchema, writer: itemsWriter, data: []string{"items"}, ops: `
  - add_column:
      table: items
      column: {name: name_upper, type: text}
      up: upper(name)
  - sql:
      up: COMMENT ON COLUMN items.name_upper IS 'derived'
      phase: contract`,
			window: `SELECT count(*) = 0 FROM items WHERE name_upper IS DISTINCT FROM upper(name)`,
			done:   `SELECT col_description('items'::regclass, (SELECT attnum FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'name_upper')) = 'derived'`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

package worker_test

import "testing"

func TestLifecycleCreateIndexBasic(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "partial", schema: itemsSchema, writer: itemsWriter, data: []string{"items"}, abortBackfill: true, ops: `
  - create_index:
      name: items_name_idx
      table: items
      columns: [name]
      where: price > 10`,
			done: `SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_name_idx'::regclass`},
		{name: "unique", schema: itemsSchema, data: []string{"items"},
			// The writer keeps names unique: it only inserts new ones.
			writer: []string{"INSERT INTO items (id, name, price, legacy) VALUES (100000 + $1, 'new ' || $1, 1, 'old')"}, ops: `
  - create_index:
      name: items_name_key
      table: items
      columns: [name]
      unique: true`,
			done: `SELECT indisvalid AND indisunique FROM pg_index WHERE indexrelid = 'items_name_key'::regclass`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

package worker_test

import "testing"

func TestLifecycleDropDefault(t *testing.T) {
	for _, tc := range []lifecycleCase{
		// Abort puts nextval('meta_seq'::regclass) back exactly (the catalog
		// compare includes every default).
		{name: "a sequence default", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, abortBackfill: true, ops: `
  - drop_default: {table: meta_items, column: code}`,
			expanded: `SELECT ` + defaultOf("code") + ` IS NULL`,
			window:   `SELECT EXISTS (SELECT 1 FROM meta_items WHERE id > 100000 AND code IS NULL)`,
			done:     `SELECT ` + defaultOf("code") + ` IS NULL`},
		{name: "of a NOT NULL column the application fills", schema: metaSchema, data: []string{"meta_items"},
			writer: []string{"INSERT INTO meta_items (id, name, price, qty) VALUES (100000 + $1, 'new', 1, 3)"}, ops: `
  - drop_default: {table: meta_items, column: qty}`,
			done: `SELECT ` + defaultOf("qty") + ` IS NULL`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

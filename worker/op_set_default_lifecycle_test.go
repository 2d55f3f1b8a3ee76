package worker_test

import "testing"

// defaultOf is the default of a meta_items column as pg_get_expr prints it.
func defaultOf(column string) string {
	return `(SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
		WHERE d.adrelid = 'meta_items'::regclass AND a.attname = '` + column + `')`
}

func TestLifecycleSetDefault(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "constant over a constant", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, abortBackfill: true, ops: `
  - set_default: {table: meta_items, column: qty, default: "5"}`,
			expanded: `SELECT ` + defaultOf("qty") + ` = '5'`,
			// New rows get the new default; the existing ones keep their value.
			window: `SELECT EXISTS (SELECT 1 FROM meta_items WHERE id > 100000 AND qty = 5) AND NOT EXISTS (SELECT 1 FROM meta_items WHERE id <= 5000 AND qty <> 1)`,
			done:   `SELECT ` + defaultOf("qty") + ` = '5'`},
		// Abort puts the sequence default back exactly (the catalog compare
		// includes every default); a volatile default is fine.
		{name: "volatile over a sequence", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, abortBackfill: true, ops: `
  - set_default: {table: meta_items, column: code, default: "(random() * 1000)::bigint + 1000000"}`,
			expanded: `SELECT ` + defaultOf("code") + ` LIKE '%random()%'`,
			window:   `SELECT EXISTS (SELECT 1 FROM meta_items WHERE id > 100000 AND code >= 1000000)`,
			done:     `SELECT ` + defaultOf("code") + ` LIKE '%random()%'`},
		{name: "where there was none", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, ops: `
  - set_default: {table: meta_items, column: price, default: "0"}`,
			done: `SELECT ` + defaultOf("price") + ` = '0'`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

package worker_test

import "testing"

func TestLifecycleDropIndex(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "named by itself", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, abortBackfill: true, ops: `
  - drop_index: {name: meta_items_name_idx}`,
			// The old application's queries may use it in the window.
			expanded: `SELECT to_regclass('meta_items_name_idx') IS NOT NULL`,
			done:     `SELECT to_regclass('meta_items_name_idx') IS NULL`},
		{name: "with its table, beside a synced column", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, ops: `
  - add_column:
      table: meta_items
      column: {name: name_upper, type: text}
      up: upper(name)
  - drop_index: {name: meta_items_name_idx, table: meta_items}`,
			window: `SELECT count(*) = 0 FROM meta_items WHERE name_upper IS DISTINCT FROM upper(name)`,
			done:   `SELECT to_regclass('meta_items_name_idx') IS NULL AND (SELECT count(*) = 0 FROM meta_items WHERE name_upper IS DISTINCT FROM upper(name))`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

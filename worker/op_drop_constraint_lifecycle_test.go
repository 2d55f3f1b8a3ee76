package worker_test

import "testing"

// hasConstraint is true when meta_items has a constraint of that name.
func hasConstraint(name string) string {
	return `EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'meta_items'::regclass AND conname = '` + name + `')`
}

func TestLifecycleDropConstraint(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "check, foreign key, unique", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, abortBackfill: true, ops: `
  - drop_constraint: {table: meta_items, name: price_positive}
  - drop_constraint: {table: meta_items, name: meta_items_parent_fk}
  - drop_constraint: {table: public.meta_items, name: meta_items_sku_key}`,
			// The old application may rely on them in the window: still there.
			expanded: `SELECT count(*) = 3 FROM pg_constraint WHERE conrelid = 'meta_items'::regclass
				AND conname IN ('price_positive', 'meta_items_parent_fk', 'meta_items_sku_key')`,
			done: `SELECT NOT ` + hasConstraint("price_positive") + ` AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname IN ('meta_items_parent_fk', 'meta_items_sku_key'))
				AND to_regclass('meta_items_sku_key') IS NULL`},
		// The primary key of a table the migration does not backfill.
		{name: "primary key", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, ops: `
  - drop_constraint: {table: meta_items, name: meta_items_pkey}`,
			done: `SELECT NOT ` + hasConstraint("meta_items_pkey")},
		{name: "beside a synced column", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, ops: `
  - add_column:
      table: meta_items
      column: {name: name_upper, type: text}
      up: upper(name)
  - drop_constraint: {table: meta_items, name: price_positive}`,
			window: `SELECT count(*) = 0 FROM meta_items WHERE name_upper IS DISTINCT FROM upper(name)`,
			done:   `SELECT NOT ` + hasConstraint("price_positive") + ` AND (SELECT count(*) = 0 FROM meta_items WHERE name_upper IS DISTINCT FROM upper(name))`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

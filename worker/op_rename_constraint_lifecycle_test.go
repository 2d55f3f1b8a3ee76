package worker_test

import "testing"

func TestLifecycleRenameConstraint(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "check and unique", schema: metaSchema, writer: metaWriter, data: []string{"meta_items"}, abortBackfill: true, ops: `
  - rename_constraint: {table: meta_items, from: price_positive, to: price_not_negative}
  - rename_constraint: {table: meta_items, from: meta_items_sku_key, to: meta_items_sku_unique}`,
			// The old application may name them in the window: unchanged.
			expanded: `SELECT ` + hasConstraint("price_positive") + ` AND to_regclass('meta_items_sku_key') IS NOT NULL`,
			done: `SELECT NOT ` + hasConstraint("price_positive") + ` AND ` + hasConstraint("price_not_negative") + `
				AND ` + hasConstraint("meta_items_sku_unique") + ` AND to_regclass('meta_items_sku_unique') IS NOT NULL`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

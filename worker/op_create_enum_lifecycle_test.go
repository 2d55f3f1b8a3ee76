package worker_test

import "testing"

func TestLifecycleCreateEnum(t *testing.T) {
	runLifecycle(t, lifecycleCase{schema: itemsSchema, writer: itemsWriter, data: []string{"items"}, abortBackfill: true, ops: `
  - create_enum:
      name: item_state
      values: [draft, live]
  - add_column:
      table: items
      column: {name: state, type: item_state, nullable: false, default: "'live'"}`,
		expanded: `SELECT to_regtype('item_state') IS NOT NULL`,
		done: `SELECT NOT EXISTS (SELECT 1 FROM items WHERE state IS DISTINCT FROM 'live')
			AND (SELECT attnotnull FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'state')`})
}

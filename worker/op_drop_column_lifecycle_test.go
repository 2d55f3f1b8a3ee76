package worker_test

import "testing"

func TestLifecycleDropColumn(t *testing.T) {
	runLifecycle(t, lifecycleCase{schema: itemsSchema, writer: itemsWriter, data: []string{"items"}, abortBackfill: true, ops: `
  - drop_column:
      table: items
      column: legacy`,
		expanded: `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'legacy' AND NOT attisdropped)`,
		done:     `SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'legacy' AND NOT attisdropped)`})
}

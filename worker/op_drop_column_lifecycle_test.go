package worker_test

import "testing"

func TestLifecycleDropColumn(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "nullable column", schema: itemsSchema, writer: itemsWriter, data: []string{"items"}, abortBackfill: true, ops: `
  - drop_column:
      table: items
      column: legacy`,
			expanded: `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'legacy' AND NOT attisdropped)`,
			done:     `SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'legacy' AND NOT attisdropped)`},
		// The new application no longer writes a NOT NULL column it is about
		// to lose: its inserts must succeed in the window (NOT NULL relaxed at
		// expand), and abort puts NOT NULL back.
		{name: "NOT NULL column the new application no longer writes", schema: `
			CREATE TABLE parts (id bigint PRIMARY KEY, name text NOT NULL, code text NOT NULL);
			INSERT INTO parts SELECT i, 'p' || i, 'c' || i FROM generate_series(1, 3000) i;`,
			writer: []string{
				`INSERT INTO parts (id, name) VALUES (100000 + $1, 'new ' || $1)`,
				`UPDATE parts SET name = 'renamed ' || $1 WHERE id = 1 + $1 % 3000`,
			},
			data: []string{"parts"}, abortBackfill: true, ops: `
  - drop_column: {table: parts, column: code}`,
			expanded: `SELECT NOT attnotnull FROM pg_attribute WHERE attrelid = 'parts'::regclass AND attname = 'code'`,
			window:   `SELECT EXISTS (SELECT 1 FROM parts WHERE id > 100000 AND code IS NULL)`,
			done:     `SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'parts'::regclass AND attname = 'code' AND NOT attisdropped)`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

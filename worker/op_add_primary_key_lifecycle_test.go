package worker_test

import "testing"

func TestLifecycleAddPrimaryKey(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "primary key", schema: shopSchema, writer: shopWriter, data: []string{"events"}, abortBackfill: true, ops: `
  - add_primary_key: {table: events, columns: [id]}`,
			expanded: `SELECT (SELECT indisvalid AND NOT indisprimary FROM pg_index WHERE indexrelid = 'events_pkey'::regclass)`,
			done:     `SELECT contype = 'p' AND conindid = 'events_pkey'::regclass FROM pg_constraint WHERE conrelid = 'events'::regclass AND conname = 'events_pkey'`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

func TestLifecycleAddPrimaryKeyViolation(t *testing.T) {
	runViolation(t, violationCase{schema: shopSchema,
		ops: `
  - add_primary_key: {table: events, columns: [id]}`,
		bad:    "INSERT INTO events (id, kind) VALUES (7, 'again')",
		want:   []string{"operations[0] (add_primary_key)", `2 rows violate primary key "events_pkey", e.g. keys (7) (7)`, "SQLSTATE 23505"},
		failed: `SELECT to_regclass('events_pkey') IS NULL`})
}

package worker_test

import "testing"

// logsSchema adds to items a table the old application still writes until
// contract, and one whose foreign key references it.
const logsSchema = itemsSchema + `
	CREATE TABLE item_log (id bigint PRIMARY KEY, item_id bigint REFERENCES items, note text);
	INSERT INTO item_log SELECT i, i, 'old' FROM generate_series(1, 500) i;
	CREATE TABLE log_ref (id int PRIMARY KEY, log_id bigint CONSTRAINT log_ref_log_fk REFERENCES item_log);
	INSERT INTO log_ref VALUES (1, 1);`

// logsWriter is the old application: it writes items and item_log.
var logsWriter = append([]string{"INSERT INTO item_log (id, item_id, note) VALUES (1000 + $1, 1 + $1 % 5000, 'new')"}, itemsWriter...)

func TestLifecycleDropTable(t *testing.T) {
	for _, tc := range []lifecycleCase{
		{name: "cascade", schema: logsSchema, writer: logsWriter, data: []string{"items", "item_log", "log_ref"}, abortBackfill: true, ops: `
  - drop_table: {name: item_log, cascade: true}`,
			expanded: `SELECT to_regclass('item_log') IS NOT NULL`,
			window:   `SELECT (SELECT count(*) FROM item_log) > 500`,
			done: `SELECT to_regclass('item_log') IS NULL AND (SELECT count(*) FROM log_ref) = 1
				AND NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'log_ref_log_fk')
				AND NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'items'::regclass)`},
		{name: "next to a synced table", schema: logsSchema + `DROP TABLE log_ref;`, writer: logsWriter, data: []string{"items", "item_log"}, ops: `
  - add_column:
      table: items
      column: {name: name_upper, type: text, nullable: false}
      up: upper(name)
  - drop_table: {name: public.item_log}`,
			window: `SELECT count(*) = 0 FROM items WHERE name_upper IS DISTINCT FROM upper(name)`,
			done: `SELECT to_regclass('item_log') IS NULL
				AND NOT EXISTS (SELECT FROM items WHERE name_upper IS DISTINCT FROM upper(name))
				AND (SELECT attnotnull FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'name_upper')`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

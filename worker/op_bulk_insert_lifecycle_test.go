package worker_test

import "testing"

func TestLifecycleBulkInsert(t *testing.T) {
	runLifecycle(t, lifecycleCase{schema: itemsSchema + `
		CREATE TABLE settings (key text PRIMARY KEY, value text);
		INSERT INTO settings VALUES ('existing', 'kept');`,
		writer: append([]string{"UPDATE settings SET value = 'v' || $1::bigint WHERE key = 'existing'"}, itemsWriter...),
		data:   []string{"items", "settings"}, abortBackfill: true, ops: `
  - bulk_insert:
      table: settings
      rows:
        - {key: theme, value: dark}
        - {key: lang, value: en}
        - {key: empty, value: null}`,
		expanded: `SELECT count(*) = 4 FROM settings`,
		done:     `SELECT count(*) = 4 FROM settings`})
}

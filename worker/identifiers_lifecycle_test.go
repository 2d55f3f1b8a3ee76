package worker_test

import "testing"

// quotedSchema is a table whose every name needs quoting: schema "Sales
// Dept", table "Order Items", a mixed-case key column, a column `ü "quoted"`
// (a non-ASCII letter, a space and double quotes) and another quoted column
// the migration drops.
const quotedSchema = `
	CREATE SCHEMA "Sales Dept";
	CREATE TABLE "Sales Dept"."Order Items" (
		"OrderItemID" bigint PRIMARY KEY,
		"ü ""quoted""" text NOT NULL,
		"Old ""Col""" text,
		"Qty" int);
	INSERT INTO "Sales Dept"."Order Items" SELECT i, 'größe ' || i, 'old', i % 7 FROM generate_series(1, 5000) i;
	ANALYZE "Sales Dept"."Order Items";`

// quotedWriter is the old application, writing the old columns.
var quotedWriter = []string{
	`UPDATE "Sales Dept"."Order Items" SET "ü ""quoted""" = 'renamed ß ' || $1, "Qty" = $1 % 97 WHERE "OrderItemID" = 1 + $1 % 5000`,
	`INSERT INTO "Sales Dept"."Order Items" ("OrderItemID", "ü ""quoted""", "Old ""Col""", "Qty") VALUES (100000 + $1, 'neu ü ' || $1, 'old', 1)`,
	`DELETE FROM "Sales Dept"."Order Items" WHERE "OrderItemID" = 100000 + $1 - 7`,
}

// salesCatalog is the catalog of schema "Sales Dept" as rows (the
// harness's catalog covers public): listed in the case's data, so both
// aborts must leave it as it was, enum type included.
const salesCatalog = `(
	SELECT 'rel ' || c.relname || ':' || c.relkind::text AS o FROM pg_class c WHERE c.relnamespace = '"Sales Dept"'::regnamespace
	UNION ALL SELECT 'col ' || c.relname || '.' || a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull::text || ':' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE c.relnamespace = '"Sales Dept"'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
	UNION ALL SELECT 'con ' || conname || ':' || pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = '"Sales Dept"'::regnamespace
	UNION ALL SELECT 'type ' || typname || ':' || typtype::text FROM pg_type WHERE typnamespace = '"Sales Dept"'::regnamespace
	UNION ALL SELECT 'enum ' || enumlabel FROM pg_enum WHERE enumtypid IN (SELECT oid FROM pg_type WHERE typnamespace = '"Sales Dept"'::regnamespace)
	UNION ALL SELECT 'idx ' || i.indexrelid::regclass::text || ':' || i.indisvalid::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
		WHERE c.relnamespace = '"Sales Dept"'::regnamespace)`

// TestLifecycleQuotedIdentifiers takes names that need quoting everywhere
// (spaces, double quotes, capitals, non-ASCII letters, in the schema, the
// table, the key, the columns, an index and an enum) through the whole
// life: create_enum with a quoted name used by an add_column, add_column
// with an up expression over the quoted column, create_index on it,
// drop_column of another quoted column and bulk_insert into the table; the
// backfill's keyset batches, the publication, slot and origins, the
// stream's apply (replication.ApplySQL) and what status shows all work with
// such names (the window's check holds only if the stream re-derived the
// writer's updates; the job's rows and backfill range are what refit
// status shows), and both aborts leave schema "Sales Dept" as it was.
func TestLifecycleQuotedIdentifiers(t *testing.T) {
	const (
		table   = `"Sales Dept"."Order Items"`
		derived = `SELECT NOT EXISTS (SELECT 1 FROM "Sales Dept"."Order Items" WHERE "Upper ""Ü""" IS DISTINCT FROM upper("ü ""quoted"""))`
		seeded  = `EXISTS (SELECT 1 FROM "Sales Dept"."Order Items" WHERE "OrderItemID" = 900001 AND "ü ""quoted""" = 'seeded ü' AND "Upper ""Ü""" = upper('seeded ü'))`
	)
	runLifecycle(t, lifecycleCase{schema: quotedSchema, writer: quotedWriter, data: []string{table, salesCatalog}, abortBackfill: true, ops: `
  - create_enum:
      name: 'Sales Dept.Item "State"'
      values: [draft, "it's live"]
  - add_column:
      table: Sales Dept.Order Items
      column: {name: 'Upper "Ü"', type: text}
      up: 'upper("ü ""quoted""")'
  - add_column:
      table: Sales Dept.Order Items
      column: {name: State Ö, type: '"Sales Dept"."Item ""State"""', nullable: false, default: "'it''s live'"}
  - create_index:
      name: 'Idx "ü" Ä'
      table: Sales Dept.Order Items
      columns: ['ü "quoted"']
  - drop_column:
      table: Sales Dept.Order Items
      column: 'Old "Col"'
  - bulk_insert:
      table: Sales Dept.Order Items
      rows:
        - {OrderItemID: 900001, 'ü "quoted"': seeded ü, 'Old "Col"': seeded, Qty: 3}`,
		expanded: derived + ` AND ` + seeded + ` AND to_regtype('"Sales Dept"."Item ""State"""') IS NOT NULL`,
		window:   derived + ` AND ` + seeded,
		done: derived + ` AND ` + seeded + `
			AND (SELECT indisvalid FROM pg_index WHERE indexrelid = '"Sales Dept"."Idx ""ü"" Ä"'::regclass)
			AND (SELECT attnotnull FROM pg_attribute WHERE attrelid = '"Sales Dept"."Order Items"'::regclass AND attname = 'State Ö')
			AND NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '"Sales Dept"."Order Items"'::regclass AND attname = 'Old "Col"' AND NOT attisdropped)
			AND NOT EXISTS (SELECT 1 FROM "Sales Dept"."Order Items" WHERE "State Ö" IS DISTINCT FROM 'it''s live')
			AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = '"Sales Dept"."Order Items"'::regclass AND contype = 'c')
			AND (SELECT j.rows_total > 0
			       AND (SELECT sum(r.rows_done) FROM refit.backfill_ranges r WHERE r.job_id = j.id) >= 5001
			       AND (SELECT string_agg(r.table_name, ',') FROM refit.backfill_ranges r WHERE r.job_id = j.id) = 'Sales Dept.Order Items'
			     FROM refit.jobs j WHERE j.phase = 'completed')`})
}

// TestLifecycleQuotedCompositeKey: a table whose name holds a dot (the
// file's "schema.table" splits on the first one), paginated on a
// composite key of a text column with non-ASCII values and a mixed-case
// integer column, both names needing quotes.
func TestLifecycleQuotedCompositeKey(t *testing.T) {
	const table = `"Sales Dept"."Order.Lines"`
	runLifecycle(t, lifecycleCase{schema: `
		CREATE SCHEMA "Sales Dept";
		CREATE TABLE "Sales Dept"."Order.Lines" ("Région" text, "LineNo" int, "Note ""x""" text NOT NULL, PRIMARY KEY ("Région", "LineNo"));
		INSERT INTO "Sales Dept"."Order.Lines" SELECT r, i, 'n' || i FROM unnest(ARRAY['Ærø', 'Öland', 'Łódź', 'a''b']) r, generate_series(1, 1500) i;`,
		writer: []string{
			`UPDATE "Sales Dept"."Order.Lines" SET "Note ""x""" = 'upd ' || $1 WHERE "Région" = 'Łódź' AND "LineNo" = 1 + $1 % 1500`,
			`INSERT INTO "Sales Dept"."Order.Lines" VALUES ('Ærø', 10000 + $1, 'new')`,
		},
		data: []string{table, salesCatalog}, abortBackfill: true, ops: `
  - add_column:
      table: Sales Dept.Order.Lines
      column: {name: 'Note "len"', type: int, nullable: false}
      up: 'length("Note ""x""")'`,
		window: `SELECT NOT EXISTS (SELECT 1 FROM "Sales Dept"."Order.Lines" WHERE "Note ""len""" IS DISTINCT FROM length("Note ""x"""))`,
		done: `SELECT NOT EXISTS (SELECT 1 FROM "Sales Dept"."Order.Lines" WHERE "Note ""len""" IS DISTINCT FROM length("Note ""x"""))
			AND (SELECT attnotnull FROM pg_attribute WHERE attrelid = '"Sales Dept"."Order.Lines"'::regclass AND attname = 'Note "len"')
			AND (SELECT (SELECT sum(r.rows_done) FROM refit.backfill_ranges r WHERE r.job_id = j.id) >= 6000 FROM refit.jobs j WHERE j.phase = 'completed')`})
}

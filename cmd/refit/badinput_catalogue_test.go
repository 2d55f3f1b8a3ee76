package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// badInputSchema is what the catalogue's migrations are refused against,
// next to workload's users table: tables without a usable key, an enum,
// names with spaces, quotes, capitals and non-ASCII letters, and a type
// and a column whose names are 63 bytes long.
var badInputSchema = `
	CREATE TYPE "` + long63 + `" AS ENUM ('a');
	ALTER TABLE users ADD COLUMN "` + long63 + `" int;
	CREATE TABLE nokey (a int, b text);
	CREATE TABLE nullable_unique (a int UNIQUE, b text);
	CREATE TABLE partial_unique (a int NOT NULL, b text);
	CREATE UNIQUE INDEX partial_unique_a ON partial_unique (a) WHERE a > 0;
	CREATE TYPE mood AS ENUM ('ok', 'meh');
	CREATE SCHEMA "Sales Dept";
	CREATE TABLE "Sales Dept"."Order Items" ("Item ID" bigint PRIMARY KEY, "ü" text, "Qty" int, "a""b" text);
	INSERT INTO "Sales Dept"."Order Items" SELECT i, 'x' || i, i, 'q' FROM generate_series(1, 20) i;
	CREATE SEQUENCE seq_untouched;`

// long63 is a 63-byte name; long63+"x" and long63+"y" are two 64-byte
// names PostgreSQL would both truncate to long63.
var long63 = strings.Repeat("c", 63)

// badInputCases is the catalogue: every entry is a migration refit must
// refuse with exit code 2, before changing anything, naming the file (and
// the line where the YAML decoder knows it), the operation as
// operations[N] (kind) and the field.
var badInputCases = []struct {
	name string
	ext  string // "yaml" (default) or "json"
	body string
	line int      // the line the error names (0: the decoder does not know one)
	want []string // further substrings of the error
}{
	// Syntax.
	{name: "yaml unclosed flow mapping", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: int}\n", line: 2,
		want: []string{"not valid YAML or JSON", "did not find expected"}},
	{name: "yaml tab indentation", body: "name: x\noperations:\n\t- drop_column: {table: users, column: email}\n", line: 3,
		want: []string{"not valid YAML or JSON"}},
	{name: "yaml bad indentation", body: "name: x\noperations:\n  - drop_column:\n      table: users\n     column: email\n", line: 2,
		want: []string{"not valid YAML or JSON"}},
	{name: "json missing colon", ext: "json", body: `{"name" "x", "operations": [{"drop_column": {"table": "users", "column": "email"}}]}`,
		want: []string{"not valid YAML or JSON"}},
	{name: "json unclosed", ext: "json", body: "{\"name\": \"x\",\n \"operations\": [\n", line: 2,
		want: []string{"not valid YAML or JSON"}},
	{name: "invalid utf-8", body: "name: x\noperations:\n  - drop_column: {table: users, column: \"\xff\"}\n",
		want: []string{"not valid YAML or JSON"}},
	{name: "empty file", body: "", want: []string{"the file is empty"}},
	{name: "two documents", body: "name: x\noperations:\n  - drop_column: {table: users, column: email}\n---\nname: y\n", line: 4,
		want: []string{"exactly one YAML document"}},
	{name: "top level is a list", body: "- name: x\n", want: []string{"the top level must be a mapping"}},

	// Wrong types.
	{name: "name is a list", body: "name: [x]\noperations:\n  - drop_column: {table: users, column: email}\n", line: 1,
		want: []string{`field "name"`, "must be a string"}},
	{name: "operations is a mapping", body: "name: x\noperations:\n  drop_column: {table: users, column: email}\n", line: 3,
		want: []string{`field "operations"`, "must be a list"}},
	{name: "operation is a string", body: "name: x\noperations:\n  - drop_column\n", line: 3,
		want: []string{"operations[0]", "exactly one key"}},
	{name: "operation with two kinds", body: "name: x\noperations:\n  - drop_column: {table: users, column: email}\n    create_enum: {name: e, values: [a]}\n", line: 3,
		want: []string{"operations[0]", "exactly one key"}},
	{name: "operation body is null", body: "name: x\noperations:\n  - add_column:\n", line: 3,
		want: []string{"operations[0] (add_column)", "must be a mapping"}},
	{name: "nullable is not a boolean", body: "name: x\noperations:\n  - add_column:\n      table: users\n      column: {name: a, type: int, nullable: sometimes}\n", line: 5,
		want: []string{"operations[0] (add_column)", `field "column.nullable"`, "cannot unmarshal", "bool"}},
	{name: "column is a string", body: "name: x\noperations:\n  - add_column:\n      table: users\n      column: a int\n", line: 5,
		want: []string{"operations[0] (add_column)", `field "column"`, "cannot unmarshal"}},
	{name: "json table is a list", ext: "json", body: `{"name": "x", "operations": [{"drop_column": {"table": ["users"], "column": "email"}}]}`, line: 1,
		want: []string{"operations[0] (drop_column)", `field "table"`, "cannot unmarshal"}},
	{name: "bulk_insert value is a list", body: "name: x\noperations:\n  - bulk_insert:\n      table: users\n      rows: [{full_name: [a, b], email: e}]\n",
		want: []string{"operations[0] (bulk_insert)", `field "rows[0].full_name"`, "scalars"}},
	{name: "index column is a list", body: "name: x\noperations:\n  - create_index: {name: i, table: users, columns: [[email]]}\n", line: 3,
		want: []string{"operations[0] (create_index)", `field "columns[0]"`}},

	// Unknown keys.
	{name: "unknown top-level key", body: "name: x\noperation:\n  - drop_column: {table: users, column: email}\n", line: 2,
		want: []string{`field "operation"`, "unknown top-level field"}},
	{name: "unknown operation key", body: "name: x\noperations:\n  - drop_column: {table: users, colum: email}\n", line: 3,
		want: []string{"operations[0] (drop_column)", `field "colum"`, "unknown field"}},
	{name: "unknown nested key", body: "name: x\noperations:\n  - create_table:\n      name: t2\n      columns:\n        - {name: id, type: int, primary_key: true, nulable: false}\n", line: 6,
		want: []string{"operations[0] (create_table)", `field "columns[0].nulable"`, "unknown field"}},
	{name: "unknown index column key", body: "name: x\noperations:\n  - create_index: {name: i, table: users, columns: [{name: email, opclas: text_pattern_ops}]}\n", line: 3,
		want: []string{"operations[0] (create_index)", `field "columns[0].opclas"`, "unknown field"}},
	{name: "unknown operation kind", body: "name: x\noperations:\n  - drop_colunm: {table: users, column: email}\n", line: 3,
		want: []string{"operations[0]", `unknown operation "drop_colunm"`}},
	{name: "duplicate key in an operation", body: "name: x\noperations:\n  - drop_column:\n      table: users\n      table: nokey\n      column: email\n", line: 5,
		want: []string{"operations[0] (drop_column)", `field "table"`, "given twice (also on line 4)"}},
	{name: "duplicate top-level key", body: "name: x\nname: y\noperations:\n  - drop_column: {table: users, column: email}\n", line: 2,
		want: []string{`field "name"`, "given twice"}},
	{name: "unknown settings key", body: "name: x\nsettings: {backfill.batch_sise: 10}\noperations:\n  - drop_column: {table: users, column: email}\n",
		want: []string{"settings", "batch_sise"}},

	// Empty or duplicate operations.
	{name: "no operations", body: "name: x\noperations: []\n", want: []string{`field "operations"`, "at least one operation"}},
	{name: "operations missing", body: "name: x\n", want: []string{`field "operations"`, "is required"}},
	{name: "empty operation body", body: "name: x\noperations:\n  - add_column: {}\n",
		want: []string{"operations[0] (add_column)", `field "table"`, "is required"}},
	{name: "same column added twice", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: int}}\n  - add_column: {table: users, column: {name: a, type: text}}\n",
		want: []string{"operations[1] (add_column)", `field "column.name"`, "also created by operations[0]"}},
	{name: "same column added twice, two spellings", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: int}}\n  - add_column: {table: public.users, column: {name: a, type: text}}\n",
		want: []string{"operations[1] (add_column)", `field "column.name"`, "already"}},
	{name: "same index twice, two spellings", body: "name: x\noperations:\n  - create_index: {name: i, table: users, columns: [email]}\n  - create_index: {name: i, table: public.users, columns: [full_name]}\n",
		want: []string{"operations[1] (create_index)", `field "name"`, "operations[0]"}},
	{name: "same enum twice", body: "name: x\noperations:\n  - create_enum: {name: e, values: [a]}\n  - create_enum: {name: e, values: [b]}\n",
		want: []string{"operations[1] (create_enum)", `field "name"`, "also created by operations[0]"}},
	{name: "duplicate enum value", body: "name: x\noperations:\n  - create_enum: {name: e, values: [a, a]}\n",
		want: []string{"operations[0] (create_enum)", `field "values[1]"`, "duplicate"}},

	// Statement smuggling.
	{name: "semicolon in up", body: "name: x\noperations:\n  - add_column:\n      table: users\n      column: {name: a, type: text}\n      up: \"full_name; DROP TABLE users\"\n",
		want: []string{"operations[0] (add_column)", `field "up"`, "one SQL expression"}},
	{name: "line comment in up", body: "name: x\noperations:\n  - add_column:\n      table: users\n      column: {name: a, type: text}\n      up: \"upper(full_name) -- ); DROP TABLE users\"\n",
		want: []string{"operations[0] (add_column)", `field "up"`, "comments"}},
	{name: "line comment ended by CR in up", body: "name: x\noperations:\n  - add_column:\n      table: users\n      column: {name: a, type: text}\n      up: \"full_name --\\r; DROP TABLE users\"\n",
		want: []string{"operations[0] (add_column)", `field "up"`, "comments"}},
	{name: "block comment in default", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: int, default: \"1 /* ; */\"}}\n",
		want: []string{"operations[0] (add_column)", `field "column.default"`, "comments"}},
	{name: "doubled quote then semicolon", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: text}, up: \"'a'';' ; DROP TABLE users\"}\n",
		want: []string{"operations[0] (add_column)", `field "up"`, "';'"}},
	{name: "dollar quotes around a semicolon", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: text}, up: \"$q$x$q$; DROP TABLE users; SELECT $q$y$q$\"}\n",
		want: []string{"operations[0] (add_column)", `field "up"`, "one SQL expression"}},
	{name: "unterminated dollar quote", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: text}, up: \"$q$; DROP TABLE users\"}\n",
		want: []string{"operations[0] (add_column)", `field "up"`, "unterminated dollar quote"}},
	{name: "E-string continued on the next line", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: text}, up: \"E'a'\\n'\\\\' || ';' || ' -- '\"}\n",
		want: []string{"operations[0] (add_column)", `field "up"`, "ambiguous"}},
	{name: "number followed by an E-string", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: text}, up: \"1e'\\\\' || ';' || ' -- '\"}\n",
		want: []string{"operations[0] (add_column)", `field "up"`, "ambiguous"}},
	{name: "semicolon in type", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: \"int; DROP TABLE users\"}}\n",
		want: []string{"operations[0] (add_column)", `field "column.type"`, "one SQL expression"}},
	{name: "column constraint in type", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: \"int REFERENCES users (id)\"}}\n",
		want: []string{"operations[0] (add_column)", `field "column.type"`, "SQLSTATE 42601"}},
	{name: "semicolon in default", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: int, default: \"0; DROP TABLE users\"}}\n",
		want: []string{"operations[0] (add_column)", `field "column.default"`, "one SQL expression"}},
	{name: "default closes its parenthesis", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: int, default: \"1) NOT NULL, ADD COLUMN b int DEFAULT (2\"}}\n",
		want: []string{"operations[0] (add_column)", `field "column.default"`, "unbalanced parentheses"}},
	{name: "semicolon in index where", body: "name: x\noperations:\n  - create_index: {name: i, table: users, columns: [email], where: \"true; DROP TABLE users\"}\n",
		want: []string{"operations[0] (create_index)", `field "where"`, "one SQL expression"}},
	{name: "semicolon in backfill where", body: "name: x\noperations:\n  - backfill: {table: users, set: {email: lower(email)}, where: \"true; DROP TABLE users\"}\n",
		want: []string{"operations[0] (backfill)", `field "where"`, "one SQL expression"}},
	{name: "semicolon in backfill set", body: "name: x\noperations:\n  - backfill: {table: users, set: {email: \"lower(email); DROP TABLE users\"}}\n",
		want: []string{"operations[0] (backfill)", `field "set.email"`, "one SQL expression"}},
	{name: "semicolon in set_default", body: "name: x\noperations:\n  - set_default: {table: users, column: email, default: \"''; DROP TABLE users\"}\n",
		want: []string{"operations[0] (set_default)", `field "default"`, "one SQL expression"}},
	{name: "statement in a storage parameter", body: "name: x\noperations:\n  - create_index: {name: i, table: users, columns: [email], with: {fillfactor: \"90); DROP TABLE users; --\"}}\n",
		want: []string{"operations[0] (create_index)", `field "with.fillfactor"`}},
	{name: "statement in an index method", body: "name: x\noperations:\n  - create_index: {name: i, table: users, columns: [email], method: \"btree (email); DROP TABLE users; --\"}\n",
		want: []string{"operations[0] (create_index)", `field "method"`}},
	{name: "statement in an operator class", body: "name: x\noperations:\n  - create_index: {name: i, table: users, columns: [{name: email, opclass: \"text_ops); DROP TABLE users; --\"}]}\n",
		want: []string{"operations[0] (create_index)", `field "columns[0].opclass"`, "does not exist"}},
	{name: "a sql up that fails", body: "name: x\noperations:\n  - sql: {up: \"SELECT nextval('seq_untouched'); SELECT * FROM nope\"}\n",
		want: []string{"operations[0] (sql)", `field "up"`, "statement 2 of 2", "does not exist"}},
	{name: "a sql up with a comment ended by CR", body: "name: x\noperations:\n  - sql: {up: \"SELECT 1 --\\r; SELECT nextval('seq_untouched'); SELECT * FROM nope\"}\n",
		want: []string{"operations[0] (sql)", `field "up"`, "statement 3 of 3", "does not exist"}},

	// Missing tables, columns, types.
	{name: "missing table", body: "name: x\noperations:\n  - add_column: {table: nope, column: {name: a, type: text}}\n",
		want: []string{"operations[0] (add_column)", `field "table"`, "does not exist"}},
	{name: "missing schema", body: "name: x\noperations:\n  - drop_column: {table: nope.users, column: email}\n",
		want: []string{"operations[0] (drop_column)", `field "table"`, "does not exist"}},
	{name: "missing column to drop", body: "name: x\noperations:\n  - drop_column: {table: users, column: nope}\n",
		want: []string{"operations[0] (drop_column)", `field "column"`, "does not exist"}},
	{name: "missing column in up", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: text}, up: upper(nope)}\n",
		want: []string{"operations[0] (add_column)", `field "up"`, "nope"}},
	{name: "missing index column", body: "name: x\noperations:\n  - create_index: {name: i, table: users, columns: [email, nope]}\n",
		want: []string{"operations[0] (create_index)", `field "columns[1]"`, "does not exist"}},
	{name: "missing bulk_insert column", body: "name: x\noperations:\n  - bulk_insert: {table: users, rows: [{full_name: a, email: b, nope: c}]}\n",
		want: []string{"operations[0] (bulk_insert)", `field "rows"`, "does not exist"}},
	{name: "missing enum type", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: nope_mood}}\n",
		want: []string{"operations[0] (add_column)", `field "column.type"`, "does not exist"}},
	{name: "missing enum for a value", body: "name: x\noperations:\n  - add_enum_value: {enum: nope_mood, value: x}\n",
		want: []string{"operations[0] (add_enum_value)", `field "enum"`, "does not exist"}},
	{name: "enum default not a label", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: m, type: mood, default: \"'great'\"}}\n",
		want: []string{"operations[0] (add_column)", `field "column.default"`, "invalid input value for enum"}},
	{name: "enum created later", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: m, type: later_mood}}\n  - create_enum: {name: later_mood, values: [a]}\n",
		want: []string{"operations[0] (add_column)", `field "column.type"`, "does not exist"}},

	// Tables without a usable key.
	{name: "table without a key", body: "name: x\noperations:\n  - add_column: {table: nokey, column: {name: c, type: text}, up: upper(b)}\n",
		want: []string{"operations[0] (add_column)", `field "table"`, "no primary key"}},
	{name: "unique over a nullable column", body: "name: x\noperations:\n  - add_column: {table: nullable_unique, column: {name: c, type: text}, up: upper(b)}\n",
		want: []string{"operations[0] (add_column)", `field "table"`, "no primary key"}},
	{name: "partial unique index only", body: "name: x\noperations:\n  - backfill: {table: partial_unique, set: {b: upper(b)}}\n",
		want: []string{"operations[0] (backfill)", `field "table"`, "no primary key"}},

	// Identifiers PostgreSQL would truncate.
	{name: "64-byte column name", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: " + long63 + "x, type: int}}\n",
		want: []string{"operations[0] (add_column)", `field "column.name"`, "longer than 63 bytes"}},
	{name: "two columns equal in 63 bytes", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: " + long63 + ", type: int}}\n  - add_column: {table: users, column: {name: " + long63 + "y, type: int}}\n",
		want: []string{"operations[1] (add_column)", `field "column.name"`, "truncate"}},
	{name: "multi-byte character past byte 63", body: "name: x\noperations:\n  - create_index: {name: " + strings.Repeat("i", 62) + "é, table: users, columns: [email]}\n",
		want: []string{"operations[0] (create_index)", `field "name"`, "longer than 63 bytes"}},
	{name: "64-byte schema", body: "name: x\noperations:\n  - drop_column: {table: " + long63 + "s.users, column: email}\n",
		want: []string{"operations[0] (drop_column)", `field "table"`, "longer than 63 bytes"}},
	{name: "64-byte enum label", body: "name: x\noperations:\n  - create_enum: {name: e, values: [" + long63 + "v]}\n",
		want: []string{"operations[0] (create_enum)", `field "values[0]"`, "longer than 63 bytes"}},
	{name: "64-byte type name truncated onto another", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: '\"" + long63 + "y\"'}}\n",
		want: []string{"operations[0] (add_column)", `field "column.type"`, "longer than 63 bytes"}},
	{name: "64-byte column in up truncated onto another", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: int}, up: '\"" + long63 + "z\" + 1'}\n",
		want: []string{"operations[0] (add_column)", `field "up"`, "longer than 63 bytes"}},
	{name: "64-byte function name in a default", body: "name: x\noperations:\n  - set_default: {table: users, column: email, default: " + long63 + "f()}\n",
		want: []string{"operations[0] (set_default)", `field "default"`, "longer than 63 bytes"}},
	{name: "64-byte bulk_insert column", body: "name: x\noperations:\n  - bulk_insert: {table: users, rows: [{" + long63 + "k: v}]}\n",
		want: []string{"operations[0] (bulk_insert)", "longer than 63 bytes"}},

	// Reserved words where an expression or a type is expected.
	{name: "reserved word as up", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: text}, up: select}\n",
		want: []string{"operations[0] (add_column)", `field "up"`, "SQLSTATE 42601"}},
	{name: "reserved word as type", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: table}}\n",
		want: []string{"operations[0] (add_column)", `field "column.type"`, "SQLSTATE 42601"}},
	{name: "reserved word as where", body: "name: x\noperations:\n  - create_index: {name: i, table: users, columns: [email], where: end}\n",
		want: []string{"operations[0] (create_index)", `field "where"`, "SQLSTATE 42601"}},

	// Quotes, spaces, capitals and non-ASCII letters: names are exact, never SQL.
	{name: "table name with its quotes", body: "name: x\noperations:\n  - drop_column: {table: '\"users\"', column: email}\n",
		want: []string{"operations[0] (drop_column)", `field "table"`, "does not exist"}},
	{name: "table name in capitals", body: "name: x\noperations:\n  - drop_column: {table: USERS, column: email}\n",
		want: []string{"operations[0] (drop_column)", `field "table"`, "does not exist"}},
	{name: "statement in a table name", body: "name: x\noperations:\n  - drop_column: {table: \"public.users; DROP TABLE users\", column: email}\n",
		want: []string{"operations[0] (drop_column)", `field "table"`, "does not exist"}},
	{name: "statement in a column name", body: "name: x\noperations:\n  - drop_column: {table: users, column: 'email\"; DROP TABLE users; --'}\n",
		want: []string{"operations[0] (drop_column)", `field "column"`, "does not exist"}},
	{name: "space in a column name", body: "name: x\noperations:\n  - drop_column: {table: users, column: full name}\n",
		want: []string{"operations[0] (drop_column)", `field "column"`, "does not exist"}},
	{name: "decomposed umlaut", body: "name: x\noperations:\n  - drop_column: {table: \"Sales Dept.Order Items\", column: \"u\u0308\"}\n",
		want: []string{"operations[0] (drop_column)", `field "column"`, "does not exist"}},
	{name: "quoted name in the wrong case", body: "name: x\noperations:\n  - create_index: {name: i, table: \"Sales Dept.Order Items\", columns: [qty]}\n",
		want: []string{"operations[0] (create_index)", `field "columns[0]"`, "does not exist"}},
	{name: "schema without its space", body: "name: x\noperations:\n  - drop_column: {table: \"SalesDept.Order Items\", column: Qty}\n",
		want: []string{"operations[0] (drop_column)", `field "table"`, "does not exist"}},
	{name: "key column of a quoted table", body: "name: x\noperations:\n  - drop_column: {table: \"Sales Dept.Order Items\", column: Item ID}\n",
		want: []string{"operations[0] (drop_column)", `field "column"`, "key"}},
	{name: "doubled quote is not a quote", body: "name: x\noperations:\n  - drop_column: {table: \"Sales Dept.Order Items\", column: 'a\"\"b'}\n",
		want: []string{"operations[0] (drop_column)", `field "column"`, "does not exist"}},
	{name: "NUL in a name", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: \"a\\0b\", type: int}}\n",
		want: []string{"operations[0] (add_column)", `field "column.name"`, "NUL"}},
	{name: "blank name", body: "name: x\noperations:\n  - create_enum: {name: \"  \", values: [a]}\n",
		want: []string{"operations[0] (create_enum)", `field "name"`, "is required"}},
	{name: "quoted type name", body: "name: x\noperations:\n  - add_column: {table: users, column: {name: a, type: '\"Mood\"'}}\n",
		want: []string{"operations[0] (add_column)", `field "column.type"`, "does not exist"}},
	{name: "quote in a bulk_insert column", body: "name: x\noperations:\n  - bulk_insert: {table: users, rows: [{'email\"); DROP TABLE users; --': x}]}\n",
		want: []string{"operations[0] (bulk_insert)", `field "rows"`, "does not exist"}},
}

// TestBadInputCatalogue runs `refit plan FILE --dsn` and `refit run FILE
// --dsn` on every entry of badInputCases: exit code 2, the error names the
// file (with the line where the decoder knows it), the operation and the
// field, and the catalog (and the rows and sequences of the tables) is the
// same afterwards: nothing is created, not even the refit schema.
func TestBadInputCatalogue(t *testing.T) {
	if len(badInputCases) < 40 {
		t.Fatalf("the catalogue has %d cases, want at least 40", len(badInputCases))
	}
	dsn, pool := newUsers(t, 100)
	if _, err := pool.Exec(context.Background(), badInputSchema); err != nil {
		t.Fatal(err)
	}
	before := dbSnapshot(t, pool)
	seen := map[string]bool{}
	for _, tc := range badInputCases {
		if seen[tc.name] {
			t.Fatalf("two cases named %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			ext := tc.ext
			if ext == "" {
				ext = "yaml"
			}
			file := writeFile(t, "bad."+ext, tc.body)
			want := tc.want
			if tc.line > 0 {
				want = append([]string{fmt.Sprintf("%s:%d: ", file, tc.line)}, want...)
			} else {
				want = append([]string{file + ": "}, want...)
			}
			for _, cmd := range [][]string{{"plan", file, "--dsn", dsn}, {"run", file, "--dsn", dsn, "--exit-at-window"}} {
				res := runRefit(t, nil, cmd...)
				if res.code != 2 {
					t.Errorf("%s: exit %d, want 2\nstdout: %s\nstderr: %s", cmd[0], res.code, res.stdout, res.stderr)
				}
				for _, w := range want {
					if !strings.Contains(res.stderr, w) {
						t.Errorf("%s: stderr lacks %q:\n%s", cmd[0], w, res.stderr)
					}
				}
				if after := dbSnapshot(t, pool); after != before {
					t.Fatalf("%s changed the database:\nbefore %s\nafter  %s", cmd[0], before, after)
				}
			}
		})
	}
}

// dbSnapshot describes everything a refused migration must leave as it
// was, in every schema but the system's: schemas, relations, columns,
// defaults, constraints, indexes and their validity, types and enum labels,
// comments, sequence positions, the rows of every table (as an md5 of
// their text), publications and replication slots. The refit schema is a
// schema like the others: a refused migration must not create it.
func dbSnapshot(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	ctx := context.Background()
	var s string
	err := pool.QueryRow(ctx, `
		WITH ns AS (SELECT oid, nspname FROM pg_namespace
		            WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pg\_toast\_temp\_%'),
		rels AS (SELECT c.oid, c.relname, c.relkind, ns.nspname FROM pg_class c JOIN ns ON ns.oid = c.relnamespace)
		SELECT concat_ws(E'\n',
			(SELECT string_agg(quote_ident(nspname), ',' ORDER BY nspname) FROM ns),
			(SELECT string_agg(quote_ident(nspname) || '.' || quote_ident(relname) || ':' || relkind::text, ',' ORDER BY nspname, relname) FROM rels),
			(SELECT string_agg(r.oid::regclass::text || '.' || quote_ident(a.attname) || ':' || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull::text || ':' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ',' ORDER BY r.nspname, r.relname, a.attnum)
			   FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
			   WHERE a.attnum > 0 AND NOT a.attisdropped),
			(SELECT string_agg(quote_ident(ns.nspname) || '.' || quote_ident(c.conname) || ':' || pg_get_constraintdef(c.oid), ',' ORDER BY ns.nspname, c.conname) FROM pg_constraint c JOIN ns ON ns.oid = c.connamespace),
			(SELECT string_agg(i.indexrelid::regclass::text || ':' || i.indisvalid::text, ',' ORDER BY i.indexrelid::regclass::text) FROM pg_index i JOIN rels r ON r.oid = i.indrelid),
			(SELECT string_agg(format_type(ty.oid, NULL) || ':' || ty.typtype::text, ',' ORDER BY ns.nspname, ty.typname) FROM pg_type ty JOIN ns ON ns.oid = ty.typnamespace),
			(SELECT string_agg(e.enumtypid::regtype::text || '.' || e.enumlabel, ',' ORDER BY e.enumtypid, e.enumsortorder) FROM pg_enum e),
			(SELECT string_agg(d.objoid::text || '.' || d.objsubid::text || ':' || d.description, ',' ORDER BY d.objoid, d.objsubid) FROM pg_description d JOIN rels r ON r.oid = d.objoid),
			(SELECT string_agg(pubname::text, ',' ORDER BY pubname) FROM pg_publication),
			(SELECT string_agg(slot_name::text, ',' ORDER BY slot_name) FROM pg_replication_slots))`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `SELECT oid::regclass::text, relkind::text FROM pg_class
		WHERE relkind IN ('r', 'S') AND relnamespace IN (SELECT oid FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_%')
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	type rel struct{ name, kind string }
	var rels []rel
	for rows.Next() {
		var r rel
		if err := rows.Scan(&r.name, &r.kind); err != nil {
			t.Fatal(err)
		}
		rels = append(rels, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, r := range rels {
		q := fmt.Sprintf("SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM %s x", r.name)
		if r.kind == "S" {
			q = fmt.Sprintf("SELECT last_value::text || ':' || is_called::text FROM %s", r.name)
		}
		var v string
		if err := pool.QueryRow(ctx, q).Scan(&v); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		s += "\n" + r.name + "=" + v
	}
	return s
}

package migration_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/refit-dev/refit/examples"
	"github.com/refit-dev/refit/migration"
)

const exampleFile = "split_full_name.yaml"

// mustParse parses src and fails the test on error.
func mustParse(t *testing.T, src string) *migration.Migration {
	t.Helper()
	m, err := migration.Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, src)
	}
	return m
}

func parseExample(t *testing.T) *migration.Migration {
	t.Helper()
	m, err := migration.Parse(exampleFile, examples.SplitFullName)
	if err != nil {
		t.Fatalf("Parse example: %v", err)
	}
	return m
}

// requireInvalid checks that err is a *migration.Error recognised by
// IsInvalid, and that its message names every string in want.
func requireInvalid(t *testing.T, err error, want ...string) *migration.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one naming %q", want)
	}
	var me *migration.Error
	if !errors.As(err, &me) {
		t.Fatalf("error %v (%T) is not a *migration.Error", err, err)
	}
	if !migration.IsInvalid(err) {
		t.Fatalf("IsInvalid(%v) = false", err)
	}
	if !migration.IsInvalid(fmt.Errorf("wrapped: %w", err)) {
		t.Fatalf("IsInvalid does not see through wrapping")
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not mention %q", msg, w)
		}
	}
	return me
}

func TestParseExample(t *testing.T) {
	m := parseExample(t)
	if m.Name != "split_full_name" {
		t.Errorf("Name = %q", m.Name)
	}
	if m.File != exampleFile {
		t.Errorf("File = %q", m.File)
	}
	sum := sha256.Sum256(examples.SplitFullName)
	if m.Checksum != hex.EncodeToString(sum[:]) {
		t.Errorf("Checksum = %q, want the SHA-256 of the bytes", m.Checksum)
	}
	if string(m.Source) != string(examples.SplitFullName) {
		t.Errorf("Source is not the file's bytes")
	}
	var kinds []string
	for _, op := range m.Operations {
		kinds = append(kinds, op.Kind())
	}
	wantKinds := []string{"create_enum", "add_column", "add_column", "add_column", "create_index", "drop_column"}
	if !reflect.DeepEqual(kinds, wantKinds) {
		t.Fatalf("kinds = %v, want %v", kinds, wantKinds)
	}
	enum := m.Operations[0].(*migration.CreateEnum)
	if enum.Name != "user_status_enum" || !reflect.DeepEqual(enum.Values, []string{"active", "suspended", "banned"}) {
		t.Errorf("create_enum = %+v", enum)
	}
	first := m.Operations[1].(*migration.AddColumn)
	if first.Table != (migration.TableName{Name: "users"}) || first.Column.Name != "first_name" ||
		first.Column.Type != "varchar(100)" || first.Column.IsNullable() || first.Up != "split_part(full_name, ' ', 1)" {
		t.Errorf("add_column first_name = %+v", first)
	}
	status := m.Operations[3].(*migration.AddColumn)
	if status.Column.Default != "'active'" || status.Up != "" || status.Column.IsNullable() {
		t.Errorf("add_column status = %+v", status)
	}
	idx := m.Operations[4].(*migration.CreateIndex)
	if idx.Name != "idx_users_last_name" || !reflect.DeepEqual(idx.Columns, []string{"last_name"}) || idx.Unique {
		t.Errorf("create_index = %+v", idx)
	}
	drop := m.Operations[5].(*migration.DropColumn)
	if drop.Table.Name != "users" || drop.Column != "full_name" {
		t.Errorf("drop_column = %+v", drop)
	}
	if m.Contract != "" {
		t.Errorf("Contract = %q, want empty (the default)", m.Contract)
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), exampleFile)
	if err := os.WriteFile(path, examples.SplitFullName, 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := migration.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if m.File != path || len(m.Operations) != 6 {
		t.Errorf("Load: File %q, %d operations", m.File, len(m.Operations))
	}
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	_, err = migration.Load(missing)
	requireInvalid(t, err, missing)
}

// The example written as JSON parses to the same operations.
func TestParseJSON(t *testing.T) {
	src := `{
  "name": "split_full_name",
  "contract": "auto",
  "operations": [
    {"create_enum": {"name": "user_status_enum", "values": ["active", "suspended", "banned"]}},
    {"add_column": {"table": "users", "column": {"name": "first_name", "type": "varchar(100)", "nullable": false},
                    "up": "split_part(full_name, ' ', 1)"}},
    {"add_column": {"table": "users", "column": {"name": "last_name", "type": "varchar(100)", "nullable": false},
                    "up": "substring(full_name from position(' ' in full_name) + 1)"}},
    {"add_column": {"table": "users", "column": {"name": "status", "type": "user_status_enum", "nullable": false, "default": "'active'"}}},
    {"create_index": {"name": "idx_users_last_name", "table": "users", "columns": ["last_name"]}},
    {"drop_column": {"table": "users", "column": "full_name"}},
    {"bulk_insert": {"table": "plans", "rows": [{"id": 1, "name": "free", "price": 0.5, "active": true, "note": null}]}}
  ]
}`
	m, err := migration.Parse("m.json", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if m.Contract != migration.ContractAuto {
		t.Errorf("Contract = %q", m.Contract)
	}
	y := parseExample(t)
	for i := range y.Operations {
		if !reflect.DeepEqual(m.Operations[i], y.Operations[i]) {
			t.Errorf("operations[%d]: JSON %+v, YAML %+v", i, m.Operations[i], y.Operations[i])
		}
	}
	bi := m.Operations[6].(*migration.BulkInsert)
	want := map[string]any{"id": 1, "name": "free", "price": 0.5, "active": true, "note": nil}
	if !reflect.DeepEqual(bi.Rows[0], want) {
		t.Errorf("bulk_insert row = %#v, want %#v", bi.Rows[0], want)
	}
}

func TestParseValidOperations(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		check func(t *testing.T, m *migration.Migration)
	}{
		{"contract modes", `
name: m
contract: now
operations:
  - drop_column: {table: users, column: x}
`, func(t *testing.T, m *migration.Migration) {
			if m.Contract != migration.ContractNow {
				t.Errorf("Contract = %q", m.Contract)
			}
		}},
		{"schema-qualified table", `
name: m
operations:
  - add_column: {table: app.users, column: {name: c, type: int}}
`, func(t *testing.T, m *migration.Migration) {
			ac := m.Operations[0].(*migration.AddColumn)
			if ac.Table != (migration.TableName{Schema: "app", Name: "users"}) {
				t.Errorf("Table = %+v", ac.Table)
			}
			if !ac.Column.IsNullable() {
				t.Errorf("a column is nullable unless it says otherwise")
			}
		}},
		{"NOT NULL with a default only", `
name: m
operations:
  - add_column: {table: t, column: {name: c, type: int, nullable: false, default: "0"}}
`, nil},
		{"sql defaults", `
name: m
operations:
  - sql: {up: "CREATE TABLE a (id int)", down: "DROP TABLE a"}
  - sql: {up: "CREATE INDEX CONCURRENTLY i ON a (id)", transactional: false}
  - sql: {up: "VACUUM a", phase: contract, transactional: false}
`, func(t *testing.T, m *migration.Migration) {
			s0 := m.Operations[0].(*migration.SQL)
			if s0.Phase != "expand" || !s0.InTransaction() {
				t.Errorf("sql defaults: phase %q, in transaction %v", s0.Phase, s0.InTransaction())
			}
			if m.Operations[1].(*migration.SQL).InTransaction() {
				t.Errorf("transactional: false ignored")
			}
		}},
		{"create_index with everything", `
name: m
operations:
  - create_index: {name: i, table: t, columns: [a, b], unique: true, method: btree, where: "a > 0 AND b <> 'x;y'"}
`, nil},
		{"bulk_insert scalars", `
name: m
operations:
  - bulk_insert:
      table: t
      rows:
        - {a: 1, b: two, c: 3.5, d: true, e: null, f: 18446744073709551615, g: 2024-01-02}
`, func(t *testing.T, m *migration.Migration) {
			bi := m.Operations[0].(*migration.BulkInsert)
			if got := bi.ColumnNames(); !reflect.DeepEqual(got, []string{"a", "b", "c", "d", "e", "f", "g"}) {
				t.Errorf("ColumnNames = %v", got)
			}
			if g := bi.Rows[0]["g"]; g != "2024-01-02" {
				t.Errorf("a date-looking value decodes to %#v (%T), want the string", g, g)
			}
		}},
		{"bulk_insert column order is first seen, sorted per row", `
name: m
operations:
  - bulk_insert:
      table: t
      rows:
        - {b: 1, a: 2}
        - {d: 1, c: 2, a: 3}
`, func(t *testing.T, m *migration.Migration) {
			if got := m.Operations[0].(*migration.BulkInsert).ColumnNames(); !reflect.DeepEqual(got, []string{"a", "b", "c", "d"}) {
				t.Errorf("ColumnNames = %v", got)
			}
		}},
		{"the same column on two tables", `
name: m
operations:
  - add_column: {table: a, column: {name: c, type: int}}
  - add_column: {table: b, column: {name: c, type: int}}
`, nil},
		{"quoted and odd identifiers", `
name: m
operations:
  - add_column: {table: "Order Items", column: {name: "we\"ird", type: int}}
  - create_enum: {name: "My Enum", values: ["a;b", "--", "it's"]}
`, nil},
		{"a 63-byte identifier", fmt.Sprintf(`
name: m
operations:
  - drop_column: {table: %s, column: %s}
`, strings.Repeat("t", 63), strings.Repeat("c", 63)), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, tt.src)
			if tt.check != nil {
				tt.check(t, m)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	long := strings.Repeat("x", 64)
	tests := []struct {
		name  string
		src   string
		op    int    // -1: not inside an operation
		field string // "" when the error has no field
		want  []string
	}{
		{"not YAML", "name: [unclosed", -1, "", []string{"not valid YAML or JSON"}},
		{"empty file", "", -1, "", []string{"empty"}},
		{"top level is a list", "- a\n- b\n", -1, "", []string{"mapping"}},
		{"unknown top-level field", "name: m\nopertions: []\n", -1, "opertions", []string{"unknown top-level field"}},
		{"top-level field given twice", "name: m\noperations:\n  - drop_column: {table: t, column: c}\noperations: []\n", -1, "operations", []string{"twice"}},
		{"two documents", "name: m\noperations:\n  - drop_column: {table: t, column: c}\n---\nname: n\n", -1, "", []string{"one YAML document"}},
		{"missing name", "operations:\n  - drop_column: {table: t, column: c}\n", -1, "name", []string{"required"}},
		{"blank name", "name: '  '\noperations:\n  - drop_column: {table: t, column: c}\n", -1, "name", []string{"required"}},
		{"name is a list", "name: [a]\noperations: []\n", -1, "name", nil},
		{"missing operations", "name: m\n", -1, "operations", []string{"required"}},
		{"empty operations", "name: m\noperations: []\n", -1, "operations", []string{"at least one"}},
		{"operations is a mapping", "name: m\noperations: {a: b}\n", -1, "operations", []string{"list"}},
		{"bad contract mode", "name: m\ncontract: later\noperations:\n  - drop_column: {table: t, column: c}\n", -1, "contract", []string{"later", "manual, now, auto"}},
		{"unknown operation", "name: m\noperations:\n  - drop_column: {table: t, column: c}\n  - rename_column: {table: t}\n", 1, "", []string{`unknown operation "rename_column"`, "add_column"}},
		{"operation with two keys", "name: m\noperations:\n  - drop_column: {table: t, column: c}\n    add_column: {table: t}\n", 0, "", []string{"exactly one key"}},
		{"operation body is a string", "name: m\noperations:\n  - drop_column: users\n", 0, "", []string{"mapping"}},
		{"unknown field in an operation", "name: m\noperations:\n  - drop_column: {table: t, colum: c}\n", 0, "colum", []string{"unknown field", "drop_column"}},
		{"unknown field in column", "name: m\noperations:\n  - drop_column: {table: t, column: c}\n  - add_column: {table: t, column: {name: c2, type: int, nulable: false}}\n", 1, "column.nulable", []string{"unknown field", "add_column"}},
		{"wrong type of value", "name: m\noperations:\n  - create_index: {name: i, table: t, columns: a}\n", 0, "columns", []string{"create_index", "cannot unmarshal"}},
		{"duplicate key in an operation", "name: m\noperations:\n  - drop_column: {table: t, column: c, column: d}\n", 0, "column", []string{"given twice"}},
		{"add_column without table", "name: m\noperations:\n  - add_column: {column: {name: c, type: int}}\n", 0, "table", []string{"required"}},
		{"add_column without type", "name: m\noperations:\n  - add_column: {table: t, column: {name: c}}\n", 0, "column.type", []string{"required"}},
		{"add_column without column name", "name: m\noperations:\n  - add_column: {table: t, column: {type: int}}\n", 0, "column.name", []string{"required"}},
		{"table with an empty name after the schema", "name: m\noperations:\n  - drop_column: {table: 'app.', column: c}\n", 0, "table", []string{"empty"}},
		{"identifier too long", "name: m\noperations:\n  - drop_column: {table: t, column: " + long + "}\n", 0, "column", []string{"63 bytes"}},
		{"table name too long", "name: m\noperations:\n  - drop_column: {table: app." + long + ", column: c}\n", 0, "table", []string{"63 bytes"}},
		{"up with a semicolon", "name: m\noperations:\n  - add_column: {table: t, column: {name: c, type: int}, up: '1; DROP TABLE t'}\n", 0, "up", []string{"';'"}},
		{"up injection", "name: m\noperations:\n  - add_column: {table: users, column: {name: c, type: int}, up: '1) FROM users; DROP TABLE users; SELECT (1'}\n", 0, "up", []string{"add_column"}},
		{"up unbalanced open", "name: m\noperations:\n  - add_column: {table: t, column: {name: c, type: int}, up: 'lower(a'}\n", 0, "up", []string{"unbalanced parentheses"}},
		{"up unbalanced close", "name: m\noperations:\n  - add_column: {table: t, column: {name: c, type: int}, up: 'lower(a))'}\n", 0, "up", []string{"unbalanced parentheses"}},
		{"up close before open", "name: m\noperations:\n  - add_column: {table: t, column: {name: c, type: int}, up: 'a) + (b'}\n", 0, "up", []string{"unbalanced parentheses"}},
		{"up with a -- comment", "name: m\noperations:\n  - add_column: {table: t, column: {name: c, type: int}, up: 'a -- b'}\n", 0, "up", []string{"comments"}},
		{"up with a /* comment", "name: m\noperations:\n  - add_column: {table: t, column: {name: c, type: int}, up: 'a /* b */'}\n", 0, "up", []string{"comments"}},
		{"up with an unterminated string", "name: m\noperations:\n  - add_column: {table: t, column: {name: c, type: int}, up: \"'abc\"}\n", 0, "up", []string{"unterminated"}},
		{"default with a semicolon", "name: m\noperations:\n  - add_column: {table: t, column: {name: c, type: int, default: '0; SELECT 1'}}\n", 0, "column.default", []string{"';'"}},
		{"type with a semicolon", "name: m\noperations:\n  - add_column: {table: t, column: {name: c, type: 'int; DROP TABLE t'}}\n", 0, "column.type", []string{"';'"}},
		{"where with a comment", "name: m\noperations:\n  - create_index: {name: i, table: t, columns: [a], where: 'a > 0 --'}\n", 0, "where", []string{"comments"}},
		{"NOT NULL without up or default", "name: m\noperations:\n  - drop_column: {table: t, column: x}\n  - add_column: {table: t, column: {name: c, type: int, nullable: false}}\n", 1, "column.nullable", []string{"up expression or a default"}},
		{"duplicate add_column", "name: m\noperations:\n  - add_column: {table: t, column: {name: c, type: int}}\n  - add_column: {table: t, column: {name: c, type: text}}\n", 1, "column.name", []string{"operations[0]"}},
		{"duplicate index name", "name: m\noperations:\n  - create_index: {name: i, table: a, columns: [x]}\n  - create_index: {name: i, table: b, columns: [y]}\n", 1, "name", []string{"operations[0]"}},
		{"duplicate enum", "name: m\noperations:\n  - create_enum: {name: e, values: [a]}\n  - create_enum: {name: e, values: [b]}\n", 1, "name", []string{"operations[0]"}},
		{"duplicate enum values", "name: m\noperations:\n  - create_enum: {name: e, values: [a, b, a]}\n", 0, "values[2]", []string{`duplicate value "a"`}},
		{"empty enum value", "name: m\noperations:\n  - create_enum: {name: e, values: [a, '']}\n", 0, "values[1]", []string{"empty"}},
		{"enum value too long", "name: m\noperations:\n  - create_enum: {name: e, values: [" + long + "]}\n", 0, "values[0]", []string{"63 bytes"}},
		{"enum without values", "name: m\noperations:\n  - create_enum: {name: e}\n", 0, "values", []string{"at least one"}},
		{"create_index without columns", "name: m\noperations:\n  - create_index: {name: i, table: t}\n", 0, "columns", []string{"at least one"}},
		{"create_index blank column", "name: m\noperations:\n  - create_index: {name: i, table: t, columns: [a, '']}\n", 0, "columns[1]", []string{"required"}},
		{"create_index bad method", "name: m\noperations:\n  - create_index: {name: i, table: t, columns: [a], method: 'btree; x'}\n", 0, "method", nil},
		{"bulk_insert list value", "name: m\noperations:\n  - bulk_insert: {table: t, rows: [{id: 1, tags: [a, b]}]}\n", 0, "rows[0].tags", []string{"scalars"}},
		{"bulk_insert map value", "name: m\noperations:\n  - bulk_insert: {table: t, rows: [{id: 1}, {id: 2, meta: {a: 1}}]}\n", 0, "rows[1].meta", []string{"scalars"}},
		{"bulk_insert without rows", "name: m\noperations:\n  - bulk_insert: {table: t}\n", 0, "rows", []string{"at least one"}},
		{"bulk_insert empty row", "name: m\noperations:\n  - bulk_insert: {table: t, rows: [{a: 1}, {}]}\n", 0, "rows[1]", []string{"at least one column"}},
		{"sql without up", "name: m\noperations:\n  - sql: {down: 'SELECT 1'}\n", 0, "up", []string{"required"}},
		{"sql bad phase", "name: m\noperations:\n  - sql: {up: 'SELECT 1', phase: backfill}\n", 0, "phase", []string{"expand or contract"}},
		{"sql contract with down", "name: m\noperations:\n  - sql: {up: 'SELECT 1', phase: contract, down: 'SELECT 2'}\n", 0, "down", []string{"fix-forward"}},
		{"JSON unknown field", `{"name": "m", "operations": [{"drop_column": {"table": "t", "column": "c", "cascade": true}}]}`, 0, "cascade", []string{"unknown field"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := migration.Parse("bad.yaml", []byte(tt.src))
			if m != nil {
				t.Errorf("Parse returned a migration along with the error")
			}
			want := append([]string{"bad.yaml"}, tt.want...)
			if tt.op >= 0 {
				want = append(want, fmt.Sprintf("operations[%d]", tt.op))
			}
			if tt.field != "" {
				want = append(want, fmt.Sprintf("%q", tt.field))
			}
			me := requireInvalid(t, err, want...)
			if me.File != "bad.yaml" {
				t.Errorf("File = %q", me.File)
			}
			if me.Op != tt.op {
				t.Errorf("Op = %d, want %d (%v)", me.Op, tt.op, err)
			}
			if me.Field != tt.field {
				t.Errorf("Field = %q, want %q (%v)", me.Field, tt.field, err)
			}
			if tt.op >= 0 && me.Kind == "" && !strings.Contains(tt.name, "unknown operation") && !strings.Contains(tt.name, "two keys") {
				t.Errorf("Kind is empty (%v)", err)
			}
		})
	}
}

// The line of an unknown key is reported, so an editor can jump to it.
func TestParseErrorLine(t *testing.T) {
	src := "name: m\noperations:\n  - add_column:\n      table: t\n      colunm: {name: c, type: int}\n"
	_, err := migration.Parse("f.yaml", []byte(src))
	me := requireInvalid(t, err, "f.yaml:5:", "operations[0] (add_column)", `field "colunm"`)
	if me.Line != 5 {
		t.Errorf("Line = %d, want 5", me.Line)
	}
}

// Expressions that are one expression, however odd their literals, pass the
// static check: it must know where a literal starts and ends exactly as the
// server does.
func TestExpressionCheckAccepts(t *testing.T) {
	for _, expr := range []string{
		`split_part(full_name, ' ', 1)`,
		`substring(full_name from position(' ' in full_name) + 1)`,
		`'a;b'`,
		`'a--b'`,
		`'a/*b*/'`,
		`'('`,
		`')'`,
		`'it''s; fine'`,
		`''''`,
		`"weird;col" || 'x'`,
		`"we""ird(" || 'x'`,
		`$$a;b -- c$$`,
		`$tag$ a ; $$ -- ) $tag$`,
		`$a1$ ; $a1$`,
		`$_$;$_$ || $x$)$x$`,
		`E'it\'s; \\ fine'`,
		`e'\\'`,
		`E'a''b;'`,
		`U&'d\0061t;a'`,
		`B'1010'`,
		`X'1F'`,
		`N'abc;'`,
		`coalesce(a, b) * (c + 1) / 2`,
		`CASE WHEN a > 0 THEN 'pos;' ELSE 'neg--' END`,
		`a$b + c$`,
		`x - -1`,
		`x / *y`,
		`'{"a": 1}'::jsonb ->> 'a'`,
		`now() - interval '1 day'`,
		`(ARRAY[1,2])[1]`,
		`1.5e3 + .5 + 1_000`,
		`$1 + 1`,
		"'multi\nline;'",
	} {
		src := fmt.Sprintf("name: m\noperations:\n  - add_column: {table: t, column: {name: c, type: text}, up: %s}\n", yamlQuote(expr))
		if _, err := migration.Parse("ok.yaml", []byte(src)); err != nil {
			t.Errorf("%s: %v", expr, err)
		}
	}
}

// Expressions that hide a second statement or a comment are rejected, also
// when a naive scanner could be fooled about where a literal ends.
func TestExpressionCheckRejects(t *testing.T) {
	for _, expr := range []string{
		`1; DROP TABLE t`,
		`a;`,
		`a -- comment`,
		`a /* comment */`,
		`a ) OR ( b`,
		`(a`,
		`'abc`,
		`"abc`,
		`$$abc`,
		`$a$abc$b$`,
		// E'\'' is a complete string to the server: what follows is code.
		`E'\'') FROM t; DROP TABLE t; SELECT (E'\''`,
		`E'\''; SELECT 1; '`,
		// A string continued over a newline keeps its E-ness.
		"E'a'\n'\\'') FROM t; DROP TABLE t; SELECT (E'b'\n'\\''",
		// $a1$ is a dollar quote to the server, so this is one string, a
		// statement, and one string; a scanner that misses the digit sees
		// '…' around the statement instead.
		`$a1$'$a1$) FROM t; DROP TABLE t; SELECT ($a1$'$a1$`,
		// x$a$ is an identifier, not the start of a dollar quote.
		`x$a$ ) FROM t; DROP TABLE t; SELECT ( x$a$`,
		`x$a$ ; x$a$`,
		// A number directly followed by a quote or $ reads differently
		// across server versions.
		`1e'\''; DROP TABLE t; ''`,
		`0x1F$a$ ; $a$`,
		"a\x00b",
	} {
		src := fmt.Sprintf("name: m\noperations:\n  - add_column: {table: t, column: {name: c, type: text}, up: %s}\n", yamlQuote(expr))
		_, err := migration.Parse("bad.yaml", []byte(src))
		if err == nil {
			t.Errorf("%q: accepted", expr)
			continue
		}
		requireInvalid(t, err, "bad.yaml", "operations[0]", `"up"`)
	}
}

// yamlQuote renders s as a double-quoted YAML scalar.
func yamlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r < 0x20:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func TestParseContractMode(t *testing.T) {
	for _, s := range []string{"manual", "now", "auto"} {
		if m, err := migration.ParseContractMode(s); err != nil || string(m) != s {
			t.Errorf("ParseContractMode(%q) = %q, %v", s, m, err)
		}
	}
	for _, s := range []string{"", "Manual", "later"} {
		if _, err := migration.ParseContractMode(s); err == nil {
			t.Errorf("ParseContractMode(%q) accepted", s)
		}
	}
}

func TestTableName(t *testing.T) {
	tests := []struct {
		raw     string
		want    migration.TableName
		quoted  string
		literal string
	}{
		{"users", migration.TableName{Name: "users"}, `"users"`, `'"users"'`},
		{"app.users", migration.TableName{Schema: "app", Name: "users"}, `"app"."users"`, `'"app"."users"'`},
		{"Order Items", migration.TableName{Name: "Order Items"}, `"Order Items"`, `'"Order Items"'`},
		{`we"ird`, migration.TableName{Name: `we"ird`}, `"we""ird"`, `'"we""ird"'`},
		{"it's", migration.TableName{Name: "it's"}, `"it's"`, `'"it''s"'`},
	}
	for _, tt := range tests {
		got := migration.ParseTableName(tt.raw)
		if got != tt.want {
			t.Errorf("ParseTableName(%q) = %+v", tt.raw, got)
		}
		if got.String() != tt.raw {
			t.Errorf("String() = %q, want %q", got.String(), tt.raw)
		}
		if q := got.Quoted(); q != tt.quoted {
			t.Errorf("Quoted() = %s, want %s", q, tt.quoted)
		}
		if l := got.Literal(); l != tt.literal {
			t.Errorf("Literal() = %s, want %s", l, tt.literal)
		}
	}
	if q := migration.QuoteLiteral("a'b"); q != `'a''b'` {
		t.Errorf("QuoteLiteral = %s", q)
	}
	if q := migration.QuoteIdent(`a"b`); q != `"a""b"` {
		t.Errorf("QuoteIdent = %s", q)
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		err  migration.Error
		want string
	}{
		{migration.Error{File: "f.yaml", Op: -1, Msg: "boom"}, "f.yaml: boom"},
		{migration.Error{Op: -1, Field: "name", Msg: "is required"}, `<migration>: field "name": is required`},
		{migration.Error{File: "f.yaml", Op: 2, Kind: "add_column", Field: "up", Line: 7, Msg: "bad"}, `f.yaml:7: operations[2] (add_column) field "up": bad`},
		{migration.Error{File: "f.yaml", Op: 0, Msg: "bad"}, `f.yaml: operations[0]: bad`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	if migration.IsInvalid(errors.New("plain")) || migration.IsInvalid(nil) {
		t.Error("IsInvalid accepts a plain error")
	}
}

func TestOpError(t *testing.T) {
	m := parseExample(t)
	err := m.OpError(4, "columns[0]", "column %q does not exist", "x")
	requireInvalid(t, err, exampleFile, "operations[4] (create_index)", `field "columns[0]"`, `column "x" does not exist`)
}

func TestKinds(t *testing.T) {
	want := []string{"add_check", "add_column", "add_enum_value", "add_foreign_key", "add_primary_key", "add_unique",
		"alter_column", "backfill", "bulk_insert", "create_enum", "create_index", "create_table", "drop_column", "drop_constraint",
		"drop_default", "drop_index", "drop_not_null", "drop_table", "rename_constraint", "rename_table",
		"set_comment", "set_default", "set_not_null", "sql"}
	if got := migration.Kinds(); !reflect.DeepEqual(got, want) {
		t.Errorf("Kinds() = %v, want %v", got, want)
	}
	// Every kind lives in its own file and goes through the lifecycle
	// harness in a test file of its own.
	for _, k := range migration.Kinds() {
		if _, err := os.Stat("op_" + k + ".go"); err != nil {
			t.Errorf("kind %s: %v", k, err)
		}
		if m, _ := filepath.Glob("../worker/op_" + k + "*_lifecycle_test.go"); len(m) == 0 {
			t.Errorf("kind %s has no worker/op_%s_lifecycle_test.go", k, k)
		}
	}
}

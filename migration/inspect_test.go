package migration_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/migration"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const schemaSQL = `
CREATE TABLE users (id bigserial PRIMARY KEY, full_name text);
INSERT INTO users (full_name) VALUES ('Ada Lovelace'), ('Alan Turing');
CREATE INDEX users_full_name_idx ON users (full_name);
CREATE TABLE nokey (a int, b text);
CREATE TABLE nullable_unique (a int UNIQUE, b text);
CREATE TABLE ukey (code text NOT NULL, b text, n int UNIQUE);
CREATE UNIQUE INDEX ukey_code ON ukey (code);
CREATE TABLE incl (code int NOT NULL, extra text);
CREATE UNIQUE INDEX incl_code ON incl (code) INCLUDE (extra);
CREATE TABLE composite (a int, b text, c int, PRIMARY KEY (b, a));
CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2) CHECK (price >= 0), active boolean DEFAULT true);
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE TABLE events (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT now(),
	kind text,
	size int GENERATED ALWAYS AS (length(kind)) STORED,
	doc json
);
CREATE TABLE "Order Items" ("Item ID" int PRIMARY KEY, "Full ""Name""" text);
CREATE TABLE parted (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE parted_2026 PARTITION OF parted FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE parent_t (id int PRIMARY KEY);
CREATE TABLE child_t (extra text) INHERITS (parent_t);
`

// setupDB returns a connection to a fresh database holding schemaSQL.
func setupDB(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.NewDB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, schemaSQL); err != nil {
		t.Fatal(err)
	}
	return conn
}

// snapshot renders everything Inspect could change by mistake: relations,
// columns, types, constraints, enum labels, sequence positions, row counts
// and schemas (temporary ones aside).
func snapshot(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var s string
	err := conn.QueryRow(context.Background(), `
SELECT concat_ws(E'\n',
  (SELECT string_agg(format('%s %s %s', c.relname, c.relkind, c.relnatts), ', ' ORDER BY c.relname)
     FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace),
  (SELECT string_agg(format('%s.%s %s nn=%s def=%s dropped=%s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                            a.attnotnull, a.atthasdef, a.attisdropped), ', ' ORDER BY c.relname, a.attnum)
     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0),
  (SELECT string_agg(t.typname, ', ' ORDER BY t.typname) FROM pg_type t WHERE t.typnamespace = 'public'::regnamespace),
  (SELECT string_agg(format('%s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid)), ', ' ORDER BY conname)
     FROM pg_constraint WHERE connamespace = 'public'::regnamespace),
  (SELECT string_agg(format('%s.%s', enumtypid::regtype, enumlabel), ', ' ORDER BY enumtypid, enumsortorder) FROM pg_enum),
  (SELECT string_agg(format('%s=%s', sequencename, last_value), ', ' ORDER BY sequencename) FROM pg_sequences),
  (SELECT string_agg(nspname, ', ' ORDER BY nspname) FROM pg_namespace WHERE nspname !~ '^pg_(toast_)?temp_'),
  'refit schema absent: ' || (to_regnamespace('refit') IS NULL),
  'rows: ' || (SELECT count(*) FROM users) || ' ' || (SELECT count(*) FROM plans) || ' ' || (SELECT count(*) FROM events)
)`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s, "refit schema absent: true") {
		t.Fatalf("the refit schema exists: %s", s)
	}
	return s
}

// inspect runs Inspect and checks the connection is usable and outside any
// transaction afterwards.
func inspect(t *testing.T, conn *pgx.Conn, m *migration.Migration) (*migration.Facts, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	facts, err := migration.Inspect(ctx, conn, m)
	if st := conn.PgConn().TxStatus(); st != 'I' {
		t.Errorf("after Inspect the connection is in transaction status %q", st)
	}
	var one int
	if qerr := conn.QueryRow(ctx, "SELECT 1").Scan(&one); qerr != nil {
		t.Errorf("connection unusable after Inspect: %v", qerr)
	}
	return facts, err
}

func TestInspectRejects(t *testing.T) {
	conn := setupDB(t)
	before := snapshot(t, conn)
	tests := []struct {
		name  string
		ops   string // the operations list
		op    int
		field string
		want  []string
	}{
		{"unknown type", `
  - add_column: {table: users, column: {name: c, type: notatype}}`, 0, "column.type", []string{"notatype"}},
		{"type defined nowhere before", `
  - add_column: {table: users, column: {name: c, type: later_enum}}
  - create_enum: {name: later_enum, values: [a]}`, 0, "column.type", nil},
		{"up over a missing column", `
  - add_column: {table: users, column: {name: c, type: text}, up: "upper(no_such_column)"}`, 0, "up", []string{"no_such_column"}},
		{"up of a type without a cast", `
  - add_column: {table: users, column: {name: c, type: date}, up: "id"}`, 0, "up", nil},
		{"up of a type the column does not take on assignment", `
  - add_column: {table: users, column: {name: c, type: int}, up: "full_name"}`, 0, "up", []string{"integer"}},
		{"up without an equality operator for the backfill guard", `
  - add_column: {table: events, column: {name: doc2, type: json}, up: "doc"}`, 0, "up", []string{"json"}},
		{"up that is not an expression", `
  - add_column: {table: users, column: {name: c, type: int}, up: "1 +"}`, 0, "up", []string{"syntax error"}},
		{"default of the wrong type", `
  - add_column: {table: users, column: {name: c, type: int, default: "'abc'"}}`, 0, "column.default", nil},
		{"default that is not an expression", `
  - add_column: {table: users, column: {name: c, type: int, default: "1 NOT NULL"}}`, 0, "column.default", []string{"syntax error"}},
		{"missing table", `
  - add_column: {table: no_such_table, column: {name: c, type: int}}`, 0, "table", []string{"no_such_table", "does not exist"}},
		{"missing schema", `
  - drop_column: {table: nosuch.users, column: full_name}`, 0, "table", []string{"does not exist"}},
		{"not a table", `
  - drop_column: {table: users_full_name_idx, column: full_name}`, 0, "table", []string{"does not exist"}},
		{"existing column", `
  - drop_column: {table: plans, column: name}
  - add_column: {table: users, column: {name: full_name, type: text}}`, 1, "column.name", []string{"already exists"}},
		{"drop_column of a missing column", `
  - drop_column: {table: users, column: no_such_column}`, 0, "column", []string{"no_such_column"}},
		{"drop_column of the key", `
  - drop_column: {table: users, column: id}`, 0, "column", []string{"key"}},
		{"create_index on a missing column", `
  - create_index: {name: idx_new, table: users, columns: [full_name, no_such_column]}`, 0, "columns[1]", []string{"no_such_column"}},
		{"index name taken by an index", `
  - create_index: {name: users_full_name_idx, table: users, columns: [full_name]}`, 0, "name", []string{"already exists"}},
		{"index name taken by a table", `
  - create_index: {name: plans, table: users, columns: [full_name]}`, 0, "name", []string{"already exists"}},
		{"unknown index method", `
  - create_index: {name: idx_new, table: users, columns: [full_name], method: nosuch}`, 0, "method", []string{"nosuch"}},
		{"index where over a missing column", `
  - create_index: {name: idx_new, table: users, columns: [full_name], where: "no_such_column > 0"}`, 0, "where", []string{"no_such_column"}},
		{"index method that does not fit the column type", `
  - create_index: {name: idx_new, table: users, columns: [full_name], method: gin}`, 0, "method", []string{"operator class"}},
		{"index over a type without a btree operator class", `
  - create_index: {name: idx_new, table: events, columns: [doc]}`, 0, "columns", []string{"json"}},
		{"unique index with a method that cannot be unique", `
  - create_index: {name: idx_new, table: users, columns: [full_name], method: hash, unique: true}`, 0, "method", []string{"hash"}},
		{"index predicate that is not immutable", `
  - create_index: {name: idx_new, table: events, columns: [kind], where: "at > now()"}`, 0, "where", []string{"IMMUTABLE"}},
		{"index over a column added with an unindexable type", `
  - add_column: {table: users, column: {name: j, type: json}}
  - create_index: {name: idx_new, table: users, columns: [j]}`, 1, "columns", []string{"json"}},
		{"create_enum of an existing type", `
  - create_enum: {name: mood, values: [a]}`, 0, "name", []string{"already exists"}},
		{"create_enum named like a table", `
  - create_enum: {name: plans, values: [a]}`, 0, "name", []string{"already exists"}},
		{"create_enum in a missing schema", `
  - create_enum: {name: nosuch.e, values: [a]}`, 0, "name", []string{"nosuch"}},
		{"partitioned table", `
  - add_column: {table: parted, column: {name: c, type: int}, up: "id + 1"}`, 0, "table", []string{"partitioned"}},
		{"a partition", `
  - add_column: {table: parted_2026, column: {name: c, type: int}}`, 0, "table", []string{"parted_2026", "parted"}},
		{"an inheritance child", `
  - drop_column: {table: child_t, column: extra}`, 0, "table", []string{"inherits"}},
		{"an inheritance parent", `
  - add_column: {table: parent_t, column: {name: c, type: int}, up: "id"}`, 0, "table", []string{"inheritance children", "child_t"}},
		{"create_index on a partitioned table", `
  - create_index: {name: idx_parted, table: parted, columns: [at]}`, 0, "table", []string{"partitioned"}},
		{"table without a key", `
  - add_column: {table: nokey, column: {name: c, type: int}, up: "a + 1"}`, 0, "table", []string{"primary key"}},
		{"table with a unique index over a nullable column only", `
  - add_column: {table: nullable_unique, column: {name: c, type: int}, up: "a + 1"}`, 0, "table", []string{"primary key"}},
		{"table without a key and a volatile default", `
  - add_column: {table: users, column: {name: c, type: int}}
  - add_column: {table: nokey, column: {name: r, type: float8, default: "random()"}}`, 1, "table", []string{"primary key"}},
		{"bulk_insert value that does not convert", `
  - bulk_insert: {table: plans, rows: [{id: 1, name: a}, {id: abc, name: b}]}`, 0, "rows[1].id", []string{"abc", "integer"}},
		{"bulk_insert value that does not fit the type", `
  - bulk_insert: {table: plans, rows: [{id: 1, name: a, price: 123456789012}]}`, 0, "rows[0].price", []string{"overflow"}},
		{"bulk_insert into a missing column", `
  - bulk_insert: {table: plans, rows: [{id: 1, name: a, colour: red}]}`, 0, "rows", []string{"colour"}},
		{"bulk_insert missing a NOT NULL column", `
  - bulk_insert: {table: plans, rows: [{id: 1, name: a}, {id: 2}]}`, 0, "rows[1]", []string{"null value", "name"}},
		{"bulk_insert breaking a CHECK", `
  - bulk_insert: {table: plans, rows: [{id: 1, name: a, price: -1}]}`, 0, "rows[0]", []string{"check constraint"}},
		{"bulk_insert into a generated column", `
  - bulk_insert: {table: events, rows: [{kind: a, size: 3}]}`, 0, "rows[0].size", []string{"generated"}},
		{"bulk_insert into a GENERATED ALWAYS identity", `
  - bulk_insert: {table: events, rows: [{kind: a}, {id: 5, kind: b}]}`, 0, "rows[1].id", []string{"IDENTITY"}},
		{"bulk_insert of an unknown enum label", `
  - create_enum: {name: status, values: [on, off]}
  - add_column: {table: plans, column: {name: st, type: status}}
  - bulk_insert: {table: plans, rows: [{id: 1, name: a, st: on}, {id: 2, name: b, st: maybe}]}`, 2, "rows[1].st", []string{"maybe"}},
		{"the second of two operations", `
  - add_column: {table: users, column: {name: c1, type: int}, up: "id"}
  - add_column: {table: users, column: {name: c2, type: int}, up: "c3"}`, 1, "up", []string{"c3"}},
		{"sql down naming a table that does not exist", `
  - sql: {up: "CREATE TABLE d01_tbl (id int)", down: "DROP TABLE d01_tbl_typo"}`, 0, "down", []string{"d01_tbl_typo", "does not exist"}},
		{"sql up with a bad second statement", `
  - sql: {up: "CREATE TABLE s1 (id int); INSERT INTO s1 SELECT no_such FROM users"}`, 0, "up", []string{"statement 2 of 2", "no_such"}},
		{"sql up DML over a missing column (planned, not run)", `
  - sql: {up: "UPDATE users SET full_name = upper(nope)"}`, 0, "up", []string{"nope"}},
		{"contract sql naming a table that does not exist", `
  - add_column: {table: users, column: {name: c, type: int}}
  - sql: {up: "DROP TABLE no_such_tbl", phase: contract}`, 1, "up", []string{"no_such_tbl"}},
		{"sql down that needs what up created, but up did not create it", `
  - sql: {up: "CREATE TABLE d02 (id int)", down: "ALTER TABLE d02 DROP COLUMN nope"}`, 0, "down", []string{"nope"}},
		{"later operation sees what sql created, then fails on its own", `
  - sql: {up: "CREATE TABLE made (id int PRIMARY KEY, v text)"}
  - add_column: {table: made, column: {name: w, type: text}, up: "upper(nope)"}`, 1, "up", []string{"nope"}},
		{"quoted names are names", `
  - drop_column: {table: "Order Items", column: "Item ID"}`, 0, "column", []string{"key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, "name: bad\noperations:"+tt.ops+"\n")
			m.File = "bad.yaml"
			facts, err := inspect(t, conn, m)
			if facts != nil {
				t.Errorf("Inspect returned facts with the error")
			}
			me := requireInvalid(t, err, append([]string{"bad.yaml", fmt.Sprintf("operations[%d]", tt.op), `"` + tt.field + `"`}, tt.want...)...)
			if me.Op != tt.op || me.Field != tt.field {
				t.Errorf("Op %d Field %q, want %d %q", me.Op, me.Field, tt.op, tt.field)
			}
			if me.Kind != m.Operations[tt.op].Kind() {
				t.Errorf("Kind %q", me.Kind)
			}
			if after := snapshot(t, conn); after != before {
				t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// Text that smuggles a second statement into a probe is refused: by the
// static check first, and by the server (the extended protocol takes one
// statement) when the static check is bypassed, as a migration built in
// code without Validate would.
func TestInspectRejectsInjection(t *testing.T) {
	conn := setupDB(t)
	before := snapshot(t, conn)

	_, err := migration.Parse("inj.yaml", []byte(`
name: inj
operations:
  - add_column: {table: users, column: {name: c, type: int}, up: "1) FROM users; DROP TABLE users; SELECT (1"}
`))
	requireInvalid(t, err, "inj.yaml", "operations[0]", `"up"`)

	tests := []struct {
		name  string
		col   migration.Column
		up    string
		field string
	}{
		{"up", migration.Column{Name: "c", Type: "int"}, "1) FROM users; DROP TABLE users; SELECT (1", "up"},
		{"up with E-string", migration.Column{Name: "c", Type: "int"}, `E'\'') FROM users; DROP TABLE users; SELECT (E'\''`, "up"},
		{"type", migration.Column{Name: "c", Type: "int); DROP TABLE users; SELECT CAST(NULL AS int"}, "", "column.type"},
		{"default", migration.Column{Name: "c", Type: "int", Default: "1)); DROP TABLE users; SELECT ((1"}, "", "column.default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &migration.Migration{Name: "inj", File: "inj.yaml", Operations: []migration.Operation{
				&migration.AddColumn{TableRaw: "users", Table: migration.TableName{Name: "users"}, Column: tt.col, Up: tt.up},
			}}
			_, err := inspect(t, conn, m)
			requireInvalid(t, err, "inj.yaml", "operations[0] (add_column)", `"`+tt.field+`"`)
			if after := snapshot(t, conn); after != before {
				t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func TestInspectExample(t *testing.T) {
	conn := setupDB(t)
	before := snapshot(t, conn)
	m := parseExample(t)
	facts, err := inspect(t, conn, m)
	if err != nil {
		t.Fatal(err)
	}
	if facts.ServerVersion < 130000 {
		t.Errorf("ServerVersion = %d", facts.ServerVersion)
	}
	users := facts.Table(migration.ParseTableName("users"))
	if users == nil {
		t.Fatalf("no facts for users: %+v", facts.Tables)
	}
	if want := []migration.KeyColumn{{Name: "id", Type: "bigint"}}; !reflect.DeepEqual(users.Key, want) {
		t.Errorf("Key = %+v, want %+v", users.Key, want)
	}
	if users.Name != (migration.TableName{Schema: "public", Name: "users"}) {
		t.Errorf("Name = %+v", users.Name)
	}
	if users.Columns["id"] != "bigint" || users.Columns["full_name"] != "text" {
		t.Errorf("Columns = %v", users.Columns)
	}
	if users.ReplicaIdentity != "default" {
		t.Errorf("ReplicaIdentity = %q", users.ReplicaIdentity)
	}
	if v, ok := facts.VolatileDefault[3]; !ok || v {
		t.Errorf("status default 'active': VolatileDefault = %v, %v; want false, true", v, ok)
	}
	if after := snapshot(t, conn); after != before {
		t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
	}
	// The facts are what the plan is built from (and are stored as JSON).
	p := migration.BuildPlan(m, facts)
	if len(p.Expand) != 4 || len(p.Backfills) != 1 {
		t.Errorf("plan from facts: %d expand steps, %d backfills", len(p.Expand), len(p.Backfills))
	}
}

func TestInspectVolatileDefault(t *testing.T) {
	conn := setupDB(t)
	before := snapshot(t, conn)
	tests := []struct {
		typ, def string
		volatile bool
	}{
		{"float8", "random()", true},
		{"timestamptz", "clock_timestamp()", true},
		{"uuid", "gen_random_uuid()", true},
		{"bigint", "nextval('users_id_seq')", true},
		// now() is STABLE: PostgreSQL evaluates it once and stores it as the
		// column's missing value, without a rewrite. Every existing row gets
		// the time of the ALTER, which is what a backfill would give too.
		{"timestamptz", "now()", false},
		{"timestamptz", "CURRENT_TIMESTAMP", false},
		{"text", "'x'", false},
		{"int", "42", false},
		{"text[]", "ARRAY['a', 'b']", false},
		{"mood", "'ok'", false},
	}
	for _, tt := range tests {
		t.Run(tt.def, func(t *testing.T) {
			m := mustParse(t, "name: v\noperations:\n  - add_column: {table: users, column: {name: c, type: "+yamlQuote(tt.typ)+", default: "+yamlQuote(tt.def)+"}}\n")
			facts, err := inspect(t, conn, m)
			if err != nil {
				t.Fatal(err)
			}
			if got := facts.VolatileDefault[0]; got != tt.volatile {
				t.Errorf("default %s: volatile = %v, want %v", tt.def, got, tt.volatile)
			}
			if after := snapshot(t, conn); after != before {
				t.Errorf("the database changed (a volatile default must not be evaluated against real objects):\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func TestInspectKeys(t *testing.T) {
	conn := setupDB(t)
	tests := []struct {
		table string
		key   []migration.KeyColumn
	}{
		{"users", []migration.KeyColumn{{Name: "id", Type: "bigint"}}},
		// No primary key: the unique index over NOT NULL columns.
		{"ukey", []migration.KeyColumn{{Name: "code", Type: "text"}}},
		// INCLUDE columns do not need to be NOT NULL.
		{"incl", []migration.KeyColumn{{Name: "code", Type: "integer"}}},
		// Composite keys come in index order, not column order.
		{"composite", []migration.KeyColumn{{Name: "b", Type: "text"}, {Name: "a", Type: "integer"}}},
		{"Order Items", []migration.KeyColumn{{Name: "Item ID", Type: "integer"}}},
	}
	for _, tt := range tests {
		t.Run(tt.table, func(t *testing.T) {
			src := "name: k\noperations:\n  - add_column: {table: " + yamlQuote(tt.table) + ", column: {name: new_col, type: int}, up: \"1\"}\n"
			facts, err := inspect(t, conn, mustParse(t, src))
			if err != nil {
				t.Fatal(err)
			}
			if got := facts.Table(migration.ParseTableName(tt.table)).Key; !reflect.DeepEqual(got, tt.key) {
				t.Errorf("Inspect key = %+v, want %+v", got, tt.key)
			}
			got, err := migration.TableKey(context.Background(), conn, migration.ParseTableName(tt.table))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.key) {
				t.Errorf("TableKey = %+v, want %+v", got, tt.key)
			}
		})
	}
	if key, err := migration.TableKey(context.Background(), conn, migration.TableName{Name: "nokey"}); err != nil || key != nil {
		t.Errorf("TableKey(nokey) = %v, %v; want no key, no error", key, err)
	}
	if _, err := migration.TableKey(context.Background(), conn, migration.TableName{Name: "no_such_table"}); err == nil ||
		!strings.Contains(err.Error(), "no_such_table") {
		t.Errorf("TableKey of a missing table: %v", err)
	}
}

// A migration that uses everything it creates, in order, passes; the
// database is left as it was, sequences included.
func TestInspectValid(t *testing.T) {
	conn := setupDB(t)
	before := snapshot(t, conn)
	m := mustParse(t, `
name: ok
operations:
  - create_enum: {name: "Plan Tier", values: [free, pro]}
  - add_column: {table: plans, column: {name: tier, type: '"Plan Tier"', nullable: false, default: "'free'"}}
  - add_column: {table: plans, column: {name: label, type: varchar(20)}, up: "upper(name) || ' (' || tier || ')'"}
  - create_index: {name: plans_label_idx, table: plans, columns: [label, tier], unique: true, where: "label IS NOT NULL"}
  - create_index: {name: "Order Items name", table: "Order Items", columns: ["Full \"Name\""], method: hash}
  - bulk_insert:
      table: plans
      rows:
        - {id: 1, name: basic, price: 9.99, tier: pro}
        - {id: 2, name: "it's; --", active: false, price: 0}
        - {id: 3, name: nulls, price: null}
  - bulk_insert: {table: users, rows: [{full_name: "Grace Hopper"}]}
  - bulk_insert: {table: events, rows: [{kind: signup}, {kind: login, at: "2024-01-02 03:04:05+00"}]}
  - bulk_insert: {table: composite, rows: [{a: 1, b: x}, {a: 1, b: y}]}
  - add_column: {table: composite, column: {name: d, type: int}, up: "a * 2"}
  - drop_column: {table: plans, column: active}
  - sql: {up: "CREATE TABLE created_by_sql (id int)"}
  - sql: {up: "CREATE TABLE with_down (id int); INSERT INTO with_down VALUES (1)", down: "DROP TABLE with_down"}
  - sql: {up: "CREATE INDEX CONCURRENTLY users_cc ON users (id)", down: "DROP INDEX CONCURRENTLY users_cc", transactional: false}
  - sql:
      up: |
        CREATE FUNCTION add_one(i int) RETURNS int LANGUAGE sql
        BEGIN ATOMIC
          SELECT CASE WHEN i IS NULL THEN 0 ELSE i END + 1;
        END;
        SELECT add_one(1);
      down: DROP FUNCTION add_one(int)
  - add_column: {table: created_by_sql, column: {name: v, type: int}}
  - sql: {up: "UPDATE plans SET price = price * 2; DROP TABLE created_by_sql", phase: contract}
  - sql: {up: "COMMENT ON COLUMN plans.label IS 'derived'", phase: contract}
`)
	facts, err := inspect(t, conn, m)
	if err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, conn); after != before {
		t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
	}
	plans := facts.Table(migration.ParseTableName("plans"))
	if plans.Columns["tier"] != `"Plan Tier"` || plans.Columns["price"] != "numeric(10,2)" {
		t.Errorf("plans columns = %v", plans.Columns)
	}
	for _, table := range []string{"plans", "Order Items", "users", "events", "composite"} {
		if facts.Table(migration.ParseTableName(table)) == nil {
			t.Errorf("no facts for %s", table)
		}
	}
	p := migration.BuildPlan(m, facts)
	if len(p.Rollback) == 0 {
		t.Errorf("no rollback")
	}
}

// A lock that cannot be had, or a cancelled context, says nothing about the
// migration: the error is returned but is not a validation error.
func TestInspectTransientErrors(t *testing.T) {
	conn := setupDB(t)
	m := parseExample(t)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := migration.Inspect(ctx, conn, m); err == nil || migration.IsInvalid(err) {
		t.Errorf("cancelled context: err = %v, IsInvalid = %v", err, migration.IsInvalid(err))
	}
	if conn.IsClosed() {
		// pgx closes a connection whose query was interrupted by the context.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		conn, err = pgx.Connect(ctx, conn.Config().ConnString())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
	}

	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	locker, err := pgx.Connect(ctx, conn.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(context.Background())
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = inspect(t, conn, m)
	if err == nil {
		t.Fatal("Inspect passed while users was locked")
	}
	if migration.IsInvalid(err) {
		t.Errorf("a lock timeout is reported as an invalid migration: %v", err)
	}
	if !strings.Contains(err.Error(), "55P03") && !strings.Contains(err.Error(), "lock") {
		t.Errorf("error does not say it is a lock timeout: %v", err)
	}
	if !strings.Contains(err.Error(), "operations[1]") {
		t.Errorf("error does not name the operation: %v", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("Inspect waited %v for the lock", d)
	}
	var pgErr interface{ SQLState() string }
	if !errors.As(err, &pgErr) || pgErr.SQLState() != "55P03" {
		t.Errorf("the server error is not wrapped: %v", err)
	}
}

// Probing a bulk_insert must not evaluate the table's defaults against real
// objects: nextval() is not undone by the rollback.
func TestInspectLeavesSequencesAlone(t *testing.T) {
	conn := setupDB(t)
	before := snapshot(t, conn)
	m := mustParse(t, "name: s\noperations:\n  - bulk_insert: {table: users, rows: [{full_name: a}, {full_name: b}]}\n")
	if _, err := inspect(t, conn, m); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, conn); after != before {
		t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
	}
	var next int64
	if err := conn.QueryRow(context.Background(), "SELECT nextval('users_id_seq')").Scan(&next); err != nil {
		t.Fatal(err)
	}
	if next != 3 {
		t.Errorf("users_id_seq moved during Inspect: nextval = %d, want 3", next)
	}
}

// The static expression check and the server's lexer agree on where
// literals start and end: what the check accepts prepares as one statement
// over a table with the columns it names, and the strings it rejects as
// hidden statements really are several statements to the server.
func TestExpressionCheckAgreesWithServer(t *testing.T) {
	conn := setupDB(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `CREATE TABLE t (a int, b int, c int, x int, y int, full_name text,
		"weird;col" text, "we""ird(" text, "a$b" int, "c$" int, "x$a$" int); CREATE TABLE victim (id int)`); err != nil {
		t.Fatal(err)
	}
	for _, expr := range []string{
		`split_part(full_name, ' ', 1)`,
		`substring(full_name from position(' ' in full_name) + 1)`,
		`'a;b'`, `'a--b'`, `'a/*b*/'`, `'('`, `')'`, `'it''s; fine'`, `''''`,
		`"weird;col" || 'x'`, `"we""ird(" || 'x'`,
		`$$a;b -- c$$`, `$tag$ a ; $$ -- ) $tag$`, `$a1$ ; $a1$`, `$_$;$_$ || $x$)$x$`,
		`E'it\'s; \\ fine'`, `e'\\'`, `E'a''b;'`, `U&'d\0061t;a'`, `B'1010'`, `X'1F'`, `N'abc;'`,
		`coalesce(a, b) * (c + 1) / 2`, `CASE WHEN a > 0 THEN 'pos;' ELSE 'neg--' END`,
		`a$b + c$`, `x - -1`, `(ARRAY[1,2])[1]`, `1.5e3 + .5`, `$1::int + 1`,
		`'{"a": 1}'::jsonb ->> 'a'`, `now() - interval '1 day'`, "'multi\nline;'",
	} {
		src := "name: m\noperations:\n  - add_column: {table: t, column: {name: c2, type: text}, up: " + yamlQuote(expr) + "}\n"
		if _, err := migration.Parse("ok.yaml", []byte(src)); err != nil {
			t.Errorf("static check rejects %s: %v", expr, err)
			continue
		}
		if _, err := conn.Prepare(ctx, "", "SELECT (\n"+expr+"\n) FROM t"); err != nil {
			t.Errorf("server rejects %s: %v", expr, err)
		}
	}
	for _, expr := range []string{
		`E'\'') FROM t; DROP TABLE victim; SELECT (E'\''`,
		`$a1$'$a1$) FROM t; DROP TABLE victim; SELECT ($a1$'$a1$`,
		`x$a$ ) FROM t; DROP TABLE victim; SELECT ( x$a$`,
		"E'a'\n'\\'') FROM t; DROP TABLE victim; SELECT (E'b'\n'\\''",
	} {
		src := "name: m\noperations:\n  - add_column: {table: t, column: {name: c2, type: text}, up: " + yamlQuote(expr) + "}\n"
		if _, err := migration.Parse("bad.yaml", []byte(src)); err == nil {
			t.Errorf("static check accepts %s", expr)
		}
		// The simple protocol runs several statements: the DROP does run.
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, execErr := tx.Exec(ctx, "SELECT (\n"+expr+"\n) FROM t")
		var dropped bool
		if execErr == nil {
			if err := tx.QueryRow(ctx, "SELECT to_regclass('victim') IS NULL").Scan(&dropped); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if !dropped {
			t.Errorf("%s: the server did not run the hidden DROP (err %v); the case does not test what it claims", expr, execErr)
		}
	}
}

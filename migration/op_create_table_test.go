package migration_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/refit-dev/refit/migration"
)

// tableOpReject is a migration the table operations (create_table,
// drop_table, rename_table) refuse, statically or against the database.
type tableOpReject struct {
	name  string
	ops   string // the operations list
	op    int
	kind  string
	field string
	want  []string
}

// runTableOpRejects checks that each case is refused with an error naming
// the file, operations[op] (kind) and the field, and that nothing in the
// database changed.
func runTableOpRejects(t *testing.T, conn *pgx.Conn, cases []tableOpReject) {
	t.Helper()
	before := snapshot(t, conn)
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			m, err := migration.Parse("bad.yaml", []byte("name: bad\noperations:"+tt.ops+"\n"))
			if err == nil {
				var facts *migration.Facts
				facts, err = inspect(t, conn, m)
				if facts != nil {
					t.Errorf("Inspect returned facts with the error")
				}
			}
			want := append([]string{"bad.yaml", fmt.Sprintf("operations[%d] (%s)", tt.op, tt.kind), `"` + tt.field + `"`}, tt.want...)
			me := requireInvalid(t, err, want...)
			if me.Op != tt.op || me.Field != tt.field || me.Kind != tt.kind {
				t.Errorf("Op %d Kind %q Field %q, want %d %q %q", me.Op, me.Kind, me.Field, tt.op, tt.kind, tt.field)
			}
			if after := snapshot(t, conn); after != before {
				t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// tableOpsDB is setupDB plus a table other tables reference, objects that
// depend on tables, and a role (tableOpsRole) with grants on plans.
func tableOpsDB(t *testing.T) *pgx.Conn {
	t.Helper()
	conn := setupDB(t)
	role := pgx.Identifier{tableOpsRole(t, conn)}.Sanitize()
	if _, err := conn.Exec(context.Background(), `
CREATE TABLE authors (id int PRIMARY KEY, code text NOT NULL UNIQUE, name text);
CREATE TABLE books (id int PRIMARY KEY, author_id int CONSTRAINT books_author_fk REFERENCES authors, title text);
CREATE TABLE viewed (id int PRIMARY KEY, v text);
CREATE VIEW viewed_v AS SELECT id FROM viewed;
CREATE TABLE lonely (id int PRIMARY KEY, parent int REFERENCES lonely, c int CHECK (c > 0));
CREATE TABLE typed (id int PRIMARY KEY);
CREATE TABLE uses_type (id int PRIMARY KEY, t typed);
CREATE TABLE seq_owner (id serial PRIMARY KEY);
CREATE TABLE seq_user (id int PRIMARY KEY DEFAULT nextval('seq_owner_id_seq'));
CREATE ROLE `+role+`;
GRANT SELECT ON plans TO `+role+`;
GRANT UPDATE (name) ON plans TO `+role+`;
GRANT CREATE ON SCHEMA public TO `+role+`;
GRANT TEMPORARY ON DATABASE `+pgx.Identifier{conn.Config().Database}.Sanitize()+` TO `+role+`;
`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = conn.Exec(ctx, "RESET ROLE; DROP OWNED BY "+role+"; DROP ROLE IF EXISTS "+role) //nolint:errcheck // cleanup
	})
	return conn
}

// tableOpsRole is the name of tableOpsDB's role: roles are cluster-wide,
// so it carries the database's OID.
func tableOpsRole(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var name string
	if err := conn.QueryRow(context.Background(), "SELECT 'refit_test_reader_' || oid FROM pg_database WHERE datname = current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

func TestCreateTableRejects(t *testing.T) {
	conn := tableOpsDB(t)
	long := strings.Repeat("x", 64)
	runTableOpRejects(t, conn, []tableOpReject{
		// Without a database.
		{"missing name", `
  - create_table: {columns: [{name: id, type: int}]}`, 0, "create_table", "name", []string{"is required"}},
		{"name too long", `
  - create_table: {name: ` + long + `, columns: [{name: id, type: int}]}`, 0, "create_table", "name", []string{"truncate"}},
		{"unknown field", `
  - create_table: {name: t, columns: [{name: id, type: int}], colour: red}`, 0, "create_table", "colour", []string{"unknown field"}},
		{"unknown field of a column", `
  - create_table: {name: t, columns: [{name: id, type: int}, {name: b, type: int, nulable: false}]}`, 0, "create_table", "columns[1].nulable", []string{"unknown field", "nullable"}},
		{"unknown field of a foreign key's references", `
  - create_table: {name: t, columns: [{name: a, type: int}], foreign_keys: [{columns: [a], references: {table: plans, colums: [id]}}]}`, 0, "create_table", "foreign_keys[0].references.colums", []string{"unknown field"}},
		{"unknown field of a check", `
  - create_table: {name: t, columns: [{name: a, type: int}], checks: [{expr: "a > 0"}]}`, 0, "create_table", "checks[0].expr", []string{"unknown field"}},
		{"unknown field of the primary key", `
  - create_table: {name: t, columns: [{name: a, type: int}], primary_key: {cols: [a]}}`, 0, "create_table", "primary_key.cols", []string{"unknown field"}},
		{"no columns", `
  - create_table: {name: t, columns: []}`, 0, "create_table", "columns", []string{"at least one column"}},
		{"a column twice", `
  - create_table: {name: t, columns: [{name: a, type: int}, {name: a, type: text}]}`, 0, "create_table", "columns[1].name", []string{"columns[0]"}},
		{"a column without a type", `
  - create_table: {name: t, columns: [{name: a}]}`, 0, "create_table", "columns[0].type", []string{"is required"}},
		{"serial", `
  - create_table: {name: t, columns: [{name: id, type: bigserial}]}`, 0, "create_table", "columns[0].type", []string{"identity"}},
		{"a type that is two statements", `
  - create_table: {name: t, columns: [{name: a, type: "int; DROP TABLE users"}]}`, 0, "create_table", "columns[0].type", []string{"';'"}},
		{"a default that is not one expression", `
  - create_table: {name: t, columns: [{name: a, type: int, default: "1) , b int DEFAULT (2"}]}`, 0, "create_table", "columns[0].default", []string{"unbalanced"}},
		{"unknown identity", `
  - create_table: {name: t, columns: [{name: id, type: int, identity: sometimes}]}`, 0, "create_table", "columns[0].identity", []string{"always or by_default"}},
		{"identity with a default", `
  - create_table: {name: t, columns: [{name: id, type: int, identity: always, default: "1"}]}`, 0, "create_table", "columns[0].identity", []string{"no default"}},
		{"nullable identity", `
  - create_table: {name: t, columns: [{name: id, type: int, identity: always, nullable: true}]}`, 0, "create_table", "columns[0].nullable", []string{"NOT NULL"}},
		{"nullable primary key column", `
  - create_table: {name: t, columns: [{name: id, type: int, primary_key: true, nullable: true}]}`, 0, "create_table", "columns[0].nullable", []string{"NOT NULL"}},
		{"two primary key columns", `
  - create_table: {name: t, columns: [{name: a, type: int, primary_key: true}, {name: b, type: int, primary_key: true}]}`, 0, "create_table", "columns[1].primary_key", []string{"columns[0]", "primary_key: {columns"}},
		{"two primary keys", `
  - create_table: {name: t, columns: [{name: a, type: int, primary_key: true}, {name: b, type: int}], primary_key: {columns: [b]}}`, 0, "create_table", "primary_key", []string{"once"}},
		{"a primary key over an unknown column", `
  - create_table: {name: t, columns: [{name: a, type: int}], primary_key: {columns: [a, nope]}}`, 0, "create_table", "primary_key.columns[1]", []string{"nope"}},
		{"a primary key over a column twice", `
  - create_table: {name: t, columns: [{name: a, type: int}], primary_key: {columns: [a, a]}}`, 0, "create_table", "primary_key.columns[1]", []string{"twice"}},
		{"a primary key over a nullable column", `
  - create_table: {name: t, columns: [{name: a, type: int, nullable: true}], primary_key: {columns: [a]}}`, 0, "create_table", "primary_key.columns[0]", []string{"nullable"}},
		{"an empty primary key", `
  - create_table: {name: t, columns: [{name: a, type: int}], primary_key: {name: k}}`, 0, "create_table", "primary_key.columns", []string{"at least one column"}},
		{"a unique constraint over an unknown column", `
  - create_table: {name: t, columns: [{name: a, type: int}], unique: [{columns: [b]}]}`, 0, "create_table", "unique[0].columns[0]", []string{`"b"`}},
		{"a check without an expression", `
  - create_table: {name: t, columns: [{name: a, type: int}], checks: [{name: c}]}`, 0, "create_table", "checks[0].expression", []string{"is required"}},
		{"a check that is two statements", `
  - create_table: {name: t, columns: [{name: a, type: int}], checks: [{expression: "true); DROP TABLE users; SELECT (1"}]}`, 0, "create_table", "checks[0].expression", []string{"unbalanced"}},
		{"two constraints of one name", `
  - create_table: {name: t, columns: [{name: a, type: int}], unique: [{name: k, columns: [a]}], checks: [{name: k, expression: "a > 0"}]}`, 0, "create_table", "checks[0].name", []string{"unique[0].name"}},
		{"a key named like the table", `
  - create_table: {name: t, columns: [{name: a, type: int}], primary_key: {name: t, columns: [a]}}`, 0, "create_table", "primary_key.name", []string{"table's own name"}},
		{"a foreign key over an unknown column", `
  - create_table: {name: t, columns: [{name: a, type: int}], foreign_keys: [{columns: [b], references: {table: plans}}]}`, 0, "create_table", "foreign_keys[0].columns[0]", []string{`"b"`}},
		{"a foreign key without a table", `
  - create_table: {name: t, columns: [{name: a, type: int}], foreign_keys: [{columns: [a], references: {columns: [id]}}]}`, 0, "create_table", "foreign_keys[0].references.table", []string{"is required"}},
		{"a foreign key whose columns do not pair up", `
  - create_table: {name: t, columns: [{name: a, type: int}], foreign_keys: [{columns: [a], references: {table: composite, columns: [a, b]}}]}`, 0, "create_table", "foreign_keys[0].references.columns", []string{"one to one"}},
		{"an unknown referential action", `
  - create_table: {name: t, columns: [{name: a, type: int}], foreign_keys: [{columns: [a], references: {table: plans}, on_delete: explode}]}`, 0, "create_table", "foreign_keys[0].on_delete", []string{"explode"}},
		{"set null on a NOT NULL column", `
  - create_table: {name: t, columns: [{name: a, type: int, nullable: false}], foreign_keys: [{columns: [a], references: {table: plans}, on_delete: set null}]}`, 0, "create_table", "foreign_keys[0].on_delete", []string{"NOT NULL"}},
		{"a comment with a NUL", `
  - create_table: {name: t, columns: [{name: a, type: int}], comment: "a\0b"}`, 0, "create_table", "comment", []string{"NUL"}},
		{"the same table twice in the file", `
  - create_table: {name: t, columns: [{name: a, type: int}]}
  - create_table: {name: t, columns: [{name: b, type: int}]}`, 1, "create_table", "name", []string{"also created by operations[0]"}},
		{"a table named like an enum of the file", `
  - create_enum: {name: t, values: [a]}
  - create_table: {name: t, columns: [{name: b, type: int}]}`, 1, "create_table", "name", []string{"type", "also created by operations[0]"}},

		// Against the database.
		{"an existing table", `
  - create_table: {name: users, columns: [{name: a, type: int}]}`, 0, "create_table", "name", []string{"table named public.users already exists"}},
		{"an existing table, qualified", `
  - create_table: {name: public.plans, columns: [{name: a, type: int}]}`, 0, "create_table", "name", []string{"already exists"}},
		{"an existing index", `
  - create_table: {name: users_full_name_idx, columns: [{name: a, type: int}]}`, 0, "create_table", "name", []string{"an index named"}},
		{"an existing view", `
  - create_table: {name: viewed_v, columns: [{name: a, type: int}]}`, 0, "create_table", "name", []string{"a view named"}},
		{"an existing type", `
  - create_table: {name: mood, columns: [{name: a, type: int}]}`, 0, "create_table", "name", []string{"a type named"}},
		{"a missing schema", `
  - create_table: {name: nosuch.t, columns: [{name: a, type: int}]}`, 0, "create_table", "name", []string{`schema "nosuch" does not exist`}},
		{"a table an earlier sql creates", `
  - sql: {up: "CREATE TABLE made (id int)"}
  - create_table: {name: made, columns: [{name: a, type: int}]}`, 1, "create_table", "name", []string{"already exists"}},
		{"an unknown type", `
  - create_table: {name: t, columns: [{name: a, type: int}, {name: b, type: notatype}]}`, 0, "create_table", "columns[1].type", []string{"notatype"}},
		{"a default of the wrong type", `
  - create_table: {name: t, columns: [{name: a, type: int, default: "'abc'"}]}`, 0, "create_table", "columns[0].default", []string{"integer"}},
		{"a default over a column", `
  - create_table: {name: t, columns: [{name: a, type: int}, {name: b, type: int, default: "a + 1"}]}`, 0, "create_table", "columns[1].default", []string{`"a"`}},
		{"an identity of another type", `
  - create_table: {name: t, columns: [{name: id, type: text, identity: always}]}`, 0, "create_table", "columns[0].identity", []string{"smallint, integer or bigint"}},
		{"a check over an unknown column", `
  - create_table: {name: t, columns: [{name: a, type: int}], checks: [{expression: "nope > 0"}]}`, 0, "create_table", "checks[0].expression", []string{"nope"}},
		{"a check that is not a boolean", `
  - create_table: {name: t, columns: [{name: a, type: int}], checks: [{name: ok, expression: "a > 0"}, {expression: "a + 1"}]}`, 0, "create_table", "checks[1].expression", []string{"boolean"}},
		{"a check with a subquery", `
  - create_table: {name: t, columns: [{name: a, type: int}], checks: [{expression: "a > (SELECT 1)"}]}`, 0, "create_table", "checks[0].expression", []string{"subquery"}},
		{"a primary key over a type without a btree operator class", `
  - create_table: {name: t, columns: [{name: a, type: int}, {name: j, type: json}], primary_key: {columns: [j]}}`, 0, "create_table", "primary_key", []string{"json"}},
		{"a unique column of a type without a btree operator class", `
  - create_table: {name: t, columns: [{name: a, type: int}, {name: j, type: json, unique: true}]}`, 0, "create_table", "columns[1].unique", []string{"json"}},
		{"a foreign key to a missing table", `
  - create_table: {name: t, columns: [{name: a, type: int}], foreign_keys: [{columns: [a], references: {table: nope}}]}`, 0, "create_table", "foreign_keys[0].references.table", []string{"nope", "does not exist"}},
		{"a foreign key to a partitioned table", `
  - create_table: {name: t, columns: [{name: a, type: int}, {name: b, type: date}], foreign_keys: [{columns: [a, b], references: {table: parted}}]}`, 0, "create_table", "foreign_keys[0].references.table", []string{"partitioned"}},
		{"a foreign key to missing columns", `
  - create_table: {name: t, columns: [{name: a, type: int}], foreign_keys: [{columns: [a], references: {table: plans, columns: [nope]}}]}`, 0, "create_table", "foreign_keys[0].references.columns[0]", []string{"nope"}},
		{"a foreign key to columns without a unique index", `
  - create_table: {name: t, columns: [{name: a, type: text}], foreign_keys: [{columns: [a], references: {table: plans, columns: [name]}}]}`, 0, "create_table", "foreign_keys[0].references.columns", []string{"no primary key or unique constraint"}},
		{"a foreign key to a table without a primary key", `
  - create_table: {name: t, columns: [{name: a, type: int}], foreign_keys: [{columns: [a], references: {table: nokey}}]}`, 0, "create_table", "foreign_keys[0].references.columns", []string{"no primary key"}},
		{"a foreign key to a primary key of more columns", `
  - create_table: {name: t, columns: [{name: a, type: int}], foreign_keys: [{columns: [a], references: {table: composite}}]}`, 0, "create_table", "foreign_keys[0].columns", []string{"2 columns"}},
		{"a foreign key of an incompatible type", `
  - create_table: {name: t, columns: [{name: a, type: date}], foreign_keys: [{columns: [a], references: {table: plans}}]}`, 0, "create_table", "foreign_keys[0].columns", []string{"incompatible types"}},
		{"a foreign key to itself of an incompatible type", `
  - create_table: {name: t, columns: [{name: id, type: int, primary_key: true}, {name: parent, type: date}], foreign_keys: [{columns: [parent], references: {table: t}}]}`, 0, "create_table", "foreign_keys[0]", []string{"incompatible types"}},
	})
}

// Text that smuggles a statement past the static check (a migration built
// in code, without Validate) is refused by the prepared probes before it
// is spliced into a statement that runs.
func TestCreateTableRejectsInjection(t *testing.T) {
	conn := tableOpsDB(t)
	before := snapshot(t, conn)
	tests := []struct {
		name  string
		op    migration.CreateTable
		field string
	}{
		{"type", migration.CreateTable{Columns: []migration.CreateTableColumn{{Name: "a", Type: "int); DROP TABLE plans; CREATE TABLE x (a int"}}}, "columns[0].type"},
		{"default", migration.CreateTable{Columns: []migration.CreateTableColumn{{Name: "a", Type: "int", Default: "1)); DROP TABLE plans; SELECT ((1"}}}, "columns[0].default"},
		{"check", migration.CreateTable{Columns: []migration.CreateTableColumn{{Name: "a", Type: "int"}},
			Checks: []migration.CreateTableCheck{{Expression: "true)); DROP TABLE plans; CREATE TABLE y (b int CHECK ((true"}}}, "checks[0].expression"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := tt.op
			op.NameRaw, op.Table = "inj", migration.TableName{Name: "inj"}
			m := &migration.Migration{Name: "inj", File: "inj.yaml", Operations: []migration.Operation{&op}}
			_, err := inspect(t, conn, m)
			requireInvalid(t, err, "inj.yaml", "operations[0] (create_table)", `"`+tt.field+`"`)
			if after := snapshot(t, conn); after != before {
				t.Fatalf("the database changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func TestCreateTableValid(t *testing.T) {
	conn := tableOpsDB(t)
	before := snapshot(t, conn)
	m := mustParse(t, `
name: ok
operations:
  - create_table:
      name: orders
      comment: "what customers bought; it's new"
      columns:
        - {name: id, type: bigint, identity: always, primary_key: true}
        - {name: plan_id, type: int, nullable: false}
        - {name: author_code, type: text}
        - {name: parent_id, type: bigint}
        - {name: qty, type: int, nullable: false, default: "1", comment: "how many"}
        - {name: 'Note "x"', type: varchar(20), unique: true}
        - {name: placed_at, type: timestamptz, nullable: false, default: now()}
      unique: [{name: orders_plan_qty, columns: [plan_id, qty]}]
      checks: [{name: qty_positive, expression: "qty > 0"}, {expression: "placed_at > '2000-01-01'"}]
      foreign_keys:
        - {columns: [plan_id], references: {table: plans}, on_delete: restrict}
        - {name: orders_author_fk, columns: [author_code], references: {table: public.authors, columns: [code]}, on_update: cascade, on_delete: SET_NULL}
        - {columns: [parent_id], references: {table: orders}, on_delete: cascade}
  - create_index: {name: orders_placed_at, table: orders, columns: [placed_at]}
  - bulk_insert: {table: orders, rows: [{plan_id: 1, qty: 2}]}
  - create_table:
      name: pairs
      columns: [{name: a, type: int}, {name: b, type: text}]
      primary_key: {name: pairs_key, columns: [b, a]}
`)
	// An application transaction that writes plans holds ROW EXCLUSIVE on
	// it, which the SHARE ROW EXCLUSIVE of a foreign key waits for: the
	// inspection must not take that lock.
	ctx := context.Background()
	app, err := pgx.Connect(ctx, conn.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO plans (id, name) VALUES (1000, 'held'); INSERT INTO authors (id, code) VALUES (1000, 'held')"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	facts, err := inspect(t, conn, m)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("inspection took %s: it waited for a lock", d)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, conn); after != before {
		t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
	}
	orders := facts.Table(migration.ParseTableName("orders"))
	if orders == nil || orders.Name != (migration.TableName{Schema: "public", Name: "orders"}) || len(orders.Key) != 1 || orders.Key[0].Name != "id" {
		t.Fatalf("facts of orders: %+v", orders)
	}
	p := migration.BuildPlan(m, facts)
	checkRollback(t, p)
	if len(p.Expand) < 2 {
		t.Fatalf("expand: %v", sqls(p.Expand))
	}
	want := `CREATE TABLE "public"."orders" (
  "id" bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  "plan_id" int NOT NULL,
  "author_code" text,
  "parent_id" bigint,
  "qty" int DEFAULT (1) NOT NULL,
  "Note ""x""" varchar(20) UNIQUE,
  "placed_at" timestamptz DEFAULT (now()) NOT NULL,
  CONSTRAINT "orders_plan_qty" UNIQUE ("plan_id", "qty"),
  CONSTRAINT "qty_positive" CHECK (qty > 0),
  CHECK (placed_at > '2000-01-01'),
  FOREIGN KEY ("plan_id") REFERENCES "public"."plans" ON DELETE RESTRICT,
  CONSTRAINT "orders_author_fk" FOREIGN KEY ("author_code") REFERENCES "public"."authors" ("code") ON DELETE SET NULL ON UPDATE CASCADE,
  FOREIGN KEY ("parent_id") REFERENCES "public"."orders" ON DELETE CASCADE
);
COMMENT ON TABLE "public"."orders" IS 'what customers bought; it''s new';
COMMENT ON COLUMN "public"."orders"."qty" IS 'how many'`
	s := p.Expand[0]
	if s.SQL != want {
		t.Errorf("create table:\n%s\nwant\n%s", s.SQL, want)
	}
	if !s.Transactional || s.Kind != "create_table" || !strings.HasPrefix(s.Lock, "SHARE ROW EXCLUSIVE") ||
		!strings.Contains(s.Lock, "public.plans, public.authors") || !strings.Contains(s.Cost, "no CONCURRENTLY and no NOT VALID") {
		t.Errorf("create step %+v", s)
	}
	requireSQL(t, "post-backfill", p.PostBackfill, []string{`CREATE INDEX CONCURRENTLY "orders_placed_at" ON "public"."orders" ("placed_at")`})
	requireSQL(t, "rollback", p.Rollback, []string{
		`DROP INDEX CONCURRENTLY IF EXISTS "public"."orders_placed_at"`,
		`DROP TABLE IF EXISTS "public"."pairs"`,
		`DROP TABLE IF EXISTS "public"."orders"`,
	})
	if r := p.Rollback[2]; !strings.HasPrefix(r.Lock, "ACCESS EXCLUSIVE") || !strings.Contains(r.Lock, "public.plans") {
		t.Errorf("drop of orders: lock %q, want ACCESS EXCLUSIVE on the referenced tables", r.Lock)
	}
	if pairs := p.Expand[len(p.Expand)-1]; pairs.SQL != `CREATE TABLE "public"."pairs" (
  "a" int,
  "b" text,
  CONSTRAINT "pairs_key" PRIMARY KEY ("b", "a")
)` || pairs.Lock != "none on tables" {
		t.Errorf("pairs: %q lock %q", pairs.SQL, pairs.Lock)
	}
	if len(p.Contract) != 0 || len(p.Backfills) != 0 {
		t.Errorf("contract %v, backfills %v", sqls(p.Contract), p.Backfills)
	}
	tables := m.Operations[0].Tables()
	if len(tables) != 3 || tables[0].Name != "orders" || tables[1].Name != "plans" || tables[2].String() != "public.authors" {
		t.Errorf("Tables() = %v: the new table and the referenced ones, not itself twice", tables)
	}

	// The statements run: the table is created, with every constraint.
	ctx2, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rtx, err := conn.Begin(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	defer rtx.Rollback(ctx2) //nolint:errcheck // undone on purpose
	if _, err := rtx.Exec(ctx2, s.SQL); err != nil {
		t.Fatalf("create table: %v", err)
	}
	var cons string
	if err := rtx.QueryRow(ctx2, `SELECT string_agg(contype::text, '' ORDER BY contype) FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype <> 'n'`).Scan(&cons); err != nil {
		t.Fatal(err)
	}
	if cons != "ccfffpuu" {
		t.Errorf("constraints of orders: %q, want 2 checks, 3 foreign keys, a primary key, 2 unique", cons)
	}
	if _, err := rtx.Exec(ctx2, p.Rollback[len(p.Rollback)-1].SQL); err != nil {
		t.Fatalf("drop table: %v", err)
	}
}

func TestCreateTablePlanWithoutFacts(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - create_table:
      name: app.things
      columns: [{name: id, type: int, identity: by_default, primary_key: true}, {name: owner, type: int}]
      foreign_keys: [{columns: [owner], references: {table: users}}]
`)
	p := migration.BuildPlan(m, nil)
	requireSQL(t, "expand", p.Expand, []string{`CREATE TABLE "app"."things" (
  "id" int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  "owner" int,
  FOREIGN KEY ("owner") REFERENCES "users"
)`})
	requireSQL(t, "rollback", p.Rollback, []string{`DROP TABLE IF EXISTS "app"."things"`})
	if !strings.Contains(p.Expand[0].Lock, "on users") || !strings.Contains(p.Rollback[0].Lock, "on users") {
		t.Errorf("locks %q / %q do not name the referenced table", p.Expand[0].Lock, p.Rollback[0].Lock)
	}
	// CREATE on its schema, and REFERENCES on the table its foreign key
	// references (checked up front with the other privileges).
	need := m.Operations[0].Needs()
	if len(need) != 2 || need[0].Kind != migration.NeedSchemaCreate || need[0].Schema != "app" ||
		need[1].Kind != migration.NeedReferences || need[1].Table != (migration.TableName{Name: "users"}) {
		t.Errorf("Needs() = %+v", need)
	}
}

// A role that may not reference the table a foreign key names is refused
// at validation (the foreign key is checked between shadow copies, which
// do not check the privilege).
func TestCreateTableRejectsReferencesPrivilege(t *testing.T) {
	conn := tableOpsDB(t)
	ctx := context.Background()
	before := snapshot(t, conn)
	if _, err := conn.Exec(ctx, "SET ROLE "+pgx.Identifier{tableOpsRole(t, conn)}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "RESET ROLE") //nolint:errcheck // restored for the cleanup
	m := mustParse(t, `
name: refs
operations:
  - create_table: {name: t, columns: [{name: a, type: int}], foreign_keys: [{columns: [a], references: {table: plans}}]}
`)
	m.File = "refs.yaml"
	_, err := inspect(t, conn, m)
	requireInvalid(t, err, "refs.yaml", "operations[0] (create_table)", `"foreign_keys[0].references.table"`, "may not reference", "GRANT REFERENCES ON TABLE")
	// Without the foreign key the same role may create the table.
	m = mustParse(t, "name: norefs\noperations:\n  - create_table: {name: t, columns: [{name: a, type: int}]}\n")
	if _, err := inspect(t, conn, m); err != nil {
		t.Fatalf("create_table as a role with CREATE on the schema: %v", err)
	}
	if _, err := conn.Exec(ctx, "RESET ROLE"); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, conn); after != before {
		t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
	}
}

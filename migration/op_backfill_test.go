package migration_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/refit-dev/refit/migration"
)

func TestParseBackfill(t *testing.T) {
	m := mustParse(t, `
name: fix
operations:
  - backfill:
      table: public.items
      set: {status: "'active'", note: null, price: 0, flag: true}
      where: status = 'actv'
`)
	op, ok := m.Operations[0].(*migration.DataBackfill)
	if !ok {
		t.Fatalf("operation is %T", m.Operations[0])
	}
	if op.Kind() != "backfill" {
		t.Errorf("Kind = %q", op.Kind())
	}
	if want := []migration.TableName{{Schema: "public", Name: "items"}}; !reflect.DeepEqual(op.Tables(), want) {
		t.Errorf("Tables = %v", op.Tables())
	}
	if got, want := op.Columns(), []string{"status", "note", "price", "flag"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Columns = %v, want the file's order %v", got, want)
	}
	want := map[string]string{"status": "'active'", "note": "NULL", "price": "0", "flag": "true"}
	if !reflect.DeepEqual(op.Set, want) {
		t.Errorf("Set = %v, want %v (an explicit null is SQL NULL)", op.Set, want)
	}
	if op.Where != "status = 'actv'" {
		t.Errorf("Where = %q", op.Where)
	}
	// Built in code (not decoded): the columns in a stable order.
	built := &migration.DataBackfill{Set: map[string]string{"b": "1", "a": "2"}}
	if got := built.Columns(); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("Columns of a built operation = %v", got)
	}
}

func TestParseBackfillInvalid(t *testing.T) {
	tests := []struct {
		name  string
		op    string // the operation body
		field string
		want  []string
	}{
		{"unknown field", `{table: t, sets: {a: "1"}}`, "sets", []string{"unknown field", "set", "where"}},
		{"missing table", `{set: {a: "1"}}`, "table", []string{"required"}},
		{"missing set", `{table: t}`, "set", []string{"at least one column"}},
		{"empty set", `{table: t, set: {}}`, "set", []string{"at least one column"}},
		{"empty expression", `{table: t, set: {a: ""}}`, "set.a", []string{"expression is required"}},
		{"no value", "\n      table: t\n      set:\n        a:\n", "set.a", []string{"expression is required", "null"}},
		{"blank column name", `{table: t, set: {"": "1"}}`, "set.", []string{"required"}},
		{"column name too long", `{table: t, set: {` + strings.Repeat("c", 64) + `: "1"}}`, "set." + strings.Repeat("c", 64), []string{"longer than 63"}},
		{"expression with a second statement", `{table: t, set: {a: "1; DROP TABLE t"}}`, "set.a", []string{"one SQL expression"}},
		{"expression with a comment", `{table: t, set: {a: "1 -- x"}}`, "set.a", []string{"comments"}},
		{"expression with unbalanced parentheses", `{table: t, set: {a: "1) + (2"}}`, "set.a", []string{"unbalanced"}},
		{"where with a second statement", `{table: t, set: {a: "1"}, where: "true; DELETE FROM t"}`, "where", []string{"one SQL expression"}},
		{"where with unterminated quote", `{table: t, set: {a: "1"}, where: "a = 'x"}`, "where", []string{"unterminated"}},
		{"set is a list", `{table: t, set: [a]}`, "set", []string{"cannot unmarshal"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := migration.Parse("bad.yaml", []byte("name: bad\noperations:\n  - backfill: "+tt.op+"\n"))
			me := requireInvalid(t, err, append([]string{"bad.yaml", "operations[0] (backfill)"}, tt.want...)...)
			if me.Op != 0 || me.Field != tt.field {
				t.Errorf("Op %d Field %q, want 0 %q", me.Op, me.Field, tt.field)
			}
		})
	}
}

func TestBuildPlanBackfill(t *testing.T) {
	items := migration.TableName{Name: "items"}
	tests := []struct {
		name      string
		ops       string
		backfills []migration.Backfill
		update    string // RecomputeSQL of the (one) table with where "true"
		derived   []string
	}{
		{name: "one column, a where", ops: `
  - backfill: {table: items, set: {status: "'active'"}, where: "status = 'actv'"}`,
			backfills: []migration.Backfill{{Table: items, Sets: []migration.ColumnSet{
				{Column: "status", Expr: "'active'", Where: "status = 'actv'", Data: true}}}},
			update: `UPDATE "items" SET "status" = ('active') WHERE true AND (((status = 'actv') AND "status" IS DISTINCT FROM ('active')))`},
		{name: "two columns, no where", ops: `
  - backfill: {table: items, set: {name: "trim(name)", price: "round(price, 2)"}}`,
			backfills: []migration.Backfill{{Table: items, Sets: []migration.ColumnSet{
				{Column: "name", Expr: "trim(name)", Data: true}, {Column: "price", Expr: "round(price, 2)", Data: true}}}},
			update: `UPDATE "items" SET "name" = (trim(name)), "price" = (round(price, 2)) WHERE true AND ("name" IS DISTINCT FROM (trim(name)) OR "price" IS DISTINCT FROM (round(price, 2)))`},
		{name: "two columns sharing a where", ops: `
  - backfill: {table: items, set: {a: "1", b: "2"}, where: "c"}`,
			backfills: []migration.Backfill{{Table: items, Sets: []migration.ColumnSet{
				{Column: "a", Expr: "1", Where: "c", Data: true}, {Column: "b", Expr: "2", Where: "c", Data: true}}}},
			update: `UPDATE "items" SET "a" = (1), "b" = (2) WHERE true AND (((c) AND "a" IS DISTINCT FROM (1)) OR ((c) AND "b" IS DISTINCT FROM (2)))`},
		{name: "beside a derived column: one pass, the fix under CASE, only the derived one synced", ops: `
  - add_column: {table: items, column: {name: name_upper, type: text}, up: "upper(name)"}
  - backfill: {table: public.items, set: {price: "0"}, where: "price < 0"}`,
			backfills: []migration.Backfill{{Table: items, Sets: []migration.ColumnSet{
				{Column: "name_upper", Expr: "upper(name)"},
				{Column: "price", Expr: "0", Where: "price < 0", Data: true}}}},
			update:  `UPDATE "items" SET "name_upper" = (upper(name)), "price" = CASE WHEN (price < 0) THEN (0) ELSE "price" END WHERE true AND ("name_upper" IS DISTINCT FROM (upper(name)) OR ((price < 0) AND "price" IS DISTINCT FROM (0)))`,
			derived: []string{"name_upper"}},
		{name: "two fixes with different wheres", ops: `
  - backfill: {table: items, set: {a: "1"}, where: "x"}
  - backfill: {table: items, set: {b: "2"}}`,
			backfills: []migration.Backfill{{Table: items, Sets: []migration.ColumnSet{
				{Column: "a", Expr: "1", Where: "x", Data: true}, {Column: "b", Expr: "2", Data: true}}}},
			update: `UPDATE "items" SET "a" = CASE WHEN (x) THEN (1) ELSE "a" END, "b" = (2) WHERE true AND (((x) AND "a" IS DISTINCT FROM (1)) OR "b" IS DISTINCT FROM (2))`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, "name: m\noperations:"+tt.ops+"\n")
			facts := &migration.Facts{Tables: map[string]*migration.TableFacts{
				"items": {Name: items, Key: []migration.KeyColumn{{Name: "id", Type: "bigint"}}, Columns: map[string]string{"id": "bigint"}}},
				Aliases: map[string]string{"public.items": "items"}}
			p := migration.BuildPlan(m, facts)
			for _, s := range append(append(p.Expand, p.PostBackfill...), append(p.Contract, p.Rollback...)...) {
				if s.Kind == "backfill" {
					t.Errorf("the backfill operation has a step of its own: %s", s.SQL)
				}
			}
			if !reflect.DeepEqual(p.Backfills, tt.backfills) {
				t.Errorf("Backfills = %+v\nwant        %+v", p.Backfills, tt.backfills)
			}
			if len(p.Backfills) != 1 {
				return
			}
			if got := migration.RecomputeSQL(`"items"`, p.Backfills[0].Sets, "true"); got != tt.update {
				t.Errorf("update:\n got %s\nwant %s", got, tt.update)
			}
			var derived []string
			for _, s := range migration.Derived(p.Backfills[0].Sets) {
				derived = append(derived, s.Column)
			}
			if !reflect.DeepEqual(derived, tt.derived) {
				t.Errorf("Derived = %v, want %v (a data fix is never synced)", derived, tt.derived)
			}
			checkRollback(t, p)
		})
	}
}

func TestInspectBackfillRejects(t *testing.T) {
	conn := setupDB(t)
	before := snapshot(t, conn)
	tests := []struct {
		name  string
		ops   string
		op    int
		field string
		want  []string
	}{
		{"missing table", `
  - backfill: {table: no_such_table, set: {a: "1"}}`, 0, "table", []string{"does not exist"}},
		{"missing column", `
  - backfill: {table: plans, set: {name: "upper(name)", nope: "1"}}`, 0, "set.nope", []string{`"nope" does not exist`}},
		{"a column another operation adds later", `
  - backfill: {table: plans, set: {tier: "'gold'"}}
  - add_column: {table: plans, column: {name: tier, type: text}}`, 0, "set.tier", []string{"does not exist", "before this backfill"}},
		{"generated column", `
  - backfill: {table: events, set: {size: "1"}}`, 0, "set.size", []string{"generated"}},
		{"identity always", `
  - backfill: {table: events, set: {id: "id + 1"}}`, 0, "set.id", []string{"IDENTITY"}},
		{"the key", `
  - backfill: {table: plans, set: {id: "id + 1000"}}`, 0, "set.id", []string{"key"}},
		{"expression over a missing column", `
  - backfill: {table: plans, set: {name: "upper(nope)"}}`, 0, "set.name", []string{"nope"}},
		{"expression of the wrong type", `
  - backfill: {table: plans, set: {name: "upper(name)", price: "now()"}}`, 0, "set.price", []string{"numeric"}},
		{"expression that is not one expression", `
  - backfill: {table: plans, set: {price: "1 +"}}`, 0, "set.price", []string{"syntax error"}},
		{"expression that is a list", `
  - backfill: {table: plans, set: {name: "'a', 'b'"}}`, 0, "set.name", nil},
		{"column without an equality operator for the guard", `
  - backfill: {table: events, set: {doc: "doc"}}`, 0, "set.doc", []string{"json"}},
		{"where that is not boolean", `
  - backfill: {table: plans, set: {price: "0"}, where: "price"}`, 0, "where", []string{"boolean"}},
		{"where over a missing column", `
  - backfill: {table: plans, set: {price: "0"}, where: "nope < 0"}`, 0, "where", []string{"nope"}},
		{"where that is not one expression", `
  - backfill: {table: plans, set: {price: "0"}, where: "price < 0 OR"}`, 0, "where", []string{"syntax error"}},
		{"table without a key", `
  - backfill: {table: nokey, set: {b: "upper(b)"}}`, 0, "table", []string{"primary key"}},
		{"a column an add_column derives", `
  - add_column: {table: users, column: {name: c, type: text}, up: "upper(full_name)"}
  - backfill: {table: users, set: {c: "'x'"}}`, 1, "set.c", []string{"also written in the same backfill pass by operations[0] (add_column)", "twice"}},
		{"a column another backfill sets", `
  - backfill: {table: plans, set: {name: "trim(name)"}}
  - backfill: {table: public.plans, set: {name: "upper(name)"}}`, 0, "set.name", []string{"operations[1] (backfill)", "twice"}},
		{"an up over the fixed column", `
  - backfill: {table: users, set: {full_name: "trim(full_name)"}}
  - add_column: {table: users, column: {name: first_name, type: text}, up: "split_part(full_name, ' ', 1)"}`, 0, "set.full_name",
			[]string{"operations[1] (add_column)", `computes column "first_name"`, `from column "full_name"`, "before the fix"}},
		{"a fix over a derived column", `
  - add_column: {table: users, column: {name: c, type: text}, up: "upper(full_name)"}
  - backfill: {table: users, set: {full_name: "c || '!'"}}`, 1, "set.full_name", []string{`reads column "c"`, "operations[0] (add_column)"}},
		{"a where over a column another backfill sets", `
  - backfill: {table: plans, set: {price: "0"}, where: "NOT active"}
  - backfill: {table: plans, set: {active: "true"}}`, 0, "where", []string{`reads column "active"`, "operations[1] (backfill)"}},
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
				t.Errorf("Op %d Field %q, want %d %q: %v", me.Op, me.Field, tt.op, tt.field, err)
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

func TestInspectBackfillValid(t *testing.T) {
	conn := setupDB(t)
	before := snapshot(t, conn)
	for _, tt := range []struct{ name, ops string }{
		{"columns and a where", `
  - backfill: {table: plans, set: {name: "initcap(name)", price: "round(price, 1)"}, where: "price > 10"}`},
		{"sets reading each other's columns in one operation, like one UPDATE", `
  - backfill: {table: plans, set: {name: "name || price::text", price: "price * 2"}}`},
		{"NULL", `
  - backfill: {table: plans, set: {active: null}, where: "NOT active"}`},
		{"a column an earlier operation adds", `
  - add_column: {table: plans, column: {name: tier, type: text}}
  - backfill: {table: plans, set: {tier: "CASE WHEN price > 100 THEN 'gold' END"}}`},
		{"beside an independent derived column", `
  - add_column: {table: plans, column: {name: name_upper, type: text}, up: "upper(name)"}
  - backfill: {table: public.plans, set: {price: "greatest(price, 0)"}, where: "price < 1"}`},
		{"a quoted table and column", `
  - backfill: {table: "Order Items", set: {"Full \"Name\"": "trim(\"Order Items\".\"Full \"\"Name\"\"\")"}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, "name: ok\noperations:"+tt.ops+"\n")
			facts, err := inspect(t, conn, m)
			if err != nil {
				t.Fatal(err)
			}
			p := migration.BuildPlan(m, facts)
			if len(p.Backfills) != 1 || p.Backfills[0].Table.Schema != "public" {
				t.Fatalf("Backfills = %+v", p.Backfills)
			}
			if after := snapshot(t, conn); after != before {
				t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

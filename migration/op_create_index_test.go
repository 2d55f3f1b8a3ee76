package migration_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/refit-dev/refit/migration"
)

// A column is a name or a mapping; include, with and nulls_not_distinct
// decode into the operation, in YAML and JSON alike.
func TestCreateIndexParse(t *testing.T) {
	y := mustParse(t, `
name: m
operations:
  - create_index:
      name: i
      table: app.t
      columns: [a, {name: b, opclass: text_pattern_ops, order: desc, nulls: last}, {name: c}]
      include: [d, e]
      unique: true
      nulls_not_distinct: true
      with: {fillfactor: 90, deduplicate_items: off, pages: "12"}
`)
	j := mustParse(t, `{"name": "m", "operations": [{"create_index": {"name": "i", "table": "app.t",
  "columns": ["a", {"name": "b", "opclass": "text_pattern_ops", "order": "desc", "nulls": "last"}, {"name": "c"}],
  "include": ["d", "e"], "unique": true, "nulls_not_distinct": true,
  "with": {"fillfactor": 90, "deduplicate_items": "off", "pages": "12"}}}]}`)
	o := y.Operations[0].(*migration.CreateIndex)
	if !reflect.DeepEqual(o.Columns, []string{"a", "b", "c"}) {
		t.Errorf("Columns = %v", o.Columns)
	}
	if k := o.Keys[1]; k.Name != "b" || k.Opclass != "text_pattern_ops" || k.Order != "desc" || k.Nulls != "last" {
		t.Errorf("Keys[1] = %+v", k)
	}
	if !reflect.DeepEqual(o.Include, []string{"d", "e"}) || !o.NullsNotDistinct || !o.Unique {
		t.Errorf("create_index = %+v", o)
	}
	if o.With["fillfactor"] != 90 || o.With["deduplicate_items"] != "off" {
		t.Errorf("With = %#v", o.With)
	}
	// JSON gives the mapping columns the same shape as YAML.
	jo := j.Operations[0].(*migration.CreateIndex)
	if !reflect.DeepEqual(jo.Keys, o.Keys) || !reflect.DeepEqual(jo.Include, o.Include) || !reflect.DeepEqual(jo.With, o.With) || !reflect.DeepEqual(jo.Columns, o.Columns) {
		t.Errorf("JSON %+v, YAML %+v", jo, o)
	}
	// Plain string columns stay what they were.
	p := mustParse(t, "name: m\noperations:\n  - create_index: {name: i, table: t, columns: [a, b]}\n")
	if got := p.Operations[0].(*migration.CreateIndex).Columns; !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("Columns = %v", got)
	}
}

func TestCreateIndexParseInvalid(t *testing.T) {
	long := strings.Repeat("x", 64)
	tests := []struct {
		name  string
		body  string // the create_index body
		field string // "" for a decoding error without a field
		want  []string
	}{
		{"unknown key in a column mapping", `{name: i, table: t, columns: [a, {name: b, opclas: text_pattern_ops}]}`, "columns[1].opclas", []string{"unknown field", "opclass", "nulls"}},
		{"key given twice in a column", `{name: i, table: t, columns: [{name: a, name: b}]}`, "columns[0].name", []string{"twice"}},
		{"mapping column without name", `{name: i, table: t, columns: [{opclass: text_pattern_ops}]}`, "columns[0].name", []string{"required"}},
		{"mapping column with a list as name", `{name: i, table: t, columns: [{name: [a]}]}`, "columns[0].name", []string{"string"}},
		{"column that is a list", `{name: i, table: t, columns: [a, [b]]}`, "columns[1]", []string{"a name or a mapping"}},
		{"column name too long", `{name: i, table: t, columns: [{name: ` + long + `}]}`, "columns[0].name", []string{"63 bytes"}},
		{"bad order", `{name: i, table: t, columns: [{name: a, order: down}]}`, "columns[0].order", []string{"asc or desc"}},
		{"bad nulls", `{name: i, table: t, columns: [{name: a, nulls: middle}]}`, "columns[0].nulls", []string{"first or last"}},
		{"opclass with an empty name after the schema", `{name: i, table: t, columns: [{name: a, opclass: 'app.'}]}`, "columns[0].opclass", []string{"empty"}},
		{"opclass too long", `{name: i, table: t, columns: [{name: a, opclass: ` + long + `}]}`, "columns[0].opclass", []string{"63 bytes"}},
		{"blank include", `{name: i, table: t, columns: [a], include: [b, '']}`, "include[1]", []string{"required"}},
		{"include given twice", `{name: i, table: t, columns: [a], include: [b, b]}`, "include[1]", []string{"twice"}},
		{"include that is a string", `{name: i, table: t, columns: [a], include: b}`, "include", []string{"create_index"}},
		{"nulls_not_distinct without unique", `{name: i, table: t, columns: [a], nulls_not_distinct: true}`, "nulls_not_distinct", []string{"unique: true"}},
		{"with name not an identifier", `{name: i, table: t, columns: [a], with: {"fill factor": 90}}`, "with", []string{"fill factor", "storage parameter"}},
		{"with name in capitals", `{name: i, table: t, columns: [a], with: {FillFactor: 90}}`, "with", []string{"FillFactor"}},
		{"with value injection", `{name: i, table: t, columns: [a], with: {fillfactor: "90); DROP TABLE t; --"}}`, "with.fillfactor", []string{"number, a boolean or a word"}},
		{"with value quoted", `{name: i, table: t, columns: [a], with: {buffering: "'auto'"}}`, "with.buffering", []string{"number"}},
		{"with value a list", `{name: i, table: t, columns: [a], with: {fillfactor: [90]}}`, "with.fillfactor", []string{"number"}},
		{"with value a mapping", `{name: i, table: t, columns: [a], with: {fillfactor: {a: 1}}}`, "with.fillfactor", []string{"number"}},
		{"with value null", `{name: i, table: t, columns: [a], with: {fillfactor: null}}`, "with.fillfactor", []string{"empty"}},
		{"with value NaN", `{name: i, table: t, columns: [a], with: {fillfactor: .nan}}`, "with.fillfactor", []string{"number"}},
		{"with value a date", `{name: i, table: t, columns: [a], with: {fillfactor: 2024-01-02}}`, "with.fillfactor", []string{"number"}},
		{"with that is a list", `{name: i, table: t, columns: [a], with: [fillfactor]}`, "with", []string{"create_index"}},
		{"unknown field next to the new ones", `{name: i, table: t, columns: [a], includes: [b]}`, "includes", []string{"unknown field", "include", "nulls_not_distinct", "with"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "name: m\noperations:\n  - drop_column: {table: t, column: x}\n  - create_index: " + tt.body + "\n"
			m, err := migration.Parse("bad.yaml", []byte(src))
			if m != nil {
				t.Errorf("Parse returned a migration along with the error")
			}
			want := append([]string{"bad.yaml", "operations[1] (create_index)"}, tt.want...)
			if tt.field != "" {
				want = append(want, fmt.Sprintf("field %q", tt.field))
			}
			me := requireInvalid(t, err, want...)
			if me.Op != 1 || me.Field != tt.field || me.Kind != "create_index" {
				t.Errorf("Op %d Kind %q Field %q, want 1 create_index %q (%v)", me.Op, me.Kind, me.Field, tt.field, err)
			}
		})
	}
}

// The plan prints the full statement: per-column operator class, order and
// NULLS placement, INCLUDE, NULLS NOT DISTINCT, WITH (sorted, values
// rendered safely) and WHERE, every identifier quoted.
func TestCreateIndexPlan(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - create_index:
      name: "Idx X"
      table: app.t
      columns: [{name: "A a", opclass: text_pattern_ops, order: DESC, nulls: last}, b, {name: c, opclass: app.my_ops}, {name: d, nulls: first}]
      include: ["E e", f]
      unique: true
      nulls_not_distinct: true
      with: {fillfactor: 90, deduplicate_items: off, x_real: 0.5, x_bool: true, x_num: "12"}
      where: "b > 0"
  - create_index: {name: plain, table: t, columns: [a]}
  - create_index: {name: gin_idx, table: t, columns: [{name: j, opclass: jsonb_path_ops}], method: gin, with: {fastupdate: false}}
`)
	p := migration.BuildPlan(m, nil)
	requireSQL(t, "post-backfill", p.PostBackfill, []string{
		`CREATE UNIQUE INDEX CONCURRENTLY "Idx X" ON "app"."t" ("A a" "text_pattern_ops" DESC NULLS LAST, "b", "c" "app"."my_ops", "d" NULLS FIRST) INCLUDE ("E e", "f") NULLS NOT DISTINCT WITH ("deduplicate_items" = 'off', "fillfactor" = 90, "x_bool" = true, "x_num" = 12, "x_real" = 0.5) WHERE (b > 0)`,
		`CREATE INDEX CONCURRENTLY "plain" ON "t" ("a")`,
		`CREATE INDEX CONCURRENTLY "gin_idx" ON "t" USING gin ("j" "jsonb_path_ops") WITH ("fastupdate" = false)`,
	})
	for i, s := range p.PostBackfill {
		if s.Transactional || !s.LongRunning || s.Lock == "" || s.Cost == "" {
			t.Errorf("post[%d] = %+v", i, s)
		}
	}
	requireSQL(t, "rollback", p.Rollback, []string{
		`DROP INDEX CONCURRENTLY IF EXISTS "gin_idx"`,
		`DROP INDEX CONCURRENTLY IF EXISTS "plain"`,
		`DROP INDEX CONCURRENTLY IF EXISTS "app"."Idx X"`,
	})
	checkRollback(t, p)
}

// Every new field is checked against the database on the shadow table, and
// a failure names the field that caused it; nothing changes.
func TestCreateIndexInspectRejects(t *testing.T) {
	conn := setupDB(t)
	before := snapshot(t, conn)
	tests := []struct {
		name  string
		ops   string
		op    int
		field string
		want  []string
	}{
		{"missing mapping column", `
  - create_index: {name: idx_new, table: users, columns: [{name: nope, order: desc}]}`, 0, "columns[0].name", []string{"nope", "does not exist"}},
		{"missing include column", `
  - create_index: {name: idx_new, table: users, columns: [full_name], include: [id, nope]}`, 0, "include[1]", []string{"nope", "does not exist"}},
		{"unknown operator class", `
  - create_index: {name: idx_new, table: users, columns: [id, {name: full_name, opclass: nosuch_ops}]}`, 0, "columns[1].opclass", []string{"nosuch_ops"}},
		{"operator class of another type", `
  - create_index: {name: idx_new, table: plans, columns: [{name: id, opclass: text_pattern_ops}]}`, 0, "columns[0].opclass", []string{"text_pattern_ops", "integer"}},
		{"operator class of another method", `
  - create_index: {name: idx_new, table: users, columns: [{name: full_name, opclass: text_pattern_ops}], method: gin}`, 0, "columns[0].opclass", []string{"text_pattern_ops", "gin"}},
		{"order the method does not have", `
  - create_index: {name: idx_new, table: users, columns: [{name: full_name, order: desc}], method: hash}`, 0, "columns[0].order", []string{"ASC/DESC"}},
		{"nulls placement the method does not have", `
  - create_index: {name: idx_new, table: users, columns: [{name: full_name, nulls: first}], method: hash}`, 0, "columns[0].nulls", []string{"NULLS FIRST/LAST"}},
		{"a plain column without a default operator class still names the method", `
  - create_index: {name: idx_new, table: users, columns: [{name: full_name, order: asc}], method: gin}`, 0, "method", []string{"operator class"}},
		{"include the method does not have", `
  - create_index: {name: idx_new, table: users, columns: [full_name], include: [id], method: hash}`, 0, "include", []string{"included columns"}},
		{"unknown storage parameter", `
  - create_index: {name: idx_new, table: users, columns: [full_name], with: {nosuch: 1}}`, 0, "with", []string{"nosuch"}},
		{"storage parameter out of range", `
  - create_index: {name: idx_new, table: users, columns: [full_name], with: {fillfactor: 5}}`, 0, "with", []string{"fillfactor", "out of bounds"}},
		{"storage parameter of another method", `
  - create_index: {name: idx_new, table: users, columns: [full_name], with: {buffering: auto}}`, 0, "with", []string{"buffering"}},
		{"storage parameter of the wrong type", `
  - create_index: {name: idx_new, table: users, columns: [full_name], with: {fillfactor: high}}`, 0, "with", []string{"fillfactor", "high"}},
		{"a later create_index fails on its own", `
  - create_index: {name: idx_ok, table: users, columns: [{name: full_name, opclass: text_pattern_ops, order: desc}], include: [id], with: {fillfactor: 80}}
  - create_index: {name: idx_bad, table: users, columns: [{name: id, opclass: text_pattern_ops}]}`, 1, "columns[0].opclass", []string{"text_pattern_ops"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, "name: bad\noperations:"+tt.ops+"\n")
			m.File = "bad.yaml"
			facts, err := inspect(t, conn, m)
			if facts != nil {
				t.Errorf("Inspect returned facts with the error")
			}
			me := requireInvalid(t, err, append([]string{"bad.yaml", fmt.Sprintf("operations[%d] (create_index)", tt.op), `"` + tt.field + `"`}, tt.want...)...)
			if me.Op != tt.op || me.Field != tt.field {
				t.Errorf("Op %d Field %q, want %d %q (%v)", me.Op, me.Field, tt.op, tt.field, err)
			}
			if after := snapshot(t, conn); after != before {
				t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// What the server accepts passes, including an operator class that makes a
// column indexable by a method its type has no default class for, and
// columns added earlier in the migration; nothing changes.
func TestCreateIndexInspectValid(t *testing.T) {
	conn := setupDB(t)
	before := snapshot(t, conn)
	// NULLS NOT DISTINCT exists from PostgreSQL 15 on (refused before, see
	// TestCreateIndexNullsNotDistinctNeedsPG15).
	var version int
	if err := conn.QueryRow(context.Background(), "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		t.Fatal(err)
	}
	nnd := ""
	if version >= 150000 {
		nnd = "\n      nulls_not_distinct: true"
	}
	m := mustParse(t, `
name: ok
operations:
  - add_column: {table: plans, column: {name: attrs, type: jsonb}}
  - create_index:
      name: plans_name_idx
      table: plans
      columns: [{name: name, opclass: text_pattern_ops, order: desc, nulls: last}, {name: id, order: asc}]
      include: [price, attrs]
      unique: true`+nnd+`
      with: {fillfactor: 70, deduplicate_items: off}
      where: "active"
  - create_index: {name: plans_attrs_gin, table: plans, columns: [{name: attrs, opclass: jsonb_path_ops}], method: gin, with: {fastupdate: false}}
  - create_index: {name: events_at_brin, table: events, columns: [at], method: brin, with: {pages_per_range: 32, autosummarize: true}}
  - create_index: {name: users_full_name_hash, table: users, columns: [full_name], method: hash, with: {fillfactor: "90"}}
`)
	if _, err := inspect(t, conn, m); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, conn); after != before {
		t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
	}
}

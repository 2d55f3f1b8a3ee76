package migration_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/refit-dev/refit/migration"
)

func TestAddForeignKeyRejects(t *testing.T) {
	conn := constraintDB(t)
	const k = "add_foreign_key"
	runRejects(t, conn, []rejectCase{
		{"unknown field", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: authors, columns: [id]}, deferrable: true}`, 0, k, "deferrable", []string{"unknown field"}},
		{"unknown field in references", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: authors, columns: [id], match: full}}`, 0, k, "references.match", []string{"unknown field"}},
		{"missing name", `
  - add_foreign_key: {table: books, columns: [author_id], references: {table: authors, columns: [id]}}`, 0, k, "name", []string{"is required"}},
		{"missing columns", `
  - add_foreign_key: {table: books, name: fk, references: {table: authors, columns: [id]}}`, 0, k, "columns", []string{"at least one column"}},
		{"a column twice", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id, author_id], references: {table: wide_parent, columns: [a, b]}}`, 0, k, "columns[1]", []string{"twice"}},
		{"missing references", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id]}`, 0, k, "references.table", []string{"is required"}},
		{"missing referenced columns", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: authors}}`, 0, k, "references.columns", []string{"at least one column"}},
		{"columns that do not pair up", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: wide_parent, columns: [a, b]}}`, 0, k, "references.columns", []string{"2 columns for the 1"}},
		{"unknown action", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: authors, columns: [id]}, on_delete: nullify}`, 0, k, "on_delete", []string{"nullify", "set null"}},
		{"unknown update action", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: authors, columns: [id]}, on_update: drop}`, 0, k, "on_update", []string{"drop"}},
		{"missing table", `
  - add_foreign_key: {table: no_such_table, name: fk, columns: [author_id], references: {table: authors, columns: [id]}}`, 0, k, "table", []string{"no_such_table", "does not exist"}},
		{"missing referenced table", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: no_such_parent, columns: [id]}}`, 0, k, "references.table", []string{"no_such_parent", "does not exist"}},
		{"referenced table partitioned", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: parted, columns: [id]}}`, 0, k, "references.table", []string{"partitioned"}},
		{"missing column", `
  - add_foreign_key: {table: books, name: fk, columns: [no_such_column], references: {table: authors, columns: [id]}}`, 0, k, "columns[0]", []string{"no_such_column"}},
		{"missing referenced column", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: authors, columns: [no_such_column]}}`, 0, k, "references.columns[0]", []string{"no_such_column"}},
		{"referenced columns without a unique key", `
  - add_foreign_key: {table: books, name: fk, columns: [author_code], references: {table: authors, columns: [email]}}`, 0, k, "references.columns", []string{"no primary key or unique constraint", "email"}},
		{"referenced unique key deferrable", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: deferred_parent, columns: [id]}}`, 0, k, "references.columns", []string{"no primary key or unique"}},
		{"referenced unique index partial", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: partial_parent, columns: [id]}}`, 0, k, "references.columns", []string{"no primary key or unique"}},
		{"part of a referenced key", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: wide_parent, columns: [a]}}`, 0, k, "references.columns", []string{"no primary key or unique"}},
		{"referenced unique key this migration adds", `
  - add_unique: {table: authors, name: authors_email_key, columns: [email]}
  - add_foreign_key: {table: books, name: fk, columns: [author_code], references: {table: authors, columns: [email]}}`, 1, k, "references.columns", []string{"later migration"}},
		{"types that do not compare", `
  - add_foreign_key: {table: books, name: fk, columns: [title], references: {table: authors, columns: [id]}}`, 0, k, "columns", []string{"cannot be implemented"}},
		{"set null on a NOT NULL column", `
  - add_foreign_key: {table: dups, name: fk, columns: [n], references: {table: authors, columns: [id]}, on_delete: set null}`, 0, k, "on_delete", []string{"NOT NULL", "n"}},
		{"name the table already has", `
  - add_foreign_key: {table: books, name: books_price_ck, columns: [author_id], references: {table: authors, columns: [id]}}`, 0, k, "name", []string{"already has a constraint"}},
		{"the same foreign key twice in the file", `
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: authors, columns: [id]}}
  - add_foreign_key: {table: books, name: fk, columns: [author_code], references: {table: authors, columns: [code]}}`, 1, k, "name", []string{"also created by operations[0]"}},
		{"the name of a check of the file", `
  - add_check: {table: public.books, name: fk, expression: "price > -1"}
  - add_foreign_key: {table: books, name: fk, columns: [author_id], references: {table: authors, columns: [id]}}`, 1, k, "name", []string{"earlier operation"}},
		{"rows without a parent", `
  - add_foreign_key: {table: orphans, name: orphans_author_fk, columns: [author_id], references: {table: authors, columns: [id]}}`, 0, k, "columns",
			[]string{`2 rows violate foreign key "orphans_author_fk"`, "keys (2) (4)", "nothing was changed"}},
		{"rows without a parent, two columns", `
  - add_foreign_key: {table: wide_child, name: wide_fk, columns: [a, b], references: {table: wide_parent, columns: [a, b]}}`, 0, k, "columns",
			[]string{`1 rows violate foreign key "wide_fk"`, "keys (3)"}},
	})
}

func TestAddForeignKeyValid(t *testing.T) {
	conn := constraintDB(t)
	t.Run("plan", func(t *testing.T) {
		m := mustParse(t, "name: fk\noperations:\n  - add_foreign_key: {table: books, name: books_author_fk, columns: [author_id], references: {table: authors, columns: [id]}, on_delete: set null, on_update: CASCADE}\n")
		op := m.Operations[0]
		if got, want := op.Tables(), []migration.TableName{{Name: "books"}, {Name: "authors"}}; !reflect.DeepEqual(got, want) {
			t.Errorf("Tables %v, want %v", got, want)
		}
		needs := op.Needs()
		if len(needs) != 2 || needs[0].Kind != migration.NeedOwner || needs[0].Table.Name != "books" ||
			needs[1].Kind != migration.NeedReferences || needs[1].Table.Name != "authors" {
			t.Errorf("Needs %+v", needs)
		}
		p := inspectValid(t, conn, "\n  - add_foreign_key: {table: books, name: books_author_fk, columns: [author_id], references: {table: authors, columns: [id]}, on_delete: set null, on_update: CASCADE}")
		requireSQL(t, "expand", p.Expand, []string{
			`ALTER TABLE "public"."books" ADD CONSTRAINT "books_author_fk" FOREIGN KEY ("author_id") REFERENCES "public"."authors" ("id") ON DELETE SET NULL ON UPDATE CASCADE NOT VALID`})
		requireSQL(t, "post-backfill", p.PostBackfill, []string{})
		requireSQL(t, "contract", p.Contract, []string{`ALTER TABLE "public"."books" VALIDATE CONSTRAINT "books_author_fk"`})
		requireSQL(t, "rollback", p.Rollback, []string{`ALTER TABLE "public"."books" DROP CONSTRAINT IF EXISTS "books_author_fk"`})
		e := p.Expand[0]
		if !e.Transactional || e.Table.Name != "books" || !strings.HasPrefix(e.Lock, "SHARE ROW EXCLUSIVE") || !strings.Contains(e.Lock, "public.authors") {
			t.Errorf("expand step %+v", e)
		}
		if r := p.Rollback[0]; !strings.HasPrefix(r.Lock, "ACCESS EXCLUSIVE") || !strings.Contains(r.Lock, "public.authors") {
			t.Errorf("rollback step %+v", r)
		}
		v := p.Contract[0]
		if !v.Transactional || !v.LongRunning || !strings.HasPrefix(v.Lock, "SHARE UPDATE EXCLUSIVE") || !strings.Contains(v.Lock, "ROW SHARE") {
			t.Errorf("validate step %+v", v)
		}
		if got := reportViolations(t, conn, v); got != "" {
			t.Errorf("violations of a foreign key every row keeps: %q", got)
		}
	})
	t.Run("violations the validate step reports", func(t *testing.T) {
		m := mustParse(t, "name: v\noperations:\n  - add_foreign_key: {table: orphans, name: o_fk, columns: [author_id], references: {table: authors, columns: [id]}}\n")
		p := migration.BuildPlan(m, &migration.Facts{Tables: map[string]*migration.TableFacts{"orphans": {
			Name: migration.TableName{Schema: "public", Name: "orphans"}, Key: []migration.KeyColumn{{Name: "id", Type: "integer"}}}}})
		if got := reportViolations(t, conn, p.Contract[0]); got != `2 rows violate foreign key "o_fk", e.g. keys (2) (4)` {
			t.Errorf("report %q", got)
		}
	})
	for _, tc := range []struct{ name, ops string }{
		{"a unique index that is not a constraint", `
  - add_foreign_key: {table: books, name: fk, columns: [author_code], references: {table: authors, columns: [code]}}`},
		{"a key in another column order", `
  - sql: {up: "CREATE TABLE wide_child2 (id int PRIMARY KEY, a int, b int)"}
  - add_foreign_key: {table: wide_child2, name: fk, columns: [b, a], references: {table: wide_parent, columns: [b, a]}}`},
		{"a table referencing itself", `
  - add_foreign_key: {table: authors, name: fk, columns: [alt], references: {table: public.authors, columns: [id]}}`},
		{"NULLs reference nothing", `
  - add_foreign_key: {table: orphans, name: fk, columns: [author_code], references: {table: authors, columns: [code]}}`},
		{"a column an earlier operation adds", `
  - add_column: {table: books, column: {name: editor_id, type: bigint}, up: "author_id"}
  - add_foreign_key: {table: books, name: fk, columns: [editor_id], references: {table: authors, columns: [id]}, on_delete: "no action", on_update: restrict}`},
		{"a check and a foreign key of one name on two tables", `
  - add_check: {table: authors, name: c, expression: "id > 0"}
  - add_foreign_key: {table: books, name: c, columns: [author_id], references: {table: authors, columns: [id]}}`},
	} {
		t.Run(tc.name, func(t *testing.T) { inspectValid(t, conn, tc.ops) })
	}
}

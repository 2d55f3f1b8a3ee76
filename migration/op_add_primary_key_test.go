package migration_test

import (
	"strings"
	"testing"

	"github.com/refit-dev/refit/migration"
)

func TestAddPrimaryKeyRejects(t *testing.T) {
	conn := constraintDB(t)
	const k = "add_primary_key"
	runRejects(t, conn, []rejectCase{
		{"unknown field", `
  - add_primary_key: {table: nopk, columns: [a], unique: true}`, 0, k, "unique", []string{"unknown field"}},
		{"missing table", `
  - add_primary_key: {columns: [a]}`, 0, k, "table", []string{"is required"}},
		{"missing columns", `
  - add_primary_key: {table: nopk}`, 0, k, "columns", []string{"at least one column"}},
		{"missing table in the database", `
  - add_primary_key: {table: no_such_table, columns: [a]}`, 0, k, "table", []string{"does not exist"}},
		{"missing column", `
  - add_primary_key: {table: nopk, columns: [no_such_column]}`, 0, k, "columns[0]", []string{"no_such_column"}},
		{"a table that has a primary key", `
  - add_primary_key: {table: books, columns: [title]}`, 0, k, "table", []string{"already has a primary key", "books_pkey"}},
		{"a nullable column", `
  - add_primary_key: {table: nopk, columns: [a, b]}`, 0, k, "columns[1]", []string{"nullable", "set_not_null"}},
		{"a column this migration adds", `
  - add_column: {table: nopk, column: {name: d, type: int, nullable: false}, up: "a"}
  - add_primary_key: {table: nopk, columns: [d]}`, 1, k, "columns[0]", []string{"later migration"}},
		{"the default name taken", `
  - add_primary_key: {table: nopk2, columns: [a]}`, 0, k, "table", []string{"nopk2_pkey", "already exists", "give it another with name"}},
		{"a name taken", `
  - add_primary_key: {table: nopk, columns: [a], name: authors_code_key}`, 0, k, "name", []string{"already exists"}},
		{"two primary keys in the file", `
  - add_primary_key: {table: nopk, columns: [a], name: pk1}
  - add_primary_key: {table: public.nopk, columns: [c], name: pk2}`, 1, k, "table", []string{"also added by an earlier operation"}},
		{"two primary keys with the default name", `
  - add_primary_key: {table: nopk, columns: [a]}
  - add_primary_key: {table: nopk, columns: [c]}`, 1, k, "table", []string{`"nopk_pkey" is also created by operations[0]`}},
		{"existing duplicates", `
  - add_primary_key: {table: nopk, columns: [c]}`, 0, k, "columns", []string{`2 rows violate primary key "nopk_pkey", e.g. keys (1) (1)`, "nothing was changed"}},
	})
}

func TestAddPrimaryKeyValid(t *testing.T) {
	conn := constraintDB(t)
	p := inspectValid(t, conn, `
  - add_primary_key: {table: nopk, columns: [a]}`)
	requireSQL(t, "expand", p.Expand, []string{})
	requireSQL(t, "post-backfill", p.PostBackfill, []string{`CREATE UNIQUE INDEX CONCURRENTLY "nopk_pkey" ON "public"."nopk" ("a")`})
	requireSQL(t, "contract", p.Contract, []string{`ALTER TABLE "public"."nopk" ADD CONSTRAINT "nopk_pkey" PRIMARY KEY USING INDEX "nopk_pkey"`})
	requireSQL(t, "rollback", p.Rollback, []string{`DROP INDEX CONCURRENTLY IF EXISTS "public"."nopk_pkey"`})
	if b := p.PostBackfill[0]; b.Index != `"public"."nopk_pkey"` || b.Violations == nil || b.Transactional {
		t.Errorf("index step %+v", b)
	}
	if got := reportViolations(t, conn, p.PostBackfill[0]); got != "" {
		t.Errorf("violations of a unique column: %q", got)
	}

	// nopk2's default name is taken by a sequence.
	p = inspectValid(t, conn, `
  - add_primary_key: {table: nopk2, columns: [a], name: nopk2_key}`)
	requireSQL(t, "contract", p.Contract, []string{`ALTER TABLE "public"."nopk2" ADD CONSTRAINT "nopk2_key" PRIMARY KEY USING INDEX "nopk2_key"`})
}

func TestAddPrimaryKeyDefaultName(t *testing.T) {
	long := strings.Repeat("é", 31) // 62 bytes
	for _, tc := range []struct{ table, want string }{
		{"items", "items_pkey"},
		{"app.items", "items_pkey"},
		{long, strings.Repeat("é", 29) + "_pkey"},
	} {
		m := mustParse(t, "name: pk\noperations:\n  - add_primary_key: {table: "+tc.table+", columns: [id]}\n")
		got := m.Operations[0].(*migration.AddPrimaryKey).ConstraintName()
		if got != tc.want || len(got) > 63 {
			t.Errorf("%s: %q (%d bytes), want %q", tc.table, got, len(got), tc.want)
		}
	}
}

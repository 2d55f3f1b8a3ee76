package migration_test

import (
	"testing"

	"github.com/refit-dev/refit/migration"
)

func TestAddUniqueRejects(t *testing.T) {
	conn := constraintDB(t)
	const k = "add_unique"
	runRejects(t, conn, []rejectCase{
		{"unknown field", `
  - add_unique: {table: dups, name: u, columns: [n], where: "n > 0"}`, 0, k, "where", []string{"unknown field"}},
		{"missing name", `
  - add_unique: {table: dups, columns: [n]}`, 0, k, "name", []string{"is required"}},
		{"missing columns", `
  - add_unique: {table: dups, name: u}`, 0, k, "columns", []string{"at least one column"}},
		{"a column twice", `
  - add_unique: {table: dups, name: u, columns: [n, n]}`, 0, k, "columns[1]", []string{"twice"}},
		{"missing table", `
  - add_unique: {table: no_such_table, name: u, columns: [n]}`, 0, k, "table", []string{"no_such_table", "does not exist"}},
		{"missing column", `
  - add_unique: {table: dups, name: u, columns: [n, no_such_column]}`, 0, k, "columns[1]", []string{"no_such_column"}},
		{"name of an existing index", `
  - add_unique: {table: dups, name: authors_code_key, columns: [n]}`, 0, k, "name", []string{"authors_code_key", "already exists"}},
		{"name of an existing table", `
  - add_unique: {table: dups, name: books, columns: [n]}`, 0, k, "name", []string{"already exists"}},
		{"name of a check of the table", `
  - add_unique: {table: books, name: books_price_ck, columns: [title]}`, 0, k, "name", []string{"already has a constraint"}},
		{"name of an index of the file", `
  - create_index: {name: u, table: dups, columns: [n]}
  - add_unique: {table: dups, name: u, columns: [n]}`, 1, k, "name", []string{`index "u" is also created by operations[0]`}},
		{"the same name on the table spelled another way", `
  - add_unique: {table: dups, name: u, columns: [n]}
  - add_unique: {table: public.dups, name: u, columns: [id, n]}`, 1, k, "name", []string{"earlier operation"}},
		{"a type without a btree equality", `
  - add_unique: {table: authors, name: u, columns: [doc]}`, 0, k, "columns", []string{"json"}},
		{"existing duplicates", `
  - add_unique: {table: dups, name: dups_email_key, columns: [email]}`, 0, k, "columns",
			[]string{`3 rows violate unique "dups_email_key"`, "keys (1) (2) (6)", "nothing was changed"}},
		{"existing duplicates over two columns", `
  - add_unique: {table: dups, name: dups_email_sku_key, columns: [email, sku]}`, 0, k, "columns",
			[]string{`2 rows violate unique "dups_email_sku_key"`, "keys (1) (2)"}},
	})
}

func TestAddUniqueValid(t *testing.T) {
	conn := constraintDB(t)
	t.Run("plan", func(t *testing.T) {
		p := inspectValid(t, conn, `
  - add_unique: {table: dups, name: dups_n_key, columns: [n]}`)
		requireSQL(t, "expand", p.Expand, []string{})
		requireSQL(t, "post-backfill", p.PostBackfill, []string{`CREATE UNIQUE INDEX CONCURRENTLY "dups_n_key" ON "public"."dups" ("n")`})
		requireSQL(t, "contract", p.Contract, []string{`ALTER TABLE "public"."dups" ADD CONSTRAINT "dups_n_key" UNIQUE USING INDEX "dups_n_key"`})
		requireSQL(t, "rollback", p.Rollback, []string{`DROP INDEX CONCURRENTLY IF EXISTS "public"."dups_n_key"`})
		b := p.PostBackfill[0]
		if b.Transactional || !b.LongRunning || b.Index != `"public"."dups_n_key"` || b.Violations == nil || b.Lock == "" || b.Cost == "" {
			t.Errorf("index step %+v", b)
		}
		if got := reportViolations(t, conn, b); got != "" {
			t.Errorf("violations of a unique column: %q", got)
		}
		if c := p.Contract[0]; !c.Transactional || c.LongRunning || c.Lock == "" {
			t.Errorf("contract step %+v", c)
		}
	})
	t.Run("duplicates the index build reports", func(t *testing.T) {
		m := mustParse(t, "name: v\noperations:\n  - add_unique: {table: dups, name: u, columns: [email]}\n")
		p := migration.BuildPlan(m, &migration.Facts{Tables: map[string]*migration.TableFacts{"dups": {
			Name: migration.TableName{Schema: "public", Name: "dups"}, Key: []migration.KeyColumn{{Name: "id", Type: "integer"}}}}})
		if got := reportViolations(t, conn, p.PostBackfill[0]); got != `3 rows violate unique "u", e.g. keys (1) (2) (6)` {
			t.Errorf("report %q", got)
		}
	})
	for _, tc := range []struct{ name, ops string }{
		{"NULLs are not duplicates", `
  - add_unique: {table: authors, name: u, columns: [email]}`},
		{"two columns", `
  - add_unique: {table: dups, name: u, columns: [sku, n]}`},
		{"a column an earlier operation adds", `
  - add_column: {table: dups, column: {name: code, type: text}, up: "sku || id"}
  - add_unique: {table: dups, name: dups_code_key, columns: [code]}`},
		{"two unique keys of a table", `
  - add_unique: {table: dups, name: u1, columns: [n]}
  - add_unique: {table: dups, name: u2, columns: [id, n]}`},
	} {
		t.Run(tc.name, func(t *testing.T) { inspectValid(t, conn, tc.ops) })
	}
}

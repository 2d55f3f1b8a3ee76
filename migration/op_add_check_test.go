package migration_test

import (
	"strings"
	"testing"

	"github.com/refit-dev/refit/migration"
)

func TestAddCheckRejects(t *testing.T) {
	conn := constraintDB(t)
	runRejects(t, conn, []rejectCase{
		{"unknown field", `
  - add_check: {table: books, name: c1, expression: "price > 0", valid: true}`, 0, "add_check", "valid", []string{"unknown field"}},
		{"missing table", `
  - add_check: {name: c1, expression: "price > 0"}`, 0, "add_check", "table", []string{"is required"}},
		{"missing name", `
  - add_check: {table: books, expression: "price > 0"}`, 0, "add_check", "name", []string{"is required"}},
		{"missing expression", `
  - add_check: {table: books, name: c1}`, 0, "add_check", "expression", []string{"is required"}},
		{"not one expression", `
  - add_check: {table: books, name: c1, expression: "price > 0; DROP TABLE books"}`, 0, "add_check", "expression", []string{"one SQL expression"}},
		{"a comment", `
  - add_check: {table: books, name: c1, expression: "price > 0 -- always"}`, 0, "add_check", "expression", []string{"comments"}},
		{"name longer than PostgreSQL keeps", `
  - add_check: {table: books, name: ` + strings.Repeat("c", 64) + `, expression: "price > 0"}`, 0, "add_check", "name", []string{"truncate"}},
		{"missing table in the database", `
  - add_check: {table: no_such_table, name: c1, expression: "price > 0"}`, 0, "add_check", "table", []string{"no_such_table", "does not exist"}},
		{"name the table already has", `
  - add_check: {table: books, name: books_price_ck, expression: "price > 1"}`, 0, "add_check", "name", []string{"books_price_ck", "already has a constraint"}},
		{"name of the primary key", `
  - add_check: {table: books, name: books_pkey, expression: "price > 1"}`, 0, "add_check", "name", []string{"already has a constraint"}},
		{"missing column", `
  - add_check: {table: books, name: c1, expression: "no_such_column > 0"}`, 0, "add_check", "expression", []string{"no_such_column"}},
		{"column of another table", `
  - add_check: {table: books, name: c1, expression: "authors.id > 0"}`, 0, "add_check", "expression", []string{"authors"}},
		{"not a boolean", `
  - add_check: {table: books, name: c1, expression: "price + 1"}`, 0, "add_check", "expression", []string{"boolean"}},
		{"a subquery", `
  - add_check: {table: books, name: c1, expression: "price > (SELECT 1)"}`, 0, "add_check", "expression", []string{"subquery"}},
		{"an aggregate", `
  - add_check: {table: books, name: c1, expression: "max(price) > 0"}`, 0, "add_check", "expression", []string{"aggregate"}},
		{"a column added after it", `
  - add_check: {table: books, name: c1, expression: "discount >= 0"}
  - add_column: {table: books, column: {name: discount, type: numeric}}`, 0, "add_check", "expression", []string{"discount"}},
		{"the same check twice in the file", `
  - add_check: {table: books, name: c1, expression: "price > -1"}
  - add_check: {table: books, name: c1, expression: "price < 100"}`, 1, "add_check", "name", []string{"also created by operations[0]"}},
		{"the same name on the table spelled another way", `
  - add_check: {table: books, name: c1, expression: "price > -1"}
  - add_check: {table: public.books, name: c1, expression: "price < 100"}`, 1, "add_check", "name", []string{"earlier operation"}},
		{"the name of a unique constraint of the file", `
  - add_unique: {table: books, name: c1, columns: [title]}
  - add_check: {table: books, name: c1, expression: "price < 100"}`, 1, "add_check", "name", []string{"also created by operations[0]"}},
		{"existing rows that fail it", `
  - add_check: {table: books, name: price_positive, expression: "price > 0"}`, 0, "add_check", "expression",
			[]string{`1 rows violate check "price_positive"`, "keys (2)", "nothing was changed"}},
		{"existing rows that fail it, several", `
  - add_check: {table: books, name: short_title, expression: "length(title) < 2"}`, 0, "add_check", "expression",
			[]string{`3 rows violate check "short_title"`, "keys (1) (2) (3)"}},
		{"a column qualified with the table's name", `
  - add_check: {table: books, name: c1, expression: "books.price < 1000"}`, 0, "add_check", "expression", []string{"without the table's name"}},
	})
}

// Text that smuggles a statement past the static check (a migration built
// in code) is refused by the prepared probe, before it is spliced.
func TestAddCheckRejectsInjection(t *testing.T) {
	conn := constraintDB(t)
	before := snapshot(t, conn)
	for _, expr := range []string{
		"true); DROP TABLE books; SELECT (true",
		"true) NOT VALID; DROP TABLE books; ALTER TABLE books ADD CHECK (true",
	} {
		m := &migration.Migration{Name: "inj", File: "inj.yaml", Operations: []migration.Operation{
			&migration.AddCheck{TableRaw: "books", Table: migration.TableName{Name: "books"}, Name: "c1", Expression: expr},
		}}
		_, err := inspect(t, conn, m)
		requireInvalid(t, err, "inj.yaml", "operations[0] (add_check)", `"expression"`)
		if after := snapshot(t, conn); after != before {
			t.Fatalf("the database changed:\nbefore %s\nafter  %s", before, after)
		}
	}
}

func TestAddCheckValid(t *testing.T) {
	conn := constraintDB(t)
	t.Run("plan", func(t *testing.T) {
		p := inspectValid(t, conn, `
  - add_check: {table: books, name: price_cap, expression: "price < 1000 AND title <> ''"}`)
		requireSQL(t, "expand", p.Expand, []string{
			`ALTER TABLE "public"."books" ADD CONSTRAINT "price_cap" CHECK (price < 1000 AND title <> '') NOT VALID`})
		requireSQL(t, "post-backfill", p.PostBackfill, []string{})
		requireSQL(t, "contract", p.Contract, []string{`ALTER TABLE "public"."books" VALIDATE CONSTRAINT "price_cap"`})
		requireSQL(t, "rollback", p.Rollback, []string{`ALTER TABLE "public"."books" DROP CONSTRAINT IF EXISTS "price_cap"`})
		if s := p.Expand[0]; !s.Transactional || !strings.HasPrefix(s.Lock, "ACCESS EXCLUSIVE") || s.Cost == "" || s.Kind != "add_check" {
			t.Errorf("expand step %+v", s)
		}
		v := p.Contract[0]
		if !v.Transactional || !v.LongRunning || !strings.HasPrefix(v.Lock, "SHARE UPDATE EXCLUSIVE") || v.Violations == nil {
			t.Errorf("validate step %+v", v)
		}
		if got := reportViolations(t, conn, v); got != "" {
			t.Errorf("violations of a check every row passes: %q", got)
		}
		if len(p.Backfills) != 0 {
			t.Errorf("backfills %+v", p.Backfills)
		}
	})
	t.Run("violations the validate step reports", func(t *testing.T) {
		m := mustParse(t, "name: v\noperations:\n  - add_check: {table: books, name: c, expression: \"price > 5\"}\n")
		p := migration.BuildPlan(m, &migration.Facts{Tables: map[string]*migration.TableFacts{"books": {
			Name: migration.TableName{Schema: "public", Name: "books"}, Key: []migration.KeyColumn{{Name: "id", Type: "integer"}}}}})
		if got := reportViolations(t, conn, p.Contract[0]); got != `1 rows violate check "c", e.g. keys (2)` {
			t.Errorf("report %q", got)
		}
	})
	t.Run("over a column an earlier operation adds", func(t *testing.T) {
		// The new column has no values yet: nothing to check now; the
		// backfill's writes are checked by the NOT VALID constraint.
		p := inspectValid(t, conn, `
  - add_column: {table: books, column: {name: discount, type: numeric}, up: "price / 10"}
  - add_check: {table: books, name: discount_small, expression: "discount <= price"}`)
		requireSQL(t, "expand", p.Expand, []string{
			`ALTER TABLE "public"."books" ADD COLUMN "discount" numeric`,
			`ALTER TABLE "public"."books" ADD CONSTRAINT "discount_small" CHECK (discount <= price) NOT VALID`})
	})
	t.Run("NULL passes", func(t *testing.T) {
		inspectValid(t, conn, `
  - add_check: {table: books, name: has_author, expression: "author_id > 0"}`)
	})
	t.Run("quoted names", func(t *testing.T) {
		p := inspectValid(t, conn, `
  - add_check: {table: "Order Items", name: 'Positive "ID"', expression: '"Item ID" > 0'}`)
		requireSQL(t, "expand", p.Expand, []string{
			`ALTER TABLE "public"."Order Items" ADD CONSTRAINT "Positive ""ID""" CHECK ("Item ID" > 0) NOT VALID`})
	})
}

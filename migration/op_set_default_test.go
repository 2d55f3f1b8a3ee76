package migration_test

import (
	"strings"
	"testing"

	"github.com/refit-dev/refit/migration"
)

func TestSetDefaultParseRejects(t *testing.T) {
	metaRequireParseRejects(t, []metaParseReject{
		{"missing default", `
  - set_default: {table: t, column: c}`, 0, "default", []string{"required", "drop_default"}},
		{"missing column", `
  - set_default: {table: t, default: "1"}`, 0, "column", []string{"required"}},
		{"unknown field", `
  - set_default: {table: t, column: c, value: "1"}`, 0, "value", []string{"unknown field", "table, column, default"}},
		{"two statements", `
  - set_default: {table: t, column: c, default: "1; DROP TABLE t"}`, 0, "default", []string{"one SQL expression"}},
		{"a comment", `
  - set_default: {table: t, column: c, default: "1 -- one"}`, 0, "default", []string{"comments"}},
		{"unbalanced", `
  - set_default: {table: t, column: c, default: "(1"}`, 0, "default", []string{"unbalanced"}},
		{"twice on one column", `
  - set_default: {table: t, column: c, default: "1"}
  - set_default: {table: t, column: c, default: "2"}`, 1, "column", []string{"also created by operations[0]"}},
		{"with drop_default on the same column", `
  - set_default: {table: t, column: c, default: "1"}
  - drop_default: {table: t, column: c}`, 1, "column", []string{"also created by operations[0]"}},
	})
}

func TestSetDefaultPlan(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - set_default: {table: t, column: c, default: "1 + 1"}
  - set_default: {table: t, column: d, default: clock_timestamp()}
`)
	// Without a database the previous default is not known: no undo yet.
	p := migration.BuildPlan(m, nil)
	requireSQL(t, "expand", p.Expand, []string{
		`ALTER TABLE "t" ALTER COLUMN "c" SET DEFAULT (1 + 1)`,
		`ALTER TABLE "t" ALTER COLUMN "d" SET DEFAULT (clock_timestamp())`,
	})
	if len(p.Rollback) != 0 || !strings.Contains(p.Expand[0].Description, "once validated") {
		t.Errorf("rollback without facts = %v (%s)", sqls(p.Rollback), p.Expand[0].Description)
	}
	if len(p.Contract)+len(p.Backfills) != 0 {
		t.Errorf("set_default is metadata only at expand: %v %v", sqls(p.Contract), p.Backfills)
	}
	// With facts: the recorded default goes back, or none.
	facts := &migration.Facts{Recorded: map[int]string{0: "'x'::text"}}
	p = migration.BuildPlan(m, facts)
	requireSQL(t, "rollback", p.Rollback, []string{
		`ALTER TABLE "t" ALTER COLUMN "d" DROP DEFAULT`,
		`ALTER TABLE "t" ALTER COLUMN "c" SET DEFAULT ('x'::text)`,
	})
	checkRollback(t, p)
	metaRequireLocks(t, p)
}

func TestSetDefaultInspectRejects(t *testing.T) {
	conn := metaDB(t)
	metaRequireRejects(t, conn, []metaReject{
		{"table does not exist", `
  - set_default: {table: nope, column: c, default: "1"}`, 0, "table", []string{"does not exist"}},
		{"column does not exist", `
  - set_default: {table: notes, column: nope, default: "1"}`, 0, "column", []string{"nope", "does not exist"}},
		{"identity column", `
  - set_default: {table: notes, column: ident, default: "1"}`, 0, "column", []string{"identity column"}},
		{"generated column", `
  - set_default: {table: notes, column: gen, default: "1"}`, 0, "column", []string{"generated column"}},
		{"added by the migration", `
  - add_column: {table: notes, column: {name: fresh, type: int}}
  - set_default: {table: notes, column: fresh, default: "1"}`, 1, "column", []string{"added by this migration", "column.default"}},
		{"wrong type", `
  - set_default: {table: notes, column: n, default: "'abc'"}`, 0, "default", []string{"bigint"}},
		{"no assignment cast", `
  - set_default: {table: notes, column: n, default: "now()"}`, 0, "default", nil},
		{"a column reference", `
  - set_default: {table: notes, column: n, default: "id + 1"}`, 0, "default", []string{"id"}},
		{"a subquery", `
  - set_default: {table: notes, column: n, default: "(SELECT 1)"}`, 0, "default", nil},
		{"a sequence that does not exist", `
  - set_default: {table: notes, column: n, default: "nextval('no_such_seq')"}`, 0, "default", []string{"no_such_seq"}},
		{"a function that does not exist", `
  - set_default: {table: notes, column: maybe, default: "no_such_fn()"}`, 0, "default", []string{"no_such_fn"}},
	})
}

// Text that smuggles a second statement is refused by the server when the
// static check is bypassed (a migration built in code), before anything runs.
func TestSetDefaultInspectRejectsInjection(t *testing.T) {
	conn := metaDB(t)
	before := metaSnapshot(t, conn)
	for _, def := range []string{"1); DROP TABLE refs; SELECT (1", "1)); DROP TABLE refs; SELECT ((1", "1 AS bigint); DROP TABLE refs; SELECT CAST((1"} {
		m := &migration.Migration{Name: "inj", File: "inj.yaml", Operations: []migration.Operation{
			&migration.SetDefault{TableRaw: "notes", Table: migration.TableName{Name: "notes"}, Column: "n", Default: def},
		}}
		_, err := inspect(t, conn, m)
		requireInvalid(t, err, "inj.yaml", "operations[0] (set_default)", `"default"`)
		if after := metaSnapshot(t, conn); after != before {
			t.Fatalf("the database changed:\nbefore %s\nafter  %s", before, after)
		}
	}
}

func TestSetDefaultInspectValid(t *testing.T) {
	conn := metaDB(t)
	// Volatile defaults are fine; a later bulk_insert may leave the column
	// out (the database fills it); the sequence does not move.
	_, facts, p := metaInspect(t, conn, `
  - set_default: {table: notes, column: n, default: "nextval('note_seq') * 2"}
  - set_default: {table: notes, column: maybe, default: gen_random_uuid()::text}
  - set_default: {table: notes, column: body, default: "'empty'"}
  - set_default: {table: public.notes, column: tag, default: "'y' || 'z'"}
  - bulk_insert: {table: notes, rows: [{id: 11}]}`)
	want := map[int]string{0: "nextval('public.note_seq'::regclass)", 3: "'x'::text"}
	if len(facts.Recorded) != len(want) || facts.Recorded[0] != want[0] || facts.Recorded[3] != want[3] {
		t.Errorf("Recorded = %v, want %v", facts.Recorded, want)
	}
	requireSQL(t, "rollback", p.Rollback[1:], []string{ // [0] deletes the seeded row
		`ALTER TABLE "public"."notes" ALTER COLUMN "tag" SET DEFAULT ('x'::text)`,
		`ALTER TABLE "public"."notes" ALTER COLUMN "body" DROP DEFAULT`,
		`ALTER TABLE "public"."notes" ALTER COLUMN "maybe" DROP DEFAULT`,
		`ALTER TABLE "public"."notes" ALTER COLUMN "n" SET DEFAULT (nextval('public.note_seq'::regclass))`,
	})
	// Forward then undo leaves every default exactly as it was.
	q := `SELECT string_agg(a.attname || '=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-'), ', ' ORDER BY a.attnum)
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = 'notes'::regclass AND a.attnum > 0`
	before := metaApply(t, conn, q)
	var stmts []string
	for _, s := range p.Expand[:4] {
		stmts = append(stmts, s.SQL)
	}
	if after := metaApply(t, conn, q, stmts...); after == before || !strings.Contains(after, "body='empty'::text") {
		t.Errorf("after expand: %s", after)
	}
	for _, s := range p.Rollback[1:] {
		stmts = append(stmts, s.SQL)
	}
	if after := metaApply(t, conn, q, stmts...); after != before {
		t.Errorf("after undo:\n got  %s\n want %s", after, before)
	}
	// Without set_default the same bulk_insert is refused.
	metaRequireRejects(t, conn, []metaReject{{"bulk_insert leaving out a NOT NULL column", `
  - bulk_insert: {table: notes, rows: [{id: 11}]}`, 0, "rows[0]", []string{`"body"`}}})
}

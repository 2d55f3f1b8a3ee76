package migration_test

import (
	"strings"
	"testing"

	"github.com/refit-dev/refit/migration"
)

func TestDropDefaultParseRejects(t *testing.T) {
	metaRequireParseRejects(t, []metaParseReject{
		{"missing column", `
  - drop_default: {table: t}`, 0, "column", []string{"required"}},
		{"a default is not a field", `
  - drop_default: {table: t, column: c, default: "1"}`, 0, "default", []string{"unknown field", "table, column"}},
		{"bad table", `
  - drop_default: {table: "s.", column: c}`, 0, "table", []string{"empty name"}},
		{"twice on one column", `
  - drop_default: {table: t, column: c}
  - drop_default: {table: t, column: c}`, 1, "column", []string{"also created by operations[0]"}},
	})
}

func TestDropDefaultPlan(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - drop_default: {table: s.t, column: c}
`)
	p := migration.BuildPlan(m, nil)
	requireSQL(t, "expand", p.Expand, []string{`ALTER TABLE "s"."t" ALTER COLUMN "c" DROP DEFAULT`})
	if len(p.Rollback) != 0 {
		t.Errorf("rollback without facts = %v", sqls(p.Rollback))
	}
	p = migration.BuildPlan(m, &migration.Facts{Recorded: map[int]string{0: "nextval('s.seq'::regclass)"}})
	requireSQL(t, "rollback", p.Rollback, []string{`ALTER TABLE "s"."t" ALTER COLUMN "c" SET DEFAULT (nextval('s.seq'::regclass))`})
	checkRollback(t, p)
	metaRequireLocks(t, p)
}

func TestDropDefaultInspectRejects(t *testing.T) {
	conn := metaDB(t)
	metaRequireRejects(t, conn, []metaReject{
		{"table does not exist", `
  - drop_default: {table: nope, column: c}`, 0, "table", []string{"does not exist"}},
		{"column does not exist", `
  - drop_default: {table: notes, column: nope}`, 0, "column", []string{"does not exist"}},
		{"no default", `
  - drop_default: {table: notes, column: maybe}`, 0, "column", []string{"has no default", "nothing to do"}},
		{"identity column", `
  - drop_default: {table: notes, column: ident}`, 0, "column", []string{"identity column"}},
		{"generated column", `
  - drop_default: {table: notes, column: gen}`, 0, "column", []string{"generated column"}},
		{"added by the migration", `
  - add_column: {table: notes, column: {name: fresh, type: int, default: "1"}}
  - drop_default: {table: notes, column: fresh}`, 1, "column", []string{"added by this migration"}},
		// The database no longer fills the NOT NULL column: a later
		// bulk_insert must give it a value.
		{"a later bulk_insert leaving the column out", `
  - drop_default: {table: events, column: at}
  - bulk_insert: {table: events, rows: [{kind: x}]}`, 1, "rows[0]", []string{`"at"`}},
	})
}

func TestDropDefaultInspectValid(t *testing.T) {
	conn := metaDB(t)
	_, facts, p := metaInspect(t, conn, `
  - drop_default: {table: notes, column: n}
  - drop_default: {table: events, column: at}
  - bulk_insert: {table: events, rows: [{kind: x, at: "2024-01-02 03:04:05+00"}]}`)
	if facts.Recorded[0] != "nextval('public.note_seq'::regclass)" || facts.Recorded[1] != "now()" {
		t.Errorf("Recorded = %v", facts.Recorded)
	}
	requireSQL(t, "rollback", p.Rollback, []string{
		`ALTER TABLE "public"."events" ALTER COLUMN "at" SET DEFAULT (now())`,
		`ALTER TABLE "public"."notes" ALTER COLUMN "n" SET DEFAULT (nextval('public.note_seq'::regclass))`,
	})
	q := `SELECT string_agg(pg_get_expr(adbin, adrelid), ', ' ORDER BY adrelid::regclass::text, adnum) FROM pg_attrdef WHERE adrelid IN ('notes'::regclass, 'events'::regclass)`
	before := metaApply(t, conn, q)
	stmts := append(sqls(p.Expand[:2]), sqls(p.Rollback)...)
	if after := metaApply(t, conn, q, stmts...); after != before {
		t.Errorf("after expand and undo:\n got  %s\n want %s", after, before)
	}
	if after := metaApply(t, conn, q, sqls(p.Expand[:2])...); strings.Contains(after, "nextval") {
		t.Errorf("after expand: %s", after)
	}
}

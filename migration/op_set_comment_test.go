package migration_test

import (
	"reflect"
	"testing"

	"github.com/refit-dev/refit/migration"
)

func TestSetCommentParse(t *testing.T) {
	str := func(s string) *string { return &s }
	for _, tt := range []struct {
		body string
		want *string
	}{
		{`{table: t, comment: "it's here"}`, str("it's here")},
		{`{table: t, comment: null}`, nil},
		{`{table: t, comment: ~}`, nil},
		{`{table: t, column: c, comment: ""}`, str("")},
		{`{table: t, column: c, comment: 12}`, str("12")},
		{"\n      table: t\n      comment: |\n        two\n        lines", str("two\nlines\n")},
	} {
		m := mustParse(t, "name: m\noperations:\n  - set_comment: "+tt.body+"\n")
		o := m.Operations[0].(*migration.SetComment)
		if !reflect.DeepEqual(o.Comment, tt.want) {
			t.Errorf("%s: Comment = %v, want %v", tt.body, o.Comment, tt.want)
		}
	}
}

func TestSetCommentParseRejects(t *testing.T) {
	metaRequireParseRejects(t, []metaParseReject{
		{"missing comment", `
  - set_comment: {table: t}`, 0, "comment", []string{"required", "null to clear"}},
		{"missing table", `
  - set_comment: {comment: x}`, 0, "table", []string{"required"}},
		{"unknown field", `
  - set_comment: {table: t, text: x}`, 0, "text", []string{"unknown field", "table, column, comment"}},
		{"NUL byte", `
  - set_comment: {table: t, comment: "a\0b"}`, 0, "comment", []string{"NUL"}},
		{"bad column", `
  - set_comment: {table: t, column: "` + "\\0" + `", comment: x}`, 0, "column", []string{"NUL"}},
		{"the table twice", `
  - set_comment: {table: t, comment: a}
  - set_comment: {table: t, comment: b}`, 1, "table", []string{"also created by operations[0]"}},
		{"a column twice", `
  - set_comment: {table: t, column: c, comment: a}
  - set_comment: {table: t, column: c, comment: null}`, 1, "column", []string{"also created by operations[0]"}},
	})
}

func TestSetCommentPlan(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - set_comment: {table: t, comment: "it's"}
  - set_comment: {table: t, column: c, comment: null}
`)
	p := migration.BuildPlan(m, nil)
	requireSQL(t, "expand", p.Expand, []string{`COMMENT ON TABLE "t" IS 'it''s'`, `COMMENT ON COLUMN "t"."c" IS NULL`})
	if len(p.Rollback) != 0 {
		t.Errorf("rollback without facts = %v", sqls(p.Rollback))
	}
	p = migration.BuildPlan(m, &migration.Facts{Recorded: map[int]string{1: "was 'here'"}})
	requireSQL(t, "rollback", p.Rollback, []string{`COMMENT ON COLUMN "t"."c" IS 'was ''here'''`, `COMMENT ON TABLE "t" IS NULL`})
	checkRollback(t, p)
	metaRequireLocks(t, p)
}

func TestSetCommentInspectRejects(t *testing.T) {
	conn := metaDB(t)
	metaRequireRejects(t, conn, []metaReject{
		{"table does not exist", `
  - set_comment: {table: nope, comment: x}`, 0, "table", []string{"does not exist"}},
		{"column does not exist", `
  - set_comment: {table: notes, column: nope, comment: x}`, 0, "column", []string{"nope", "does not exist"}},
	})
}

func TestSetCommentInspectValid(t *testing.T) {
	conn := metaDB(t)
	_, facts, p := metaInspect(t, conn, `
  - set_comment: {table: notes, comment: "new \\ text"}
  - set_comment: {table: notes, column: body, comment: null}
  - set_comment: {table: notes, column: maybe, comment: "was none"}
  - add_column: {table: notes, column: {name: fresh, type: int}}
  - set_comment: {table: notes, column: fresh, comment: "new column"}
  - set_comment: {table: users, comment: "people"}`)
	want := map[int]string{0: "the notes", 1: "what it's about"}
	if !reflect.DeepEqual(facts.Recorded, want) {
		t.Errorf("Recorded = %v, want %v", facts.Recorded, want)
	}
	q := `SELECT coalesce(obj_description('notes'::regclass, 'pg_class'), '-') || ' | ' ||
		coalesce(col_description('notes'::regclass, 2), '-') || ' | ' || coalesce(col_description('notes'::regclass, 5), '-') || ' | ' ||
		coalesce(obj_description('users'::regclass, 'pg_class'), '-')`
	before := metaApply(t, conn, q)
	if before != "the notes | what it's about | - | -" {
		t.Fatalf("comments before = %s", before)
	}
	if got := metaApply(t, conn, q, sqls(p.Expand)...); got != `new \ text | - | was none | people` {
		t.Errorf("after expand: %s", got)
	}
	if got := metaApply(t, conn, q, append(sqls(p.Expand), sqls(p.Rollback)...)...); got != before {
		t.Errorf("after expand and undo: %s, want %s", got, before)
	}
	checkRollback(t, p)
}

package migration_test

import (
	"strings"
	"testing"

	"github.com/refit-dev/refit/migration"
)

func TestDropConstraintParseRejects(t *testing.T) {
	metaRequireParseRejects(t, []metaParseReject{
		{"missing name", `
  - drop_constraint: {table: t}`, 0, "name", []string{"required"}},
		{"missing table", `
  - drop_constraint: {name: c}`, 0, "table", []string{"required"}},
		{"unknown field", `
  - drop_constraint: {table: t, name: c, cascade: true}`, 0, "cascade", []string{"unknown field", "table, name"}},
		{"twice", `
  - drop_constraint: {table: t, name: c}
  - drop_constraint: {table: t, name: c}`, 1, "name", []string{"also created by operations[0]"}},
		{"renamed and dropped", `
  - rename_constraint: {table: t, from: c, to: d}
  - drop_constraint: {table: t, name: c}`, 1, "name", []string{"also created by operations[0]"}},
	})
}

func TestDropConstraintPlan(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - drop_constraint: {table: t, name: "Price > 0"}
  - set_not_null: {table: t, column: c}
`)
	p := migration.BuildPlan(m, nil)
	if len(p.Expand)+len(p.PostBackfill)+len(p.Rollback) != 0 || len(p.Contract) != 5 {
		t.Fatalf("plan = %v %v %v", sqls(p.Expand), sqls(p.Contract), sqls(p.Rollback))
	}
	// After the constraints the migration enforces.
	s := p.Contract[4]
	if s.SQL != `ALTER TABLE "t" DROP CONSTRAINT IF EXISTS "Price > 0"` || s.Op != 0 || !s.Transactional || s.BreaksSync {
		t.Errorf("contract[4] = %+v", s)
	}
	if !strings.HasPrefix(s.Lock, "ACCESS EXCLUSIVE") || !strings.Contains(s.Lock, "referenced table") {
		t.Errorf("Lock = %q", s.Lock)
	}
	metaRequireLocks(t, p)
	if got := m.Operations[0].Tables(); len(got) != 1 || got[0] != (migration.TableName{Name: "t"}) {
		t.Errorf("Tables() = %v", got)
	}
}

func TestDropConstraintInspectRejects(t *testing.T) {
	conn := metaDB(t)
	metaRequireRejects(t, conn, []metaReject{
		{"table does not exist", `
  - drop_constraint: {table: nope, name: c}`, 0, "table", []string{"does not exist"}},
		{"constraint does not exist", `
  - drop_constraint: {table: notes, name: nope}`, 0, "name", []string{`constraint "nope" does not exist on public.notes`}},
		{"constraint of another table", `
  - drop_constraint: {table: notes, name: refs_note_fk}`, 0, "name", []string{"does not exist"}},
		{"a primary key a foreign key references", `
  - drop_constraint: {table: notes, name: notes_pkey}`, 0, "name", []string{"depend on it", "constraint refs_note_fk on table refs"}},
		{"the foreign key dropped after the key it references", `
  - drop_constraint: {table: notes, name: notes_pkey}
  - drop_constraint: {table: refs, name: refs_note_fk}`, 0, "name", []string{"refs_note_fk", "before this one"}},
		{"the primary key of a table the migration backfills", `
  - add_column: {table: users, column: {name: up, type: text}, up: upper(full_name)}
  - drop_constraint: {table: users, name: users_pkey}`, 1, "name", []string{"primary key", "key this migration backfills", "later migration"}},
		{"the unique key of a table the migration backfills", `
  - add_column: {table: uk2, column: {name: up, type: text}, up: upper(v)}
  - drop_constraint: {table: uk2, name: uk2_code_key}`, 1, "name", []string{"unique", "key this migration backfills"}},
		{"the replica identity", `
  - drop_constraint: {table: ric, name: ric_a_key}`, 0, "name", []string{"REPLICA IDENTITY"}},
	})
}

func TestDropConstraintInspectValid(t *testing.T) {
	conn := metaDB(t)
	// A foreign key, then the key it referenced; a check; a unique key
	// of a table the migration does not backfill.
	_, _, p := metaInspect(t, conn, `
  - drop_constraint: {table: refs, name: refs_note_fk}
  - drop_constraint: {table: notes, name: notes_pkey}
  - drop_constraint: {table: notes, name: body_len}
  - drop_constraint: {table: uk2, name: uk2_code_key}
  - add_column: {table: users, column: {name: up, type: text}, up: upper(full_name)}`)
	requireSQL(t, "contract", p.Contract, []string{
		`ALTER TABLE "public"."refs" DROP CONSTRAINT IF EXISTS "refs_note_fk"`,
		`ALTER TABLE "public"."notes" DROP CONSTRAINT IF EXISTS "notes_pkey"`,
		`ALTER TABLE "public"."notes" DROP CONSTRAINT IF EXISTS "body_len"`,
		`ALTER TABLE "public"."uk2" DROP CONSTRAINT IF EXISTS "uk2_code_key"`,
	})
	got := metaApply(t, conn, `SELECT count(*)::text FROM pg_constraint WHERE conname IN ('refs_note_fk', 'notes_pkey', 'body_len', 'uk2_code_key')`, sqls(p.Contract)...)
	if got != "0" {
		t.Errorf("%s constraints left", got)
	}
}

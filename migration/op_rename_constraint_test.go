package migration_test

import (
	"testing"

	"github.com/refit-dev/refit/migration"
)

func TestRenameConstraintParseRejects(t *testing.T) {
	metaRequireParseRejects(t, []metaParseReject{
		{"missing from", `
  - rename_constraint: {table: t, to: b}`, 0, "from", []string{"required"}},
		{"missing to", `
  - rename_constraint: {table: t, from: a}`, 0, "to", []string{"required"}},
		{"same name", `
  - rename_constraint: {table: t, from: a, to: a}`, 0, "to", []string{"same name"}},
		{"unknown field", `
  - rename_constraint: {table: t, from: a, name: b}`, 0, "name", []string{"unknown field", "table, from, to"}},
		{"renamed twice", `
  - rename_constraint: {table: t, from: a, to: b}
  - rename_constraint: {table: t, from: a, to: c}`, 1, "from", []string{"also created by operations[0]"}},
		{"two renamed to one name", `
  - rename_constraint: {table: t, from: a, to: c}
  - rename_constraint: {table: t, from: b, to: c}`, 1, "to", []string{`constraint "c" is also created by operations[0]`}},
	})
}

func TestRenameConstraintPlan(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - rename_constraint: {table: t, from: "old name", to: new_name}
`)
	p := migration.BuildPlan(m, nil)
	requireSQL(t, "contract", p.Contract, []string{`ALTER TABLE "t" RENAME CONSTRAINT "old name" TO "new_name"`})
	if s := p.Contract[0]; !s.Transactional || s.BreaksSync || len(p.Expand)+len(p.Rollback) != 0 {
		t.Errorf("plan = %+v %v %v", s, sqls(p.Expand), sqls(p.Rollback))
	}
	metaRequireLocks(t, p)
}

func TestRenameConstraintInspectRejects(t *testing.T) {
	conn := metaDB(t)
	metaRequireRejects(t, conn, []metaReject{
		{"table does not exist", `
  - rename_constraint: {table: nope, from: a, to: b}`, 0, "table", []string{"does not exist"}},
		{"from does not exist", `
  - rename_constraint: {table: notes, from: nope, to: b}`, 0, "from", []string{`constraint "nope" does not exist on public.notes`}},
		{"to exists", `
  - rename_constraint: {table: plans, from: plans_price_check, to: plans_pkey}`, 0, "to", []string{`already has a constraint named "plans_pkey"`}},
		{"to is an index the renamed index would clash with", `
  - rename_constraint: {table: users, from: users_pkey, to: users_full_name_idx}`, 0, "to", []string{"relation", "renames its index"}},
		{"to is created by an earlier operation", `
  - sql: {up: "ALTER TABLE notes ADD CONSTRAINT made CHECK (id > 0)"}
  - rename_constraint: {table: notes, from: body_len, to: made}`, 1, "to", []string{"made"}},
	})
}

func TestRenameConstraintInspectValid(t *testing.T) {
	conn := metaDB(t)
	_, _, p := metaInspect(t, conn, `
  - rename_constraint: {table: plans, from: plans_price_check, to: price_not_negative}
  - rename_constraint: {table: users, from: users_pkey, to: users_pk}
  - rename_constraint: {table: notes, from: body_len, to: notes_tag_idx}`) // a check has no index: any relation name goes
	requireSQL(t, "contract", p.Contract, []string{
		`ALTER TABLE "public"."plans" RENAME CONSTRAINT "plans_price_check" TO "price_not_negative"`,
		`ALTER TABLE "public"."users" RENAME CONSTRAINT "users_pkey" TO "users_pk"`,
		`ALTER TABLE "public"."notes" RENAME CONSTRAINT "body_len" TO "notes_tag_idx"`,
	})
	got := metaApply(t, conn, `SELECT string_agg(conname, ',' ORDER BY conname) || ' ' || to_regclass('users_pk')::text FROM pg_constraint WHERE conname IN ('price_not_negative', 'users_pk', 'notes_tag_idx')`, sqls(p.Contract)...)
	if got != "notes_tag_idx,price_not_negative,users_pk users_pk" {
		t.Errorf("after the renames: %s", got)
	}
}

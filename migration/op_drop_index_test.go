package migration_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/refit-dev/refit/migration"
)

func TestDropIndexParseRejects(t *testing.T) {
	metaRequireParseRejects(t, []metaParseReject{
		{"missing name", `
  - drop_index: {table: t}`, 0, "name", []string{"required"}},
		{"unknown field", `
  - drop_index: {name: i, concurrently: true}`, 0, "concurrently", []string{"unknown field", "name, table"}},
		{"bad table", `
  - drop_index: {name: i, table: " "}`, 0, "table", []string{"required"}},
		{"name too long", `
  - drop_index: {name: s.` + strings.Repeat("a", 64) + `}`, 0, "name", []string{"longer than 63"}},
		{"twice", `
  - drop_index: {name: i}
  - drop_index: {name: i, table: t}`, 1, "name", []string{"also created by operations[0]"}},
	})
}

func TestDropIndexPlan(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - drop_index: {name: idx_a}
  - drop_index: {name: idx_b, table: s.t}
  - drop_index: {name: other.idx_c}
`)
	p := migration.BuildPlan(m, nil)
	requireSQL(t, "contract", p.Contract, []string{
		`DROP INDEX CONCURRENTLY IF EXISTS "idx_a"`,
		`DROP INDEX CONCURRENTLY IF EXISTS "s"."idx_b"`,
		`DROP INDEX CONCURRENTLY IF EXISTS "other"."idx_c"`,
	})
	for _, s := range p.Contract {
		if s.Transactional || s.Index != "" || s.BreaksSync || s.Lock == "" {
			t.Errorf("step %+v: want outside a transaction, no index build", s)
		}
	}
	if len(p.Expand)+len(p.Rollback) != 0 {
		t.Errorf("plan = %v %v", sqls(p.Expand), sqls(p.Rollback))
	}
	// Validation resolved the first to its schema.
	p = migration.BuildPlan(m, &migration.Facts{Recorded: map[int]string{0: `"public"."idx_a"`}})
	if p.Contract[0].SQL != `DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_a"` {
		t.Errorf("contract[0] = %s", p.Contract[0].SQL)
	}
	// Scheduling and privileges see the table only when the file names it.
	if got := m.Operations[0].Tables(); got != nil || m.Operations[0].Needs() != nil {
		t.Errorf("without table: Tables() = %v, Needs() = %v", got, m.Operations[0].Needs())
	}
	if got := m.Operations[1].Tables(); !reflect.DeepEqual(got, []migration.TableName{{Schema: "s", Name: "t"}}) {
		t.Errorf("with table: Tables() = %v", got)
	}
	if n := m.Operations[1].Needs(); len(n) != 1 || n[0].Kind != migration.NeedOwner {
		t.Errorf("with table: Needs() = %+v", n)
	}
}

func TestDropIndexInspectRejects(t *testing.T) {
	conn := metaDB(t)
	metaRequireRejects(t, conn, []metaReject{
		{"index does not exist", `
  - drop_index: {name: nope}`, 0, "name", []string{"index nope does not exist"}},
		{"not an index", `
  - drop_index: {name: users}`, 0, "name", []string{"public.users is not an index"}},
		{"table does not exist", `
  - drop_index: {name: notes_tag_idx, table: nope}`, 0, "table", []string{"does not exist"}},
		{"index on another table", `
  - drop_index: {name: notes_tag_idx, table: users}`, 0, "name", []string{"is on table public.notes, not on public.users"}},
		{"backs a primary key", `
  - drop_index: {name: users_pkey}`, 0, "name", []string{`backs the primary key constraint "users_pkey"`, "drop_constraint: {table: public.users, name: users_pkey}"}},
		{"backs a unique constraint", `
  - drop_index: {name: uk2_code_key, table: uk2}`, 0, "name", []string{"unique constraint", "drop_constraint"}},
		{"a foreign key needs it", `
  - drop_index: {name: ukey_code}`, 0, "name", []string{"depend on it", "constraint uref_code_fkey on table uref"}},
		{"the replica identity", `
  - drop_index: {name: ri_a}`, 0, "name", []string{"REPLICA IDENTITY"}},
		{"the key of a table the migration backfills", `
  - add_column: {table: incl, column: {name: up, type: text}, up: upper(extra)}
  - drop_index: {name: incl_code, table: incl}`, 1, "name", []string{"key this migration backfills"}},
		{"a partitioned table's index", `
  - drop_index: {name: parted_at_idx}`, 0, "name", []string{"partitioned"}},
		{"a partition's index", `
  - drop_index: {name: parted_2026_at_idx}`, 0, "name", []string{"partition of a partitioned index"}},
	})
}

func TestDropIndexInspectValid(t *testing.T) {
	conn := metaDB(t)
	m, facts, p := metaInspect(t, conn, `
  - drop_index: {name: users_full_name_idx}
  - drop_index: {name: notes_tag_idx, table: public.notes}
  - drop_index: {name: incl_code}`)
	want := map[int]string{0: `"public"."users_full_name_idx"`, 1: `"public"."notes_tag_idx"`, 2: `"public"."incl_code"`}
	if !reflect.DeepEqual(facts.Recorded, want) {
		t.Errorf("Recorded = %v, want %v", facts.Recorded, want)
	}
	requireSQL(t, "contract", p.Contract, []string{
		`DROP INDEX CONCURRENTLY IF EXISTS "public"."users_full_name_idx"`,
		`DROP INDEX CONCURRENTLY IF EXISTS "public"."notes_tag_idx"`,
		`DROP INDEX CONCURRENTLY IF EXISTS "public"."incl_code"`,
	})
	if got := m.Operations[0].Tables(); got != nil {
		t.Errorf("Tables() = %v", got)
	}
}

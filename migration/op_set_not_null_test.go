package migration_test

import (
	"context"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/refit-dev/refit/migration"
)

func TestSetNotNullParseRejects(t *testing.T) {
	metaRequireParseRejects(t, []metaParseReject{
		{"missing column", `
  - set_not_null: {table: t}`, 0, "column", []string{"required"}},
		{"missing table", `
  - set_not_null: {column: c}`, 0, "table", []string{"required"}},
		{"unknown field", `
  - set_not_null: {table: t, colum: c}`, 0, "colum", []string{"unknown field", "table, column"}},
		{"name too long", `
  - set_not_null: {table: t, column: ` + strings.Repeat("c", 64) + `}`, 0, "column", []string{"longer than 63"}},
		{"twice on one column", `
  - set_not_null: {table: t, column: c}
  - set_not_null: {table: t, column: c}`, 1, "column", []string{"also created by operations[0]"}},
		{"with drop_not_null on the same column", `
  - drop_not_null: {table: t, column: c}
  - set_not_null: {table: t, column: c}`, 1, "column", []string{"also created by operations[0]"}},
	})
}

func TestSetNotNullPlan(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - drop_column: {table: t, column: old}
  - set_not_null: {table: t, column: c}
`)
	for _, facts := range []*migration.Facts{nil, {Tables: map[string]*migration.TableFacts{"public.t": {
		Name: migration.TableName{Schema: "public", Name: "t"}, Key: []migration.KeyColumn{{Name: "id", Type: "int"}}}},
		Aliases: map[string]string{"t": "public.t"}}} {
		p := migration.BuildPlan(m, facts)
		if len(p.Expand)+len(p.PostBackfill)+len(p.Rollback) != 0 {
			t.Errorf("set_not_null changes nothing before contract: %v %v %v", sqls(p.Expand), sqls(p.PostBackfill), sqls(p.Rollback))
		}
		q := `"t"`
		if facts != nil {
			q = `"public"."t"`
		}
		patterns := []string{
			`^ALTER TABLE ` + q + ` ADD CONSTRAINT "refit_nn_t_c" CHECK \("c" IS NOT NULL\) NOT VALID$`,
			`^ALTER TABLE ` + q + ` VALIDATE CONSTRAINT "refit_nn_t_c"$`,
			`^ALTER TABLE ` + q + ` ALTER COLUMN "c" SET NOT NULL$`,
			`^ALTER TABLE ` + q + ` DROP CONSTRAINT IF EXISTS "refit_nn_t_c"$`,
			`^ALTER TABLE ` + q + ` DROP COLUMN IF EXISTS "old"$`, // enforcement first
		}
		if len(p.Contract) != len(patterns) {
			t.Fatalf("contract = %v", sqls(p.Contract))
		}
		for i, pat := range patterns {
			if !regexp.MustCompile(pat).MatchString(p.Contract[i].SQL) {
				t.Errorf("contract[%d] = %s, want %s", i, p.Contract[i].SQL, pat)
			}
			if s := p.Contract[i]; i < 4 && (s.Op != 1 || s.Kind != "set_not_null" || !s.Transactional || s.BreaksSync) {
				t.Errorf("contract[%d] = %+v", i, s)
			}
		}
		v := p.Contract[1].Violations
		if v == nil {
			t.Fatalf("the VALIDATE step has no Violations")
		}
		for i, s := range p.Contract[:4] {
			if (i == 1) != s.LongRunning || (i != 1 && s.Violations != nil) {
				t.Errorf("contract[%d]: LongRunning %v Violations %v", i, s.LongRunning, s.Violations)
			}
		}
		wantKey := "r.ctid"
		if facts != nil {
			wantKey = `r."id"`
		}
		if !strings.Contains(v.Count, `r."c" IS NULL`) || !strings.Contains(v.Sample, wantKey) {
			t.Errorf("Violations = %+v", v)
		}
		metaRequireLocks(t, p)
	}
}

// The steps are add_column's NOT NULL steps, plus the report of the rows
// that break them; add_column's own steps have none (unchanged).
func TestSetNotNullSameStepsAsAddColumn(t *testing.T) {
	add := migration.BuildPlan(mustParse(t, `
name: a
operations:
  - add_column: {table: t, column: {name: c, type: int, nullable: false}, up: "1"}
`), nil).Contract
	set := migration.BuildPlan(mustParse(t, `
name: s
operations:
  - set_not_null: {table: t, column: c}
`), nil).Contract
	if len(add) != len(set) {
		t.Fatalf("add_column %v, set_not_null %v", sqls(add), sqls(set))
	}
	for i := range add {
		if add[i].Violations != nil {
			t.Errorf("add_column contract[%d] has Violations", i)
		}
		a, s := add[i], set[i]
		a.Kind, s.Kind, s.Violations = "", "", nil
		if !reflect.DeepEqual(a, s) {
			t.Errorf("contract[%d]:\n add_column   %+v\n set_not_null %+v", i, a, s)
		}
	}
}

func TestSetNotNullInspectRejects(t *testing.T) {
	conn := metaDB(t)
	metaRequireRejects(t, conn, []metaReject{
		{"table does not exist", `
  - set_not_null: {table: nope, column: c}`, 0, "table", []string{"nope", "does not exist"}},
		{"column does not exist", `
  - set_not_null: {table: notes, column: nope}`, 0, "column", []string{"nope", "does not exist"}},
		{"already NOT NULL", `
  - set_not_null: {table: notes, column: body}`, 0, "column", []string{"already NOT NULL", "nothing to do"}},
		{"added by the migration", `
  - add_column: {table: notes, column: {name: fresh, type: int}}
  - set_not_null: {table: notes, column: fresh}`, 1, "column", []string{"added by this migration", "nullable: false"}},
		{"existing NULLs", `
  - set_not_null: {table: notes, column: maybe}`, 0, "column", []string{`2 rows violate NOT NULL on column "maybe"`, "e.g. keys (1) (3)", "nothing was changed"}},
		{"existing NULLs, table spelled with its schema", `
  - set_not_null: {table: public.notes, column: maybe}`, 0, "column", []string{"2 rows", "(1) (3)"}},
	})
}

func TestSetNotNullInspectValid(t *testing.T) {
	conn := metaDB(t)
	_, _, p := metaInspect(t, conn, `
  - set_not_null: {table: notes, column: n}
  - set_not_null: {table: refs, column: note_id}`)
	if len(p.Contract) != 8 {
		t.Fatalf("contract = %v", sqls(p.Contract))
	}
	ctx := context.Background()
	v := p.Contract[1].Violations
	if report, err := v.Report(ctx, conn); err != nil || report != "" {
		t.Fatalf("Report before a NULL = %q, %v", report, err)
	}
	if !strings.Contains(v.Sample, `"public"."notes"`) || !strings.Contains(v.Sample, `r."id"`) {
		t.Errorf("Violations keyed on the table's primary key: %+v", v)
	}
	// A NULL written after validation is named when VALIDATE fails on it.
	if _, err := conn.Exec(ctx, "INSERT INTO notes (id, body, n) VALUES (42, 'late', NULL)"); err != nil {
		t.Fatal(err)
	}
	report, err := v.Report(ctx, conn)
	if err != nil || !strings.Contains(report, `1 rows violate NOT NULL on column "n", e.g. keys (42)`) {
		t.Errorf("Report = %q, %v", report, err)
	}
	// The steps themselves run: SET NOT NULL is proven by the check.
	got := metaApply(t, conn, "SELECT attnotnull::text FROM pg_attribute WHERE attrelid = 'refs'::regclass AND attname = 'note_id'", sqls(p.Contract[4:])...)
	if got != "true" {
		t.Errorf("refs.note_id NOT NULL = %s", got)
	}
}

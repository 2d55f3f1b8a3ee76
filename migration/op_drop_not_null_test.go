package migration_test

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/sqlstate"
)

func TestDropNotNullParseRejects(t *testing.T) {
	metaRequireParseRejects(t, []metaParseReject{
		{"missing column", `
  - drop_not_null: {table: t}`, 0, "column", []string{"required"}},
		{"blank table", `
  - drop_not_null: {table: " ", column: c}`, 0, "table", []string{"required"}},
		{"unknown field", `
  - drop_not_null: {table: t, column: c, nullable: true}`, 0, "nullable", []string{"unknown field"}},
		{"twice on one column", `
  - drop_not_null: {table: t, column: c}
  - drop_not_null: {table: t, column: c}`, 1, "column", []string{"also created by operations[0]"}},
	})
}

func TestDropNotNullPlan(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - drop_not_null: {table: t, column: c}
`)
	p := migration.BuildPlan(m, nil)
	requireSQL(t, "expand", p.Expand, []string{`ALTER TABLE "t" ALTER COLUMN "c" DROP NOT NULL`})
	if len(p.Contract)+len(p.PostBackfill) != 0 {
		t.Errorf("drop_not_null runs at expand only: %v %v", sqls(p.PostBackfill), sqls(p.Contract))
	}
	patterns := []string{
		`^DO \$refit\$\n.*SELECT count\(\*\) FROM "t" AS r WHERE r\."c" IS NULL.*RAISE EXCEPTION .*not_null_violation.*\$refit\$$`,
		`^ALTER TABLE "t" ADD CONSTRAINT "refit_nn_t_c" CHECK \("c" IS NOT NULL\) NOT VALID$`,
		`^ALTER TABLE "t" VALIDATE CONSTRAINT "refit_nn_t_c"$`,
		`^ALTER TABLE "t" ALTER COLUMN "c" SET NOT NULL$`,
		`^ALTER TABLE "t" DROP CONSTRAINT IF EXISTS "refit_nn_t_c"$`,
	}
	if len(p.Rollback) != len(patterns) {
		t.Fatalf("rollback = %v", sqls(p.Rollback))
	}
	for i, pat := range patterns {
		if !regexp.MustCompile("(?s)" + pat).MatchString(p.Rollback[i].SQL) {
			t.Errorf("rollback[%d] = %s, want %s", i, p.Rollback[i].SQL, pat)
		}
		if s := p.Rollback[i]; !s.Transactional || s.Requires != 0 || !strings.HasPrefix(s.Description, "restore NOT NULL") {
			t.Errorf("rollback[%d] = %+v", i, s)
		}
	}
	if !p.Rollback[0].LongRunning || !strings.HasPrefix(p.Rollback[0].Lock, "ACCESS SHARE") || p.Rollback[2].Violations == nil {
		t.Errorf("the guard scans under ACCESS SHARE, VALIDATE reports: %+v", p.Rollback[:3])
	}
	// (checkRollback wants one undo step per forward step: these five all
	// undo forward step 0, in this order.)
	metaRequireLocks(t, p)
}

func TestDropNotNullInspectRejects(t *testing.T) {
	conn := metaDB(t)
	metaRequireRejects(t, conn, []metaReject{
		{"table does not exist", `
  - drop_not_null: {table: nope, column: c}`, 0, "table", []string{"does not exist"}},
		{"column does not exist", `
  - drop_not_null: {table: notes, column: nope}`, 0, "column", []string{"nope", "does not exist"}},
		{"already nullable", `
  - drop_not_null: {table: notes, column: maybe}`, 0, "column", []string{"already nullable", "nothing to do"}},
		{"primary key column", `
  - drop_not_null: {table: notes, column: id}`, 0, "column", []string{"primary key"}},
		{"identity column", `
  - drop_not_null: {table: notes, column: ident}`, 0, "column", []string{"identity column"}},
		{"replica identity column", `
  - drop_not_null: {table: ri, column: a}`, 0, "column", []string{"REPLICA IDENTITY"}},
		{"added by the migration", `
  - add_column: {table: notes, column: {name: fresh, type: int, nullable: false}, up: "1"}
  - drop_not_null: {table: notes, column: fresh}`, 1, "column", []string{"added by this migration"}},
		{"the key of a table the migration backfills", `
  - add_column: {table: ukey, column: {name: up, type: text}, up: upper(b)}
  - drop_not_null: {table: ukey, column: code}`, 1, "column", []string{"key this migration backfills", "public.ukey"}},
		{"a later bulk_insert still may not write NULL elsewhere", `
  - drop_not_null: {table: notes, column: body}
  - bulk_insert: {table: notes, rows: [{id: null, body: null}]}`, 1, "rows[0]", []string{`"id"`}},
		{"without it a later bulk_insert may not write NULL", `
  - bulk_insert: {table: notes, rows: [{id: 10, body: null}]}`, 0, "rows[0]", []string{`"body"`}},
	})
}

func TestDropNotNullInspectValid(t *testing.T) {
	conn := metaDB(t)
	ctx := context.Background()
	// A later operation may write NULL into the column.
	_, _, p := metaInspect(t, conn, `
  - drop_not_null: {table: notes, column: body}
  - bulk_insert: {table: notes, rows: [{id: 10, body: null}]}
  - drop_not_null: {table: ri, column: b}`)
	if len(p.Expand) != 3 {
		t.Fatalf("expand = %v", sqls(p.Expand))
	}
	undo := metaStepsBy(p.Rollback, 0)
	if len(undo) != 5 || !strings.Contains(undo[0].SQL, `FROM "public"."notes" AS r`) || !strings.Contains(undo[0].SQL, `ORDER BY r."id"`) {
		t.Fatalf("rollback of operations[0] = %v", sqls(undo))
	}

	// The undo puts NOT NULL back exactly when no row holds NULL …
	q := "SELECT attnotnull::text || ' ' || (SELECT count(*) FROM pg_constraint WHERE conrelid = 'notes'::regclass) FROM pg_attribute WHERE attrelid = 'notes'::regclass AND attname = 'body'"
	before := metaApply(t, conn, q)
	if got := metaApply(t, conn, q, append([]string{p.Expand[0].SQL}, sqls(undo)...)...); got != before {
		t.Errorf("after expand and undo: %s, before %s", got, before)
	}
	// … and refuses, naming the rows and changing nothing, when rows do.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // rolled back on purpose
	for _, s := range []string{p.Expand[0].SQL, "UPDATE notes SET body = NULL WHERE id IN (3, 2)", "SAVEPOINT s"} {
		if _, err := tx.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	_, err = tx.Exec(ctx, undo[0].SQL)
	if !sqlstate.Is(err, sqlstate.NotNullViolation) || !strings.Contains(err.Error(), `cannot restore NOT NULL on column body of public.notes: 2 rows hold NULL (written since expand), e.g. keys (2) (3)`) {
		t.Errorf("guard: %v", err)
	}
}

// The guard's dollar quote cannot be closed by a name in it.
func TestDropNotNullGuardQuoting(t *testing.T) {
	conn := metaDB(t)
	if _, err := conn.Exec(context.Background(), `CREATE TABLE "a$refit$b" (id int PRIMARY KEY, "v$refit0$" text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	_, _, p := metaInspect(t, conn, `
  - drop_not_null: {table: "a$refit$b", column: "v$refit0$"}`)
	if !strings.HasPrefix(p.Rollback[0].SQL, "DO $refit1$") {
		t.Errorf("guard = %s", p.Rollback[0].SQL)
	}
	got := metaApply(t, conn, `SELECT attnotnull::text FROM pg_attribute WHERE attrelid = '"a$refit$b"'::regclass AND attname = 'v$refit0$'`,
		append([]string{p.Expand[0].SQL}, sqls(p.Rollback)...)...)
	if got != "true" {
		t.Errorf("NOT NULL after undo = %s", got)
	}
}

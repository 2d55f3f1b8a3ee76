package migration_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/refit-dev/refit/migration"
)

func TestRenameTableRejects(t *testing.T) {
	conn := tableOpsDB(t)
	runTableOpRejects(t, conn, []tableOpReject{
		{"missing from", `
  - rename_table: {to: x}`, 0, "rename_table", "from", []string{"is required"}},
		{"missing to", `
  - rename_table: {from: plans}`, 0, "rename_table", "to", []string{"is required"}},
		{"unknown field", `
  - rename_table: {from: plans, to: x, view: false}`, 0, "rename_table", "view", []string{"unknown field"}},
		{"to with a schema", `
  - rename_table: {from: plans, to: public.x}`, 0, "rename_table", "to", []string{"without a schema"}},
		{"to the same name", `
  - rename_table: {from: public.plans, to: plans}`, 0, "rename_table", "to", []string{"already"}},
		{"to a name too long", `
  - rename_table: {from: plans, to: ` + strings.Repeat("x", 64) + `}`, 0, "rename_table", "to", []string{"truncate"}},
		{"a missing table", `
  - rename_table: {from: no_such_table, to: x}`, 0, "rename_table", "from", []string{"does not exist"}},
		{"a partitioned table", `
  - rename_table: {from: parted, to: x}`, 0, "rename_table", "from", []string{"partitioned"}},
		{"to a table's name", `
  - rename_table: {from: plans, to: users}`, 0, "rename_table", "to", []string{"relation named users already exists"}},
		{"to an index's name", `
  - rename_table: {from: plans, to: users_full_name_idx}`, 0, "rename_table", "to", []string{"already exists"}},
		{"to a type's name", `
  - rename_table: {from: plans, to: mood}`, 0, "rename_table", "to", []string{"type named mood"}},
		{"to a name the file creates", `
  - create_table: {name: tiers, columns: [{name: a, type: int}]}
  - rename_table: {from: plans, to: tiers}`, 1, "rename_table", "to", []string{"also created by operations[0]"}},
		{"another operation on the table", `
  - add_column: {table: plans, column: {name: c, type: int}}
  - rename_table: {from: plans, to: tiers}`, 1, "rename_table", "from", []string{"operations[0] (add_column) also changes table plans"}},
		{"a later operation on the table", `
  - rename_table: {from: plans, to: tiers}
  - drop_column: {table: public.plans, column: active}`, 0, "rename_table", "from", []string{"operations[1] (drop_column)"}},
		{"a later operation on the new name", `
  - rename_table: {from: plans, to: tiers}
  - create_index: {name: tiers_name, table: tiers, columns: [name]}`, 0, "rename_table", "from", []string{"operations[1] (create_index) also changes table tiers"}},
		{"a new table referencing it", `
  - rename_table: {from: plans, to: tiers}
  - create_table: {name: t, columns: [{name: a, type: int}], foreign_keys: [{columns: [a], references: {table: plans}}]}`, 0, "rename_table", "from", []string{"operations[1] (create_table)"}},
		{"renamed twice", `
  - rename_table: {from: plans, to: tiers}
  - rename_table: {from: tiers, to: levels}`, 0, "rename_table", "from", []string{"operations[1] (rename_table) also changes table tiers"}},
	})
}

func TestRenameTableValid(t *testing.T) {
	conn := tableOpsDB(t)
	before := snapshot(t, conn)
	m := mustParse(t, `
name: ok
operations:
  - rename_table: {from: plans, to: 'Tiers "T"'}
  - add_column: {table: users, column: {name: c, type: int}, up: "id"}
`)
	facts, err := inspect(t, conn, m)
	if err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, conn); after != before {
		t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
	}
	p := migration.BuildPlan(m, facts)
	checkRollback(t, p)
	if facts.ServerVersion < 150000 {
		// No security_invoker views before 15: no view in the window, the
		// rename alone at contract.
		for _, s := range p.Expand {
			if strings.Contains(s.SQL, "CREATE VIEW") {
				t.Errorf("a view on PostgreSQL %d: %s", facts.ServerVersion, s.SQL)
			}
		}
		requireSQL(t, "rollback", p.Rollback, []string{`ALTER TABLE "public"."users" DROP COLUMN IF EXISTS "c"`})
		if rename := p.Contract[len(p.Contract)-1]; rename.SQL != `ALTER TABLE "public"."plans" RENAME TO "Tiers ""T"""` {
			t.Errorf("rename step %+v", rename)
		}
		return
	}
	view := p.Expand[0]
	if !strings.HasPrefix(view.SQL, `CREATE VIEW "public"."Tiers ""T""" WITH (security_invoker = true) AS SELECT * FROM "public"."plans";`+"\nDO $refit$") ||
		!view.Transactional || !strings.HasPrefix(view.Lock, "ACCESS SHARE") || view.Kind != "rename_table" {
		t.Errorf("view step %+v", view)
	}
	requireSQL(t, "rollback", p.Rollback, []string{`ALTER TABLE "public"."users" DROP COLUMN IF EXISTS "c"`, `DROP VIEW IF EXISTS "public"."Tiers ""T"""`})
	rename := p.Contract[len(p.Contract)-1]
	if rename.SQL != `DROP VIEW IF EXISTS "public"."Tiers ""T""";`+"\n"+`ALTER TABLE "public"."plans" RENAME TO "Tiers ""T"""` ||
		!rename.Transactional || rename.BreaksSync || !strings.HasPrefix(rename.Lock, "ACCESS EXCLUSIVE") {
		t.Errorf("rename step %+v", rename)
	}
	if tables := m.Operations[0].Tables(); len(tables) != 2 || tables[1].Name != `Tiers "T"` {
		t.Errorf("Tables() = %v", tables)
	}

	// The steps run: the view has the table's grants, then the contract
	// step leaves the table under its new name.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // undone on purpose
	if _, err := tx.Exec(ctx, view.SQL); err != nil {
		t.Fatalf("view: %v", err)
	}
	var sel, ins, upd, updPrice, invoker bool
	if err := tx.QueryRow(ctx, `SELECT has_table_privilege($1, '"Tiers ""T"""', 'SELECT'),
			has_table_privilege($1, '"Tiers ""T"""', 'INSERT'),
			has_column_privilege($1, '"Tiers ""T"""', 'name', 'UPDATE'),
			has_column_privilege($1, '"Tiers ""T"""', 'price', 'UPDATE'),
			(SELECT 'security_invoker=true' = ANY (reloptions) FROM pg_class WHERE oid = '"Tiers ""T"""'::regclass)`, tableOpsRole(t, conn)).Scan(&sel, &ins, &upd, &updPrice, &invoker); err != nil {
		t.Fatal(err)
	}
	if !sel || ins || !upd || updPrice || !invoker {
		t.Errorf("view grants: SELECT %v INSERT %v UPDATE(name) %v UPDATE(price) %v security_invoker %v, want true false true false true", sel, ins, upd, updPrice, invoker)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO "Tiers ""T""" (id, name) VALUES (7, 'through the view')`); err != nil {
		t.Fatalf("insert through the view: %v", err)
	}
	if _, err := tx.Exec(ctx, rename.SQL); err != nil {
		t.Fatalf("rename: %v", err)
	}
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM "Tiers ""T""" WHERE id = 7 AND (SELECT relkind FROM pg_class WHERE oid = '"Tiers ""T"""'::regclass) = 'r' AND to_regclass('plans') IS NULL`).Scan(&n); err != nil || n != 1 {
		t.Errorf("after the rename: %d rows, %v", n, err)
	}
}

func TestRenameTablePlan(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - rename_table: {from: app.users, to: accounts}
`)
	p := migration.BuildPlan(m, nil)
	if len(p.Expand) != 1 || !strings.HasPrefix(p.Expand[0].SQL, `CREATE VIEW "app"."accounts"`) {
		t.Errorf("without facts the plan shows the view: %v", sqls(p.Expand))
	}
	// PostgreSQL 14 has no security_invoker views: contract only.
	p = migration.BuildPlan(m, &migration.Facts{ServerVersion: 140010})
	requireSQL(t, "expand", p.Expand, []string{})
	requireSQL(t, "rollback", p.Rollback, []string{})
	requireSQL(t, "contract", p.Contract, []string{`ALTER TABLE "app"."users" RENAME TO "accounts"`})
	needs := m.Operations[0].Needs()
	if len(needs) != 2 || needs[0].Kind != migration.NeedOwner || needs[1].Kind != migration.NeedSchemaCreate || needs[1].Schema != "app" {
		t.Errorf("Needs() = %+v", needs)
	}
}

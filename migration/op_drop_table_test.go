package migration_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/refit-dev/refit/migration"
)

func TestDropTableRejects(t *testing.T) {
	conn := tableOpsDB(t)
	if _, err := conn.Exec(context.Background(), `
CREATE FUNCTION count_viewed() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM viewed; END`); err != nil {
		t.Fatal(err)
	}
	runTableOpRejects(t, conn, []tableOpReject{
		{"missing name", `
  - drop_table: {cascade: true}`, 0, "drop_table", "name", []string{"is required"}},
		{"unknown field", `
  - drop_table: {name: plans, if_exists: true}`, 0, "drop_table", "if_exists", []string{"unknown field"}},
		{"a missing table", `
  - drop_table: {name: no_such_table}`, 0, "drop_table", "name", []string{"no_such_table", "does not exist"}},
		{"a view", `
  - drop_table: {name: viewed_v}`, 0, "drop_table", "name", []string{"does not exist"}},
		{"a partitioned table", `
  - drop_table: {name: parted}`, 0, "drop_table", "name", []string{"partitioned"}},
		{"referenced by a foreign key", `
  - drop_table: {name: authors}`, 0, "drop_table", "name", []string{"constraint books_author_fk on table books", "cascade: true"}},
		{"a view depends on it, even with cascade", `
  - drop_table: {name: viewed, cascade: true}`, 0, "drop_table", "name", []string{"view viewed_v", "would fail"}},
		{"a function depends on it", `
  - drop_table: {name: public.viewed}`, 0, "drop_table", "name", []string{"function count_viewed()", "view viewed_v"}},
		{"a column has its row type", `
  - drop_table: {name: typed}`, 0, "drop_table", "name", []string{"column t of table uses_type"}},
		{"another table's default uses its sequence", `
  - drop_table: {name: seq_owner}`, 0, "drop_table", "name", []string{"default value for column id of table seq_user"}},
		{"another operation changes it", `
  - add_column: {table: plans, column: {name: c, type: int}}
  - drop_table: {name: public.plans}`, 1, "drop_table", "name", []string{"operations[0] (add_column) also changes table plans"}},
		{"a later operation changes it", `
  - drop_table: {name: plans}
  - create_index: {name: plans_name, table: public.plans, columns: [name]}`, 0, "drop_table", "name", []string{"operations[1] (create_index)"}},
		{"a table of the file references it", `
  - create_table: {name: t, columns: [{name: a, type: int}], foreign_keys: [{columns: [a], references: {table: plans}}]}
  - drop_table: {name: plans}`, 1, "drop_table", "name", []string{"operations[0] (create_table)"}},
	})
}

func TestDropTableValid(t *testing.T) {
	conn := tableOpsDB(t)
	before := snapshot(t, conn)
	m := mustParse(t, `
name: ok
operations:
  - drop_table: {name: lonely}
  - drop_table: {name: public.authors, cascade: true}
  - drop_table: {name: books}
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
	if len(p.Expand) != 1 || len(p.Rollback) != 1 || p.Rollback[0].Kind != "add_column" {
		t.Errorf("drop_table has steps before contract: expand %v rollback %v", sqls(p.Expand), sqls(p.Rollback))
	}
	if len(p.Contract) != 3 {
		t.Fatalf("contract: %v", sqls(p.Contract))
	}
	if got := p.Contract[0].SQL; got != `DROP TABLE IF EXISTS "public"."lonely"` {
		t.Errorf("drop: %s", got)
	}
	cascade := p.Contract[1]
	if !strings.HasPrefix(cascade.SQL, "DO $refit$") || !strings.Contains(cascade.SQL, `to_regclass('"public"."authors"')`) || !strings.Contains(cascade.SQL, "CASCADE") {
		t.Errorf("drop with cascade: %s", cascade.SQL)
	}
	for _, s := range p.Contract {
		if !s.Transactional || s.BreaksSync || !strings.HasPrefix(s.Lock, "ACCESS EXCLUSIVE") || s.Kind != "drop_table" {
			t.Errorf("contract step %+v", s)
		}
	}
	if !strings.Contains(cascade.Lock, "whose foreign key to it is dropped") {
		t.Errorf("cascade lock %q", cascade.Lock)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(sql string, dropped bool) error {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck // undone on purpose
		_, err = tx.Exec(ctx, sql)
		if err == nil && dropped {
			var left bool
			if err := tx.QueryRow(ctx, "SELECT to_regclass('authors') IS NULL AND NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'books_author_fk')").Scan(&left); err != nil || !left {
				t.Errorf("after the drop: authors or its foreign key is still there (%v)", err)
			}
		}
		return err
	}
	// The cascade drops the foreign keys to the table…
	if err := run(cascade.SQL, true); err != nil {
		t.Fatalf("drop with cascade: %v", err)
	}
	// …and nothing else: a view that appears after validation fails the
	// step instead of being dropped.
	if _, err := conn.Exec(ctx, "CREATE VIEW authors_v AS SELECT id FROM authors"); err != nil {
		t.Fatal(err)
	}
	err = run(cascade.SQL, false)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "2BP01" || !strings.Contains(pgErr.Message, "view authors_v") {
		t.Errorf("cascade over a view: %v, want dependent_objects_still_exist naming the view", err)
	}
	if _, err := conn.Exec(ctx, "DROP VIEW authors_v"); err != nil {
		t.Fatal(err)
	}
	// A table already gone is no error.
	if err := run(strings.ReplaceAll(cascade.SQL, `"authors"`, `"gone"`), false); err != nil {
		t.Errorf("cascade of a missing table: %v", err)
	}
}

// A table whose name holds the dollar-quote tag still gets a body the
// server reads as written.
func TestDropTableCascadeQuoting(t *testing.T) {
	conn := setupDB(t)
	ctx := context.Background()
	name := `we$refit$ird'"`
	if _, err := conn.Exec(ctx, `CREATE TABLE "we$refit$ird'""" (id int PRIMARY KEY); CREATE TABLE kid (p int REFERENCES "we$refit$ird'""")`); err != nil {
		t.Fatal(err)
	}
	m := &migration.Migration{Name: "q", File: "q.yaml", Operations: []migration.Operation{
		&migration.DropTable{NameRaw: name, Table: migration.TableName{Name: name}, Cascade: true}}}
	facts, err := inspect(t, conn, m)
	if err != nil {
		t.Fatal(err)
	}
	s := migration.BuildPlan(m, facts).Contract[0]
	if !strings.HasPrefix(s.SQL, "DO $refit1$") {
		t.Errorf("tag: %s", s.SQL)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // undone on purpose
	if _, err := tx.Exec(ctx, s.SQL); err != nil {
		t.Fatal(err)
	}
	var gone bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('"we$refit$ird''"""') IS NULL`).Scan(&gone); err != nil || !gone {
		t.Errorf("not dropped: %v", err)
	}
}

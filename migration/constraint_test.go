package migration_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/refit-dev/refit/migration"
)

// constraintSchema holds the tables the constraint operations' tests
// (add_check, add_foreign_key, add_unique, add_primary_key) change, next to
// schemaSQL's.
const constraintSchema = `
CREATE TABLE authors (id int PRIMARY KEY, email text, code text NOT NULL, alt int, doc json);
CREATE UNIQUE INDEX authors_code_key ON authors (code);
CREATE TABLE books (id int PRIMARY KEY, author_id int, author_code text, title text NOT NULL, price numeric,
	CONSTRAINT books_price_ck CHECK (price >= 0));
INSERT INTO authors VALUES (1, 'a@x', 'A', 1), (2, 'b@x', 'B', 1), (3, NULL, 'C', 2);
INSERT INTO books VALUES (1, 1, 'A', 't1', 10), (2, 2, 'B', 't2', 0), (3, NULL, NULL, 't3', NULL);
CREATE TABLE dups (id int PRIMARY KEY, email text, sku text NOT NULL, n int NOT NULL);
INSERT INTO dups VALUES (1, 'x', 's1', 1), (2, 'x', 's1', 2), (3, 'y', 's2', 3), (4, NULL, 's3', 4), (5, NULL, 's4', 5), (6, 'x', 's5', 6);
CREATE TABLE orphans (id int PRIMARY KEY, author_id int, author_code text);
INSERT INTO orphans VALUES (1, 1, 'A'), (2, 99, 'A'), (3, NULL, NULL), (4, 98, NULL);
CREATE TABLE nopk (a int NOT NULL, b int, c int NOT NULL);
INSERT INTO nopk VALUES (1, 1, 1), (2, NULL, 1), (3, 3, 2);
CREATE TABLE nopk2 (a int NOT NULL);
CREATE SEQUENCE nopk2_pkey;
CREATE TABLE deferred_parent (id int, CONSTRAINT deferred_parent_id_key UNIQUE (id) DEFERRABLE);
CREATE TABLE partial_parent (id int);
CREATE UNIQUE INDEX partial_parent_id ON partial_parent (id) WHERE id > 0;
CREATE TABLE wide_parent (a int, b int, PRIMARY KEY (a, b));
INSERT INTO wide_parent VALUES (1, 1), (1, 2);
CREATE TABLE wide_child (id int PRIMARY KEY, a int, b int);
INSERT INTO wide_child VALUES (1, 1, 1), (2, NULL, 5), (3, 2, 9), (4, 1, 2);
`

// constraintDB is setupDB plus constraintSchema.
func constraintDB(t *testing.T) *pgx.Conn {
	t.Helper()
	conn := setupDB(t)
	if _, err := conn.Exec(context.Background(), constraintSchema); err != nil {
		t.Fatal(err)
	}
	return conn
}

// constraintData renders the rows of constraintSchema's tables, which
// snapshot does not count.
func constraintData(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var parts []string
	for _, table := range []string{"authors", "books", "dups", "orphans", "nopk", "wide_parent", "wide_child"} {
		var s string
		if err := conn.QueryRow(context.Background(), fmt.Sprintf("SELECT coalesce(string_agg(x::text, ',' ORDER BY x::text), '') FROM %s x", table)).Scan(&s); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, table+": "+s)
	}
	return strings.Join(parts, "\n")
}

// rejectCase is a migration a constraint operation refuses, when parsed
// (no database needed) or when inspected: the error names the file,
// operations[op] (kind) and field, and the database is unchanged.
type rejectCase struct {
	name  string
	ops   string // the operations list
	op    int
	kind  string
	field string
	want  []string
}

func runRejects(t *testing.T, conn *pgx.Conn, tests []rejectCase) {
	t.Helper()
	before, beforeData := snapshot(t, conn), constraintData(t, conn)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "name: bad\noperations:" + tt.ops + "\n"
			m, err := migration.Parse("bad.yaml", []byte(src))
			if err == nil {
				var facts *migration.Facts
				facts, err = inspect(t, conn, m)
				if facts != nil && err != nil {
					t.Errorf("Inspect returned facts with the error")
				}
			}
			me := requireInvalid(t, err, append([]string{"bad.yaml", fmt.Sprintf("operations[%d] (%s)", tt.op, tt.kind), `"` + tt.field + `"`}, tt.want...)...)
			if me.Op != tt.op || me.Field != tt.field || me.Kind != tt.kind {
				t.Errorf("Op %d Kind %q Field %q, want %d %q %q", me.Op, me.Kind, me.Field, tt.op, tt.kind, tt.field)
			}
			if after := snapshot(t, conn); after != before {
				t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
			}
			if after := constraintData(t, conn); after != beforeData {
				t.Errorf("the rows changed:\nbefore %s\nafter  %s", beforeData, after)
			}
		})
	}
}

// inspectValid parses and inspects a migration that must pass, and
// returns its plan built from the facts.
func inspectValid(t *testing.T, conn *pgx.Conn, ops string) *migration.Plan {
	t.Helper()
	before := snapshot(t, conn)
	m := mustParse(t, "name: good\noperations:"+ops+"\n")
	facts, err := inspect(t, conn, m)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if after := snapshot(t, conn); after != before {
		t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
	}
	p := migration.BuildPlan(m, facts)
	checkRollback(t, p)
	return p
}

// reportViolations runs a step's violation queries against the database.
func reportViolations(t *testing.T, conn *pgx.Conn, s migration.Step) string {
	t.Helper()
	if s.Violations == nil {
		t.Fatalf("step %q has no Violations", s.SQL)
	}
	r, err := s.Violations.Report(context.Background(), conn)
	if err != nil {
		t.Fatalf("%s: %v", s.SQL, err)
	}
	return r
}

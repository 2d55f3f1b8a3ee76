package migration_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/refit-dev/refit/migration"
)

func TestAddEnumValueParse(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - add_enum_value: {enum: app.mood, value: "it's", after: ok}
  - add_enum_value: {enum: mood, value: meh, before: ok}
  - add_enum_value: {enum: mood, value: last}
`)
	o := m.Operations[0].(*migration.AddEnumValue)
	if o.Enum != "app.mood" || o.Value != "it's" || o.After != "ok" || o.Before != "" {
		t.Errorf("add_enum_value = %+v", o)
	}
	if len(o.Tables()) != 0 {
		t.Errorf("Tables = %v: a type belongs to no table", o.Tables())
	}
}

func TestAddEnumValueParseInvalid(t *testing.T) {
	long := strings.Repeat("x", 64)
	tests := []struct {
		name  string
		ops   string
		op    int
		field string
		want  []string
	}{
		{"no enum", `
  - add_enum_value: {value: a}`, 0, "enum", []string{"required"}},
		{"enum with an empty name after the schema", `
  - add_enum_value: {enum: 'app.', value: a}`, 0, "enum", []string{"empty"}},
		{"no value", `
  - add_enum_value: {enum: mood}`, 0, "value", []string{"required"}},
		{"value too long", `
  - add_enum_value: {enum: mood, value: ` + long + `}`, 0, "value", []string{"63 bytes"}},
		{"before and after", `
  - add_enum_value: {enum: mood, value: a, before: b, after: c}`, 0, "after", []string{"not both"}},
		{"before too long", `
  - add_enum_value: {enum: mood, value: a, before: ` + long + `}`, 0, "before", []string{"63 bytes"}},
		{"after itself", `
  - add_enum_value: {enum: mood, value: a, after: a}`, 0, "after", []string{"being added"}},
		{"the same value twice", `
  - add_enum_value: {enum: mood, value: a}
  - add_enum_value: {enum: mood, value: a, after: ok}`, 1, "value", []string{"operations[0]"}},
		{"unknown field", `
  - add_enum_value: {enum: mood, value: a, afer: ok}`, 0, "afer", []string{"unknown field", "before", "after"}},
		{"value that is a list", `
  - add_enum_value: {enum: mood, value: [a]}`, 0, "value", []string{"add_enum_value"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := migration.Parse("bad.yaml", []byte("name: m\noperations:"+tt.ops+"\n"))
			if m != nil {
				t.Errorf("Parse returned a migration along with the error")
			}
			want := append([]string{"bad.yaml", fmt.Sprintf("operations[%d] (add_enum_value)", tt.op)}, tt.want...)
			if tt.field != "" {
				want = append(want, fmt.Sprintf("field %q", tt.field))
			}
			me := requireInvalid(t, err, want...)
			if me.Op != tt.op || me.Field != tt.field || me.Kind != "add_enum_value" {
				t.Errorf("Op %d Kind %q Field %q, want %d add_enum_value %q (%v)", me.Op, me.Kind, me.Field, tt.op, tt.field, err)
			}
		})
	}
}

// ADD VALUE IF NOT EXISTS at expand, outside any transaction, quoted; no
// undo step (PostgreSQL cannot drop an enum value: abort leaves it).
func TestAddEnumValuePlan(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - add_enum_value: {enum: "app.Odd \"Mood\"", value: "it's", after: "o'k"}
  - add_enum_value: {enum: mood, value: meh, before: ok}
  - add_enum_value: {enum: mood, value: last}
  - add_column: {table: t, column: {name: m, type: mood}}
`)
	p := migration.BuildPlan(m, nil)
	requireSQL(t, "expand", p.Expand, []string{
		`ALTER TYPE "app"."Odd ""Mood""" ADD VALUE IF NOT EXISTS 'it''s' AFTER 'o''k'`,
		`ALTER TYPE "mood" ADD VALUE IF NOT EXISTS 'meh' BEFORE 'ok'`,
		`ALTER TYPE "mood" ADD VALUE IF NOT EXISTS 'last'`,
		`ALTER TABLE "t" ADD COLUMN "m" mood`,
	})
	for i, s := range p.Expand[:3] {
		if s.Transactional {
			t.Errorf("expand[%d] is transactional: ADD VALUE runs outside a transaction block", i)
		}
		if s.Lock == "" || s.Cost == "" || s.Kind != "add_enum_value" || s.Op != i {
			t.Errorf("expand[%d] = %+v", i, s)
		}
	}
	requireSQL(t, "rollback", p.Rollback, []string{`ALTER TABLE "t" DROP COLUMN IF EXISTS "m"`})
	if len(p.PostBackfill) != 0 || len(p.Contract) != 0 || len(p.Backfills) != 0 {
		t.Errorf("post-backfill %v contract %v backfills %v", sqls(p.PostBackfill), sqls(p.Contract), p.Backfills)
	}
	checkRollback(t, p)
}

func TestAddEnumValueInspectRejects(t *testing.T) {
	conn := setupDB(t)
	before := snapshot(t, conn)
	tests := []struct {
		name  string
		ops   string
		op    int
		field string
		want  []string
	}{
		{"missing enum", `
  - add_enum_value: {enum: nosuch, value: a}`, 0, "enum", []string{"nosuch", "does not exist"}},
		{"missing schema", `
  - add_enum_value: {enum: nosuch.mood, value: a}`, 0, "enum", []string{"does not exist"}},
		{"not an enum", `
  - add_enum_value: {enum: int4, value: a}`, 0, "enum", []string{"integer", "not an enum"}},
		{"a table's row type", `
  - add_enum_value: {enum: users, value: a}`, 0, "enum", []string{"not an enum"}},
		{"before a label that does not exist", `
  - add_enum_value: {enum: mood, value: happy, before: glad}`, 0, "before", []string{"glad", "sad, ok"}},
		{"after a label that does not exist", `
  - add_enum_value: {enum: mood, value: happy, after: glad}`, 0, "after", []string{"glad", "sad, ok"}},
		{"an existing value elsewhere than after", `
  - add_enum_value: {enum: mood, value: sad, after: ok}`, 0, "after", []string{"already has the value", "sad", "sorts before"}},
		{"an existing value elsewhere than before", `
  - add_enum_value: {enum: mood, value: ok, before: sad}`, 0, "before", []string{"already has the value", "ok", "sorts after"}},
		{"a later value placed after one the migration adds elsewhere", `
  - add_enum_value: {enum: mood, value: happy, after: ok}
  - add_enum_value: {enum: mood, value: meh, before: sad}
  - add_enum_value: {enum: mood, value: glad, after: nope}`, 2, "after", []string{"nope", "meh, sad, ok, happy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, "name: bad\noperations:"+tt.ops+"\n")
			m.File = "bad.yaml"
			facts, err := inspect(t, conn, m)
			if facts != nil {
				t.Errorf("Inspect returned facts with the error")
			}
			me := requireInvalid(t, err, append([]string{"bad.yaml", fmt.Sprintf("operations[%d] (add_enum_value)", tt.op), `"` + tt.field + `"`}, tt.want...)...)
			if me.Op != tt.op || me.Field != tt.field {
				t.Errorf("Op %d Field %q, want %d %q (%v)", me.Op, me.Field, tt.op, tt.field, err)
			}
			if after := snapshot(t, conn); after != before {
				t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// The value is added in the rolled-back inspection transaction: later
// operations place values around it and a new enum takes values too; a value
// that is already there (a run after an abort) is a no-op when it sorts on
// the side of before/after the file says, even with values in between. The labels are
// unchanged afterwards (snapshot lists pg_enum).
func TestAddEnumValueInspectValid(t *testing.T) {
	conn := setupDB(t)
	before := snapshot(t, conn)
	m := mustParse(t, `
name: ok
operations:
  - add_enum_value: {enum: mood, value: happy, after: ok}
  - add_enum_value: {enum: public.mood, value: glad, before: happy}
  - add_enum_value: {enum: mood, value: "it's ok", after: glad}
  - add_enum_value: {enum: mood, value: sad}
  - add_enum_value: {enum: mood, value: between, after: sad}
  - add_enum_value: {enum: mood, value: ok, after: sad}
  - add_enum_value: {enum: mood, value: meh, before: sad}
  - create_enum: {name: fresh, values: [a]}
  - add_enum_value: {enum: fresh, value: b}
  - add_column: {table: plans, column: {name: m, type: mood, default: "'ok'"}}
`)
	if _, err := inspect(t, conn, m); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, conn); after != before {
		t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
	}
}

// A later operation of the same migration cannot use the new value:
// PostgreSQL refuses an enum value added in the current transaction, and
// validation runs in one. The error names that operation and its field
// with the server's reason; nothing changes. (At run time the value would
// be committed before the later step; the migration must be split.) It is
// not a *migration.Error: sqlstate.Content does not count 55P04 (class 55,
// object not in prerequisite state) as the statement's fault.
func TestAddEnumValueUsedLaterRefused(t *testing.T) {
	conn := setupDB(t)
	before := snapshot(t, conn)
	m := mustParse(t, `
name: bad
operations:
  - add_enum_value: {enum: mood, value: happy}
  - add_column: {table: plans, column: {name: m, type: mood, default: "'happy'"}}
`)
	m.File = "bad.yaml"
	facts, err := inspect(t, conn, m)
	if err == nil || facts != nil {
		t.Fatalf("Inspect: %v, %v; want a refusal", facts, err)
	}
	for _, want := range []string{"bad.yaml", "operations[1] (add_column)", `"column.default"`, `unsafe use of new value "happy"`, "55P04"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if after := snapshot(t, conn); after != before {
		t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
	}
}

// ALTER TYPE needs the type's owner: a role that is not is refused with
// what to do, naming the operation.
func TestAddEnumValueInspectNotOwner(t *testing.T) {
	conn := setupDB(t)
	ctx := context.Background()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	role := "refit_enum_nonowner_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE ROLE "+migration.QuoteIdent(role)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), "RESET ROLE")                            //nolint:errcheck // best effort
		_, _ = conn.Exec(context.Background(), "DROP ROLE "+migration.QuoteIdent(role)) //nolint:errcheck // best effort
	})
	before := snapshot(t, conn)
	if _, err := conn.Exec(ctx, "SET ROLE "+migration.QuoteIdent(role)); err != nil {
		t.Fatal(err)
	}
	m := mustParse(t, "name: bad\noperations:\n  - add_enum_value: {enum: mood, value: happy}\n")
	m.File = "bad.yaml"
	_, err := inspect(t, conn, m)
	requireInvalid(t, err, "bad.yaml", "operations[0] (add_enum_value)", `"enum"`, "does not own type mood", "OWNER TO")
	if _, err := conn.Exec(ctx, "RESET ROLE"); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, conn); after != before {
		t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
	}
}

package migration_test

import (
	"context"
	"strings"
	"testing"
)

func TestAlterColumnParseRejects(t *testing.T) {
	metaRequireParseRejects(t, []metaParseReject{
		{"missing type", `
  - alter_column: {table: notes, column: maybe, using: "maybe"}`, 0, "type", []string{"required", "set_not_null"}},
		{"missing column", `
  - alter_column: {table: notes, type: int}`, 0, "column", []string{"required"}},
		{"smuggled type", `
  - alter_column: {table: notes, column: maybe, type: "int; DROP TABLE notes"}`, 0, "type", []string{"one"}},
		{"smuggled using", `
  - alter_column: {table: notes, column: maybe, type: int, using: "1); DROP TABLE notes; --"}`, 0, "using", []string{}},
		{"unknown field", `
  - alter_column: {table: notes, column: maybe, type: int, nulable: false}`, 0, "nulable", []string{"unknown field"}},
		{"twice on one column", `
  - alter_column: {table: notes, column: maybe, type: varchar(10)}
  - alter_column: {table: notes, column: maybe, type: varchar(20)}`, 1, "column", []string{"also created by operations[0]"}},
		{"beside set_not_null on the column", `
  - set_not_null: {table: notes, column: maybe}
  - alter_column: {table: notes, column: maybe, type: varchar(20)}`, 1, "column", []string{"also created by operations[0]"}},
	})
}

func TestAlterColumnInspectRejects(t *testing.T) {
	conn := metaDB(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `
		CREATE TABLE acc (id int PRIMARY KEY, amount int NOT NULL, label text, code text, s serial, pat text,
			CONSTRAINT amount_pos CHECK (amount >= 0));
		CREATE VIEW acc_view AS SELECT id, label FROM acc;
		CREATE INDEX acc_code_expr ON acc (lower(code));
		CREATE INDEX acc_partial ON acc (id) WHERE code IS NOT NULL;
		CREATE INDEX acc_pat_pattern ON acc (pat text_pattern_ops);
		CREATE TABLE acc_child (id int PRIMARY KEY, acc_id int REFERENCES acc (id));
		INSERT INTO acc VALUES (1, 5, 'a', 'x')`); err != nil {
		t.Fatal(err)
	}
	metaRequireRejects(t, conn, []metaReject{
		{"no such table", `
  - alter_column: {table: nope, column: c, type: int}`, 0, "table", []string{"does not exist"}},
		{"no such column", `
  - alter_column: {table: acc, column: nope, type: int}`, 0, "column", []string{"does not exist"}},
		{"bad type", `
  - alter_column: {table: acc, column: amount, type: bigintx}`, 0, "type", []string{"bigintx"}},
		{"using does not fit", `
  - alter_column: {table: acc, column: amount, type: bigint, using: "amount > 0"}`, 0, "using", []string{"boolean"}},
		{"default does not fit", `
  - alter_column: {table: acc, column: amount, type: bigint, default: "'abc'"}`, 0, "default", []string{"bigint", "abc"}},
		{"primary key", `
  - alter_column: {table: acc, column: id, type: bigint}`, 0, "column", []string{"primary key", "not change a key column yet"}},
		{"referenced by a foreign key", `
  - alter_column: {table: acc_child, column: acc_id, type: bigint}`, 0, "column", []string{"foreign key", "acc_child_acc_id_fkey"}},
		{"a check uses it", `
  - alter_column: {table: acc, column: amount, type: bigint}`, 0, "column", []string{"check constraint amount_pos"}},
		{"a view uses it", `
  - alter_column: {table: acc, column: label, type: varchar(50)}`, 0, "column", []string{"view acc_view"}},
		{"expression index", `
  - alter_column: {table: acc, column: code, type: varchar(50)}`, 0, "column", []string{"acc_code_expr", "expression index"}},
		{"operator class", `
  - alter_column: {table: acc, column: pat, type: varchar(50)}`, 0, "column", []string{"acc_pat_pattern", "operator class"}},
		{"the second operation", `
  - add_column: {table: acc, column: {name: extra, type: int}}
  - alter_column: {table: notes, column: body, type: varchar(200)}`, 1, "column", []string{"check constraint body_len"}},
		{"identity", `
  - alter_column: {table: notes, column: ident, type: bigint}`, 0, "column", []string{"identity"}},
		{"generated", `
  - alter_column: {table: notes, column: gen, type: bigint}`, 0, "column", []string{"generated"}},
		{"owns a sequence", `
  - alter_column: {table: acc, column: s, type: bigint}`, 0, "column", []string{"sequence acc_s_seq"}},
		{"added by this migration", `
  - add_column: {table: acc, column: {name: extra, type: int}}
  - alter_column: {table: acc, column: extra, type: bigint}`, 1, "column", []string{"added by this migration"}},
	})
}

func TestAlterColumnPlan(t *testing.T) {
	conn := metaDB(t)
	if _, err := conn.Exec(context.Background(), `
		CREATE TABLE acc (id int PRIMARY KEY, amount int NOT NULL DEFAULT 7, ref text);
		CREATE INDEX acc_amount_idx ON acc (amount DESC) INCLUDE (ref) WHERE ref IS NOT NULL;
		ALTER TABLE acc ADD CONSTRAINT acc_ref_amount UNIQUE (ref, amount);
		INSERT INTO acc VALUES (1, 5, 'a')`); err != nil {
		t.Fatal(err)
	}
	_, _, p := metaInspect(t, conn, `
  - alter_column: {table: acc, column: amount, type: bigint}`)
	all := strings.Join(sqls(p.Expand), "\n") + "\n--\n" + strings.Join(sqls(p.PostBackfill), "\n") + "\n--\n" + strings.Join(sqls(p.Contract), "\n")
	for _, want := range []string{
		`ALTER TABLE "public"."acc" ADD COLUMN "refit_new_amount" bigint`,
		`CREATE INDEX CONCURRENTLY "refit_new_acc_amount_idx" ON "public"."acc" USING "btree" ("refit_new_amount" DESC) INCLUDE ("ref") WHERE (ref IS NOT NULL)`,
		`CREATE UNIQUE INDEX CONCURRENTLY "refit_new_acc_ref_amount" ON "public"."acc" USING "btree" ("ref", "refit_new_amount")`,
		`SELECT count(*) FROM "public"."acc" WHERE "refit_new_amount" IS DISTINCT FROM ("amount"::bigint)`,
		`ALTER TABLE "public"."acc" ALTER COLUMN "amount" DROP DEFAULT;`,
		`ALTER TABLE "public"."acc" ALTER COLUMN "amount" DROP NOT NULL;`,
		`ALTER TABLE "public"."acc" RENAME COLUMN "amount" TO "refit_old_amount";`,
		`ALTER TABLE "public"."acc" RENAME COLUMN "refit_new_amount" TO "amount";`,
		`ALTER TABLE "public"."acc" ALTER COLUMN "amount" SET DEFAULT (7);`,
		`DROP INDEX "public"."acc_amount_idx";`,
		`ALTER INDEX "public"."refit_new_acc_amount_idx" RENAME TO "acc_amount_idx";`,
		`ALTER TABLE "public"."acc" DROP CONSTRAINT "acc_ref_amount";`,
		`ALTER TABLE "public"."acc" ADD CONSTRAINT "acc_ref_amount" UNIQUE USING INDEX "refit_new_acc_ref_amount";`,
		`ALTER TABLE "public"."acc" ADD CONSTRAINT "refit_nn_acc_amount" CHECK ("amount" IS NOT NULL) NOT VALID`,
		`ALTER TABLE "public"."acc" VALIDATE CONSTRAINT "refit_nn_acc_amount"`,
		`ALTER TABLE "public"."acc" ALTER COLUMN "amount" SET NOT NULL`,
		`ALTER TABLE "public"."acc" DROP COLUMN IF EXISTS "refit_old_amount"`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("plan lacks %s\n%s", want, all)
		}
	}
	var swaps, verifies, breaks int
	for _, s := range p.Contract {
		if s.Swap != nil {
			swaps++
		}
		if s.Verify != nil {
			verifies++
		}
		if s.BreaksSync {
			breaks++
		}
	}
	if swaps != 1 || verifies != 1 || breaks != 1 || len(p.Backfills) != 1 || p.Backfills[0].Sets[0].Column != "refit_new_amount" {
		t.Errorf("swaps %d verifies %d breaks %d backfills %+v", swaps, verifies, breaks, p.Backfills)
	}
}

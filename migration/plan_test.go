package migration_test

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/refit-dev/refit/migration"
)

func sqls(steps []migration.Step) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = s.SQL
	}
	return out
}

func requireSQL(t *testing.T, stage string, steps []migration.Step, want []string) {
	t.Helper()
	got := sqls(steps)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s steps:\n got  %s\n want %s", stage, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
	}
}

// checkRollback verifies that every rollback step names the forward step it
// undoes, from the same operation, and that rollback runs in reverse.
func checkRollback(t *testing.T, p *migration.Plan) {
	t.Helper()
	fwd := p.Forward()
	if len(fwd) != len(p.Expand)+len(p.PostBackfill) {
		t.Fatalf("Forward() has %d steps, want %d", len(fwd), len(p.Expand)+len(p.PostBackfill))
	}
	prev := len(fwd)
	for i, r := range p.Rollback {
		if r.Requires < 0 || r.Requires >= len(fwd) {
			t.Fatalf("rollback[%d] requires forward step %d of %d", i, r.Requires, len(fwd))
		}
		if f := fwd[r.Requires]; f.Op != r.Op || f.Kind != r.Kind {
			t.Errorf("rollback[%d] (op %d %s) requires forward step %d of op %d %s", i, r.Op, r.Kind, r.Requires, f.Op, f.Kind)
		}
		if r.Requires >= prev {
			t.Errorf("rollback[%d] requires %d after a step requiring %d: not in reverse order", i, r.Requires, prev)
		}
		prev = r.Requires
	}
}

func TestBuildPlanExample(t *testing.T) {
	m := parseExample(t)
	for _, withFacts := range []bool{false, true} {
		t.Run(fmt.Sprintf("facts=%v", withFacts), func(t *testing.T) {
			var facts *migration.Facts
			if withFacts {
				facts = &migration.Facts{ServerVersion: 150000, VolatileDefault: map[int]bool{3: false},
					Tables: map[string]*migration.TableFacts{"users": {
						Name:    migration.TableName{Schema: "public", Name: "users"},
						Key:     []migration.KeyColumn{{Name: "id", Type: "bigint"}},
						Columns: map[string]string{"id": "bigint", "full_name": "text"},
					}}}
			}
			p := migration.BuildPlan(m, facts)
			// With facts, statements name the table (and the index to drop)
			// as the database resolved it, whatever the search_path later.
			tbl, idx, tn := `"users"`, `"idx_users_last_name"`, migration.TableName{Name: "users"}
			if withFacts {
				tbl, idx, tn = `"public"."users"`, `"public"."idx_users_last_name"`, migration.TableName{Schema: "public", Name: "users"}
			}
			requireSQL(t, "expand", p.Expand, []string{
				`CREATE TYPE "user_status_enum" AS ENUM ('active', 'suspended', 'banned')`,
				`ALTER TABLE ` + tbl + ` ADD COLUMN "first_name" varchar(100)`,
				`ALTER TABLE ` + tbl + ` ADD COLUMN "last_name" varchar(100)`,
				`ALTER TABLE ` + tbl + ` ADD COLUMN "status" user_status_enum DEFAULT ('active')`,
			})
			requireSQL(t, "post-backfill", p.PostBackfill, []string{
				`CREATE INDEX CONCURRENTLY "idx_users_last_name" ON ` + tbl + ` ("last_name")`,
			})
			var contract []string
			for _, c := range []string{"first_name", "last_name", "status"} {
				cn := `"refit_nn_users_` + c + `"`
				contract = append(contract,
					`ALTER TABLE `+tbl+` ADD CONSTRAINT `+cn+` CHECK ("`+c+`" IS NOT NULL) NOT VALID`,
					`ALTER TABLE `+tbl+` VALIDATE CONSTRAINT `+cn,
					`ALTER TABLE `+tbl+` ALTER COLUMN "`+c+`" SET NOT NULL`,
					`ALTER TABLE `+tbl+` DROP CONSTRAINT IF EXISTS `+cn)
			}
			contract = append(contract, `ALTER TABLE `+tbl+` DROP COLUMN IF EXISTS "full_name"`)
			requireSQL(t, "contract", p.Contract, contract)
			requireSQL(t, "rollback", p.Rollback, []string{
				`DROP INDEX CONCURRENTLY IF EXISTS ` + idx,
				`ALTER TABLE ` + tbl + ` DROP COLUMN IF EXISTS "status"`,
				`ALTER TABLE ` + tbl + ` DROP COLUMN IF EXISTS "last_name"`,
				`ALTER TABLE ` + tbl + ` DROP COLUMN IF EXISTS "first_name"`,
				`DROP TYPE IF EXISTS "user_status_enum"`,
			})
			var requires []int
			for _, r := range p.Rollback {
				requires = append(requires, r.Requires)
			}
			if want := []int{4, 3, 2, 1, 0}; !reflect.DeepEqual(requires, want) {
				t.Errorf("rollback Requires = %v, want %v", requires, want)
			}
			checkRollback(t, p)

			wantBackfills := []migration.Backfill{{Table: tn, Op: 1, Sets: []migration.ColumnSet{
				{Column: "first_name", Expr: "split_part(full_name, ' ', 1)"},
				{Column: "last_name", Expr: "substring(full_name from position(' ' in full_name) + 1)"},
			}}}
			if !reflect.DeepEqual(p.Backfills, wantBackfills) {
				t.Errorf("Backfills = %+v", p.Backfills)
			}
			if tables := p.Tables(); !reflect.DeepEqual(tables, []migration.TableName{tn}) {
				t.Errorf("Tables() = %v", tables)
			}

			// Every step says which operation made it and what it costs.
			for stage, steps := range map[string][]migration.Step{"expand": p.Expand, "post": p.PostBackfill, "contract": p.Contract, "rollback": p.Rollback} {
				for i, s := range steps {
					if s.Kind != m.Operations[s.Op].Kind() {
						t.Errorf("%s[%d]: Kind %q but operations[%d] is %s", stage, i, s.Kind, s.Op, m.Operations[s.Op].Kind())
					}
					if s.Lock == "" || s.Cost == "" || s.Description == "" {
						t.Errorf("%s[%d] %q: missing lock, cost or description", stage, i, s.SQL)
					}
					if len(s.Args) != 0 {
						t.Errorf("%s[%d] has args", stage, i)
					}
				}
			}
			for i, s := range p.Expand {
				if !s.Transactional || s.Index != "" {
					t.Errorf("expand[%d] %q: Transactional %v Index %q", i, s.SQL, s.Transactional, s.Index)
				}
			}
			for i, s := range p.Contract {
				if !s.Transactional {
					t.Errorf("contract[%d] %q is not transactional", i, s.SQL)
				}
				if want := strings.Contains(s.SQL, "VALIDATE"); s.LongRunning != want {
					t.Errorf("contract[%d] %q: LongRunning = %v", i, s.SQL, s.LongRunning)
				}
			}
		})
	}
}

// CREATE INDEX CONCURRENTLY cannot run in a transaction; the step says so and
// names the index so an INVALID leftover can be dropped before a retry.
func TestBuildPlanIndex(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - create_index: {name: idx_a, table: t, columns: [a]}
  - create_index: {name: "Idx B", table: app.t, columns: [b, "C c"], unique: true, method: gin, where: "b IS NOT NULL"}
`)
	p := migration.BuildPlan(m, nil)
	if len(p.Expand) != 0 || len(p.Contract) != 0 {
		t.Errorf("indexes belong to post-backfill only: expand %v contract %v", sqls(p.Expand), sqls(p.Contract))
	}
	requireSQL(t, "post-backfill", p.PostBackfill, []string{
		`CREATE INDEX CONCURRENTLY "idx_a" ON "t" ("a")`,
		`CREATE UNIQUE INDEX CONCURRENTLY "Idx B" ON "app"."t" USING gin ("b", "C c") WHERE (b IS NOT NULL)`,
	})
	wantIndex := []string{`"idx_a"`, `"app"."Idx B"`}
	for i, s := range p.PostBackfill {
		if s.Transactional {
			t.Errorf("post[%d] is transactional: CREATE INDEX CONCURRENTLY cannot run in a transaction block", i)
		}
		if !s.LongRunning {
			t.Errorf("post[%d] is not long-running", i)
		}
		if s.Index != wantIndex[i] {
			t.Errorf("post[%d].Index = %s, want %s", i, s.Index, wantIndex[i])
		}
	}
	requireSQL(t, "rollback", p.Rollback, []string{
		`DROP INDEX CONCURRENTLY IF EXISTS "app"."Idx B"`,
		`DROP INDEX CONCURRENTLY IF EXISTS "idx_a"`,
	})
	for i, s := range p.Rollback {
		if s.Transactional {
			t.Errorf("rollback[%d] DROP INDEX CONCURRENTLY is transactional", i)
		}
	}
	checkRollback(t, p)
}

// The NOT NULL contract is the four-step dance, in order, for each column.
func TestBuildPlanNotNull(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - add_column: {table: t, column: {name: a, type: int, nullable: false}, up: "1"}
  - add_column: {table: t, column: {name: b, type: int, nullable: true}, up: "2"}
  - add_column: {table: t, column: {name: c, type: int}, up: "3"}
`)
	p := migration.BuildPlan(m, nil)
	if len(p.Contract) != 4 {
		t.Fatalf("contract = %v, want the 4 NOT NULL steps of column a only", sqls(p.Contract))
	}
	patterns := []string{
		`^ALTER TABLE "t" ADD CONSTRAINT "(refit_nn_t_a)" CHECK \("a" IS NOT NULL\) NOT VALID$`,
		`^ALTER TABLE "t" VALIDATE CONSTRAINT "(refit_nn_t_a)"$`,
		`^ALTER TABLE "t" ALTER COLUMN "a" SET NOT NULL$`,
		`^ALTER TABLE "t" DROP CONSTRAINT IF EXISTS "(refit_nn_t_a)"$`,
	}
	for i, pat := range patterns {
		if !regexp.MustCompile(pat).MatchString(p.Contract[i].SQL) {
			t.Errorf("contract[%d] = %s, want %s", i, p.Contract[i].SQL, pat)
		}
		if p.Contract[i].Op != 0 {
			t.Errorf("contract[%d].Op = %d", i, p.Contract[i].Op)
		}
	}
	if !strings.HasPrefix(p.Contract[0].Cost, "metadata only") || !strings.HasPrefix(p.Contract[1].Lock, "SHARE UPDATE EXCLUSIVE") {
		t.Errorf("NOT VALID should be metadata only and VALIDATE should take SHARE UPDATE EXCLUSIVE: %+v", p.Contract[:2])
	}
	// The added column itself is nullable during the window.
	for _, s := range p.Expand {
		if strings.Contains(s.SQL, "NOT NULL") {
			t.Errorf("expand adds a NOT NULL column: %s", s.SQL)
		}
	}
}

// Whatever a table, column, type or index is called, the SQL quotes it.
func TestBuildPlanQuotesIdentifiers(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - create_enum: {name: "Odd \"Type\"", values: ["it's", "a;b"]}
  - add_column: {table: "Order Items", column: {name: "Unit \"Price\"", type: int, nullable: false}, up: "1"}
  - add_column: {table: "app.Order Items", column: {name: "select", type: int, default: "0"}}
  - create_index: {name: "Idx \"x\"", table: "Order Items", columns: ["Unit \"Price\""]}
  - drop_column: {table: "Order Items", column: "Old Col"}
  - bulk_insert: {table: "Order Items", rows: [{"Unit \"Price\"": 1, "order": 2}]}
`)
	p := migration.BuildPlan(m, &migration.Facts{Tables: map[string]*migration.TableFacts{
		"Order Items": {Key: []migration.KeyColumn{{Name: "order", Type: "int"}}, Columns: map[string]string{"order": "integer", `Unit "Price"`: "integer"}},
	}})
	all := append(append(append(p.Forward(), p.Contract...), p.Rollback...), []migration.Step{}...)
	joined := strings.Join(sqls(all), "\n")
	for _, want := range []string{
		`CREATE TYPE "Odd ""Type""" AS ENUM ('it''s', 'a;b')`,
		`ALTER TABLE "Order Items" ADD COLUMN "Unit ""Price""" int`,
		`ALTER TABLE "app"."Order Items" ADD COLUMN "select" int DEFAULT (0)`,
		`CREATE INDEX CONCURRENTLY "Idx ""x""" ON "Order Items" ("Unit ""Price""")`,
		`ALTER TABLE "Order Items" DROP COLUMN IF EXISTS "Old Col"`,
		`INSERT INTO "Order Items" ("Unit ""Price""", "order") VALUES (CAST($1::text AS integer), CAST($2::text AS integer))`,
		`DELETE FROM "Order Items" WHERE ("order") IN ((CAST($1::text AS integer)))`,
		`ALTER TABLE "Order Items" ADD CONSTRAINT "refit_nn_Order Items_Unit ""Price""" CHECK ("Unit ""Price""" IS NOT NULL) NOT VALID`,
		`ALTER TABLE "Order Items" ALTER COLUMN "Unit ""Price""" SET NOT NULL`,
		`DROP TYPE IF EXISTS "Odd ""Type"""`,
		`DROP INDEX CONCURRENTLY IF EXISTS "Idx ""x"""`,
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("no statement contains\n  %s\nstatements:\n  %s", want, strings.ReplaceAll(joined, "\n", "\n  "))
		}
	}
	// No identifier appears unquoted: strip quoted identifiers and string
	// literals, and none of the names may remain.
	strip := regexp.MustCompile(`"(?:[^"]|"")*"|'(?:[^']|'')*'`)
	for _, s := range all {
		rest := strip.ReplaceAllString(s.SQL, "")
		for _, name := range []string{"Order", "Items", "Price", "Odd", "Type", "Idx", "select", "Old", "Col", "order"} {
			if regexp.MustCompile(`\b` + name + `\b`).MatchString(rest) {
				t.Errorf("%q appears unquoted in %s", name, s.SQL)
			}
		}
	}
	checkRollback(t, p)
}

func TestConstraintName(t *testing.T) {
	long := strings.Repeat("t", 63)
	tests := []struct{ table, column string }{
		{"users", "first_name"},
		{long, "c"},
		{"t", long},
		{long, long},
		{strings.Repeat("é", 31), strings.Repeat("ü", 31)}, // 2-byte characters across the cut
		{strings.Repeat("€", 21), strings.Repeat("€", 21)}, // 3-byte characters
		{"x" + strings.Repeat("€", 21), "y"},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		n := migration.ConstraintName("refit_nn", tt.table, tt.column)
		if len(n) > 63 {
			t.Errorf("ConstraintName(%q, %q) = %q: %d bytes", tt.table, tt.column, n, len(n))
		}
		if !utf8.ValidString(n) {
			t.Errorf("ConstraintName(%q, %q) = %q is not valid UTF-8", tt.table, tt.column, n)
		}
		if !strings.HasPrefix(n, "refit_nn_") {
			t.Errorf("ConstraintName lost its prefix: %q", n)
		}
		if n != migration.ConstraintName("refit_nn", tt.table, tt.column) {
			t.Errorf("ConstraintName is not deterministic")
		}
		key := tt.table + "/" + tt.column
		if prev, dup := seen[n]; dup {
			t.Errorf("ConstraintName collides for %s and %s: %q", prev, key, n)
		}
		seen[n] = key
	}
	if n := migration.ConstraintName("refit_nn", "users", "first_name"); n != "refit_nn_users_first_name" {
		t.Errorf("short names are kept as is: %q", n)
	}
	// Long names that differ only at the end still get distinct names.
	a := migration.ConstraintName("refit_nn", long, long+"a")
	b := migration.ConstraintName("refit_nn", long, long+"b")
	if a == b {
		t.Errorf("long names differing at the end collide: %q", a)
	}
}

var paramRe = regexp.MustCompile(`\$(\d+)`)

func TestBuildPlanBulkInsert(t *testing.T) {
	var b strings.Builder
	b.WriteString("name: seed\noperations:\n  - bulk_insert:\n      table: plans\n      rows:\n")
	const n = 1201
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "        - {id: %d, name: \"plan-%d'; DROP TABLE plans; --\", price: %d.5, active: %v}\n", 100000+i, i, i, i%2 == 0)
	}
	b.WriteString("        - {name: no-id}\n") // no key: that chunk cannot be undone by key
	m := mustParse(t, b.String())
	rows := n + 1

	check := func(t *testing.T, p *migration.Plan, typed bool) {
		t.Helper()
		if len(p.Expand) != 3 {
			t.Fatalf("%d rows in %d steps, want 3 (chunks of 500)", rows, len(p.Expand))
		}
		for i, s := range p.Expand {
			wantRows := min(500, rows-500*i)
			if s.Op != 0 || s.Kind != "bulk_insert" || !s.Transactional {
				t.Errorf("expand[%d] = %+v", i, s)
			}
			// With facts the table is named as the database resolved it.
			target := `"plans"`
			if typed {
				target = `"public"."plans"`
			}
			if !strings.HasPrefix(s.SQL, `INSERT INTO `+target+` ("active", "id", "name", "price") VALUES (`) {
				t.Errorf("expand[%d] SQL = %.120s", i, s.SQL)
			}
			if got := strings.Count(s.SQL, "), (") + 1; got != wantRows {
				t.Errorf("expand[%d] inserts %d rows, want %d", i, got, wantRows)
			}
			// Values travel as parameters only.
			for _, bad := range []string{"plan-", "DROP", "100000", ".5", "true", "'"} {
				if strings.Contains(s.SQL, bad) {
					t.Errorf("expand[%d] SQL contains the value text %q", i, bad)
				}
			}
			params := paramRe.FindAllStringSubmatch(s.SQL, -1)
			if len(params) != len(s.Args) {
				t.Errorf("expand[%d]: %d placeholders, %d args", i, len(params), len(s.Args))
			}
			for j, pm := range params {
				if pm[1] != fmt.Sprint(j+1) {
					t.Fatalf("expand[%d]: placeholder %d is $%s", i, j, pm[1])
				}
			}
			if typed != strings.Contains(s.SQL, "CAST($2::text AS integer)") {
				t.Errorf("expand[%d]: typed=%v but SQL %.200s", i, typed, s.SQL)
			}
		}
		first := p.Expand[0].Args[:4]
		if want := []any{"true", "100000", "plan-0'; DROP TABLE plans; --", "0.5"}; !reflect.DeepEqual(first, want) {
			t.Errorf("first row args = %#v, want %#v", first, want)
		}
		last := p.Expand[2]
		if !strings.HasSuffix(last.SQL, "(DEFAULT, DEFAULT, $"+fmt.Sprint(len(last.Args))+", DEFAULT)") &&
			!strings.HasSuffix(last.SQL, fmt.Sprintf("(DEFAULT, DEFAULT, CAST($%d::text AS text), DEFAULT)", len(last.Args))) {
			t.Errorf("a row without some columns uses DEFAULT for them: %s", last.SQL[len(last.SQL)-80:])
		}
	}

	t.Run("no facts", func(t *testing.T) {
		p := migration.BuildPlan(m, nil)
		check(t, p, false)
		if len(p.Rollback) != 0 {
			t.Errorf("without the key, seeded rows cannot be deleted: %v", sqls(p.Rollback))
		}
	})
	t.Run("with key", func(t *testing.T) {
		facts := &migration.Facts{Tables: map[string]*migration.TableFacts{"plans": {
			Name:    migration.TableName{Schema: "public", Name: "plans"},
			Key:     []migration.KeyColumn{{Name: "id", Type: "integer"}},
			Columns: map[string]string{"id": "integer", "name": "text", "price": "numeric", "active": "boolean"},
		}}}
		p := migration.BuildPlan(m, facts)
		check(t, p, true)
		// The last chunk has a row without id: it has no rollback step.
		if len(p.Rollback) != 2 {
			t.Fatalf("rollback = %d steps, want 2 (the chunk with a keyless row is skipped)", len(p.Rollback))
		}
		for i, r := range p.Rollback {
			if r.Requires != 1-i {
				t.Errorf("rollback[%d].Requires = %d, want %d", i, r.Requires, 1-i)
			}
			if !strings.HasPrefix(r.SQL, `DELETE FROM "public"."plans" WHERE ("id") IN ((CAST($1::text AS integer)), (CAST($2::text AS integer))`) {
				t.Errorf("rollback[%d] SQL = %.150s", i, r.SQL)
			}
			if len(r.Args) != 500 || strings.Contains(r.SQL, "100000") {
				t.Errorf("rollback[%d]: %d args; the keys must be parameters", i, len(r.Args))
			}
		}
		if p.Rollback[1].Args[0] != "100000" || p.Rollback[0].Args[0] != "100500" {
			t.Errorf("rollback args start with %v and %v", p.Rollback[1].Args[0], p.Rollback[0].Args[0])
		}
		checkRollback(t, p)
	})
	t.Run("composite key", func(t *testing.T) {
		m := mustParse(t, "name: s\noperations:\n  - bulk_insert: {table: t, rows: [{a: 1, b: x, c: 3}, {a: 2, b: y}]}\n")
		facts := &migration.Facts{Tables: map[string]*migration.TableFacts{"t": {
			Key:     []migration.KeyColumn{{Name: "b", Type: "text"}, {Name: "a", Type: "integer"}},
			Columns: map[string]string{"a": "integer", "b": "text", "c": "bigint"},
		}}}
		p := migration.BuildPlan(m, facts)
		requireSQL(t, "rollback", p.Rollback, []string{
			`DELETE FROM "t" WHERE ("b", "a") IN ((CAST($1::text AS text), CAST($2::text AS integer)), (CAST($3::text AS text), CAST($4::text AS integer)))`,
		})
		if want := []any{"x", "1", "y", "2"}; !reflect.DeepEqual(p.Rollback[0].Args, want) {
			t.Errorf("args = %v, want %v", p.Rollback[0].Args, want)
		}
	})
	t.Run("null values", func(t *testing.T) {
		m := mustParse(t, "name: s\noperations:\n  - bulk_insert: {table: t, rows: [{id: 1, note: null}, {id: null}]}\n")
		p := migration.BuildPlan(m, &migration.Facts{Tables: map[string]*migration.TableFacts{"t": {
			Key: []migration.KeyColumn{{Name: "id", Type: "integer"}}, Columns: map[string]string{"id": "integer", "note": "text"}}}})
		if got := p.Expand[0].Args; !reflect.DeepEqual(got, []any{"1", nil, nil}) {
			t.Errorf("args = %#v: null stays a SQL NULL", got)
		}
		if len(p.Rollback) != 0 {
			t.Errorf("a row with a NULL key cannot be deleted by key: %v", sqls(p.Rollback))
		}
	})
}

// A volatile default cannot be added with the column (that rewrites the
// table): the column is added bare, the default set for new rows, and the
// existing rows backfilled with the default expression.
func TestBuildPlanVolatileDefault(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - add_column: {table: events, column: {name: created_at, type: timestamptz, nullable: false, default: "clock_timestamp()"}}
  - add_column: {table: events, column: {name: token, type: uuid, default: "gen_random_uuid()"}, up: "md5(id::text)::uuid"}
  - add_column: {table: events, column: {name: kind, type: text, default: "'x'"}}
`)
	facts := &migration.Facts{VolatileDefault: map[int]bool{0: true, 1: true}, Tables: map[string]*migration.TableFacts{
		"events": {Key: []migration.KeyColumn{{Name: "id", Type: "bigint"}}, Columns: map[string]string{"id": "bigint"}}}}
	p := migration.BuildPlan(m, facts)
	requireSQL(t, "expand", p.Expand, []string{
		`ALTER TABLE "events" ADD COLUMN "created_at" timestamptz`,
		`ALTER TABLE "events" ALTER COLUMN "created_at" SET DEFAULT (clock_timestamp())`,
		`ALTER TABLE "events" ADD COLUMN "token" uuid`,
		`ALTER TABLE "events" ALTER COLUMN "token" SET DEFAULT (gen_random_uuid())`,
		`ALTER TABLE "events" ADD COLUMN "kind" text DEFAULT ('x')`,
	})
	want := []migration.Backfill{{Table: migration.TableName{Name: "events"}, Sets: []migration.ColumnSet{
		// A volatile default fills the existing rows once; the sync never
		// recomputes it (it is not a function of the row).
		{Column: "created_at", Expr: "clock_timestamp()", Fill: true},
		{Column: "token", Expr: "md5(id::text)::uuid"}, // up wins over the default
	}}}
	if !reflect.DeepEqual(p.Backfills, want) {
		t.Errorf("Backfills = %+v, want %+v", p.Backfills, want)
	}
	requireSQL(t, "rollback", p.Rollback, []string{
		`ALTER TABLE "events" DROP COLUMN IF EXISTS "kind"`,
		`ALTER TABLE "events" DROP COLUMN IF EXISTS "token"`,
		`ALTER TABLE "events" DROP COLUMN IF EXISTS "created_at"`,
	})
	var requires []int
	for _, r := range p.Rollback {
		requires = append(requires, r.Requires)
	}
	if !reflect.DeepEqual(requires, []int{4, 2, 0}) {
		t.Errorf("rollback Requires = %v, want [4 2 0] (each undoes its ADD COLUMN)", requires)
	}
	checkRollback(t, p)

	// Without facts the same default is assumed non-volatile.
	p = migration.BuildPlan(m, nil)
	if got := p.Expand[0].SQL; got != `ALTER TABLE "events" ADD COLUMN "created_at" timestamptz DEFAULT (clock_timestamp())` {
		t.Errorf("without facts: %s", got)
	}
	if len(p.Backfills) != 1 || len(p.Backfills[0].Sets) != 1 {
		t.Errorf("without facts only the up is backfilled: %+v", p.Backfills)
	}
}

// A default that reads like a column constraint stays one expression.
func TestBuildPlanDefaultParenthesized(t *testing.T) {
	m := mustParse(t, "name: m\noperations:\n  - add_column: {table: t, column: {name: c, type: int, default: \"1 NOT NULL\"}}\n")
	p := migration.BuildPlan(m, nil)
	if got := p.Expand[0].SQL; got != `ALTER TABLE "t" ADD COLUMN "c" int DEFAULT (1 NOT NULL)` {
		t.Errorf("SQL = %s", got)
	}
}

func TestBuildPlanSQLAndDrop(t *testing.T) {
	m := mustParse(t, `
name: m
operations:
  - sql: {up: "CREATE TABLE a (id int)", down: "DROP TABLE a"}
  - sql: {up: "CREATE INDEX CONCURRENTLY ai ON a (id)", down: "DROP INDEX CONCURRENTLY ai", transactional: false}
  - sql: {up: "SELECT 1"}
  - drop_column: {table: t, column: old}
  - sql: {up: "VACUUM t", phase: contract, transactional: false}
  - add_column: {table: t, column: {name: n, type: int}}
`)
	p := migration.BuildPlan(m, nil)
	requireSQL(t, "expand", p.Expand, []string{"CREATE TABLE a (id int)", "CREATE INDEX CONCURRENTLY ai ON a (id)", "SELECT 1", `ALTER TABLE "t" ADD COLUMN "n" int`})
	requireSQL(t, "contract", p.Contract, []string{`ALTER TABLE "t" DROP COLUMN IF EXISTS "old"`, "VACUUM t"})
	requireSQL(t, "rollback", p.Rollback, []string{`ALTER TABLE "t" DROP COLUMN IF EXISTS "n"`, "DROP INDEX CONCURRENTLY ai", "DROP TABLE a"})
	if !p.Expand[0].Transactional || p.Expand[1].Transactional || p.Contract[1].Transactional {
		t.Errorf("transactional flags: %v %v %v", p.Expand[0].Transactional, p.Expand[1].Transactional, p.Contract[1].Transactional)
	}
	if p.Rollback[1].Transactional || !p.Rollback[2].Transactional {
		t.Errorf("a down runs like its up")
	}
	if len(p.Backfills) != 0 {
		t.Errorf("a nullable column without up or default needs no backfill: %+v", p.Backfills)
	}
	checkRollback(t, p)
}

func TestStageString(t *testing.T) {
	for s, want := range map[migration.Stage]string{
		migration.StageExpand: "expand", migration.StagePostBackfill: "post-backfill",
		migration.StageContract: "contract", migration.StageRollback: "rollback", migration.Stage(9): "stage(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("Stage(%d).String() = %q, want %q", s, got, want)
		}
	}
}

// TestBuildPlanEnforceBeforeDrops: NOT NULL enforcement runs before drops
// and contract-phase sql whatever the file order, so the sync can keep
// running while constraints are validated.
func TestBuildPlanEnforceBeforeDrops(t *testing.T) {
	src := `name: order
operations:
  - drop_column: {table: users, column: legacy}
  - sql: {up: "SELECT 1", phase: contract}
  - add_column:
      table: users
      column: {name: a, type: int, nullable: false}
      up: "1"
`
	m, err := migration.Parse("order.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	p := migration.BuildPlan(m, nil)
	var kinds []string
	for _, s := range p.Contract {
		kinds = append(kinds, s.Kind)
	}
	want := []string{"add_column", "add_column", "add_column", "add_column", "drop_column", "sql"}
	if !reflect.DeepEqual(kinds, want) {
		t.Fatalf("contract order %v, want %v", kinds, want)
	}
}

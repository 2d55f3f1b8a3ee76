package worker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// The documented least-privilege role (docs/safety.md), for a migration
// that adds a synced column and builds an index on a table in schema
// public that the role owns: LOGIN REPLICATION, and these grants.
var leastPrivilegeGrants = []string{
	"GRANT CREATE ON DATABASE {db} TO {role}",
	"GRANT CREATE ON SCHEMA public TO {role}",
	"GRANT pg_read_all_stats TO {role}",
}

// originGrants are optional: with them refit skips its own writes in the
// stream by their replication origin.
var originGrants = []string{
	`GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create(text), pg_catalog.pg_replication_origin_drop(text),
		pg_catalog.pg_replication_origin_session_setup(text), pg_catalog.pg_replication_origin_session_reset() TO {role}`,
}

// partialOriginGrants are what docs/sync.md used to ask for: refit then
// created origins it could not drop, and the job failed after contract.
var partialOriginGrants = []string{
	`GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create(text), pg_catalog.pg_replication_origin_session_setup(text) TO {role}`,
}

// testRole is a login role created for one test and dropped after it.
type testRole struct {
	name string
	dsn  string
}

// createRole creates a login role with the given attributes and runs the
// grants ({role} stands for the quoted role, {db} for the quoted
// database) on the superuser pool. Roles are cluster-wide, so the name
// carries the database's OID. The role, and everything it owns in the test
// database, is dropped when the test ends.
func createRole(t *testing.T, admin *pgxpool.Pool, base, attrs string, grants ...string) testRole {
	t.Helper()
	ctx := context.Background()
	var dbOID uint32
	var db string
	if err := admin.QueryRow(ctx, "SELECT oid, datname::text FROM pg_database WHERE datname = current_database()").Scan(&dbOID, &db); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%s_%d", base, dbOID)
	pw := make([]byte, 12)
	if _, err := rand.Read(pw); err != nil {
		t.Fatal(err)
	}
	password := hex.EncodeToString(pw)
	q := pgx.Identifier{name}.Sanitize()
	mustExec(t, admin, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s' %s", q, password, attrs))
	t.Cleanup(func() {
		ctx := context.Background()
		if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1", name); err != nil {
			t.Error(err)
		}
		if _, err := admin.Exec(ctx, fmt.Sprintf("DROP OWNED BY %s; DROP ROLE %s", q, q)); err != nil {
			t.Errorf("drop role %s: %v", name, err)
		}
	})
	names := strings.NewReplacer("{role}", q, "{db}", pgx.Identifier{db}.Sanitize())
	for _, g := range grants {
		mustExec(t, admin, names.Replace(g))
	}
	dsn := admin.Config().ConnString()
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.User = url.UserPassword(name, password)
		dsn = u.String()
	} else {
		dsn += fmt.Sprintf(" user='%s' password='%s'", name, password)
	}
	return testRole{name: name, dsn: dsn}
}

// connectAs opens refit's pool as the role.
func connectAs(t *testing.T, r testRole) *pgxpool.Pool {
	t.Helper()
	pool, err := worker.Connect(context.Background(), r.dsn, 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var user string
	var super bool
	if err := pool.QueryRow(context.Background(), "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&user, &super); err != nil {
		t.Fatal(err)
	}
	if user != r.name || super {
		t.Fatalf("connected as %s (superuser %v), want the non-superuser %s", user, super, r.name)
	}
	return pool
}

const accountsSchema = `
	CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL);
	INSERT INTO accounts SELECT i, 'User' || i || '@Example.com' FROM generate_series(1, 20000) i;
	ANALYZE accounts;`

// publicCreateAsPG15 gives schema public the privileges PostgreSQL 15+
// starts with (no CREATE for PUBLIC) on older servers, where every role may
// create in it: for the tests of a role without CREATE on the schema.
func publicCreateAsPG15(t *testing.T, admin *pgxpool.Pool) {
	t.Helper()
	if pgtest.Shared(t).Version() < 15 {
		mustExec(t, admin, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
	}
}

const accountsMigration = `name: lower_email
operations:
  - add_column:
      table: accounts
      column: {name: email_lower, type: text, nullable: false}
      up: lower(email)
  - create_index: {name: accounts_email_lower_idx, table: accounts, columns: [email_lower]}
`

// refitObjects counts what refit may leave behind: the refit schema, and
// replication slots, publications and refit origins (whichever job).
func refitObjects(t *testing.T, admin *pgxpool.Pool) string {
	t.Helper()
	var s string
	err := admin.QueryRow(context.Background(), `SELECT format('schema=%s slots=%s publications=%s',
		to_regnamespace('refit') IS NOT NULL,
		(SELECT count(*) FROM pg_replication_slots WHERE database = current_database()),
		(SELECT count(*) FROM pg_publication))`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLeastPrivilegeLifecycle runs a migration (a NOT NULL column with an
// up expression, a concurrent index) as a non-superuser that owns the table
// and has exactly the documented grants, through expand → abort → expand →
// backfill → window with a concurrent writer → contract → completed; with
// and without the optional grants on the replication origin functions (and
// with only some of them, which must not leave origins it cannot drop).
// Before the fix the role's job failed after contract on
// pg_replication_origin_drop and never reached refit.migrations.
func TestLeastPrivilegeLifecycle(t *testing.T) {
	for _, tc := range []struct {
		name    string
		extra   []string
		origins bool // refit's own transactions are skipped by origin
	}{
		{"documented role", nil, false},
		{"with origin grants", originGrants, true},
		{"with some origin functions only", partialOriginGrants, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			admin := newPool(t)
			grants := append(append([]string(nil), leastPrivilegeGrants...), tc.extra...)
			role := createRole(t, admin, "app_owner", "REPLICATION", grants...)
			mustExec(t, admin, accountsSchema)
			mustExec(t, admin, "ALTER TABLE accounts OWNER TO "+pgx.Identifier{role.name}.Sanitize())
			pool := connectAs(t, role)
			m, err := migration.Parse("lower_email.yaml", []byte(accountsMigration))
			if err != nil {
				t.Fatal(err)
			}
			before := catalog(t, admin)

			// expand → backfill → window, then abort.
			sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
			if err != nil {
				t.Fatal(err)
			}
			r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
			var stats []replication.Stats
			var statsMu sync.Mutex
			r.OnSyncStopped = func(s replication.Stats) { statsMu.Lock(); stats = append(stats, s); statsMu.Unlock() }
			if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeWaitingContract {
				t.Fatalf("first run: %v %v", out, err)
			}
			if err := r.Store.Transition(ctx, sub.Job.ID, state.PhaseSyncing, state.PhaseAborting, "test", "abort"); err != nil {
				t.Fatal(err)
			}
			if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeAborted {
				t.Fatalf("abort: %v %v", out, err)
			}
			if after := catalog(t, admin); after != before {
				t.Fatalf("abort left the catalog changed:\nbefore: %s\nafter:  %s", before, after)
			}
			if objs := replicationObjects(t, admin); objs != "" {
				t.Fatalf("abort left replication objects: %s", objs)
			}

			// expand again → backfill → window while the application writes →
			// contract.
			sub, err = worker.Submit(ctx, pool, m, migration.ContractManual, "test")
			if err != nil {
				t.Fatal(err)
			}
			r.StopAtWindow = false
			r.GatePoll = 100 * time.Millisecond
			wctx, stopWriter := context.WithCancel(ctx)
			var writes atomic.Int64
			writerErr := make(chan error, 1)
			go func() { writerErr <- writeAccounts(wctx, admin, &writes) }()
			defer stopWriter()
			done := make(chan error, 1)
			go func() {
				out, err := r.Run(ctx, sub.Job.ID)
				if err == nil && out != worker.OutcomeCompleted {
					err = fmt.Errorf("outcome %s", out)
				}
				done <- err
			}()
			waitPhase(t, r.Store, sub.Job.ID, state.PhaseSyncing, 2*time.Minute)
			// pg_read_all_stats is what lets the decode-backlog throttle see
			// the role's own walsender.
			if _, ok, err := replication.DecodeBacklog(ctx, pool, sub.Job.ID); err != nil || !ok {
				t.Fatalf("decode backlog as the role: known %v, %v", ok, err)
			}
			mustExec(t, admin, "REVOKE pg_read_all_stats FROM "+pgx.Identifier{role.name}.Sanitize())
			if _, ok, err := replication.DecodeBacklog(ctx, pool, sub.Job.ID); err != nil || ok {
				t.Fatalf("decode backlog without pg_read_all_stats: known %v, %v (want unknown)", ok, err)
			}
			mustExec(t, admin, "GRANT pg_read_all_stats TO "+pgx.Identifier{role.name}.Sanitize())
			time.Sleep(time.Second) // the application keeps writing in the window
			stopWriter()
			if err := <-writerErr; err != nil {
				t.Fatalf("writer: %v", err)
			}
			if writes.Load() < 50 {
				t.Fatalf("the writer wrote only %d times", writes.Load())
			}
			if err := r.Store.OpenContract(ctx, sub.Job.ID, "test"); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("run: %v", err)
				}
			case <-time.After(2 * time.Minute):
				t.Fatal("the job did not complete after the gate opened")
			}

			var n, bad int64
			var notNull, indexValid bool
			var applied int
			err = admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM accounts WHERE email_lower IS DISTINCT FROM lower(email)),
				(SELECT attnotnull FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attname = 'email_lower'),
				coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('accounts_email_lower_idx')), false),
				(SELECT count(*) FROM refit.migrations WHERE name = $1 AND job_id = $2)::int`, m.Name, sub.Job.ID).
				Scan(&n, &bad, &notNull, &indexValid, &applied)
			if err != nil {
				t.Fatal(err)
			}
			if bad != 0 || n <= 20000 || !notNull || !indexValid || applied != 1 {
				t.Fatalf("after contract: %d of %d rows wrong, NOT NULL %v, index valid %v, recorded %d times", bad, n, notNull, indexValid, applied)
			}
			if objs := replicationObjects(t, admin); objs != "" {
				t.Fatalf("left behind: %s", objs)
			}
			var origins int
			if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE $1",
				fmt.Sprintf("refit\\_j%d\\_%%", sub.Job.ID)).Scan(&origins); err != nil || origins != 0 {
				t.Fatalf("origins left: %d %v", origins, err)
			}
			// The start-of-run sweep runs as the role too (refit run).
			if err := worker.Sweep(ctx, r.Store, replication.DefaultConfig(), zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))); err != nil {
				t.Fatalf("sweep: %v", err)
			}

			statsMu.Lock()
			defer statsMu.Unlock()
			var skipped, keys int64
			walsender := false
			for _, s := range stats {
				skipped += s.TxSkipped
				keys += s.KeysApplied
				walsender = walsender || s.OriginFilter == replication.OriginWalsender
			}
			t.Logf("writer: %d writes; sync: %d keys applied, %d own transactions skipped by origin (walsender filter: %v)", writes.Load(), keys, skipped, walsender)
			switch {
			case tc.origins && walsender:
				// PostgreSQL 16+: refit's transactions never reach the
				// consumer; had they been sent untagged, the 20,000
				// backfilled rows would have come back as dirty keys.
				if skipped != 0 || keys >= 20000 {
					t.Fatalf("with the origin grants and the walsender filter: %d transactions skipped in the client, %d keys applied", skipped, keys)
				}
			case tc.origins && skipped == 0:
				t.Fatal("with the origin grants refit's own transactions were not skipped")
			}
			if !tc.origins && skipped != 0 {
				t.Fatalf("without the origin grants %d transactions were skipped by origin", skipped)
			}
		})
	}
}

// writeAccounts is the old application: it updates the old column of
// random rows and inserts new rows, until ctx is done.
func writeAccounts(ctx context.Context, pool *pgxpool.Pool, writes *atomic.Int64) error {
	next := int64(1_000_000)
	for i := int64(0); ; i++ {
		var err error
		if i%4 == 0 {
			next++
			_, err = pool.Exec(ctx, "INSERT INTO accounts (id, email) VALUES ($1::bigint, 'New' || $1::bigint || '@Example.com')", next)
		} else {
			_, err = pool.Exec(ctx, "UPDATE accounts SET email = 'Changed' || $2::bigint || '@Example.com' WHERE id = $1", 1+i*7919%20000, i)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		writes.Add(1)
		time.Sleep(2 * time.Millisecond)
	}
}

// TestPrivilegeCheck: a role lacking one privilege (or all of them) is
// refused by Submit before anything is created, with one error that names
// every missing privilege and the statement that grants it; a superuser and
// the documented role pass.
func TestPrivilegeCheck(t *testing.T) {
	cases := []struct {
		name    string
		attrs   string   // role attributes
		grants  []string // see createRole
		owner   bool     // the role owns accounts
		setup   string   // run as superuser before the role connects ({role}, {db})
		source  string   // migration; accountsMigration if empty
		want    []string // in the error; {role} and {db} stand for the quoted role and database
		wantNot []string
	}{
		{name: "no REPLICATION", grants: leastPrivilegeGrants, owner: true,
			want: []string{`ALTER ROLE {role} REPLICATION;`}, wantNot: []string{"GRANT CREATE", "pg_read_all_stats TO"}},
		{name: "no CREATE on the database", attrs: "REPLICATION", grants: leastPrivilegeGrants[1:], owner: true,
			want: []string{`GRANT CREATE ON DATABASE {db} TO {role};`, "create the refit schema", "CREATE PUBLICATION"}},
		{name: "no CREATE on the schema", attrs: "REPLICATION", grants: []string{leastPrivilegeGrants[0], leastPrivilegeGrants[2]}, owner: true,
			want: []string{`GRANT CREATE ON SCHEMA "public" TO {role};`, `build index "accounts_email_lower_idx"`}},
		{name: "no pg_read_all_stats", attrs: "REPLICATION", grants: leastPrivilegeGrants[:2], owner: true,
			want: []string{`GRANT pg_read_all_stats TO {role};`}},
		{name: "not the owner", attrs: "REPLICATION", grants: leastPrivilegeGrants,
			want: []string{`ownership of table "public"."accounts"`, `add column "email_lower"`, `CREATE PUBLICATION … FOR TABLE`}},
		{name: "no TEMPORARY", attrs: "REPLICATION", grants: leastPrivilegeGrants, owner: true,
			setup: "REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC",
			want:  []string{`GRANT TEMPORARY ON DATABASE {db} TO {role};`}},
		{name: "create_enum in a schema without CREATE", grants: leastPrivilegeGrants[:1], owner: true,
			setup:  "CREATE SCHEMA app; GRANT USAGE ON SCHEMA app TO {role}",
			source: "name: enum\noperations:\n  - create_enum: {name: app.account_state, values: [active, closed]}\n",
			want:   []string{`GRANT CREATE ON SCHEMA "app" TO {role};`, `CREATE TYPE "app"."account_state"`}, wantNot: []string{"REPLICATION", "TEMPORARY"}},
		{name: "bulk_insert without INSERT", grants: leastPrivilegeGrants[:1],
			setup:  "CREATE TABLE settings (key text PRIMARY KEY, value text); GRANT SELECT ON settings TO {role}",
			source: "name: seed\noperations:\n  - bulk_insert:\n      table: settings\n      rows: [{key: a, value: b}]\n",
			want:   []string{`GRANT INSERT, DELETE ON TABLE "public"."settings" TO {role};`}, wantNot: []string{"ownership", "REPLICATION"}},
		{name: "foreign key without REFERENCES on the parent", attrs: "REPLICATION", grants: leastPrivilegeGrants, owner: true,
			setup:  "CREATE TABLE parents (id bigint PRIMARY KEY); ALTER TABLE parents OWNER TO {other}",
			source: "name: fk\noperations:\n  - add_foreign_key: {table: accounts, name: accounts_parent_fk, columns: [id], references: {table: parents, columns: [id]}}\n",
			want:   []string{`GRANT REFERENCES ON TABLE "public"."parents" TO {role};`}, wantNot: []string{"ownership", "REPLICATION;"}},
		{name: "nothing granted", grants: nil,
			want: []string{`ALTER ROLE {role} REPLICATION;`, `GRANT CREATE ON DATABASE {db} TO {role};`, `GRANT CREATE ON SCHEMA "public" TO {role};`,
				`GRANT pg_read_all_stats TO {role};`, `ownership of table "public"."accounts"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			admin := newPool(t)
			mustExec(t, admin, accountsSchema)
			publicCreateAsPG15(t, admin)
			other := createRole(t, admin, "app", "")
			mustExec(t, admin, "ALTER TABLE accounts OWNER TO "+pgx.Identifier{other.name}.Sanitize())
			role := createRole(t, admin, "refit", tc.attrs, tc.grants...)
			var db string
			if err := admin.QueryRow(ctx, "SELECT current_database()::text").Scan(&db); err != nil {
				t.Fatal(err)
			}
			q := pgx.Identifier{role.name}.Sanitize()
			names := strings.NewReplacer("{role}", q, "{db}", pgx.Identifier{db}.Sanitize(), "{other}", pgx.Identifier{other.name}.Sanitize())
			if tc.owner {
				mustExec(t, admin, "ALTER TABLE accounts OWNER TO "+q)
			}
			if tc.setup != "" {
				mustExec(t, admin, names.Replace(tc.setup))
			}
			src := tc.source
			if src == "" {
				src = accountsMigration
			}
			m, err := migration.Parse("m.yaml", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			// A superuser passes the check (and only the check runs here).
			if err := worker.CheckPrivileges(ctx, admin, m, nil, nil); err != nil {
				t.Fatalf("superuser: %v", err)
			}
			pool := connectAs(t, role)
			before, objsBefore := catalog(t, admin), refitObjects(t, admin)
			_, err = worker.Submit(ctx, pool, m, migration.ContractNow, "test")
			var perr *worker.PrivilegeError
			if !errors.As(err, &perr) {
				t.Fatalf("Submit: %v, want a *worker.PrivilegeError", err)
			}
			msg := err.Error()
			t.Logf("%s", msg)
			for _, w := range tc.want {
				if w = names.Replace(w); !strings.Contains(msg, w) {
					t.Errorf("the error does not contain %q", w)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(msg, w) {
					t.Errorf("the error contains %q", w)
				}
			}
			if after := catalog(t, admin); after != before {
				t.Fatalf("Submit changed the catalog:\nbefore: %s\nafter:  %s", before, after)
			}
			if after := refitObjects(t, admin); after != objsBefore || !strings.Contains(after, "schema=f ") {
				t.Fatalf("Submit created objects: before %s, after %s", objsBefore, after)
			}
			// Granting exactly what the error lists makes the check pass.
			for _, p := range perr.Missing {
				mustExec(t, admin, p.Fix)
			}
			if err := worker.CheckPrivileges(ctx, pool, m, nil, nil); err != nil {
				t.Fatalf("after running the listed fixes: %v", err)
			}
		})
	}
}

// TestPrivilegeCheckRefitSchema: a refit schema created by another role
// (here a superuser's earlier run) is reported, by Validate (the check
// `refit plan --dsn` runs), with the statements that give it to the role.
func TestPrivilegeCheckRefitSchema(t *testing.T) {
	ctx := context.Background()
	admin := newPool(t)
	mustExec(t, admin, accountsSchema)
	if _, err := state.Open(ctx, admin); err != nil {
		t.Fatal(err)
	}
	role := createRole(t, admin, "app_owner", "REPLICATION", leastPrivilegeGrants...)
	q := pgx.Identifier{role.name}.Sanitize()
	mustExec(t, admin, "ALTER TABLE accounts OWNER TO "+q)
	pool := connectAs(t, role)
	m, err := migration.Parse("m.yaml", []byte(accountsMigration))
	if err != nil {
		t.Fatal(err)
	}
	_, err = worker.Validate(ctx, pool, m)
	var perr *worker.PrivilegeError
	if !errors.As(err, &perr) {
		t.Fatalf("Validate: %v, want a *worker.PrivilegeError", err)
	}
	t.Logf("%v", err)
	for _, w := range []string{
		`ownership of schema "refit" and its objects (owned by `,
		`ALTER SCHEMA "refit" OWNER TO ` + q + `;`,
		`ALTER TABLE "refit"."jobs" OWNER TO ` + q + `;`,
		`ALTER FUNCTION "refit"."submit"(name text, source text, contract text) OWNER TO ` + q + `;`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not contain %q:\n%v", w, err)
		}
	}
	for _, p := range perr.Missing {
		mustExec(t, admin, p.Fix)
	}
	if _, err := worker.Validate(ctx, pool, m); err != nil {
		t.Fatalf("after running the listed fixes: %v", err)
	}
	// The schema is now the role's, by state.Open's rules too.
	if _, err := state.Open(ctx, pool); err != nil {
		t.Fatalf("state.Open as the role after the fixes: %v", err)
	}
}

// TestPrivilegeCheckSQLSubmitted: a job submitted through SQL
// (refit.submit) is checked when a runner claims it (the daemon): an
// under-privileged role's job fails with the missing GRANT before expand.
func TestPrivilegeCheckSQLSubmitted(t *testing.T) {
	ctx := context.Background()
	admin := newPool(t)
	mustExec(t, admin, accountsSchema)
	publicCreateAsPG15(t, admin)
	// Everything documented but CREATE on schema public (the index).
	role := createRole(t, admin, "app_owner", "REPLICATION", leastPrivilegeGrants[0], leastPrivilegeGrants[2])
	q := pgx.Identifier{role.name}.Sanitize()
	mustExec(t, admin, "ALTER TABLE accounts OWNER TO "+q)
	pool := connectAs(t, role)
	before := catalog(t, admin)
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.FatalLevel)))
	var id int64
	if err := pool.QueryRow(ctx, "SELECT refit.submit($1, $2, 'now')", "lower_email", accountsMigration).Scan(&id); err != nil {
		t.Fatal(err)
	}
	_, err := r.Run(ctx, id)
	var perr *worker.PrivilegeError
	if !errors.As(err, &perr) {
		t.Fatalf("run: %v, want a *worker.PrivilegeError", err)
	}
	job, err := r.Store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if want := `GRANT CREATE ON SCHEMA "public" TO ` + q + `;`; job.Phase != state.PhaseFailed || !strings.Contains(job.Error, want) {
		t.Fatalf("job %s with error %q, want failed with %q", job.Phase, job.Error, want)
	}
	if after := catalog(t, admin); after != before {
		t.Fatalf("the claim changed the catalog:\nbefore: %s\nafter:  %s", before, after)
	}
	if objs := replicationObjects(t, admin); objs != "" {
		t.Fatalf("replication objects: %s", objs)
	}
}

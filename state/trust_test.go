package state_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is a fresh database with a superuser pool for setting the scene
// (admin, without refit's session defaults) and a role of the test.
type env struct {
	dsn      string
	admin    *pgxpool.Pool
	attacker string // a role with CREATE on the database, nothing else
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	admin, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	e := &env{dsn: dsn, admin: admin}
	e.attacker = e.role(t, "attacker")
	e.exec(t, "GRANT CREATE ON DATABASE "+ident(e.database(t))+" TO "+ident(e.attacker))
	return e
}

// role creates a role with a name unique on the cluster (roles are shared
// by all databases) and drops it, with what it owns here, at the end.
func (e *env) role(t *testing.T, prefix string) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := prefix + "_" + hex.EncodeToString(b[:])
	e.exec(t, "CREATE ROLE "+ident(name))
	t.Cleanup(func() {
		ctx := context.Background()
		if _, err := e.admin.Exec(ctx, "DROP OWNED BY "+ident(name)+" CASCADE"); err != nil {
			t.Errorf("drop owned by %s: %v", name, err)
		}
		if _, err := e.admin.Exec(ctx, "DROP ROLE "+ident(name)); err != nil {
			t.Errorf("drop role %s: %v", name, err)
		}
	})
	return name
}

func (e *env) database(t *testing.T) string {
	t.Helper()
	var db string
	if err := e.admin.QueryRow(context.Background(), "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	return db
}

func (e *env) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := e.admin.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// asRole runs sql as role (SET ROLE on one admin connection), so that what
// it creates is owned by that role.
func (e *env) asRole(t *testing.T, role, sql string) {
	t.Helper()
	err := pgx.BeginFunc(context.Background(), e.admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), "SET LOCAL ROLE "+ident(role)); err != nil {
			return err
		}
		_, err := tx.Exec(context.Background(), sql)
		return err
	})
	if err != nil {
		t.Fatalf("as %s: %s: %v", role, sql, err)
	}
}

func (e *env) queryBool(t *testing.T, sql string, args ...any) bool {
	t.Helper()
	var v bool
	if err := e.admin.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// connect opens a refit pool (worker.Connect, so with refit's session
// defaults); params are added to the DSN (e.g. options).
func (e *env) connect(t *testing.T, params ...string) *pgxpool.Pool {
	t.Helper()
	dsn := e.dsn
	for i := 0; i+1 < len(params); i += 2 {
		dsn = withParam(t, dsn, params[i], params[i+1])
	}
	pool, err := worker.Connect(context.Background(), dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// open runs state.Open on a new refit pool.
func (e *env) open(t *testing.T, opts ...state.Option) error {
	t.Helper()
	_, err := state.Open(context.Background(), e.connect(t), opts...)
	return err
}

// withParam adds a connection parameter to a URL or keyword/value DSN.
func withParam(t *testing.T, dsn, key, value string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20") // pgx reads + as itself
		return u.String()
	}
	return dsn + " " + key + "='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(value) + "'"
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// mustUntrusted checks that err is an *state.UntrustedError whose message
// contains every one of want, and returns it.
func mustUntrusted(t *testing.T, err error, want ...string) *state.UntrustedError {
	t.Helper()
	var ue *state.UntrustedError
	if !errors.As(err, &ue) {
		t.Fatalf("Open: got %v, want an *state.UntrustedError", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q:\n%v", w, err)
		}
	}
	return ue
}

// TestTrustPreCreatedSchema reproduces the report: a role with CREATE on the
// database creates schema refit with refit.meta and a trigger that makes it
// superuser when a superuser writes to the table. Open as the superuser must
// refuse, name the owner and what to do, and write nothing.
func TestTrustPreCreatedSchema(t *testing.T) {
	e := newEnv(t)
	e.asRole(t, e.attacker, `CREATE SCHEMA refit;
		CREATE TABLE refit.meta (version int NOT NULL);
		CREATE FUNCTION refit.escalate() RETURNS trigger LANGUAGE plpgsql AS $fn$
		BEGIN
			IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
				EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', '`+e.attacker+`');
			END IF;
			RETURN NEW;
		END
		$fn$;
		CREATE TRIGGER escalate BEFORE INSERT OR UPDATE ON refit.meta FOR EACH ROW EXECUTE FUNCTION refit.escalate()`)
	isSuper := func() bool {
		return e.queryBool(t, "SELECT rolsuper FROM pg_roles WHERE rolname = $1", e.attacker)
	}
	// The trap works: a superuser's INSERT makes the attacker superuser
	// (rolled back here).
	ctx := context.Background()
	tx, err := e.admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO refit.meta VALUES (0)"); err != nil {
		t.Fatal(err)
	}
	var trapped bool
	if err := tx.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = $1", e.attacker).Scan(&trapped); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if !trapped || isSuper() {
		t.Fatalf("the trap does not work as the test expects (in the transaction: %v, after: %v)", trapped, isSuper())
	}

	err = e.open(t)
	mustUntrusted(t, err,
		`schema "refit" is owned by role "`+e.attacker+`", not by "postgres" (the role refit connects as): refit will not use it`,
		`ALTER SCHEMA "refit" OWNER TO "postgres"`,
		`table refit.meta is owned by role "`+e.attacker+`"`,
		`function refit.escalate() is owned by role "`+e.attacker+`"`,
		`trigger escalate on table refit.meta`,
		`DROP TRIGGER "escalate" ON refit.meta`)
	t.Log(err)
	if isSuper() {
		t.Fatal("the attacker became superuser")
	}
	if n := e.queryBool(t, "SELECT count(*) = 0 FROM refit.meta"); !n {
		t.Error("refit.meta has rows")
	}
	if e.queryBool(t, "SELECT to_regclass('refit.jobs') IS NOT NULL") {
		t.Error("refit.jobs was created")
	}
	// TrustedOwners can be told to trust the owner of a schema created by
	// another role. (The trigger is still refused.)
	mustUntrusted(t, e.open(t, state.TrustedOwners(e.attacker)), `trigger escalate on table refit.meta`)
	if isSuper() {
		t.Fatal("the attacker became superuser")
	}
}

// TestTrustRefuses tampers with a good refit schema in one way per case;
// Open must refuse each, naming the object.
func TestTrustRefuses(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, e *env)
		want  []string
	}{
		{"schema given to another role", func(t *testing.T, e *env) {
			e.exec(t, "ALTER SCHEMA refit OWNER TO "+ident(e.attacker))
		}, []string{`schema "refit" is owned by role "{attacker}"`}},
		{"table owned by another role", func(t *testing.T, e *env) {
			e.exec(t, "CREATE TABLE refit.extra (x int); ALTER TABLE refit.extra OWNER TO "+ident(e.attacker))
		}, []string{`table refit.extra is owned by role "{attacker}"`, `refit will not use schema "refit"`}},
		{"view owned by another role", func(t *testing.T, e *env) {
			e.exec(t, "CREATE VIEW refit.v AS SELECT 1 AS x; ALTER VIEW refit.v OWNER TO "+ident(e.attacker))
		}, []string{`view refit.v is owned by role "{attacker}"`}},
		{"sequence owned by another role", func(t *testing.T, e *env) {
			e.exec(t, "CREATE SEQUENCE refit.s; ALTER SEQUENCE refit.s OWNER TO "+ident(e.attacker))
		}, []string{`sequence refit.s is owned by role "{attacker}"`}},
		{"function owned by another role", func(t *testing.T, e *env) {
			e.exec(t, "ALTER FUNCTION refit.submit(text, text, text) OWNER TO "+ident(e.attacker))
		}, []string{`function refit.submit(text,text,text) is owned by role "{attacker}"`}},
		{"type owned by another role", func(t *testing.T, e *env) {
			e.exec(t, "CREATE TYPE refit.mood AS ENUM ('ok'); ALTER TYPE refit.mood OWNER TO "+ident(e.attacker))
		}, []string{`type refit.mood is owned by role "{attacker}"`}},
		{"trigger on refit.jobs", func(t *testing.T, e *env) {
			e.exec(t, `CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
				CREATE TRIGGER touch BEFORE UPDATE ON refit.jobs FOR EACH ROW EXECUTE FUNCTION public.touch()`)
		}, []string{`trigger touch on table refit.jobs`, `DROP TRIGGER "touch" ON refit.jobs`}},
		{"rule on refit.job_events", func(t *testing.T, e *env) {
			e.exec(t, "CREATE RULE tell AS ON INSERT TO refit.job_events DO ALSO NOTIFY refit_rule")
		}, []string{`rule tell on table refit.job_events`, `DROP RULE "tell" ON refit.job_events`}},
		{"policy on refit.jobs", func(t *testing.T, e *env) {
			e.exec(t, "CREATE POLICY mine ON refit.jobs USING (true)")
		}, []string{`policy mine on table refit.jobs`, `DROP POLICY "mine" ON refit.jobs`}},
		{"CREATE on the schema granted", func(t *testing.T, e *env) {
			e.exec(t, "GRANT CREATE ON SCHEMA refit TO "+ident(e.attacker))
		}, []string{`schema "refit" grants CREATE to "{attacker}"`, `REVOKE CREATE ON SCHEMA "refit" FROM "{attacker}"`}},
		{"CREATE on the schema granted to PUBLIC", func(t *testing.T, e *env) {
			e.exec(t, "GRANT CREATE ON SCHEMA refit TO PUBLIC")
		}, []string{`schema "refit" grants CREATE to PUBLIC`, `REVOKE CREATE ON SCHEMA "refit" FROM PUBLIC`}},
		{"TRIGGER on a refit table granted", func(t *testing.T, e *env) {
			e.exec(t, "GRANT TRIGGER ON refit.jobs TO "+ident(e.attacker))
		}, []string{`table refit.jobs grants TRIGGER to "{attacker}"`, `REVOKE TRIGGER ON refit.jobs FROM "{attacker}"`}},
		{"child of a refit table", func(t *testing.T, e *env) {
			e.exec(t, "CREATE TABLE public.jobs_child () INHERITS (refit.jobs); ALTER TABLE public.jobs_child OWNER TO "+ident(e.attacker))
		}, []string{`table public.jobs_child (owned by role "{attacker}") inherits from refit.jobs`, `ALTER TABLE public.jobs_child NO INHERIT refit.jobs`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			if err := e.open(t); err != nil {
				t.Fatal(err)
			}
			c.setup(t, e)
			want := make([]string, len(c.want))
			for i, w := range c.want {
				want[i] = strings.ReplaceAll(w, "{attacker}", e.attacker)
			}
			err := e.open(t)
			if ue := mustUntrusted(t, err, want...); len(ue.Problems) != 1 {
				t.Errorf("%d problems reported, want 1", len(ue.Problems))
			}
			t.Log(err)
		})
	}
}

// TestTrustFreshSchema: Open creates schema refit owned by current_user,
// with nothing for PUBLIC, and refit.submit is not executable by PUBLIC;
// opening it again is fine.
func TestTrustFreshSchema(t *testing.T) {
	e := newEnv(t)
	if err := e.open(t); err != nil {
		t.Fatal(err)
	}
	if !e.queryBool(t, "SELECT nspowner = 'postgres'::regrole FROM pg_namespace WHERE nspname = 'refit'") {
		t.Error("schema refit is not owned by the role refit connects as")
	}
	for _, q := range []string{
		"SELECT has_schema_privilege($1, 'refit', 'USAGE')",
		"SELECT has_schema_privilege($1, 'refit', 'CREATE')",
		"SELECT has_function_privilege($1, 'refit.submit(text, text, text)', 'EXECUTE')",
	} {
		if e.queryBool(t, q, e.attacker) {
			t.Errorf("%s is true for a role with no grants", q)
		}
	}
	if !e.queryBool(t, "SELECT 'search_path=pg_catalog, pg_temp' = ANY (proconfig) FROM pg_proc WHERE oid = 'refit.submit(text, text, text)'::regprocedure") {
		t.Error("refit.submit has no fixed search_path")
	}
	for range 2 {
		if err := e.open(t); err != nil {
			t.Fatalf("reopen: %v", err)
		}
	}
}

// TestTrustAccepts: schemas refit may use although current_user does not own
// everything in them.
func TestTrustAccepts(t *testing.T) {
	t.Run("created for refit's role by a superuser", func(t *testing.T) {
		e := newEnv(t)
		app := e.role(t, "app")
		e.exec(t, "CREATE SCHEMA refit; GRANT USAGE, CREATE ON SCHEMA refit TO "+ident(app))
		if _, err := state.Open(context.Background(), e.connect(t, "options", "-c role="+app)); err != nil {
			t.Fatal(err)
		}
		if !e.queryBool(t, "SELECT relowner = $1::regrole FROM pg_class WHERE oid = 'refit.jobs'::regclass", app) {
			t.Error("refit.jobs is not owned by refit's role")
		}
	})
	t.Run("owner named in TrustedOwners", func(t *testing.T) {
		e := newEnv(t)
		owner := e.role(t, "owner")
		e.exec(t, "CREATE SCHEMA refit AUTHORIZATION "+ident(owner))
		mustUntrusted(t, e.open(t), `schema "refit" is owned by role "`+owner+`"`)
		if err := e.open(t, state.TrustedOwners(owner)); err != nil {
			t.Fatal(err)
		}
	})
}

// TestTrustMembershipIsNotTrust: refit connects as a role that is a member
// of the schema's owner (before PostgreSQL 16 the owner could have granted
// that membership itself); the schema is still refused.
func TestTrustMembershipIsNotTrust(t *testing.T) {
	e := newEnv(t)
	app := e.role(t, "app")
	e.exec(t, "GRANT CREATE ON DATABASE "+ident(e.database(t))+" TO "+ident(app))
	e.asRole(t, e.attacker, "CREATE SCHEMA refit; CREATE TABLE refit.meta (version int NOT NULL)")
	e.exec(t, "GRANT "+ident(e.attacker)+" TO "+ident(app))
	_, err := state.Open(context.Background(), e.connect(t, "options", "-c role="+app))
	mustUntrusted(t, err, `schema "refit" is owned by role "`+e.attacker+`", not by "`+app+`"`)
}

// releasedSteps are the schema steps of the last release before the trust
// check, verbatim: TestTrustUpgrade builds the schema that release left.
var releasedSteps = []string{
	`CREATE TABLE refit.jobs (
		id               bigserial PRIMARY KEY,
		name             text NOT NULL,
		checksum         text NOT NULL,
		file             text NOT NULL DEFAULT '',
		source           bytea NOT NULL,
		facts            jsonb NOT NULL DEFAULT '{}',
		phase            text NOT NULL DEFAULT 'pending',
		resume_phase     text,
		contract_mode    text NOT NULL DEFAULT 'manual',
		contract_open    boolean NOT NULL DEFAULT false,
		expand_step      int NOT NULL DEFAULT 0,
		post_step        int NOT NULL DEFAULT 0,
		contract_step    int NOT NULL DEFAULT 0,
		rollback_step    int NOT NULL DEFAULT 0,
		rows_total       bigint NOT NULL DEFAULT 0,
		settings         jsonb NOT NULL DEFAULT '{}',
		error            text,
		owner            text,
		heartbeat_at     timestamptz,
		created_at       timestamptz NOT NULL DEFAULT now(),
		updated_at       timestamptz NOT NULL DEFAULT now(),
		phase_started_at timestamptz NOT NULL DEFAULT now(),
		finished_at      timestamptz
	)`,
	`CREATE UNIQUE INDEX jobs_live_name ON refit.jobs (name) WHERE phase NOT IN ('completed', 'aborted')`,
	`CREATE TABLE refit.job_events (
		id         bigserial PRIMARY KEY,
		job_id     bigint NOT NULL REFERENCES refit.jobs (id) ON DELETE CASCADE,
		at         timestamptz NOT NULL DEFAULT clock_timestamp(),
		from_phase text,
		to_phase   text NOT NULL,
		actor      text NOT NULL,
		message    text NOT NULL DEFAULT ''
	)`,
	`CREATE INDEX job_events_job ON refit.job_events (job_id, id)`,
	`CREATE TABLE refit.backfill_ranges (
		job_id       bigint NOT NULL REFERENCES refit.jobs (id) ON DELETE CASCADE,
		table_name   text NOT NULL,
		range_id     int NOT NULL,
		lower_key    text[],
		upper_key    text[],
		after_key    text[],
		done         boolean NOT NULL DEFAULT false,
		rows_done    bigint NOT NULL DEFAULT 0,
		rows_updated bigint NOT NULL DEFAULT 0,
		batches      bigint NOT NULL DEFAULT 0,
		updated_at   timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (job_id, table_name, range_id)
	)`,
	`CREATE TABLE refit.migrations (
		name       text PRIMARY KEY,
		checksum   text NOT NULL,
		job_id     bigint REFERENCES refit.jobs (id) ON DELETE SET NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`,
	`ALTER TABLE refit.jobs
		ADD COLUMN sync_confirmed_lsn  text,
		ADD COLUMN sync_lag_bytes      bigint,
		ADD COLUMN sync_retained_bytes bigint,
		ADD COLUMN sync_keys_applied   bigint NOT NULL DEFAULT 0,
		ADD COLUMN sync_last_commit_at timestamptz,
		ADD COLUMN sync_applied_at     timestamptz,
		ADD COLUMN throttled_by        text`,
	`ALTER TABLE refit.jobs
		ADD COLUMN sync_changed_at timestamptz,
		ALTER COLUMN contract_mode DROP NOT NULL,
		ALTER COLUMN contract_mode DROP DEFAULT,
		ALTER COLUMN facts SET DEFAULT '{}'`,
	// refit.submit lets any tool with a connection (psql, an Alembic
	// migration's op.execute, a CI job) submit a migration; a refit worker
	// validates it when it claims the job. contract NULL means the file's
	// contract key, else manual.
	`CREATE FUNCTION refit.submit(name text, source text, contract text DEFAULT NULL) RETURNS bigint
	LANGUAGE plpgsql AS $fn$
	DECLARE
		job_id bigint;
	BEGIN
		IF contract IS NOT NULL AND contract NOT IN ('manual', 'now', 'auto') THEN
			RAISE EXCEPTION 'refit.submit: contract must be manual, now or auto, not %', contract USING ERRCODE = '22023';
		END IF;
		INSERT INTO refit.jobs (name, checksum, file, source, contract_mode)
		VALUES (name, encode(sha256(convert_to(source, 'UTF8')), 'hex'), '(sql)', convert_to(source, 'UTF8'), contract)
		RETURNING id INTO job_id;
		INSERT INTO refit.job_events (job_id, to_phase, actor, message) VALUES (job_id, 'pending', session_user, 'submitted through refit.submit');
		PERFORM pg_notify('refit_control', job_id::text);
		RETURN job_id;
	END
	$fn$`,
	// Replication slot and origin names are cluster-wide, and they carry
	// the job id; job ids start at a per-database offset (the database's
	// OID × 10^6) so that two refit-managed databases on one server never
	// hand out the same id.
	`SELECT setval('refit.jobs_id_seq', greatest(
		(SELECT oid::bigint FROM pg_database WHERE datname = current_database()) * 1000000,
		(SELECT coalesce(max(id), 1) FROM refit.jobs)), false)`,
}

// TestTrustUpgrade opens a schema created by the previous release (CREATE
// SCHEMA IF NOT EXISTS refit, no explicit privileges, refit.submit
// executable by PUBLIC): it is trusted, upgraded, and keeps its jobs.
func TestTrustUpgrade(t *testing.T) {
	e := newEnv(t)
	e.exec(t, "CREATE SCHEMA IF NOT EXISTS refit; CREATE TABLE IF NOT EXISTS refit.meta (version int NOT NULL)")
	e.exec(t, "INSERT INTO refit.meta (version) VALUES (0)")
	for i, s := range releasedSteps {
		if _, err := e.admin.Exec(context.Background(), s); err != nil {
			t.Fatalf("released step %d: %v", i+1, err)
		}
	}
	e.exec(t, "UPDATE refit.meta SET version = $1", len(releasedSteps))
	e.exec(t, "SELECT refit.submit('before_upgrade', 'name: before_upgrade')")
	e.exec(t, "GRANT USAGE ON SCHEMA refit TO "+ident(e.attacker))
	if !e.queryBool(t, "SELECT has_function_privilege($1, 'refit.submit(text, text, text)', 'EXECUTE')", e.attacker) {
		t.Fatal("the released schema is not what the test expects: refit.submit is not executable by PUBLIC")
	}
	pool := e.connect(t)
	store, err := state.Open(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	j, err := store.Find(context.Background(), "before_upgrade")
	if err != nil || j.Name != "before_upgrade" {
		t.Fatalf("job submitted before the upgrade: %v, %v", j, err)
	}
	if e.queryBool(t, "SELECT has_function_privilege($1, 'refit.submit(text, text, text)', 'EXECUTE')", e.attacker) {
		t.Error("refit.submit is still executable by PUBLIC after the upgrade")
	}
	if !e.queryBool(t, "SELECT version > $1 FROM refit.meta", len(releasedSteps)) {
		t.Error("the schema was not upgraded")
	}
	if _, err := state.Open(context.Background(), pool); err != nil {
		t.Fatalf("reopen: %v", err)
	}
}

// TestSearchPath: refit sessions keep the configured search_path, with
// pg_catalog searched first and pg_temp last.
func TestSearchPath(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.exec(t, `CREATE SCHEMA app;
		CREATE TABLE app.users (id int);
		INSERT INTO app.users VALUES (1), (2), (3);
		CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql AS $$SELECT 'shadowed'$$`)

	for _, c := range []struct {
		configured string
		want       string
	}{
		{"app,public", "app, public, pg_temp"},
		// pg_catalog listed after public would let public.lower win.
		{"app, public, pg_catalog", "app, public, pg_temp"},
		{"pg_temp,app,public", "app, public, pg_temp"},
	} {
		t.Run(c.configured, func(t *testing.T) {
			options := "-c search_path=" + strings.ReplaceAll(c.configured, " ", `\ `)
			conn, err := e.connect(t, "options", options).Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Release()
			var show string
			var schemas []string
			if err := conn.QueryRow(ctx, "SHOW search_path").Scan(&show); err != nil {
				t.Fatal(err)
			}
			if show != c.want {
				t.Errorf("search_path %q, want %q", show, c.want)
			}
			if err := conn.QueryRow(ctx, "SELECT current_schemas(true)::text[]").Scan(&schemas); err != nil {
				t.Fatal(err)
			}
			if want := []string{"pg_catalog", "app", "public"}; !slices.Equal(schemas, want) {
				t.Errorf("effective path %v, want %v", schemas, want)
			}
			// A built-in is not shadowed by a function of the same name.
			var lower string
			if err := conn.QueryRow(ctx, "SELECT lower('ABC')").Scan(&lower); err != nil || lower != "abc" {
				t.Errorf("lower('ABC') = %q, %v; want the built-in", lower, err)
			}
			// A temporary table does not shadow the application's table.
			if _, err := conn.Exec(ctx, "CREATE TEMP TABLE users (id int)"); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil || n != 3 {
				t.Errorf("users has %d rows, %v; want app.users' 3", n, err)
			}
			// Unqualified CREATEs still go to the first configured schema.
			var current string
			if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&current); err != nil || current != "app" {
				t.Errorf("current_schema() = %q, %v; want app", current, err)
			}
			// Without refit's defaults the same configuration is shadowed
			// (the checks above test something).
			plain, err := pgx.Connect(ctx, withParam(t, e.dsn, "options", options))
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close(ctx)
			if _, err := plain.Exec(ctx, "CREATE TEMP TABLE users (id int)"); err != nil {
				t.Fatal(err)
			}
			if err := plain.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil || n != 0 {
				t.Errorf("control: users has %d rows, %v; want the temporary table's 0", n, err)
			}
			if strings.HasSuffix(c.configured, "pg_catalog") {
				if err := plain.QueryRow(ctx, "SELECT lower('ABC')").Scan(&lower); err != nil || lower != "shadowed" {
					t.Errorf("control: lower('ABC') = %q, %v; want public.lower", lower, err)
				}
			}
		})
	}
}

// TestSearchPathQuoting: a path set with ALTER DATABASE, with "$user", a
// name that needs quotes and one that does not exist, is kept as written.
func TestSearchPathQuoting(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.exec(t, `CREATE SCHEMA "Odd, ""Name"""; CREATE TABLE "Odd, ""Name""".t (x int)`)
	e.exec(t, "ALTER DATABASE "+ident(e.database(t))+` SET search_path = "$user", "Odd, ""Name""", missing, pg_catalog, public`)
	var show string
	var schemas []string
	pool := e.connect(t)
	if err := pool.QueryRow(ctx, "SHOW search_path").Scan(&show); err != nil {
		t.Fatal(err)
	}
	if want := `"$user", "Odd, ""Name""", missing, public, pg_temp`; show != want {
		t.Errorf("search_path %s, want %s", show, want)
	}
	if err := pool.QueryRow(ctx, "SELECT current_schemas(true)::text[]").Scan(&schemas); err != nil {
		t.Fatal(err)
	}
	if want := []string{"pg_catalog", `Odd, "Name"`, "public"}; !slices.Equal(schemas, want) {
		t.Errorf("effective path %q, want %q", schemas, want)
	}
	var ok bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass('t') IS NOT NULL").Scan(&ok); err != nil || !ok {
		t.Errorf("t does not resolve to the quoted schema's table: %v, %v", ok, err)
	}
}

// TestSearchPathParse: SafeSearchPath against the search_path syntax.
func TestSearchPathParse(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{``, `pg_temp`},
		{`  `, `pg_temp`},
		{`"$user", public`, `"$user", public, pg_temp`},
		{`$user,public`, `$user, public, pg_temp`},
		{`PG_CATALOG, App, "PG_TEMP"`, `App, "PG_TEMP", pg_temp`},
		{`"pg_catalog",pg_temp , "a,b" ,  "x""y"`, `"a,b", "x""y", pg_temp`},
		{`pg_catalog`, `pg_temp`},
	} {
		got, err := worker.SafeSearchPath(c.in)
		if err != nil || got != c.want {
			t.Errorf("SafeSearchPath(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{`"open`, `a,,b`, `a b`, `a,`} {
		if got, err := worker.SafeSearchPath(bad); err == nil {
			t.Errorf("SafeSearchPath(%q) = %q, want an error", bad, got)
		}
	}
}

package state_test

import (
	"context"
	"errors"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/refit-dev/refit/sqlstate"
	"github.com/refit-dev/refit/state"
)

// loginAs returns a plain connection (no refit session defaults) to the
// test database as role, which Open-independent tests create with LOGIN;
// the test cluster trusts every local connection.
func (e *env) loginAs(t *testing.T, role string) *pgx.Conn {
	t.Helper()
	u, err := url.Parse(e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	conn, err := pgx.Connect(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) }) //nolint:errcheck // test cleanup
	return conn
}

// wantCode fails the test unless err carries SQLSTATE code.
func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if !sqlstate.Is(err, code) {
		t.Errorf("%s: got %v, want SQLSTATE %s", what, err, code)
	}
}

// TestOperatorRole: the refit schema stays owner-only — a role with no
// grants can neither read refit.jobs nor execute refit.submit (42501) — and
// refit_operator, created by Open (the test's refit role is a superuser),
// has exactly what refit.submit needs: a member submits, and can still
// neither read nor write refit's tables.
func TestOperatorRole(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.open(t); err != nil {
		t.Fatal(err)
	}
	if !e.queryBool(t, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1 AND NOT rolcanlogin)", state.OperatorRole) {
		t.Fatalf("Open did not create the NOLOGIN role %s", state.OperatorRole)
	}
	if !e.queryBool(t, "SELECT prosecdef AND 'search_path=pg_catalog, pg_temp' = ANY (proconfig) FROM pg_proc WHERE oid = 'refit.submit(text, text, text)'::regprocedure") {
		t.Error("refit.submit is not SECURITY DEFINER with search_path pg_catalog, pg_temp")
	}
	// What refit_operator holds, exactly: USAGE on the schema, EXECUTE on
	// refit.submit; nothing on any table or sequence of the schema.
	if !e.queryBool(t, `SELECT has_schema_privilege($1, 'refit', 'USAGE') AND NOT has_schema_privilege($1, 'refit', 'CREATE')
			AND has_function_privilege($1, 'refit.submit(text, text, text)', 'EXECUTE')`, state.OperatorRole) {
		t.Error("refit_operator lacks USAGE on schema refit or EXECUTE on refit.submit, or has CREATE")
	}
	var grants string
	if err := e.admin.QueryRow(ctx, `SELECT coalesce(string_agg(c.relname || ':' || a.privilege_type, ',' ORDER BY 1), '')
		FROM pg_class c, aclexplode(c.relacl) a
		WHERE c.relnamespace = 'refit'::regnamespace AND a.grantee <> c.relowner`).Scan(&grants); err != nil {
		t.Fatal(err)
	}
	if grants != "" {
		t.Errorf("refit's tables grant to other roles: %s", grants)
	}

	plain := e.role(t, "plain")
	op := e.role(t, "op")
	e.exec(t, "ALTER ROLE "+ident(plain)+" LOGIN; ALTER ROLE "+ident(op)+" LOGIN")
	e.exec(t, "GRANT "+ident(state.OperatorRole)+" TO "+ident(op))

	pc := e.loginAs(t, plain)
	_, err := pc.Exec(ctx, "SELECT count(*) FROM refit.jobs")
	wantCode(t, "a plain role reads refit.jobs", err, sqlstate.InsufficientPrivilege)
	_, err = pc.Exec(ctx, "SELECT refit.submit('m', 'name: m')")
	wantCode(t, "a plain role executes refit.submit", err, sqlstate.InsufficientPrivilege)
	_, err = pc.Exec(ctx, "INSERT INTO refit.jobs (name, checksum, source) VALUES ('m', 'x', '\\x00')")
	wantCode(t, "a plain role inserts into refit.jobs", err, sqlstate.InsufficientPrivilege)

	oc := e.loginAs(t, op)
	var id int64
	if err := oc.QueryRow(ctx, "SELECT refit.submit('by_operator', 'name: by_operator', 'now')").Scan(&id); err != nil {
		t.Fatalf("a member of %s submits: %v", state.OperatorRole, err)
	}
	for what, sql := range map[string]string{
		"reads refit.jobs":            "SELECT count(*) FROM refit.jobs",
		"reads refit.job_events":      "SELECT count(*) FROM refit.job_events",
		"inserts into refit.jobs":     "INSERT INTO refit.jobs (name, checksum, source, phase) VALUES ('forged', 'x', '\\x00', 'syncing')",
		"updates refit.jobs":          "UPDATE refit.jobs SET phase = 'completed'",
		"inserts into job_events":     "INSERT INTO refit.job_events (job_id, to_phase, actor) VALUES (1, 'completed', 'x')",
		"uses the jobs sequence":      "SELECT nextval('refit.jobs_id_seq')",
		"creates in schema refit":     "CREATE TABLE refit.mine (a int)",
		"replaces refit.submit":       "CREATE OR REPLACE FUNCTION refit.submit(name text, source text, contract text DEFAULT NULL) RETURNS bigint LANGUAGE sql AS 'SELECT 1::bigint'",
		"reads refit.migrations":      "SELECT count(*) FROM refit.migrations",
		"reads refit.backfill_ranges": "SELECT count(*) FROM refit.backfill_ranges",
	} {
		_, err := oc.Exec(ctx, sql)
		if !sqlstate.Is(err, sqlstate.InsufficientPrivilege) {
			// Replacing a function one does not own is 42501 as well.
			t.Errorf("a member of %s %s: got %v, want 42501", state.OperatorRole, what, err)
		}
	}
	var phase, file, facts, actor, settings string
	if err := e.admin.QueryRow(ctx, `SELECT j.phase, j.file, j.facts::text, j.settings::text, e.actor FROM refit.jobs j JOIN refit.job_events e ON e.job_id = j.id
		WHERE j.id = $1`, id).Scan(&phase, &file, &facts, &settings, &actor); err != nil {
		t.Fatal(err)
	}
	if phase != "pending" || file != "(sql)" || facts != "{}" || settings != "{}" || actor != op {
		t.Errorf("submitted job: phase %s, file %s, facts %s, settings %s, event actor %s; want pending, (sql), {}, {}, %s", phase, file, facts, settings, actor, op)
	}
}

// TestSubmitInputsAreData: whatever refit.submit is given is stored as
// data or refused with a SQLSTATE, never run, whatever the caller's
// search_path holds.
func TestSubmitInputsAreData(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.open(t); err != nil {
		t.Fatal(err)
	}
	op := e.role(t, "op")
	e.exec(t, "ALTER ROLE "+ident(op)+" LOGIN; GRANT "+ident(state.OperatorRole)+" TO "+ident(op))
	// The caller controls a schema on its path with look-alikes of what
	// refit.submit calls, and a temporary table named like refit's.
	e.exec(t, "CREATE SCHEMA trap AUTHORIZATION "+ident(op))
	oc := e.loginAs(t, op)
	if _, err := oc.Exec(ctx, `CREATE FUNCTION trap.sha256(bytea) RETURNS bytea LANGUAGE sql AS $$SELECT '\x00'::bytea$$;
		CREATE FUNCTION trap.encode(bytea, text) RETURNS text LANGUAGE sql AS $$SELECT 'trapped'$$;
		CREATE FUNCTION trap.pg_notify(text, text) RETURNS void LANGUAGE sql AS $$SELECT$$;
		CREATE TEMP TABLE jobs (name text);
		SET search_path = trap, pg_temp, pg_catalog`); err != nil {
		t.Fatal(err)
	}
	name := `x'); DROP TABLE refit.jobs; --`
	source := "name: x\n$fn$; DROP TABLE refit.jobs; $fn$ '\\' \" %s %I"
	contract := "manual"
	var id int64
	if err := oc.QueryRow(ctx, "SELECT refit.submit($1, $2, $3)", name, source, contract).Scan(&id); err != nil {
		t.Fatal(err)
	}
	var gotName, gotSource, checksum, want string
	if err := e.admin.QueryRow(ctx, `SELECT name, convert_from(source, 'UTF8'), checksum, encode(sha256(convert_to($2, 'UTF8')), 'hex')
		FROM refit.jobs WHERE id = $1`, id, source).Scan(&gotName, &gotSource, &checksum, &want); err != nil {
		t.Fatal(err)
	}
	if gotName != name || gotSource != source || checksum != want {
		t.Errorf("stored name %q, source %q, checksum %s; want %q, %q, %s", gotName, gotSource, checksum, name, source, want)
	}
	var n int
	if err := oc.QueryRow(ctx, "SELECT count(*) FROM pg_temp.jobs").Scan(&n); err != nil || n != 0 {
		t.Errorf("the caller's temporary table jobs holds %d rows (%v)", n, err)
	}
	for _, c := range []struct {
		what                   string
		name, source, contract any
		code                   string
	}{
		{"a NULL name", nil, "name: a", nil, sqlstate.NullValueNotAllowed},
		{"a NULL source", "a", nil, nil, sqlstate.NullValueNotAllowed},
		{"a blank name", "  ", "name: a", nil, sqlstate.InvalidParameterValue},
		{"a name with a newline", "a\nb", "name: a", nil, sqlstate.InvalidParameterValue},
		{"a name with an escape", "a\x1b[2J", "name: a", nil, sqlstate.InvalidParameterValue},
		{"a contract with SQL", "a", "name: a", "manual'; DROP TABLE refit.jobs; --", sqlstate.InvalidParameterValue},
		{"a live job's name", name, "name: other", nil, sqlstate.UniqueViolation},
	} {
		_, err := oc.Exec(ctx, "SELECT refit.submit($1, $2, $3)", c.name, c.source, c.contract)
		wantCode(t, c.what, err, c.code)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && c.code != sqlstate.UniqueViolation && pgErr.Message == "" {
			t.Errorf("%s: no message", c.what)
		}
	}
	if !e.queryBool(t, "SELECT count(*) = 1 FROM refit.jobs") {
		t.Error("a refused submission left a job")
	}
}

// TestSubmitUpgradeRevokesTableGrants: a schema set up as the previous
// documentation said (the submitting role granted INSERT on refit.jobs and
// refit.job_events and USAGE on their sequences) is upgraded: the table and
// sequence grants are revoked, and the role still submits with the EXECUTE
// and USAGE it kept, since refit.submit now runs as its owner.
func TestSubmitUpgradeRevokesTableGrants(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.exec(t, "CREATE SCHEMA IF NOT EXISTS refit; CREATE TABLE IF NOT EXISTS refit.meta (version int NOT NULL)")
	e.exec(t, "INSERT INTO refit.meta (version) VALUES (0)")
	for i, s := range releasedSteps {
		if _, err := e.admin.Exec(ctx, s); err != nil {
			t.Fatalf("released step %d: %v", i+1, err)
		}
	}
	e.exec(t, "UPDATE refit.meta SET version = $1", len(releasedSteps))
	alembic := e.role(t, "alembic")
	q := ident(alembic)
	e.exec(t, "ALTER ROLE "+q+" LOGIN")
	e.exec(t, `GRANT USAGE ON SCHEMA refit TO `+q+`;
		GRANT EXECUTE ON FUNCTION refit.submit(text, text, text) TO `+q+`;
		GRANT INSERT ON refit.jobs, refit.job_events TO `+q+`;
		GRANT USAGE ON SEQUENCE refit.jobs_id_seq, refit.job_events_id_seq TO `+q)
	if err := e.open(t); err != nil {
		t.Fatal(err)
	}
	if e.queryBool(t, `SELECT has_table_privilege($1, 'refit.jobs', 'INSERT') OR has_table_privilege($1, 'refit.job_events', 'INSERT')
			OR has_sequence_privilege($1, 'refit.jobs_id_seq', 'USAGE') OR has_sequence_privilege($1, 'refit.job_events_id_seq', 'USAGE')`, alembic) {
		t.Error("the upgrade left the submitting role's grants on refit's tables or sequences")
	}
	ac := e.loginAs(t, alembic)
	var id int64
	if err := ac.QueryRow(ctx, "SELECT refit.submit('after_upgrade', 'name: after_upgrade')").Scan(&id); err != nil {
		t.Fatalf("the role with EXECUTE submits after the upgrade: %v", err)
	}
	_, err := ac.Exec(ctx, "INSERT INTO refit.jobs (name, checksum, source, phase) VALUES ('forged', 'x', '\\x00', 'syncing')")
	wantCode(t, "the role inserts a forged job after the upgrade", err, sqlstate.InsufficientPrivilege)
}

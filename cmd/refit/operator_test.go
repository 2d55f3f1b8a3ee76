package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/sqlstate"
	"github.com/refit-dev/refit/state"
)

// loginRole creates a login role named after prefix, unique on the cluster
// (roles are shared by its databases), runs grants ({role} is the quoted
// role) and returns a plain connection as it; the role is dropped at the
// end. The test cluster trusts local connections, so no password is needed.
func loginRole(t *testing.T, admin *pgxpool.Pool, dsn, prefix string, grants ...string) (string, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("%s_%d_%d", prefix, os.Getpid(), time.Now().UnixNano()%1e9)
	q := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE ROLE "+q+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1", name); err != nil {
			t.Error(err)
		}
		if _, err := admin.Exec(ctx, "DROP ROLE "+q); err != nil {
			t.Error(err)
		}
	})
	for _, g := range grants {
		if _, err := admin.Exec(ctx, strings.ReplaceAll(g, "{role}", q)); err != nil {
			t.Fatalf("%s: %v", g, err)
		}
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(name)
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) }) //nolint:errcheck // test cleanup
	return name, conn
}

// TestOperatorSubmitsThroughSQL: a login role whose only privilege is
// membership in refit_operator submits a migration with refit.submit, and a
// `refit worker` (running as refit's role) runs it to completion; a role
// not in refit_operator is refused with SQLSTATE 42501 and submits nothing.
func TestOperatorSubmitsThroughSQL(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	admin, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	createTables(t, admin, map[string]int{"items": 5000})
	// The worker prepares the refit schema (and, as a superuser, creates
	// refit_operator) before it reports ready.
	startDaemon(t, workerConfig(t, dsn))

	_, plain := loginRole(t, admin, dsn, "plain")
	_, err = plain.Exec(ctx, "SELECT refit.submit('items_upper', $1, 'now')", tableMigration("items_upper", "items"))
	if !sqlstate.Is(err, sqlstate.InsufficientPrivilege) {
		t.Fatalf("a role not in %s submits: %v, want SQLSTATE 42501", state.OperatorRole, err)
	}
	_, err = plain.Exec(ctx, "SELECT count(*) FROM refit.jobs")
	if !sqlstate.Is(err, sqlstate.InsufficientPrivilege) {
		t.Fatalf("a role not in %s reads refit.jobs: %v, want SQLSTATE 42501", state.OperatorRole, err)
	}

	opName, op := loginRole(t, admin, dsn, "op", "GRANT "+pgx.Identifier{state.OperatorRole}.Sanitize()+" TO {role}")
	var id int64
	if err := op.QueryRow(ctx, "SELECT refit.submit('items_upper', $1, 'now')", tableMigration("items_upper", "items")).Scan(&id); err != nil {
		t.Fatalf("a member of %s submits: %v", state.OperatorRole, err)
	}
	waitJobs(t, admin, 2*time.Minute, fmt.Sprintf("(SELECT phase = 'completed' FROM refit.jobs WHERE id = %d)", id))
	var jobs, bad int
	if err := admin.QueryRow(ctx, "SELECT (SELECT count(*) FROM refit.jobs), (SELECT count(*) FROM items WHERE v_upper IS DISTINCT FROM upper(v))").Scan(&jobs, &bad); err != nil {
		t.Fatal(err)
	}
	if jobs != 1 || bad != 0 {
		t.Fatalf("%d jobs (want the operator's only), %d rows wrong", jobs, bad)
	}
	var submitter string
	if err := admin.QueryRow(ctx, "SELECT actor FROM refit.job_events WHERE job_id = $1 ORDER BY id LIMIT 1", id).Scan(&submitter); err != nil {
		t.Fatal(err)
	}
	if submitter != opName {
		t.Errorf("the submission is recorded as by %q, want %q", submitter, opName)
	}
	_, err = op.Exec(ctx, "SELECT count(*) FROM refit.jobs")
	if !sqlstate.Is(err, sqlstate.InsufficientPrivilege) {
		t.Errorf("a member of %s reads refit.jobs: %v, want SQLSTATE 42501", state.OperatorRole, err)
	}
}

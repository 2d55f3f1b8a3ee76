package worker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// shopSchema holds the tables the constraint operations' lifecycle cases
// (add_check, add_foreign_key, add_unique, add_primary_key) change: every
// order has a customer, a positive quantity and a unique code; events has
// no primary key but a NOT NULL id.
const shopSchema = `
	CREATE TABLE customers (id bigint PRIMARY KEY, email text, name text NOT NULL);
	INSERT INTO customers SELECT i, 'c' || i || '@example.com', 'customer ' || i FROM generate_series(1, 2000) i;
	CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, code text, qty int NOT NULL, note text);
	INSERT INTO orders SELECT i, CASE WHEN i % 11 = 0 THEN NULL ELSE 1 + i % 2000 END, 'o' || i, 1 + i % 7, 'n'
		FROM generate_series(1, 5000) i;
	CREATE TABLE events (id bigint NOT NULL, kind text);
	INSERT INTO events SELECT i, 'k' || i % 5 FROM generate_series(1, 5000) i;
	ANALYZE customers; ANALYZE orders; ANALYZE events;`

// shopWriter is the application: it changes orders, adds orders (each with
// an existing customer or none, a positive quantity and a new code),
// customers and events, never breaking a constraint the cases add.
var shopWriter = []string{
	"UPDATE orders SET qty = 1 + $1 % 9, note = 'u' || $1 WHERE id = 1 + $1 % 5000",
	"INSERT INTO orders (id, customer_id, code, qty, note) VALUES (100000 + $1, CASE WHEN $1 % 5 = 0 THEN NULL ELSE 1 + $1 % 2000 END, 'new' || $1, 1 + $1 % 5, 'i')",
	"INSERT INTO customers (id, email, name) VALUES (100000 + $1, 'n' || $1 || '@example.com', 'new ' || $1)",
	"UPDATE customers SET name = 'renamed ' || $1 WHERE id = 1 + $1 % 2000",
	"INSERT INTO events (id, kind) VALUES (100000 + $1, 'new')",
	"UPDATE events SET kind = 'u' || $1 % 3 WHERE id = 1 + $1 % 5000",
}

// violationCase is a constraint that existing rows satisfy at validation,
// broken by a row the application writes after validation (refit run or
// submit) and before refit builds or validates the constraint (or in the
// window, where the NOT VALID constraint does not stop it): the job fails
// at that step with the rows named, and abort then leaves the catalog
// exactly as before.
type violationCase struct {
	schema string
	ops    string
	// bad is the application's statement that breaks the constraint.
	bad string
	// want are strings the job's error must contain (the operation, the
	// count, the sample keys).
	want []string
	// failed, if set, is a condition that holds while the job is failed
	// (e.g. the NOT VALID constraint is in place).
	failed string
	// inWindow writes bad in the window, after expand, instead.
	inWindow bool
}

func runViolation(t *testing.T, tc violationCase) {
	t.Helper()
	ctx := context.Background()
	pool := newPool(t)
	mustExec(t, pool, tc.schema)
	before := catalog(t, pool)
	m, err := migration.Parse("violation.yaml", []byte("name: violation\noperations:"+tc.ops+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	mode := migration.ContractNow
	if tc.inWindow {
		mode = migration.ContractManual
	}
	sub, err := worker.Submit(ctx, pool, m, mode, "test")
	if err != nil {
		t.Fatalf("submit (validation) refused the migration: %v", err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if tc.inWindow {
		if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeWaitingContract {
			t.Fatalf("expand: %v %v", out, err)
		}
	}
	// The application, on its own connections.
	app, err := pgxpool.New(ctx, pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if _, err := app.Exec(ctx, tc.bad); err != nil {
		t.Fatalf("the application's write: %v", err)
	}

	if tc.inWindow {
		if err := r.Store.OpenContract(ctx, sub.Job.ID, "test"); err != nil {
			t.Fatal(err)
		}
	}
	r.StopAtWindow = false
	out, err := r.Run(ctx, sub.Job.ID)
	if err == nil {
		t.Fatalf("the job did not fail: %v", out)
	}
	job, jerr := r.Store.Get(ctx, sub.Job.ID)
	if jerr != nil {
		t.Fatal(jerr)
	}
	if job.Phase != state.PhaseFailed {
		t.Fatalf("job is %s, want failed", job.Phase)
	}
	for _, w := range tc.want {
		if !strings.Contains(err.Error(), w) || !strings.Contains(job.Error, w) {
			t.Errorf("the job's error does not name %q:\nrun:    %v\nstored: %s", w, err, job.Error)
		}
	}
	checkCondition(t, pool, "while failed", tc.failed)
	t.Logf("failed as expected: %s", job.Error)

	if err := r.Store.Transition(ctx, sub.Job.ID, state.PhaseFailed, state.PhaseAborting, "test", "abort"); err != nil {
		t.Fatal(err)
	}
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeAborted {
		t.Fatalf("abort of the failed job: %v %v", out, err)
	}
	if after := catalog(t, pool); after != before {
		t.Fatalf("abort left the catalog changed:\nbefore: %s\nafter:  %s", before, after)
	}
	if objs := replicationObjects(t, pool); objs != "" {
		t.Fatalf("abort left replication objects: %s", objs)
	}
}

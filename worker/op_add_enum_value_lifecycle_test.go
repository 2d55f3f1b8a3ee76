package worker_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// ticketsSchema is an enum column the add_enum_value cases extend.
const ticketsSchema = `
	CREATE TYPE ticket_state AS ENUM ('open', 'closed');
	CREATE TABLE tickets (id bigint PRIMARY KEY, title text NOT NULL, state ticket_state NOT NULL DEFAULT 'open');
	INSERT INTO tickets SELECT i, 'ticket ' || i, CASE WHEN i % 3 = 0 THEN 'closed' ELSE 'open' END::ticket_state
		FROM generate_series(1, 3000) i;
	ANALYZE tickets;`

// ticketsOps adds two values (the second placed against the first) and a
// column derived from the enum, so the job has a backfill and a window.
const ticketsOps = `
  - add_enum_value: {enum: ticket_state, value: escalated, after: open}
  - add_enum_value: {enum: ticket_state, value: triage, before: escalated}
  - add_column:
      table: tickets
      column: {name: state_label, type: text}
      up: state::text`

const ticketsLabels = `SELECT array_agg(enumlabel::text ORDER BY enumsortorder) = '{open,triage,escalated,closed}' FROM pg_enum WHERE enumtypid = 'ticket_state'::regtype`

// TestLifecycleAddEnumValue: the application writes the new value during
// the second run's backfill and window. It can only because the first
// run's abort left the value in place (PostgreSQL cannot drop an enum
// value); the second expand finds it there and goes on (IF NOT EXISTS).
// runLifecycle's catalog comparison does not list enum labels;
// TestAddEnumValueAbortLeavesOnlyTheValue compares them.
func TestLifecycleAddEnumValue(t *testing.T) {
	runLifecycle(t, lifecycleCase{schema: ticketsSchema, data: []string{"tickets"}, abortBackfill: true, ops: ticketsOps,
		writer: []string{
			"UPDATE tickets SET title = 'edited ' || $1, state = CASE WHEN $1 % 2 = 0 THEN 'closed' ELSE 'open' END::ticket_state WHERE id = 1 + $1 % 3000",
			"INSERT INTO tickets (id, title, state) VALUES (100000 + $1, 'new ' || $1, CASE WHEN $1 % 2 = 0 THEN 'escalated' ELSE 'triage' END::ticket_state)",
		},
		expanded: ticketsLabels,
		window:   `SELECT count(*) = 0 FROM tickets WHERE state_label IS DISTINCT FROM state::text`,
		done: ticketsLabels + ` AND NOT EXISTS (SELECT 1 FROM tickets WHERE state_label IS DISTINCT FROM state::text)
			AND EXISTS (SELECT 1 FROM tickets WHERE state = 'escalated')`})
}

// enumCatalog is the lifecycle catalog plus every enum label of the public
// schema except the given ones, in order.
func enumCatalog(t *testing.T, pool *pgxpool.Pool, except ...string) string {
	t.Helper()
	var labels string
	err := pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(t.typname || '.' || e.enumlabel, ',' ORDER BY t.typname, e.enumsortorder), '')
		FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
		WHERE t.typnamespace = 'public'::regnamespace AND NOT e.enumlabel = ANY($1)`, except).Scan(&labels)
	if err != nil {
		t.Fatal(err)
	}
	return catalog(t, pool) + "\n" + labels
}

// Abort leaves the added values, and only them: the catalog with enum
// labels, minus the added ones, is what it was; the added ones are where the
// file put them; running and aborting again changes nothing more.
func TestAddEnumValueAbortLeavesOnlyTheValue(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	mustExec(t, pool, ticketsSchema)
	added := []string{"escalated", "triage"}
	before := enumCatalog(t, pool, added...)
	rows := tableData(t, pool, "tickets")
	m, err := migration.Parse("enum.yaml", []byte("name: enum_value\noperations:"+ticketsOps+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	for run := 1; run <= 2; run++ {
		sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
		if err != nil {
			t.Fatalf("run %d: submit: %v", run, err)
		}
		if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeWaitingContract {
			t.Fatalf("run %d: %v %v", run, out, err)
		}
		checkCondition(t, pool, "after expand", ticketsLabels)
		if err := r.Store.Transition(ctx, sub.Job.ID, state.PhaseSyncing, state.PhaseAborting, "test", "abort"); err != nil {
			t.Fatal(err)
		}
		if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeAborted {
			t.Fatalf("run %d: abort: %v %v", run, out, err)
		}
		if after := enumCatalog(t, pool, added...); after != before {
			t.Fatalf("run %d: abort changed more than the added values:\nbefore: %s\nafter:  %s", run, before, after)
		}
		checkCondition(t, pool, "after abort (the values stay)", ticketsLabels)
		if got := tableData(t, pool, "tickets"); got != rows {
			t.Fatalf("run %d: abort changed the rows of tickets", run)
		}
		if objs := replicationObjects(t, pool); objs != "" {
			t.Fatalf("run %d: abort left replication objects: %s", run, objs)
		}
	}
}

package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/ddl"
	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/throttle"
	"github.com/refit-dev/refit/worker"
)

// TestLostClaimStepRunsOnce: the session holding a job's advisory lock (the
// claim that one process runs the job) is terminated while its runner waits
// on a lock in a sql step; a second runner (another worker replica) then
// takes the job and runs the same step. When the lock is released both
// go on, and the step must still have run once. Found by internal/chaos:
// the step's checkpoint was overwritten, not moved, so both committed.
func TestLostClaimStepRunsOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := pgtest.NewDB(t)
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	runner := func() (*worker.Runner, *pgxpool.Pool) {
		pool, err := worker.Connect(ctx, dsn, 8)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		store, err := state.Open(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		cfg := ddl.DefaultConfig()
		cfg.LockTimeout, cfg.RetryInitial, cfg.RetryMax = 200*time.Millisecond, 50*time.Millisecond, 200*time.Millisecond
		return &worker.Runner{Pool: pool, Store: store, DDL: ddl.New(pool, cfg, log), Backfill: backfill.DefaultConfig(),
			Replication: replication.DefaultConfig(), Throttle: throttle.DefaultConfig(), Log: log, Actor: "test"}, pool
	}
	a, pool := runner()
	b, _ := runner()
	if _, err := pool.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE audit (tag text)"); err != nil {
		t.Fatal(err)
	}
	m, err := migration.Parse("once.yaml", []byte(`name: once
contract: now
operations:
  - sql:
      up: "LOCK TABLE t IN ACCESS EXCLUSIVE MODE; INSERT INTO audit VALUES ('ran')"
      down: "DELETE FROM audit"
`))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := worker.Submit(ctx, pool, m, "", "test")
	if err != nil {
		t.Fatal(err)
	}

	holder, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	if _, err := holder.Exec(ctx, "BEGIN; LOCK TABLE t IN ACCESS SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	waiting := func() bool {
		var n int
		err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))", holder.PgConn().PID()).Scan(&n)
		return err == nil && n > 0
	}
	type result struct {
		out worker.Outcome
		err error
	}
	done := make(chan result, 2)
	go func() { out, err := a.Run(ctx, sub.Job.ID); done <- result{out, err} }()
	for !waiting() {
		select {
		case <-ctx.Done():
			t.Fatal("the first runner never waited on the lock")
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The claim goes with its session.
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the job's lock session: %d %v", n, err)
	}
	go func() { out, err := b.Run(ctx, sub.Job.ID); done <- result{out, err} }()
	select { // the second runner waits on the lock too
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	case <-time.After(500 * time.Millisecond):
	}
	if _, err := holder.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		r := <-done
		t.Logf("runner: %v %v", r.out, r.err)
	}
	var ran int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM audit").Scan(&ran); err != nil {
		t.Fatal(err)
	}
	if ran != 1 {
		t.Fatalf("the sql step ran %d times, want once", ran)
	}
	job, err := a.Store.Get(ctx, sub.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if job.Phase != state.PhaseCompleted {
		t.Fatalf("job is %s, want completed", job.Phase)
	}
}

// TestLostClaimStops: a runner in the window whose lock session (its claim
// on the job) is terminated stops within its claim check with ErrClaimLost
// and leaves the job as it was (not failed: another replica may own it),
// and another runner then takes the job to completion.
func TestLostClaimStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := newPool(t)
	mustExec(t, pool, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 500) g")
	m, err := migration.Parse("lost.yaml", []byte(`name: lost
operations:
  - add_column:
      table: t
      column: {name: v_up, type: text}
      up: upper(v)
`))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	a := newRunner(t, pool, log)
	a.StopAtWindow = false
	a.GatePoll = 50 * time.Millisecond
	a.ClaimCheck = 100 * time.Millisecond
	done := make(chan error, 1)
	go func() { _, err := a.Run(ctx, sub.Job.ID); done <- err }()
	waitPhase(t, a.Store, sub.Job.ID, state.PhaseSyncing, time.Minute)

	var n int
	if err := pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the job's lock session: %d %v", n, err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, worker.ErrClaimLost) {
			t.Fatalf("run ended with %v, want ErrClaimLost", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the runner went on without its claim")
	}
	job, err := a.Store.Get(ctx, sub.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if job.Phase != state.PhaseSyncing {
		t.Fatalf("job is %s after the claim was lost, want syncing (untouched)", job.Phase)
	}
	b := newRunner(t, pool, log)
	if err := b.Store.OpenContract(ctx, sub.Job.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if out, err := b.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeCompleted {
		t.Fatalf("second runner: %v %v", out, err)
	}
	if !condition(t, pool, "SELECT NOT EXISTS (SELECT 1 FROM t WHERE v_up IS DISTINCT FROM upper(v))") {
		t.Fatal("v_up is not upper(v) after the second runner completed the job")
	}
}

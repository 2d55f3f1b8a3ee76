package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// TestSweepHardLimitSparesALiveConsumer: a slot past the sweeper's
// replication.fail_retained_wal whose consumer answers its walsender is its
// running process's business (that process enforces its own limit), so the
// sweep leaves it; once nothing streams the slot, the sweep fails the job
// and drops it.
func TestSweepHardLimitSparesALiveConsumer(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	m := docsSetup(t, pool)
	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
	r.StopAtWindow = false
	r.Replication.FailRetainedWAL = 0 // the running process sets no limit
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := r.Run(rctx, sub.Job.ID); done <- err }()
	defer func() { cancel(); <-done }()
	waitPhase(t, r.Store, sub.Job.ID, state.PhaseSyncing, 2*time.Minute)

	// An open transaction with an xid holds the slot's restart point back,
	// however fast the consumer confirms; the WAL written meanwhile is
	// retained.
	mustExec(t, pool, "CREATE TABLE hold (a int); CREATE TABLE filler (pad text)")
	hold, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx) //nolint:errcheck // released below
	if _, err := hold.Exec(ctx, "INSERT INTO hold VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	const limit = 4 << 20
	for {
		info, err := replication.Slot(ctx, pool, sub.Job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if info.RetainedBytes > 2*limit {
			break
		}
		mustExec(t, pool, "INSERT INTO filler SELECT repeat(md5(g::text), 32) FROM generate_series(1, 2000) g")
	}
	cfg := replication.DefaultConfig()
	cfg.FailRetainedWAL = limit
	log := zaptest.NewLogger(t, zaptest.Level(zap.FatalLevel))
	if err := worker.Sweep(ctx, r.Store, cfg, log); err != nil {
		t.Fatal(err)
	}
	if info, err := replication.Slot(ctx, pool, sub.Job.ID); err != nil || !info.Exists || !info.Active {
		t.Fatalf("the sweep took the slot of a live consumer: %+v %v", info, err)
	}
	if j, err := r.Store.Get(ctx, sub.Job.ID); err != nil || j.Phase != state.PhaseSyncing {
		t.Fatalf("the sweep moved a job whose consumer is alive: %v %v", j.Phase, err)
	}

	cancel()
	<-done
	done <- nil // for the deferred wait
	waitFor := time.Now().Add(10 * time.Second)
	for {
		info, err := replication.Slot(ctx, pool, sub.Job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !info.Active {
			break
		}
		if time.Now().After(waitFor) {
			t.Fatal("the slot is still active after its process stopped")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := worker.Sweep(ctx, r.Store, cfg, log); err != nil {
		t.Fatal(err)
	}
	if info, err := replication.Slot(ctx, pool, sub.Job.ID); err != nil || info.Exists {
		t.Fatalf("the slot nothing streams was not dropped: %+v %v", info, err)
	}
	j, err := r.Store.Get(ctx, sub.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.Phase != state.PhaseFailed || !strings.Contains(j.Error, "no process streams it") {
		t.Fatalf("job %s: %s; want failed by the sweep", j.Phase, j.Error)
	}
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
}

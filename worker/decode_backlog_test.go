//go:build unix

package worker_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// TestDecodeBacklogThrottle: the job's walsender is stopped (SIGSTOP) so
// that it decodes nothing while the backfill writes WAL; batches stop under
// sync_decode_backlog once the backlog passes replication.max_decode_backlog,
// and go on when the walsender runs again (SIGCONT).
func TestDecodeBacklogThrottle(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	mustExec(t, pool, `CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);
		INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 200000) i; ANALYZE items`)
	m, err := migration.Parse("t.yaml", []byte("name: backlog\noperations:\n  - add_column:\n      table: items\n      column: {name: u, type: text}\n      up: upper(name)\n"))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := worker.Submit(ctx, pool, m, migration.ContractNow, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
	r.Backfill.BatchSize, r.Backfill.TargetBatchTime = 1000, 0
	r.Replication.MaxDecodeBacklog = 64 << 10

	// Stop the walsender once it streams and the first batch has committed
	// (stopped during its handshake, it would hold up the consumer's start
	// instead).
	stopped := make(chan int, 1)
	go func() {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			var pid int
			err := pool.QueryRow(ctx, `SELECT r.pid FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
				WHERE s.slot_name = $1 AND r.state = 'streaming'
				  AND (SELECT coalesce(sum(rows_done), 0) FROM refit.backfill_ranges WHERE job_id = $2) > 0`,
				replication.SlotName(sub.Job.ID), sub.Job.ID).Scan(&pid)
			if err == nil && pid > 0 {
				if err := syscall.Kill(pid, syscall.SIGSTOP); err == nil {
					stopped <- pid
				}
				return
			}
		}
		close(stopped)
	}()
	done := make(chan error, 1)
	go func() { _, err := r.Run(ctx, sub.Job.ID); done <- err }()
	pid, ok := <-stopped
	if !ok {
		t.Fatal("the job's walsender never appeared")
	}
	cont := func() { _ = syscall.Kill(pid, syscall.SIGCONT) }
	defer cont()

	waitHeld(t, r, sub.Job.ID, "sync_decode_backlog", 200000)
	cont()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("backfill did not resume once the walsender ran again")
	}
	if job, err := r.Store.Get(ctx, sub.Job.ID); err != nil || job.Phase != state.PhaseCompleted {
		t.Fatalf("after release: %v %v", job, err)
	}
	if held := r.Held()["sync_decode_backlog"]; held < time.Second {
		t.Fatalf("held %s by sync_decode_backlog, want at least a second", held)
	}
}

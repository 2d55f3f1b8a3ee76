package replication_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/sqlstate"
)

// TestEnsureSlotStaleCreation: a refit process killed while it created the
// job's slot leaves its session waiting for an open transaction, and the
// slot in pg_replication_slots without a consistent point. The next run
// must not take that slot for the job's (found by internal/chaos: the slot
// vanished when the session noticed its client was gone, failing the job
// after a whole backfill; or the transaction ended first and the slot was
// completed with a consistent point later than the new run's backfill had
// got to, and the writes in between were never synced): EnsureSlot ends
// that session and creates the slot itself, complete when it returns.
func TestEnsureSlotStaleCreation(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	pool := newPool(t, dsn)
	jobID := nextJobID()
	dropAtEnd(t, pool, jobID)

	blocker, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(ctx)
	if _, err := blocker.Exec(ctx, "BEGIN; SELECT pg_current_xact_id()"); err != nil {
		t.Fatal(err)
	}
	stale, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Close(ctx)
	staleErr := make(chan error, 1)
	go func() {
		_, err := stale.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", replication.SlotName(jobID))
		staleErr <- err
	}()
	waitFor(t, 10*time.Second, "the stale creation to wait", func() bool {
		info, err := replication.Slot(ctx, pool, jobID)
		return err == nil && info.Exists && info.ConfirmedLSN == "" && info.Active
	})

	// The open transaction ends once the stale creation is over (or after
	// a while, if nothing ends it), as an application's would.
	staleDone := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case err := <-staleErr:
			staleDone <- err
		case <-time.After(5 * time.Second):
			staleDone <- nil
		case <-ctx.Done():
		}
		_, _ = blocker.Exec(ctx, "COMMIT")
	}()
	created, err := replication.EnsureSlot(ctx, pool, jobID, 10*time.Second)
	<-done
	if err != nil || !created {
		t.Fatalf("EnsureSlot with a creation left by a dead process: created=%v err=%v, want the slot created here", created, err)
	}
	info, err := replication.Slot(ctx, pool, jobID)
	if err != nil || !info.Exists || info.ConfirmedLSN == "" {
		t.Fatalf("after EnsureSlot: %+v %v, want a complete slot", info, err)
	}
	if err := <-staleDone; !sqlstate.Is(err, sqlstate.AdminShutdown) {
		t.Fatalf("the stale creation ended with %v, want it terminated", err)
	}
}

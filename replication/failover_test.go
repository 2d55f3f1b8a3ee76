package replication_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/replication"
)

// TestFailoverSlot: on PostgreSQL 17+ a job's slot created as a failover
// slot is kept in step by a standby with sync_replication_slots (it appears
// there as synced), so it survives a failover to that standby; before 17,
// replication.failover_slot: on is refused naming the setting and auto
// creates an ordinary slot.
func TestFailoverSlot(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t, pgtest.NewDB(t))
	mustExec(t, pool, docsDDL)
	cluster := pgtest.Shared(t)
	if cluster.Version() < 17 {
		if _, _, err := replication.FailoverSlot(ctx, pool, "on"); err == nil || !strings.Contains(err.Error(), "replication.failover_slot") {
			t.Fatalf("failover_slot on, PostgreSQL %d: %v, want an error naming the setting", cluster.Version(), err)
		}
		failover, _, err := replication.FailoverSlot(ctx, pool, "auto")
		if err != nil || failover {
			t.Fatalf("failover_slot auto, PostgreSQL %d: %v %v, want an ordinary slot", cluster.Version(), failover, err)
		}
		return
	}
	// Without synchronized_standby_slots on the primary, auto is off.
	if failover, why, err := replication.FailoverSlot(ctx, pool, "auto"); err != nil || failover {
		t.Fatalf("failover_slot auto without synchronized_standby_slots: %v (%s) %v", failover, why, err)
	}

	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	standby, err := cluster.StartStandbyWith(sctx, "refit_failover", pgtest.StandbyOptions{SyncSlots: true})
	if errors.Is(err, pgtest.ErrExternal) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := standby.Stop(); err != nil {
			t.Error(err)
		}
	})
	jobID := nextJobID()
	dropAtEnd(t, pool, jobID)
	created, err := replication.EnsureSlotWith(ctx, pool, jobID, replication.SlotOptions{CreateTimeout: 10 * time.Second, Failover: true})
	if err != nil || !created {
		t.Fatalf("EnsureSlotWith failover: created=%v err=%v", created, err)
	}
	var failover bool
	if err := pool.QueryRow(ctx, "SELECT failover FROM pg_replication_slots WHERE slot_name = $1", replication.SlotName(jobID)).Scan(&failover); err != nil || !failover {
		t.Fatalf("slot failover = %v %v, want true", failover, err)
	}
	// Some WAL for the standby to receive past the slot's position.
	mustExec(t, pool, "INSERT INTO docs (id, v) VALUES (1, 'a')")

	sb, err := pgx.Connect(ctx, standby.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close(ctx)
	waitFor(t, 90*time.Second, "the standby's copy of the job's slot", func() bool {
		var synced bool
		err := sb.QueryRow(ctx, "SELECT synced FROM pg_replication_slots WHERE slot_name = $1", replication.SlotName(jobID)).Scan(&synced)
		return err == nil && synced
	})
}

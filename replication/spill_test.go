package replication_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/refit-dev/refit/replication"
)

// TestConsumerSpillsLargeTransaction: the keys of a transaction larger
// than max_pending_keys are applied in chunks of that size while it is
// received, not all at its commit. A consumer stopped in the middle of such
// a transaction has not confirmed any of it: the next one streams it again
// from the start and every row ends right.
func TestConsumerSpillsLargeTransaction(t *testing.T) {
	const rows = 20_000
	ctx := context.Background()
	f := newSyncFixture(t, docsDDL, docsTarget())
	cfg := testConfig()
	cfg.MaxPendingKeys = 100
	cfg.ApplyLockTimeout = 200 * time.Millisecond

	// One transaction of 20,000 inserts, applied in 200 chunks.
	c := f.consumer(t, cfg)
	r := startRun(t, c)
	mustExec(t, f.pool, "INSERT INTO docs (id, v) SELECT g, 'row ' || g FROM generate_series(1, $1::int) g", rows)
	waitFor(t, time.Minute, "the inserts applied", func() bool { return countWrong(t, f.pool, "docs") == 0 })
	waitFor(t, 10*time.Second, "the transaction counted", func() bool { return c.Stats().TxApplied == 1 })
	if st := c.Stats(); st.KeysApplied != rows {
		t.Fatalf("keys applied %d, want %d (each key once)", st.KeysApplied, rows)
	}
	// Stopped once the slot has confirmed the inserts (the consumer reports
	// its position every status_interval).
	var applied string
	if err := f.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&applied); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the inserts confirmed", func() bool { return slotConfirmed(t, f) >= mustLSN(t, applied) })
	if err := r.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("consumer: %v", err)
	}

	// One transaction updating every row, while no consumer runs. Its
	// changes are streamed in the order its scan meets the rows: by ctid.
	var last []int32
	if err := f.pool.QueryRow(ctx, "SELECT array_agg(id) FROM (SELECT id FROM docs ORDER BY ctid DESC LIMIT 500) l").Scan(&last); err != nil {
		t.Fatal(err)
	}
	mustExec(t, f.pool, "UPDATE docs SET v = v || '!'")
	// The last rows it changed are locked: the apply stops at the chunk
	// holding the first of them.
	lock, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx) //nolint:errcheck // released below
	if _, err := lock.Exec(ctx, "SELECT FROM docs WHERE id = ANY ($1) FOR UPDATE", last); err != nil {
		t.Fatal(err)
	}
	c = f.consumer(t, cfg)
	r = startRun(t, c)
	waitFor(t, time.Minute, "some keys of the update applied", func() bool { return c.Stats().KeysApplied >= rows/2 })
	time.Sleep(300 * time.Millisecond) // blocked on the locked rows by now
	mid := c.Stats()
	if mid.KeysApplied >= rows || mid.TxApplied != 0 {
		t.Fatalf("in the middle: %d keys applied, %d transactions; want fewer than %d keys and none done", mid.KeysApplied, mid.TxApplied, rows)
	}
	t.Logf("stopped with %d of %d keys applied (the slot confirmed %s)", mid.KeysApplied, rows, slotConfirmed(t, f))
	_ = r.stop(t)
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	c = f.consumer(t, cfg)
	startRun(t, c)
	waitFor(t, time.Minute, "the update applied after a restart", func() bool { return countWrong(t, f.pool, "docs") == 0 })
	waitFor(t, 10*time.Second, "the transaction counted", func() bool { return c.Stats().TxApplied > 0 })
	// All of it again: had the stopped consumer confirmed the transaction,
	// its locked rows would never have been applied.
	if st := c.Stats(); st.KeysApplied != rows || st.TxApplied != 1 {
		t.Fatalf("after the restart: %d keys applied in %d transactions, want %d in 1 (the transaction streamed again from its start)", st.KeysApplied, st.TxApplied, rows)
	}
}

func mustLSN(t *testing.T, s string) pglogrepl.LSN {
	t.Helper()
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// slotConfirmed is the fixture slot's confirmed_flush_lsn.
func slotConfirmed(t *testing.T, f *syncFixture) pglogrepl.LSN {
	t.Helper()
	var s string
	if err := f.pool.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
		replication.SlotName(f.jobID)).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return mustLSN(t, s)
}

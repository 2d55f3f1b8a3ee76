package replication_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/replication"
)

// TestDrainLocked: a swap holding ACCESS EXCLUSIVE on the table drains the
// stream from inside its transaction. The keys of writes committed just
// before the lock are handed over (the consumer, whose own apply would wait
// on the lock, applies nothing meanwhile and confirms no position past
// them) and applied inside the swap's transaction; a swap that rolls back
// gives them back and the consumer applies them. Runs the sentinel's
// flush => true form on PostgreSQL 17+ and the second-session flush before.
func TestDrainLocked(t *testing.T) {
	ctx := context.Background()
	f := newSyncFixture(t, docsDDL, docsTarget())
	mustExec(t, f.pool, "INSERT INTO docs (id, v) SELECT g, 'v' || g FROM generate_series(1, 10) g")
	cfg := testConfig()
	// The consumer must not apply the keys itself before the lock.
	cfg.FlushInterval, cfg.MaxPendingKeys = time.Minute, 1_000_000
	c := f.consumer(t, cfg)
	startRun(t, c)
	if err := c.Drain(ctx); err != nil { // the inserts
		t.Fatal(err)
	}
	t.Logf("PostgreSQL %d", pgtest.Shared(t).Version())

	// The swap's session carries no replication origin: on PostgreSQL 16+
	// the walsender would drop its sentinel (origin 'none').
	swapper := hijack(t, f)
	swap := func(ids string, commit bool) *replication.Handoff {
		t.Helper()
		// The write, and the WAL position right after its commit (same
		// session, nothing else writing): the slot must stay before it.
		conn, err := f.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, conn, "UPDATE docs SET v = v || ' changed' WHERE id IN ("+ids+")")
		var written string
		err = conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&written)
		conn.Release()
		if err != nil {
			t.Fatal(err)
		}
		tx, err := swapper.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck // after commit: no-op
		mustExec(t, tx, "LOCK TABLE docs IN ACCESS EXCLUSIVE MODE")
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		start := time.Now()
		h, err := c.DrainLocked(dctx, tx, f.pool)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("drained in the lock in %s: %d keys", time.Since(start), h.Keys())
		// Frozen: nothing confirmed past the handed-over keys.
		time.Sleep(3 * cfg.StatusInterval)
		var after string
		if err := f.pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", replication.SlotName(f.jobID)).Scan(&after); err != nil {
			t.Fatal(err)
		}
		var past bool
		if err := f.pool.QueryRow(ctx, "SELECT $1::pg_lsn >= $2::pg_lsn", after, written).Scan(&past); err != nil || past {
			t.Fatalf("the slot confirmed %s, past the handed-over write (ends by %s), while the keys were handed over (%v)", after, written, err)
		}
		if commit {
			n, err := h.Apply(ctx, tx)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(h.Keys()) {
				t.Fatalf("applying %d handed-over keys changed %d rows", h.Keys(), n)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		return h
	}

	// 1. Committed: the swap's transaction applied the keys.
	h := swap("1, 2, 3", true)
	if h.Keys() != 3 {
		t.Fatalf("handed over %d keys, want 3", h.Keys())
	}
	if n := countWrong(t, f.pool, "docs"); n != 0 {
		t.Fatalf("%d rows wrong after the swap applied the handed-over keys", n)
	}
	// Its apply comes back as dirty keys (in refit the sync ends with the
	// swap; here it goes on, thawed by Resume, which re-applies the keys as
	// no-ops): applied, so the next handoff holds its own only.
	c.Resume(h)
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}

	// 2. Rolled back: the keys go back to the consumer, which applies them.
	h = swap("4, 5", false)
	if h.Keys() != 2 {
		t.Fatalf("handed over %d keys, want 2", h.Keys())
	}
	if n := countWrong(t, f.pool, "docs"); n != 2 {
		t.Fatalf("%d rows wrong before the keys were given back, want 2", n)
	}
	c.Resume(h)
	waitFor(t, 10*time.Second, "the given-back keys applied", func() bool { return countWrong(t, f.pool, "docs") == 0 })

	// 3. A drain that gives up leaves the consumer working.
	tx, err := f.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.DrainLocked(gone, tx, f.pool); err == nil {
		t.Fatal("DrainLocked with a cancelled context succeeded")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, f.pool, "UPDATE docs SET v = 'after' WHERE id = 6")
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countWrong(t, f.pool, "docs"); n != 0 {
		t.Fatalf("%d rows wrong after an abandoned drain", n)
	}
}

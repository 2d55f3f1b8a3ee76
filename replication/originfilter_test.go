package replication_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/replication"
)

// TestOriginFilter: where refit's own writes are dropped from the stream.
// On PostgreSQL 16+ with no other replication origin the walsender drops
// them (origin 'none'): a tagged write never reaches the consumer. Forced
// to the client (replication.origin_filter: client), or before 16, the
// consumer drops them. When another replication origin appears while the
// walsender filters (a subscription's), the stream starts again filtering
// in the client, and a write replayed under that origin is synced, not
// lost. Each case runs on every version; what it expects depends on it.
func TestOriginFilter(t *testing.T) {
	version := pgtest.Shared(t).Version()
	cases := []struct {
		name    string
		filter  string // replication.origin_filter
		foreign bool   // another origin appears in the window, and writes
	}{
		{name: "auto", filter: "auto"},
		{name: "client", filter: replication.OriginClient},
		{name: "foreign origin appears", filter: "auto", foreign: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newSyncFixture(t, docsDDL, docsTarget())
			mustExec(t, f.pool, "INSERT INTO docs (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
			cfg := testConfig()
			cfg.OriginFilter = tc.filter
			c := f.consumer(t, cfg)
			startRun(t, c)
			// The drain's own apply is a tagged transaction committed after
			// the sentinel; a second drain makes sure it has been counted.
			for i := 0; i < 2; i++ {
				if err := c.Drain(ctx); err != nil {
					t.Fatal(err)
				}
			}
			want := replication.OriginClient
			if tc.filter == "auto" && version >= 16 {
				want = replication.OriginWalsender
			}
			if got := c.Stats().OriginFilter; got != want {
				t.Fatalf("origin filter %q on PostgreSQL %d with origin_filter %s, want %q", got, version, tc.filter, want)
			}

			// refit's own tagged write: never a dirty key.
			before := c.Stats()
			tagged := hijack(t, f)
			if err := replication.TagSession(ctx, tagged, replication.OriginName(f.jobID, "x"), logger(t)); err != nil {
				t.Fatal(err)
			}
			// Separate statements: a transaction takes the session's
			// origin at its commit.
			mustExec(t, tagged, "UPDATE docs SET v = 'tagged', v_up = 'wrong' WHERE id = 1")
			mustExec(t, tagged, "SELECT pg_replication_origin_session_reset()")
			if err := c.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			mid := c.Stats()
			skipped := int64(1)
			if want == replication.OriginWalsender {
				skipped = 0
			}
			if mid.KeysApplied != before.KeysApplied || mid.TxSkipped != before.TxSkipped+skipped {
				t.Fatalf("tagged write: keys %d → %d (want +0), skipped %d → %d (want +%d)",
					before.KeysApplied, mid.KeysApplied, before.TxSkipped, mid.TxSkipped, skipped)
			}
			if !tc.foreign {
				return
			}

			// A subscription's origin appears, and a write replayed under
			// it: the application's change, to be synced.
			origin := fmt.Sprintf("subscription_test_%d", f.jobID)
			t.Cleanup(func() {
				f.pool.Exec(context.Background(), "SELECT pg_replication_origin_drop($1)", origin) //nolint:errcheck // best effort
			})
			sub := hijack(t, f)
			if _, err := sub.Exec(ctx, "SELECT pg_replication_origin_create($1)", origin); err != nil {
				t.Fatal(err)
			}
			if _, err := sub.Exec(ctx, "SELECT pg_replication_origin_session_setup($1)", origin); err != nil {
				t.Fatal(err)
			}
			if _, err := sub.Exec(ctx, "UPDATE docs SET v = 'replayed' WHERE id = 2"); err != nil {
				t.Fatal(err)
			}
			if _, err := sub.Exec(ctx, "SELECT pg_replication_origin_session_reset()"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the replayed write synced", func() bool {
				var up string
				err := f.pool.QueryRow(ctx, "SELECT v_up FROM docs WHERE id = 2").Scan(&up)
				return err == nil && up == "REPLAYED"
			})
			if got := c.Stats().OriginFilter; got != replication.OriginClient {
				t.Fatalf("origin filter %q after another origin appeared, want client", got)
			}
			// And refit's own writes are still skipped, by the client now.
			if _, err := tagged.Exec(ctx, "SELECT pg_replication_origin_session_setup($1)", replication.OriginName(f.jobID, "x")); err != nil {
				t.Fatal(err)
			}
			mustExec(t, tagged, "UPDATE docs SET v = 'tagged again', v_up = 'wrong' WHERE id = 3")
			mustExec(t, tagged, "SELECT pg_replication_origin_session_reset()")
			if err := c.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			var up3 string
			if err := f.pool.QueryRow(ctx, "SELECT v_up FROM docs WHERE id = 3").Scan(&up3); err != nil || up3 != "wrong" {
				t.Fatalf("refit's own write was synced after the switch: v_up = %q %v", up3, err)
			}
		})
	}
}

// hijack takes a session of the fixture's pool for the test alone.
func hijack(t *testing.T, f *syncFixture) *pgx.Conn {
	t.Helper()
	pc, err := f.pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	conn := pc.Hijack()
	t.Cleanup(func() { conn.Close(context.Background()) }) //nolint:errcheck // closing
	return conn
}

package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// TestVolatileDefaultNotRecomputed: a column whose default is volatile
// (gen_random_uuid()) is given to the rows that existed before it, once.
// Rows the application writes afterwards — an unrelated UPDATE, an INSERT
// with an explicit value, an UPDATE that sets the column — keep exactly what
// the application wrote, through the backfill, the window with the sync
// running, and the contract. An `up` column on the same table is still
// recomputed (the up expression wins over a value the new application
// writes into it, docs/sync.md).
func TestVolatileDefaultNotRecomputed(t *testing.T) {
	cases := []struct {
		name    string
		extra   string // a derived column on the same table, so the table is synced
		derived bool
	}{
		{name: "fill only"},
		{name: "fill beside a synced column", derived: true, extra: `
  - add_column:
      table: vd
      column: {name: name_upper, type: text}
      up: upper(name)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			pool := newPool(t)
			mustExec(t, pool, `CREATE TABLE vd (id bigserial PRIMARY KEY, name text NOT NULL);
				INSERT INTO vd (name) SELECT 'n' || i FROM generate_series(1, 1000) i; ANALYZE vd`)
			src := `name: volatile_default
operations:
  - add_column:
      table: vd
      column: {name: uid, type: uuid, nullable: false, default: gen_random_uuid()}` + tc.extra + "\n"
			m, err := migration.Parse("vd.yaml", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
			if err != nil {
				t.Fatal(err)
			}
			r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
			r.StopAtWindow = false
			r.GatePoll = 100 * time.Millisecond
			done := make(chan error, 1)
			runCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() {
				out, err := r.Run(runCtx, sub.Job.ID)
				if err == nil && out != worker.OutcomeCompleted {
					err = fmt.Errorf("outcome %s", out)
				}
				done <- err
			}()
			waitPhase(t, r.Store, sub.Job.ID, state.PhaseSyncing, time.Minute)

			// What the application believes every row's uid is.
			want := map[int64]string{}
			rows, err := pool.Query(ctx, "SELECT id, uid::text FROM vd")
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var id int64
				var uid *string
				if err := rows.Scan(&id, &uid); err != nil {
					t.Fatal(err)
				}
				if uid == nil {
					t.Fatalf("row %d has no uid after the backfill", id)
				}
				want[id] = *uid
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			// The application writes in the window.
			mustExec(t, pool, "UPDATE vd SET name = name || '!' WHERE id <= 200") // unrelated updates
			const explicit = "11111111-1111-1111-1111-111111111111"
			var idExplicit, idDefault int64
			if err := pool.QueryRow(ctx, "INSERT INTO vd (name, uid) VALUES ('explicit', $1) RETURNING id", explicit).Scan(&idExplicit); err != nil {
				t.Fatal(err)
			}
			want[idExplicit] = explicit
			var defUID string
			if err := pool.QueryRow(ctx, "INSERT INTO vd (name) VALUES ('defaulted') RETURNING id, uid::text").Scan(&idDefault, &defUID); err != nil {
				t.Fatal(err)
			}
			want[idDefault] = defUID
			const set = "22222222-2222-2222-2222-222222222222"
			mustExec(t, pool, "UPDATE vd SET uid = $1, name = name || '?' WHERE id = 7", set)
			want[7] = set
			if tc.derived {
				// The new application writes the derived column itself, with a
				// value that is not up(old): up wins.
				mustExec(t, pool, "UPDATE vd SET name_upper = 'custom' WHERE id = 9")
				waitFor(t, 30*time.Second, "the sync to apply the window's writes", func() bool {
					var bad int
					if err := pool.QueryRow(ctx, "SELECT count(*) FROM vd WHERE name_upper IS DISTINCT FROM upper(name)").Scan(&bad); err != nil {
						t.Fatal(err)
					}
					return bad == 0
				})
			}
			time.Sleep(1500 * time.Millisecond) // a window of sync after the writes
			compareUIDs(t, pool, want)

			if err := r.Store.OpenContract(ctx, sub.Job.ID, "test"); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(time.Minute):
				t.Fatal("job did not complete")
			}
			compareUIDs(t, pool, want)
			var notNull bool
			if err := pool.QueryRow(ctx, "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'vd'::regclass AND attname = 'uid'").Scan(&notNull); err != nil || !notNull {
				t.Fatalf("uid NOT NULL: %v %v", notNull, err)
			}
		})
	}
}

// compareUIDs checks every row's uid is the one the application wrote.
func compareUIDs(t *testing.T, pool *pgxpool.Pool, want map[int64]string) {
	t.Helper()
	got := map[int64]string{}
	rows, err := pool.Query(context.Background(), "SELECT id, coalesce(uid::text, 'NULL') FROM vd")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var uid string
		if err := rows.Scan(&id, &uid); err != nil {
			t.Fatal(err)
		}
		got[id] = uid
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	var bad []string
	for id, w := range want {
		if got[id] != w {
			bad = append(bad, fmt.Sprintf("row %d: uid %s, the application wrote %s", id, got[id], w))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("%d rows changed by refit, e.g. %v", len(bad), bad[:min(len(bad), 5)])
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

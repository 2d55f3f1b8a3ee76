package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestStandby: both ways of making a standby (pg_basebackup when the bin
// directory has one of the server's major, else the server-side copy, which
// is always tested) give a hot standby that streams from the primary under
// its application_name, replays what the primary writes after the copy, and
// leave no slot behind on the primary.
func TestStandby(t *testing.T) {
	primary := Shared(t)
	if primary.external {
		t.Skip(ErrExternal) // REFIT_TEST_DSN: nothing of ours to clone
	}
	methods := map[string]string{"server-side copy": ""}
	if bb, err := primary.basebackup(); err == nil {
		methods["pg_basebackup"] = bb
	} else {
		t.Logf("pg_basebackup not used (%v): only the server-side copy is tested", err)
	}
	dsn := NewDB(t)
	for method, basebackup := range methods {
		t.Run(method, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS before_copy, after_copy; CREATE TABLE before_copy (id int); INSERT INTO before_copy VALUES (1)"); err != nil {
				t.Fatal(err)
			}
			name := "standby_test"
			st, err := primary.startStandby(ctx, name, basebackup, "")
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := st.Stop(); err != nil {
					t.Error(err)
				}
			}()
			if _, err := conn.Exec(ctx, "CREATE TABLE after_copy (id int); INSERT INTO after_copy VALUES (2)"); err != nil {
				t.Fatal(err)
			}
			sconn, err := pgx.Connect(ctx, st.DSN(dbName(t, conn)))
			if err != nil {
				t.Fatal(err)
			}
			defer sconn.Close(context.Background())
			for {
				var recovery bool
				var n int
				err := sconn.QueryRow(ctx, "SELECT pg_is_in_recovery(), (SELECT count(*) FROM before_copy) + coalesce((SELECT sum(id) FROM after_copy), 0)").Scan(&recovery, &n)
				if err == nil && !recovery {
					t.Fatal("the standby is not in recovery")
				}
				if err == nil && n == 3 {
					break
				}
				select {
				case <-ctx.Done():
					t.Fatalf("the standby never replayed the primary's writes: %v (rows %d)", err, n)
				case <-time.After(50 * time.Millisecond):
				}
			}
			var streaming int
			var slots []string
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'", name).Scan(&streaming); err != nil {
				t.Fatal(err)
			}
			if streaming != 1 {
				t.Errorf("%d walsenders stream to %s, want 1", streaming, name)
			}
			rows, err := conn.Query(ctx, "SELECT slot_name::text FROM pg_replication_slots WHERE slot_type = 'physical'")
			if err != nil {
				t.Fatal(err)
			}
			if slots, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				t.Fatal(err)
			}
			if len(slots) > 0 {
				t.Errorf("physical slots left on the primary: %v", slots)
			}
		})
	}
}

func dbName(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var name string
	if err := conn.QueryRow(context.Background(), "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

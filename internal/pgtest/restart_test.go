package pgtest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/internal/pgtest"
)

// TestKillRestart: an immediate shutdown ends every session at once; the
// restart on the same port and data directory runs crash recovery, keeps
// what was committed (a logical slot included) and loses what was not.
func TestKillRestart(t *testing.T) {
	if os.Getenv("REFIT_TEST_DSN") != "" {
		t.Log("REFIT_TEST_DSN: an existing server cannot be killed; checking ErrExternal only")
		if err := pgtest.Shared(t).Kill(context.Background()); err != pgtest.ErrExternal {
			t.Fatalf("Kill on an existing server: %v, want ErrExternal", err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgtest.Start(ctx, pgtest.Options{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	}()
	dsn, err := c.CreateDatabase(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('k_slot', 'pgoutput')"); err != nil {
		t.Fatal(err)
	}
	// An open transaction's row is lost by the crash.
	if _, err := conn.Exec(ctx, "BEGIN; INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	port := c.Port()
	if err := c.Restart(ctx); err == nil {
		t.Fatal("Restart of a running server succeeded")
	}
	if err := c.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("a session survived the immediate shutdown")
	}
	if err := c.Kill(ctx); err == nil {
		t.Fatal("Kill of a stopped server succeeded")
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Port() != port {
		t.Fatalf("port changed from %d to %d", port, c.Port())
	}
	conn2, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close(context.Background())
	var rows, slots int
	if err := conn2.QueryRow(ctx, "SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'k_slot')").Scan(&rows, &slots); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || slots != 1 {
		t.Fatalf("after the restart: %d rows (want the committed 1), %d slots (want 1)", rows, slots)
	}
	// The cluster's own connections were renewed: databases can be made.
	if _, err := c.CreateDatabase(ctx, "k2"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn2.Exec(ctx, "SELECT pg_drop_replication_slot('k_slot')"); err != nil {
		t.Fatal(err)
	}
}

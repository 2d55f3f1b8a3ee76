package pgtest_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// dbExists reports whether database name exists on the shared cluster.
func dbExists(t *testing.T, name string) bool {
	t.Helper()
	conn := connect(t, pgtest.Shared(t).DSN("postgres"))
	var exists bool
	if err := conn.QueryRow(context.Background(),
		"SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	return exists
}

func TestNewDBParallel(t *testing.T) {
	var (
		mu    sync.Mutex
		names = map[string]string{} // database -> subtest
	)
	t.Run("group", func(t *testing.T) {
		for _, sub := range []string{"a", "b"} {
			t.Run(sub, func(t *testing.T) {
				t.Parallel()
				conn := connect(t, pgtest.NewDB(t))
				ctx := context.Background()
				var db, walLevel string
				if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
					t.Fatal(err)
				}
				if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
					t.Fatal(err)
				}
				if walLevel != "logical" {
					t.Errorf("wal_level = %q, want logical", walLevel)
				}
				if len(db) > 63 || !strings.HasPrefix(db, "t_testnewdbparallel_group_"+sub+"_") {
					t.Errorf("database name %q does not follow t_<test name>_<n>", db)
				}
				mu.Lock()
				names[db] = sub
				mu.Unlock()
			})
		}
	})
	if len(names) != 2 {
		t.Fatalf("got databases %v, want two distinct ones", names)
	}
	for db := range names {
		if dbExists(t, db) {
			t.Errorf("database %s still exists after its test's cleanup", db)
		}
	}
}

func TestSettings(t *testing.T) {
	c := pgtest.Shared(t)
	if c.Version() < 10 {
		t.Errorf("Version() = %d", c.Version())
	}
	if c.DataDir() == "" {
		t.Skip("existing server (REFIT_TEST_DSN): settings are not ours")
	}
	conn := connect(t, c.DSN("postgres"))
	want := map[string]string{
		"wal_level":             "logical",
		"max_replication_slots": "32",
		"max_wal_senders":       "32",
		"fsync":                 "off",
		"synchronous_commit":    "on",
		"full_page_writes":      "off",
		"max_connections":       "200",
		"shared_buffers":        "128MB",
		"listen_addresses":      "127.0.0.1",
	}
	for name, value := range want {
		var got string
		if err := conn.QueryRow(context.Background(), "SHOW "+name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != value {
			t.Errorf("%s = %q, want %q", name, got, value)
		}
	}
	if os.Geteuid() == 0 {
		// The server must have been run as an unprivileged user.
		fi, err := os.Stat(c.DataDir())
		if err != nil {
			t.Fatal(err)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid == 0 {
			t.Errorf("data directory %s is owned by root, want an unprivileged user", c.DataDir())
		}
	}
}

func TestDropDatabaseWithSlot(t *testing.T) {
	c := pgtest.Shared(t)
	ctx := context.Background()
	name := "slot_db_" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "_"))
	dsn, err := c.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('t_slot', 'pgoutput')"); err != nil {
		t.Fatal(err)
	}
	// The connection stays open while dropping: DropDatabase must deal with
	// it and with the slot.
	if err := c.DropDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	if dbExists(t, name) {
		t.Fatalf("database %s still exists", name)
	}
	admin := connect(t, c.DSN("postgres"))
	var slots int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 't_slot'").Scan(&slots); err != nil {
		t.Fatal(err)
	}
	if slots != 0 {
		t.Fatalf("%d slots named t_slot left", slots)
	}
	// Dropping a database that does not exist is not an error.
	if err := c.DropDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
}

// TestNewDBCleanupWithSlot leaves a replication slot, held active by an open
// replication connection, in a NewDB database; the cleanup registered by
// NewDB must still drop the database. The check runs in the parent after the
// subtest's cleanups.
func TestNewDBCleanupWithSlot(t *testing.T) {
	ctx := context.Background()
	var (
		db   string
		repl *pgconn.PgConn
	)
	t.Run("inner", func(t *testing.T) {
		dsn := pgtest.NewDB(t)
		conn := connect(t, dsn)
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "CREATE PUBLICATION p FOR ALL TABLES"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('t_slot', 'pgoutput')"); err != nil {
			t.Fatal(err)
		}
		// Stream from the slot, as a consumer would, so that it is active.
		// The connection is deliberately left open past the cleanups.
		cfg, err := pgconn.ParseConfig(dsn)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["replication"] = "database"
		repl, err = pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := pglogrepl.StartReplication(ctx, repl, "t_slot", 0, pglogrepl.StartReplicationOptions{
			PluginArgs: []string{"proto_version '1'", "publication_names 'p'"},
		}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			var active bool
			if err := conn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = 't_slot' AND database = current_database()").Scan(&active); err != nil {
				t.Fatal(err)
			}
			if active {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("slot never became active")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	if repl != nil {
		defer repl.Close(ctx)
	}
	if db == "" {
		t.Fatal("subtest did not report its database")
	}
	if dbExists(t, db) {
		t.Fatalf("database %s survived NewDB's cleanup", db)
	}
}

func TestStartStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	begin := time.Now()
	c, err := pgtest.Start(ctx, pgtest.Options{
		Logger:   zaptest.NewLogger(t),
		Settings: map[string]string{"application_name": "it's pgtest", "max_connections": "20"},
	})
	if err != nil {
		if os.Getenv("REFIT_TEST_DSN") != "" && strings.Contains(err.Error(), "no PostgreSQL server binaries") {
			t.Skipf("REFIT_TEST_DSN is set and there are no local binaries: %v", err)
		}
		t.Fatal(err)
	}
	t.Logf("cluster started in %d ms (port %d, version %d, bin %s)",
		time.Since(begin).Milliseconds(), c.Port(), c.Version(), c.BinDir())
	stopped := false
	defer func() {
		if !stopped {
			_ = c.Stop()
		}
	}()

	if shared := pgtest.Shared(t); shared.Port() == c.Port() {
		t.Fatalf("independent cluster got the shared cluster's port %d", c.Port())
	}
	dir := c.DataDir()
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	var maxConns, appName string
	if err := conn.QueryRow(ctx, "SHOW max_connections").Scan(&maxConns); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT current_setting('application_name', true)").Scan(&appName); err != nil {
		t.Fatal(err)
	}
	if appName != "it's pgtest" {
		t.Errorf("application_name = %q, want the quoted override", appName)
	}
	if maxConns != "20" {
		t.Errorf("max_connections = %s, want the override 20", maxConns)
	}
	dbDSN, err := c.CreateDatabase(ctx, "Mixed Case-db")
	if err != nil {
		t.Fatal(err)
	}
	dbConn, err := pgx.Connect(ctx, dbDSN)
	if err != nil {
		t.Fatal(err)
	}
	var db string
	if err := dbConn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	if db != "Mixed Case-db" {
		t.Errorf("current_database() = %q", db)
	}
	// conn and dbConn stay open across Stop: clients must not keep the
	// server up.
	defer conn.Close(ctx)
	defer dbConn.Close(ctx)

	begin = time.Now()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	t.Logf("cluster stopped in %d ms", time.Since(begin).Milliseconds())
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	root := dir[:strings.LastIndex(dir, "/")]
	for _, p := range []string{dir, root} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there after Stop (stat error: %v)", p, err)
		}
	}
	if _, err := pgx.Connect(ctx, c.DSN("postgres")); err == nil {
		t.Error("server still accepts connections after Stop")
	}
}

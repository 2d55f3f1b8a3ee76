package replication_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Slot names and replication origins are cluster-wide while each test has
// its own database, so every test takes job ids of its own.
var lastJobID atomic.Int64

func init() { lastJobID.Store(7000) }

func nextJobID() int64 { return lastJobID.Add(1) }

func newPool(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func mustExec(t *testing.T, q replication.Querier, sql string, args ...any) {
	t.Helper()
	if _, err := q.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func logger(t *testing.T) *zap.Logger { return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)) }

func slotExists(t *testing.T, q replication.Querier, name string) bool {
	t.Helper()
	var ok bool
	if err := q.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func origins(t *testing.T, q replication.Querier, like string) []string {
	t.Helper()
	rows, err := q.Query(context.Background(), "SELECT roname FROM pg_replication_origin WHERE roname LIKE $1 ORDER BY roname", like)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// dropAtEnd drops the job's replication objects when the test ends: the
// database is dropped by pgtest, but origins are cluster-wide.
func dropAtEnd(t *testing.T, pool *pgxpool.Pool, jobID int64) {
	t.Cleanup(func() {
		if err := replication.Drop(context.Background(), pool, jobID); err != nil {
			t.Errorf("cleanup: drop job %d: %v", jobID, err)
		}
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

func testConfig() replication.Config {
	cfg := replication.DefaultConfig()
	cfg.StatusInterval = 100 * time.Millisecond
	cfg.DrainTimeout = 5 * time.Second
	cfg.SlotCreateTimeout = 5 * time.Second
	return cfg
}

// runner is a Consumer.Run in a goroutine.
type runner struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func startRun(t *testing.T, c *replication.Consumer) *runner {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and returns its error (context.Canceled normally).
func (r *runner) stop(t *testing.T) error {
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Consumer.Run did not return within 10 s of its context being cancelled")
		}
	})
	return r.err
}

// syncFixture is a table with a publication, a slot and a consumer target.
type syncFixture struct {
	pool   *pgxpool.Pool
	jobID  int64
	target replication.Target
}

// newSyncFixture creates the table (ddl), the job's publication and slot.
func newSyncFixture(t *testing.T, ddl string, target replication.Target) *syncFixture {
	t.Helper()
	ctx := context.Background()
	pool := newPool(t, pgtest.NewDB(t))
	mustExec(t, pool, ddl)
	f := &syncFixture{pool: pool, jobID: nextJobID(), target: target}
	dropAtEnd(t, pool, f.jobID)
	columns, err := replication.PublishedColumns(ctx, pool, []replication.Target{target})
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, pool, replication.PublicationSQL(f.jobID, []migration.TableName{target.Table}, columns))
	created, err := replication.EnsureSlot(ctx, pool, f.jobID, 5*time.Second)
	if err != nil || !created {
		t.Fatalf("EnsureSlot: created=%v err=%v", created, err)
	}
	return f
}

func (f *syncFixture) consumer(t *testing.T, cfg replication.Config) *replication.Consumer {
	return replication.NewConsumer(f.pool, f.jobID, []replication.Target{f.target}, cfg, logger(t))
}

// docsTarget is the target of table public.docs (id int PK, v text, v_up
// text) with v_up = upper(v).
func docsTarget() replication.Target {
	return replication.Target{
		Table: migration.TableName{Schema: "public", Name: "docs"},
		Key:   []migration.KeyColumn{{Name: "id", Type: "integer"}},
		Sets:  []migration.ColumnSet{{Column: "v_up", Expr: "upper(v)"}},
	}
}

const docsDDL = `CREATE TABLE docs (id int PRIMARY KEY, v text, v_up text)`

func countWrong(t *testing.T, q replication.Querier, table string) int {
	t.Helper()
	var n int
	if err := q.QueryRow(context.Background(), "SELECT count(*) FROM "+table+" WHERE v_up IS DISTINCT FROM upper(v)").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// ---------------------------------------------------------------------------
// CheckRequirements

func TestCheckRequirements(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	pool := newPool(t, dsn)

	t.Run("shared cluster passes", func(t *testing.T) {
		if err := replication.CheckRequirements(ctx, pool, replication.JobOrigins(1)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("role without REPLICATION", func(t *testing.T) {
		role := fmt.Sprintf("refit_norepl_%d", nextJobID())
		mustExec(t, pool, "CREATE ROLE "+role+" LOGIN")
		t.Cleanup(func() {
			if _, err := pool.Exec(ctx, "DROP ROLE IF EXISTS "+role); err != nil {
				t.Errorf("drop role: %v", err)
			}
		})
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.User(role)
		rpool, err := pgxpool.New(ctx, u.String())
		if err != nil {
			t.Fatal(err)
		}
		defer rpool.Close()
		err = replication.CheckRequirements(ctx, rpool, replication.JobOrigins(1))
		if err == nil || !strings.Contains(err.Error(), "REPLICATION privilege") || !strings.Contains(err.Error(), "ALTER ROLE") {
			t.Fatalf("CheckRequirements as a role without REPLICATION: %v", err)
		}
		if strings.Contains(err.Error(), "wal_level") {
			t.Fatalf("the error names problems that are not there: %v", err)
		}
		t.Logf("error: %v", err)
		rpool.Close()
		mustExec(t, pool, "ALTER ROLE "+role+" REPLICATION")
		rpool2 := newPool(t, u.String())
		if err := replication.CheckRequirements(ctx, rpool2, replication.JobOrigins(1)); err != nil {
			t.Fatalf("with REPLICATION granted: %v", err)
		}
	})
}

// TestOtherClusters covers what needs other server settings, on two extra
// clusters started side by side: wal_level=replica, and a logical cluster
// with a single replication slot and prepared transactions enabled (and, on
// PostgreSQL 18+, three active replication origins).
func TestOtherClusters(t *testing.T) {
	ctx := context.Background()
	major := pgtest.Shared(t).Version() // the same binaries
	var replica, limited *pgtest.Cluster
	var rerr, lerr error
	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		replica, rerr = pgtest.Start(ctx, pgtest.Options{Settings: map[string]string{"wal_level": "replica"}})
	}()
	go func() {
		defer wg.Done()
		settings := map[string]string{"max_replication_slots": "1", "max_prepared_transactions": "5"}
		if major >= 18 {
			settings["max_active_replication_origins"] = "3"
		}
		limited, lerr = pgtest.Start(ctx, pgtest.Options{Settings: settings})
	}()
	wg.Wait()
	for _, c := range []*pgtest.Cluster{replica, limited} {
		if c != nil {
			t.Cleanup(func() {
				if err := c.Stop(); err != nil {
					t.Error(err)
				}
			})
		}
	}
	if rerr != nil || lerr != nil {
		t.Fatal(errors.Join(rerr, lerr))
	}
	t.Logf("two clusters started in %s", time.Since(start).Round(time.Millisecond))

	t.Run("wal_level=replica", func(t *testing.T) {
		pool := newPool(t, replica.DSN("postgres"))
		err := replication.CheckRequirements(ctx, pool, replication.JobOrigins(1))
		if err == nil || !strings.Contains(err.Error(), `wal_level is "replica"`) || !strings.Contains(err.Error(), "wal_level = logical") ||
			!strings.Contains(err.Error(), "restart") {
			t.Fatalf("CheckRequirements on wal_level=replica: %v", err)
		}
		if strings.Contains(err.Error(), "privilege") || strings.Contains(err.Error(), "slots") {
			t.Fatalf("the error names problems that are not there: %v", err)
		}
		t.Logf("error: %v", err)
	})

	dsn, err := limited.CreateDatabase(ctx, "limited")
	if err != nil {
		t.Fatal(err)
	}
	pool := newPool(t, dsn)
	mustExec(t, pool, "CREATE TABLE t (id int PRIMARY KEY)")

	t.Run("prepared transaction refused at once", func(t *testing.T) {
		jobID := nextJobID()
		dropAtEnd(t, pool, jobID)
		const gid = "refit-test-gid"
		conn, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = conn.Exec(ctx, "BEGIN; INSERT INTO t VALUES (1); PREPARE TRANSACTION '"+gid+"'")
		conn.Release()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if _, err := pool.Exec(ctx, "ROLLBACK PREPARED '"+gid+"'"); err != nil {
				t.Errorf("rollback prepared: %v", err)
			}
		})
		start := time.Now()
		created, err := replication.EnsureSlot(ctx, pool, jobID, 5*time.Second)
		took := time.Since(start)
		if err == nil || created {
			t.Fatalf("EnsureSlot with a prepared transaction: created=%v err=%v", created, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, gid) || !strings.Contains(msg, "COMMIT PREPARED") || !strings.Contains(msg, "ROLLBACK PREPARED") {
			t.Fatalf("error does not name the gid and what to do: %v", err)
		}
		if took > time.Second {
			t.Fatalf("refused after %s, want at once", took)
		}
		if slotExists(t, pool, replication.SlotName(jobID)) {
			t.Fatal("a slot was left behind")
		}
		t.Logf("refused in %s: %v", took.Round(time.Microsecond), err)
	})

	t.Run("replication origins", func(t *testing.T) {
		if limited.Version() < 18 {
			// Bounded by max_replication_slots there, not checked.
			if err := replication.CheckRequirements(ctx, pool, 100); err != nil {
				t.Fatalf("origins checked before PostgreSQL 18: %v", err)
			}
			return
		}
		// max_active_replication_origins = 3 (PostgreSQL 18+).
		if err := replication.CheckRequirements(ctx, pool, 3); err != nil {
			t.Fatalf("3 origins of 3: %v", err)
		}
		err := replication.CheckRequirements(ctx, pool, replication.JobOrigins(3))
		if err == nil || !strings.Contains(err.Error(), "max_active_replication_origins is 3") || !strings.Contains(err.Error(), "needs 4") ||
			!strings.Contains(err.Error(), "backfill.parallelism") {
			t.Fatalf("4 origins of 3: %v", err)
		}
		t.Logf("error: %v", err)
		jobID := nextJobID()
		dropAtEnd(t, pool, jobID)
		mustExec(t, pool, "SELECT pg_replication_origin_create('someone_elses')")
		t.Cleanup(func() { mustExec(t, pool, "SELECT pg_replication_origin_drop('someone_elses')") })
		mustExec(t, pool, "SELECT pg_replication_origin_create($1)", replication.OriginName(jobID, "apply"))
		if err := replication.CheckRequirements(ctx, pool, 3); err == nil {
			t.Fatal("another's origin did not count")
		}
		// The job's own origins are part of what it needs.
		if err := replication.CheckRequirements(ctx, pool, 2, jobID); err != nil {
			t.Fatalf("the job's own origin counted against it: %v", err)
		}
		if err := replication.CheckRequirements(ctx, pool, 2); err == nil {
			t.Fatal("without a job, its origin did not count")
		}
		// A role that may not use origins runs untagged and needs none.
		role := fmt.Sprintf("refit_noorigin_%d", nextJobID())
		mustExec(t, pool, "CREATE ROLE "+role+" LOGIN REPLICATION")
		t.Cleanup(func() { mustExec(t, pool, "DROP ROLE "+role) })
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.User(role)
		rpool := newPool(t, u.String())
		if err := replication.CheckRequirements(ctx, rpool, 100); err != nil {
			t.Fatalf("a role without the origin functions: %v", err)
		}
	})

	t.Run("all slots in use", func(t *testing.T) {
		if err := replication.CheckRequirements(ctx, pool, replication.JobOrigins(1)); err != nil {
			t.Fatalf("with a free slot: %v", err)
		}
		mustExec(t, pool, "SELECT pg_create_logical_replication_slot('someone_else', 'pgoutput')")
		err := replication.CheckRequirements(ctx, pool, replication.JobOrigins(1))
		if err == nil || !strings.Contains(err.Error(), "all 1 replication slots are in use") || !strings.Contains(err.Error(), "max_replication_slots") {
			t.Fatalf("CheckRequirements with every slot used: %v", err)
		}
		t.Logf("error: %v", err)
		mustExec(t, pool, "SELECT pg_drop_replication_slot('someone_else')")

		// The job's own slot is not a reason to refuse it (a retried job
		// checks the requirements again with its slot in place).
		jobID := nextJobID()
		dropAtEnd(t, pool, jobID)
		if created, err := replication.EnsureSlot(ctx, pool, jobID, 5*time.Second); err != nil || !created {
			t.Fatalf("EnsureSlot: %v %v", created, err)
		}
		if err := replication.CheckRequirements(ctx, pool, replication.JobOrigins(1), jobID); err != nil {
			t.Fatalf("the job's own slot counted against it: %v", err)
		}
		if err := replication.CheckRequirements(ctx, pool, replication.JobOrigins(1)); err == nil {
			t.Fatal("without a job, the last slot in use was not reported")
		}
	})
}

// ---------------------------------------------------------------------------
// CheckReplicaIdentity

func TestCheckReplicaIdentity(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t, pgtest.NewDB(t))
	mustExec(t, pool, `
		CREATE TABLE with_pk (id int PRIMARY KEY, v text);
		CREATE TABLE no_pk (id int NOT NULL, v text);
		CREATE TABLE full_ident (id int, v text);
		ALTER TABLE full_ident REPLICA IDENTITY FULL;
		CREATE TABLE idx_ident (id int NOT NULL, v text);
		CREATE UNIQUE INDEX idx_ident_id ON idx_ident (id);
		ALTER TABLE idx_ident REPLICA IDENTITY USING INDEX idx_ident_id;
		CREATE TABLE nothing_ident (id int PRIMARY KEY, v text);
		ALTER TABLE nothing_ident REPLICA IDENTITY NOTHING;
		CREATE TABLE dropped_idx (id int NOT NULL, v text);
		CREATE UNIQUE INDEX dropped_idx_id ON dropped_idx (id);
		ALTER TABLE dropped_idx REPLICA IDENTITY USING INDEX dropped_idx_id;
		DROP INDEX dropped_idx_id;
		CREATE SCHEMA "Odd Schema";
		CREATE TABLE "Odd Schema"."Odd Table" (id int PRIMARY KEY);
		CREATE TABLE "Odd Schema"."No Key" (id int)`)
	tn := func(name string) migration.TableName { return migration.TableName{Schema: "public", Name: name} }

	for _, name := range []string{"with_pk", "full_ident", "idx_ident"} {
		if err := replication.CheckReplicaIdentity(ctx, pool, []migration.TableName{tn(name)}); err != nil {
			t.Errorf("%s refused: %v", name, err)
		}
	}
	if err := replication.CheckReplicaIdentity(ctx, pool, []migration.TableName{{Schema: "Odd Schema", Name: "Odd Table"}}); err != nil {
		t.Errorf("quoted table refused: %v", err)
	}
	for _, name := range []string{"no_pk", "nothing_ident", "dropped_idx"} {
		err := replication.CheckReplicaIdentity(ctx, pool, []migration.TableName{tn("with_pk"), tn(name)})
		if err == nil || !strings.Contains(err.Error(), "REPLICA IDENTITY USING INDEX") || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	err := replication.CheckReplicaIdentity(ctx, pool, []migration.TableName{{Schema: "Odd Schema", Name: "No Key"}})
	if err == nil || !strings.Contains(err.Error(), `ALTER TABLE "Odd Schema"."No Key" REPLICA IDENTITY USING INDEX`) {
		t.Errorf("quoted table without key: %v", err)
	}
	if err := replication.CheckReplicaIdentity(ctx, pool, []migration.TableName{tn("missing")}); err == nil {
		t.Error("a missing table passed")
	}

	// The refusal is right: the application's UPDATE fails once the table
	// joins an update-publishing publication.
	mustExec(t, pool, "INSERT INTO no_pk VALUES (1, 'a'); INSERT INTO dropped_idx VALUES (1, 'a')")
	mustExec(t, pool, replication.PublicationSQL(nextJobID(), []migration.TableName{tn("no_pk"), tn("dropped_idx")}, nil))
	for _, name := range []string{"no_pk", "dropped_idx"} {
		if _, err := pool.Exec(ctx, "UPDATE "+name+" SET v = 'b'"); err == nil {
			t.Errorf("UPDATE of published %s succeeded: the check refuses a table that works", name)
		}
	}
}

// ---------------------------------------------------------------------------
// EnsureSlot

func TestEnsureSlot(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t, pgtest.NewDB(t))
	mustExec(t, pool, "CREATE TABLE t (id int PRIMARY KEY)")

	t.Run("create then exists", func(t *testing.T) {
		jobID := nextJobID()
		dropAtEnd(t, pool, jobID)
		created, err := replication.EnsureSlot(ctx, pool, jobID, 5*time.Second)
		if err != nil || !created {
			t.Fatalf("first EnsureSlot: created=%v err=%v", created, err)
		}
		info, err := replication.Slot(ctx, pool, jobID)
		if err != nil || !info.Exists || info.ConfirmedLSN == "" {
			t.Fatalf("Slot: %+v %v", info, err)
		}
		var plugin, typ string
		var temporary bool
		if err := pool.QueryRow(ctx, "SELECT plugin, slot_type, temporary FROM pg_replication_slots WHERE slot_name = $1",
			replication.SlotName(jobID)).Scan(&plugin, &typ, &temporary); err != nil {
			t.Fatal(err)
		}
		if plugin != "pgoutput" || typ != "logical" || temporary {
			t.Fatalf("slot is %s/%s temporary=%v, want a permanent pgoutput logical slot", plugin, typ, temporary)
		}
		created, err = replication.EnsureSlot(ctx, pool, jobID, 5*time.Second)
		if err != nil || created {
			t.Fatalf("second EnsureSlot: created=%v err=%v", created, err)
		}
	})

	t.Run("open transaction bounds the wait", func(t *testing.T) {
		jobID := nextJobID()
		dropAtEnd(t, pool, jobID)
		blocker, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer blocker.Release()
		pid := blocker.Conn().PgConn().PID()
		if _, err := blocker.Exec(ctx, "BEGIN; INSERT INTO t VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		blockers, err := replication.SlotBlockers(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		if len(blockers) != 1 || blockers[0].PID != int(pid) || !strings.Contains(blockers[0].Query, "INSERT INTO t") {
			t.Fatalf("SlotBlockers = %+v, want pid %d", blockers, pid)
		}

		start := time.Now()
		created, err := replication.EnsureSlot(ctx, pool, jobID, time.Second)
		took := time.Since(start)
		if err == nil || created {
			t.Fatalf("EnsureSlot with an open transaction: created=%v err=%v", created, err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("pid %d ", pid)) || !strings.Contains(err.Error(), "slot_create_timeout") {
			t.Fatalf("error does not name the blocking pid %d: %v", pid, err)
		}
		if took < time.Second || took > 2*time.Second {
			t.Fatalf("EnsureSlot returned after %s, want about 1 s", took)
		}
		t.Logf("gave up after %s: %v", took.Round(time.Millisecond), err)
		if slotExists(t, pool, replication.SlotName(jobID)) {
			t.Fatal("right after EnsureSlot gave up, a slot (still being created) exists")
		}
		// Once the blocker ends, a slot creation that was not really
		// cancelled would complete and persist the slot.
		if _, err := blocker.Exec(ctx, "COMMIT"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if slotExists(t, pool, replication.SlotName(jobID)) {
			t.Fatal("after the blocker committed, the abandoned slot creation completed and left a slot")
		}
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_create_logical_replication_slot%' AND pid <> pg_backend_pid()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("%d sessions still run pg_create_logical_replication_slot", n)
		}
		created, err = replication.EnsureSlot(ctx, pool, jobID, time.Second)
		if err != nil || !created {
			t.Fatalf("EnsureSlot once the blocker ended: created=%v err=%v", created, err)
		}
	})

	t.Run("context cancelled", func(t *testing.T) {
		jobID := nextJobID()
		dropAtEnd(t, pool, jobID)
		blocker, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer blocker.Release()
		if _, err := blocker.Exec(ctx, "BEGIN; INSERT INTO t VALUES (2)"); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err = replication.EnsureSlot(cctx, pool, jobID, time.Minute)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("EnsureSlot with a cancelled context: %v", err)
		}
		if _, err := blocker.Exec(ctx, "ROLLBACK"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if slotExists(t, pool, replication.SlotName(jobID)) {
			t.Fatal("a slot was left behind by a cancelled EnsureSlot")
		}
	})
}

// ---------------------------------------------------------------------------
// Drop and Orphans

func TestDropAndOrphans(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t, pgtest.NewDB(t))
	mustExec(t, pool, docsDDL)
	a := nextJobID()
	b := nextJobID()
	c := a*10 + 1 // refit_j<a>1_… must not be taken for refit_j<a>_…
	// Origins are cluster-wide: only ids in this database's range (its OID ×
	// 10^6, how the refit schema numbers jobs) are this database's.
	var dbOID int64
	if err := pool.QueryRow(ctx, "SELECT oid::bigint FROM pg_database WHERE datname = current_database()").Scan(&dbOID); err != nil {
		t.Fatal(err)
	}
	pubOnly, originOnly := nextJobID(), dbOID*1_000_000+nextJobID()
	otherDatabase := (dbOID+1)*1_000_000 + nextJobID()
	for _, id := range []int64{a, b, c, pubOnly, originOnly, otherDatabase} {
		dropAtEnd(t, pool, id)
	}
	if err := replication.EnsureOrigin(ctx, pool, replication.OriginName(otherDatabase, "b0")); err != nil {
		t.Fatal(err)
	}

	if err := replication.Drop(ctx, pool, a); err != nil {
		t.Fatalf("Drop of nothing: %v", err)
	}
	docs := []migration.TableName{{Schema: "public", Name: "docs"}}
	for _, id := range []int64{a, b, c} {
		mustExec(t, pool, replication.PublicationSQL(id, docs, nil))
		if _, err := replication.EnsureSlot(ctx, pool, id, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		for _, role := range []string{"b0", "x"} {
			if err := replication.EnsureOrigin(ctx, pool, replication.OriginName(id, role)); err != nil {
				t.Fatal(err)
			}
		}
	}
	mustExec(t, pool, replication.PublicationSQL(pubOnly, docs, nil))
	if err := replication.EnsureOrigin(ctx, pool, replication.OriginName(originOnly, "b0")); err != nil {
		t.Fatal(err)
	}
	if err := replication.EnsureOrigin(ctx, pool, replication.OriginName(originOnly, "b0")); err != nil {
		t.Fatalf("EnsureOrigin is not idempotent: %v", err)
	}
	mustExec(t, pool, "SELECT pg_create_logical_replication_slot('not_refit', 'pgoutput')")
	t.Cleanup(func() { pool.Exec(ctx, "SELECT pg_drop_replication_slot('not_refit')") }) //nolint:errcheck // best effort
	mustExec(t, pool, "CREATE PUBLICATION refit_job_x FOR TABLE docs")

	orphans, err := replication.Orphans(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{a, b, c, pubOnly, originOnly} {
		if !slices.Contains(orphans, id) {
			t.Errorf("Orphans = %v, missing %d", orphans, id)
		}
	}
	if slices.Contains(orphans, otherDatabase) {
		t.Errorf("Orphans = %v lists another database's origin %d", orphans, otherDatabase)
	}

	// A consumer streams job a's slot (its apply session holds origin
	// refit_j<a>_apply) while Drop runs from outside.
	cons := replication.NewConsumer(pool, a, []replication.Target{docsTarget()}, testConfig(), logger(t))
	run := startRun(t, cons)
	waitFor(t, 5*time.Second, "the consumer streams the slot", func() bool {
		info, err := replication.Slot(ctx, pool, a)
		return err == nil && info.Active
	})
	waitFor(t, 5*time.Second, "the apply session holds its origin", func() bool {
		return len(origins(t, pool, replication.OriginName(a, "apply"))) == 1
	})
	mustExec(t, pool, "INSERT INTO docs VALUES (1, 'a')")
	if err := cons.Drain(ctx); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if err := replication.Drop(ctx, pool, a); err != nil {
		t.Fatalf("Drop with a streaming consumer: %v", err)
	}
	t.Logf("Drop of a streamed slot took %s", time.Since(start).Round(time.Millisecond))
	select {
	case err := <-run.done:
		if err == nil {
			t.Fatal("Run returned nil after its slot was dropped")
		}
		t.Logf("Run returned: %v", err)
		run.once.Do(func() {})
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its slot was dropped")
	}
	if slotExists(t, pool, replication.SlotName(a)) {
		t.Fatal("slot of a still there")
	}
	if ok, err := replication.PublicationExists(ctx, pool, a); err != nil || ok {
		t.Fatalf("publication of a still there: %v %v", ok, err)
	}
	if got := origins(t, pool, fmt.Sprintf("refit\\_j%d\\_%%", a)); len(got) != 0 {
		t.Fatalf("origins of a still there: %v", got)
	}
	// Others untouched.
	for _, id := range []int64{b, c} {
		if !slotExists(t, pool, replication.SlotName(id)) {
			t.Errorf("slot of job %d dropped with job %d", id, a)
		}
		if ok, err := replication.PublicationExists(ctx, pool, id); err != nil || !ok {
			t.Errorf("publication of job %d dropped with job %d", id, a)
		}
		if got := origins(t, pool, fmt.Sprintf("refit\\_j%d\\_%%", id)); len(got) != 2 {
			t.Errorf("origins of job %d after dropping %d: %v", id, a, got)
		}
	}
	if !slotExists(t, pool, "not_refit") {
		t.Error("a slot that is not refit's was dropped")
	}
	orphans, err = replication.Orphans(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(orphans, a) {
		t.Errorf("Orphans after Drop still lists %d: %v", a, orphans)
	}
	for _, id := range []int64{b, c, pubOnly, originOnly} {
		if !slices.Contains(orphans, id) {
			t.Errorf("Orphans = %v, missing %d", orphans, id)
		}
	}
	if err := replication.Drop(ctx, pool, a); err != nil {
		t.Fatalf("second Drop: %v", err)
	}
	// A consumer of a dropped slot fails at once, and says why.
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	err = replication.NewConsumer(pool, a, []replication.Target{docsTarget()}, testConfig(), logger(t)).Run(rctx)
	rcancel()
	if err == nil || !strings.Contains(err.Error(), "does not exist") || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run on a dropped slot: %v", err)
	}
	if got := origins(t, pool, fmt.Sprintf("refit\\_j%d\\_%%", a)); len(got) != 0 {
		t.Fatalf("a Run that could not start recreated origins of the dropped job: %v", got)
	}

	// An origin still held by a session (as the apply session holds its
	// origin for a moment after its walsender was terminated) is dropped as
	// soon as the session lets go of it.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	holder := conn.Hijack()
	defer holder.Close(ctx)
	if err := replication.TagSession(ctx, holder, replication.OriginName(b, "apply"), logger(t)); err != nil {
		t.Fatal(err)
	}
	released := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, err := holder.Exec(ctx, "SELECT pg_replication_origin_session_reset()")
		released <- err
	}()
	start = time.Now()
	err = replication.Drop(ctx, pool, b)
	if rerr := <-released; rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil {
		t.Fatalf("Drop while an origin is held for 300ms: %v", err)
	}
	t.Logf("Drop waited %s for a held origin", time.Since(start).Round(time.Millisecond))
	if got := origins(t, pool, fmt.Sprintf("refit\\_j%d\\_%%", b)); len(got) != 0 {
		t.Fatalf("origins of b still there: %v", got)
	}
	for _, id := range []int64{pubOnly, originOnly} {
		if err := replication.Drop(ctx, pool, id); err != nil {
			t.Fatal(err)
		}
	}
	orphans, err = replication.Orphans(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{a, pubOnly, originOnly} {
		if slices.Contains(orphans, id) {
			t.Errorf("Orphans after Drop still lists %d: %v", id, orphans)
		}
	}
}

// TestSlotNamesAcrossDatabases: slot names are cluster-wide but jobs are
// numbered per database. Dropping job N in one database must not drop (or
// terminate the walsender of) job N's slot in another database.
func TestSlotNamesAcrossDatabases(t *testing.T) {
	ctx := context.Background()
	poolA := newPool(t, pgtest.NewDB(t))
	poolB := newPool(t, pgtest.NewDB(t))
	jobID := nextJobID()
	dropAtEnd(t, poolA, jobID)
	if created, err := replication.EnsureSlot(ctx, poolA, jobID, 5*time.Second); err != nil || !created {
		t.Fatalf("EnsureSlot in A: %v %v", created, err)
	}
	if info, err := replication.Slot(ctx, poolB, jobID); err != nil || info.Exists {
		t.Fatalf("Slot in B sees A's slot: %+v %v", info, err)
	}
	_, err := replication.EnsureSlot(ctx, poolB, jobID, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "another database") {
		t.Fatalf("EnsureSlot in B with A's slot of the same name: %v", err)
	}
	t.Logf("EnsureSlot in B: %v", err)
	if err := replication.Drop(ctx, poolB, jobID); err != nil {
		t.Fatal(err)
	}
	if !slotExists(t, poolA, replication.SlotName(jobID)) {
		t.Fatal("Drop in database B dropped database A's slot")
	}
	orphans, err := replication.Orphans(ctx, poolB)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(orphans, jobID) {
		t.Fatalf("Orphans in B lists A's job %d: %v", jobID, orphans)
	}
}

// ---------------------------------------------------------------------------
// Consumer

func TestConsumerApplies(t *testing.T) {
	ctx := context.Background()
	f := newSyncFixture(t, docsDDL, docsTarget())
	c := f.consumer(t, testConfig())
	var statuses atomic.Int64
	c.OnStatus = func(replication.Stats) { statuses.Add(1) }
	startRun(t, c)

	// Inserts and updates by plain sessions, one row per transaction;
	// measure commit → applied.
	var lags []time.Duration
	for i := 1; i <= 20; i++ {
		mustExec(t, f.pool, "INSERT INTO docs (id, v) VALUES ($1, $2)", i, fmt.Sprintf("row %d", i))
		lags = append(lags, waitFor(t, time.Second, fmt.Sprintf("insert %d applied", i), func() bool {
			var ok bool
			err := f.pool.QueryRow(ctx, "SELECT v_up IS NOT DISTINCT FROM upper(v) FROM docs WHERE id = $1", i).Scan(&ok)
			return err == nil && ok
		}))
	}
	for i := 1; i <= 20; i++ {
		mustExec(t, f.pool, "UPDATE docs SET v = $2 WHERE id = $1", i, fmt.Sprintf("updated %d é", i))
		lags = append(lags, waitFor(t, time.Second, fmt.Sprintf("update %d applied", i), func() bool {
			var ok bool
			err := f.pool.QueryRow(ctx, "SELECT v_up IS NOT DISTINCT FROM upper(v) FROM docs WHERE id = $1", i).Scan(&ok)
			return err == nil && ok
		}))
	}
	t.Logf("commit → applied (polled): p50 %s, max %s", percentile(lags, 0.5), percentile(lags, 1))

	// A multi-row transaction: its keys are applied together.
	mustExec(t, f.pool, "UPDATE docs SET v = v || '!'; INSERT INTO docs (id, v) SELECT g, 'bulk ' || g FROM generate_series(100, 599) g")
	waitFor(t, 2*time.Second, "bulk applied", func() bool { return countWrong(t, f.pool, "docs") == 0 })

	// Every write was waited for, so no two transactions shared an apply:
	// the counts are exact. The consumer's own apply transactions come back
	// in the stream tagged with its origin; they are skipped, not applied
	// again (no feedback loop). The consumer counts an apply once it has
	// committed, so the rows can be right a moment before the counters.
	waitFor(t, 2*time.Second, "the bulk apply counted", func() bool { return c.Stats().TxApplied >= 41 })
	st := c.Stats()
	if st.KeysApplied != 40+520 || st.TxApplied != 41 {
		t.Fatalf("stats: keys %d tx %d, want 560 and 41", st.KeysApplied, st.TxApplied)
	}
	switch st.OriginFilter {
	case replication.OriginClient:
		if st.TxSkipped == 0 {
			t.Fatal("the consumer's own apply transactions were not skipped by origin")
		}
	case replication.OriginWalsender: // PostgreSQL 16+: they never reach the consumer
		if st.TxSkipped != 0 {
			t.Fatalf("%d transactions of refit were sent although the walsender filters them", st.TxSkipped)
		}
	default:
		t.Fatalf("origin filter %q", st.OriginFilter)
	}
	if len(st.Lags) < 41 || st.LastAppliedAt.IsZero() || st.LastCommitTime.IsZero() {
		t.Fatalf("lag samples: %d, last applied %v, last commit %v", len(st.Lags), st.LastAppliedAt, st.LastCommitTime)
	}
	t.Logf("consumer lag samples: %d, p50 %s, max %s; keys %d, tx %d", len(st.Lags), percentile(st.Lags, 0.5), percentile(st.Lags, 1), st.KeysApplied, st.TxApplied)

	// The position is reported and confirmed in the slot.
	waitFor(t, 2*time.Second, "status reports", func() bool { return statuses.Load() >= 2 && c.Stats().ConfirmedLSN != 0 })
	var confirmedOK bool
	waitFor(t, 2*time.Second, "slot confirmed past the last commit", func() bool {
		err := f.pool.QueryRow(ctx, "SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
			replication.SlotName(f.jobID), c.Stats().ConfirmedLSN.String()).Scan(&confirmedOK)
		return err == nil && confirmedOK && c.Stats().ConfirmedLSN != 0
	})

	// Deletes are not published and need nothing.
	mustExec(t, f.pool, "DELETE FROM docs WHERE id > 500")
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestConsumerSkipsTaggedSessions(t *testing.T) {
	ctx := context.Background()
	f := newSyncFixture(t, docsDDL, docsTarget())
	mustExec(t, f.pool, "INSERT INTO docs (id, v) VALUES (1, 'a'), (2, 'b')")
	c := f.consumer(t, testConfig())
	startRun(t, c)
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countWrong(t, f.pool, "docs"); n != 0 {
		t.Fatalf("%d rows not applied", n)
	}
	// The drain's own apply is a tagged (skipped) transaction committed
	// after the sentinel; a second drain makes sure it has been counted.
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	before := c.Stats()

	// refit's own session (tagged with a refit origin) writes a wrong
	// derived value: the consumer must not see it as dirty.
	conn, err := f.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tagged := conn.Hijack()
	defer tagged.Close(ctx)
	if err := replication.TagSession(ctx, tagged, replication.OriginName(f.jobID, "x"), logger(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := tagged.Exec(ctx, "UPDATE docs SET v = 'tagged', v_up = 'wrong' WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	mid := c.Stats()
	// Filtered by the walsender (PostgreSQL 16+), the tagged transaction
	// never reaches the consumer; filtered by the consumer, it is counted.
	skipped := int64(1)
	if mid.OriginFilter == replication.OriginWalsender {
		skipped = 0
	}
	if mid.TxSkipped != before.TxSkipped+skipped || mid.KeysApplied != before.KeysApplied {
		t.Fatalf("after the tagged write (filter %s): skipped %d → %d (want +%d), keys applied %d → %d (want +0)",
			mid.OriginFilter, before.TxSkipped, mid.TxSkipped, skipped, before.KeysApplied, mid.KeysApplied)
	}
	// Then a plain session writes.
	mustExec(t, f.pool, "UPDATE docs SET v = 'plain' WHERE id = 2")
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	var v1 string
	if err := f.pool.QueryRow(ctx, "SELECT v_up FROM docs WHERE id = 1").Scan(&v1); err != nil {
		t.Fatal(err)
	}
	if v1 != "wrong" {
		t.Fatalf("the tagged transaction's key was applied: v_up = %q", v1)
	}
	var v2 string
	if err := f.pool.QueryRow(ctx, "SELECT v_up FROM docs WHERE id = 2").Scan(&v2); err != nil || v2 != "PLAIN" {
		t.Fatalf("plain update: v_up = %q %v", v2, err)
	}
	after := c.Stats()
	if after.KeysApplied != mid.KeysApplied+1 || after.TxApplied != mid.TxApplied+1 {
		t.Fatalf("applied keys %d → %d, tx %d → %d; want +1 each", mid.KeysApplied, after.KeysApplied, mid.TxApplied, after.TxApplied)
	}
	if _, err := tagged.Exec(ctx, "SELECT pg_replication_origin_session_reset()"); err != nil {
		t.Fatal(err)
	}
}

func TestConsumerCompositeKey(t *testing.T) {
	ctx := context.Background()
	target := replication.Target{
		Table: migration.TableName{Schema: "public", Name: "pairs"},
		Key:   []migration.KeyColumn{{Name: "a", Type: "integer"}, {Name: "b", Type: "text"}},
		Sets:  []migration.ColumnSet{{Column: "v_up", Expr: "upper(v) || ':' || a || ':' || b"}},
	}
	f := newSyncFixture(t, `CREATE TABLE pairs (a int, b text, v text, v_up text, PRIMARY KEY (a, b))`, target)
	c := f.consumer(t, testConfig())
	startRun(t, c)
	keys := []string{"plain", "with,comma", `with "quotes"`, "it's", "{braces}", `back\slash`, "naïve ☃ 日本語 🎉",
		"NULL", "", " spaces ", "(1,2)", "tab\there", "new\nline"}
	batch := &pgx.Batch{}
	for i, k := range keys {
		batch.Queue("INSERT INTO pairs (a, b, v) VALUES ($1, $2, $3)", i%3, k, "v"+k)
	}
	if err := f.pool.SendBatch(ctx, batch).Close(); err != nil {
		t.Fatal(err)
	}
	mustExec(t, f.pool, "UPDATE pairs SET v = v || ' ü' WHERE a = 1")
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	var wrong []string
	rows, err := f.pool.Query(ctx, "SELECT a || '/' || b FROM pairs WHERE v_up IS DISTINCT FROM upper(v) || ':' || a || ':' || b")
	if err != nil {
		t.Fatal(err)
	}
	if wrong, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(wrong) != 0 {
		t.Fatalf("keys not applied: %q", wrong)
	}
	t.Logf("%d keys applied for %d rows (a key dirty in several pending transactions is applied once)", c.Stats().KeysApplied, len(keys))
}

func TestConsumerDrain(t *testing.T) {
	ctx := context.Background()
	f := newSyncFixture(t, docsDDL, docsTarget())

	t.Run("not running", func(t *testing.T) {
		cfg := testConfig()
		cfg.DrainTimeout = 300 * time.Millisecond
		c := f.consumer(t, cfg)
		start := time.Now()
		err := c.Drain(ctx)
		if err == nil || !strings.Contains(err.Error(), "drain_timeout") || !strings.Contains(err.Error(), "not applied within 300ms") {
			t.Fatalf("Drain without Run: %v", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("Drain without Run took %s", took)
		}
		t.Logf("error: %v", err)
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		cfg.DrainTimeout = time.Minute
		if err := f.consumer(t, cfg).Drain(cctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Drain with a context that ends: %v", err)
		}
	})

	t.Run("running", func(t *testing.T) {
		cfg := testConfig()
		// A long flush interval: only the drain forces the apply.
		cfg.FlushInterval = time.Minute
		c := f.consumer(t, cfg)
		startRun(t, c)
		// The late sentinels of the drains above are ignored.
		if err := c.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		var took []time.Duration
		for i := 1; i <= 30; i++ {
			mustExec(t, f.pool, "INSERT INTO docs (id, v) VALUES ($1, 'x') ON CONFLICT (id) DO UPDATE SET v = excluded.v || $1", i%10)
			start := time.Now()
			if err := c.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			took = append(took, time.Since(start))
			if n := countWrong(t, f.pool, "docs"); n != 0 {
				t.Fatalf("drain %d returned with %d rows not applied", i, n)
			}
		}
		t.Logf("drain latency over %d drains: p50 %s, p90 %s, max %s", len(took), percentile(took, 0.5), percentile(took, 0.9), percentile(took, 1))

		// Concurrent drains all return.
		mustExec(t, f.pool, "UPDATE docs SET v = v || '?'")
		var wg sync.WaitGroup
		errs := make(chan error, 5)
		for i := 0; i < 5; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); errs <- c.Drain(ctx) }()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := countWrong(t, f.pool, "docs"); n != 0 {
			t.Fatalf("%d rows not applied after concurrent drains", n)
		}
	})
}

func TestConsumerResume(t *testing.T) {
	ctx := context.Background()
	f := newSyncFixture(t, docsDDL, docsTarget())
	cfg := testConfig()
	c1 := f.consumer(t, cfg)
	r1 := startRun(t, c1)
	mustExec(t, f.pool, "INSERT INTO docs (id, v) SELECT g, 'a' || g FROM generate_series(1, 10) g")
	if err := c1.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	var walAfter string
	if err := f.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&walAfter); err != nil {
		t.Fatal(err)
	}
	// The consumer confirms everything it applied (and, once idle, what it
	// was sent) and reports it to the slot.
	var lsn1 string
	waitFor(t, 3*time.Second, "confirmed position reported", func() bool {
		err := f.pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn >= $2::pg_lsn",
			replication.SlotName(f.jobID), walAfter).Scan(&lsn1)
		return err == nil
	})
	if err := r1.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v", err)
	}
	waitFor(t, 5*time.Second, "slot released", func() bool {
		info, err := replication.Slot(ctx, f.pool, f.jobID)
		return err == nil && !info.Active
	})
	// Written while nobody consumes.
	mustExec(t, f.pool, "INSERT INTO docs (id, v) SELECT g, 'b' || g FROM generate_series(11, 20) g")
	mustExec(t, f.pool, "UPDATE docs SET v = 'c' || id WHERE id <= 5")
	if n := countWrong(t, f.pool, "docs"); n != 15 {
		t.Fatalf("%d rows wrong before the restart, want 15", n)
	}

	c2 := f.consumer(t, cfg)
	startRun(t, c2)
	took := waitFor(t, 3*time.Second, "writes made while stopped applied", func() bool { return countWrong(t, f.pool, "docs") == 0 })
	t.Logf("after the restart the backlog was applied in %s; keys %d", took.Round(time.Millisecond), c2.Stats().KeysApplied)
	// Exactly the 15 keys written while stopped: nothing before the
	// confirmed position comes again, nothing after it is lost.
	if st := c2.Stats(); st.KeysApplied != 15 {
		t.Fatalf("new consumer applied %d keys, want 15", st.KeysApplied)
	}
	waitFor(t, 2*time.Second, "confirmed_flush_lsn advances", func() bool {
		var ok bool
		err := f.pool.QueryRow(ctx, "SELECT confirmed_flush_lsn > $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
			replication.SlotName(f.jobID), lsn1).Scan(&ok)
		return err == nil && ok
	})
}

func TestConsumerToastedRow(t *testing.T) {
	ctx := context.Background()
	target := replication.Target{
		Table: migration.TableName{Schema: "public", Name: "big"},
		Key:   []migration.KeyColumn{{Name: "id", Type: "bigint"}},
		Sets: []migration.ColumnSet{
			{Column: "v_up", Expr: "upper(v)"},
			{Column: "body_md5", Expr: "md5(body)"},
		},
	}
	f := newSyncFixture(t, `CREATE TABLE big (id bigint PRIMARY KEY, v text, body text, v_up text, body_md5 text)`, target)
	// ~6.4 kB of random hex: pglz cannot compress it, so it is stored
	// out of line.
	mustExec(t, f.pool, `INSERT INTO big (id, v, body) SELECT g, 'v' || g, (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 200) i)
		FROM generate_series(1, 3) g`)
	var toastBytes int64
	if err := f.pool.QueryRow(ctx, "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'big'::regclass").Scan(&toastBytes); err != nil {
		t.Fatal(err)
	}
	if toastBytes == 0 {
		t.Fatal("the body was not TOASTed")
	}
	c := f.consumer(t, testConfig())
	startRun(t, c)
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	// The rows were inserted before the consumer started, but after the
	// slot: they arrive in the stream.
	var wrong int
	check := func() {
		t.Helper()
		if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM big WHERE v_up IS DISTINCT FROM upper(v) OR body_md5 IS DISTINCT FROM md5(body)").Scan(&wrong); err != nil {
			t.Fatal(err)
		}
		if wrong != 0 {
			t.Fatalf("%d rows wrong", wrong)
		}
	}
	check()
	// Updates that leave the TOASTed body alone: it arrives as 'u'
	// (unchanged TOAST) and only the key is read.
	mustExec(t, f.pool, "UPDATE big SET v = 'changed' || id")
	mustExec(t, f.pool, "UPDATE big SET v = NULL WHERE id = 2")
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	check()
	// And one that changes it.
	mustExec(t, f.pool, "UPDATE big SET body = body || 'tail' WHERE id = 3")
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	check()
}

// ---------------------------------------------------------------------------
// ApplySQL

func TestApplySQLQuotesIdentifiers(t *testing.T) {
	ctx := context.Background()
	target := &replication.Target{
		Table: migration.TableName{Schema: "Odd Schema", Name: "Odd Name"},
		Key:   []migration.KeyColumn{{Name: "Key Col", Type: "integer"}, {Name: `we"ird`, Type: "text"}},
		Sets:  []migration.ColumnSet{{Column: "New Col", Expr: `upper("Old Col")`}},
	}
	sql := replication.ApplySQL(target)
	t.Logf("%s", sql)
	for _, want := range []string{`UPDATE "Odd Schema"."Odd Name" SET "New Col" = (upper("Old Col"))`, `("Key Col", "we""ird") IN`,
		`"New Col" IS DISTINCT FROM (upper("Old Col"))`, "$1::text[]", "$2::text[]", "AS integer", "AS text"} {
		if !strings.Contains(sql, want) {
			t.Errorf("ApplySQL lacks %q:\n%s", want, sql)
		}
	}
	pool := newPool(t, pgtest.NewDB(t))
	mustExec(t, pool, `CREATE SCHEMA "Odd Schema";
		CREATE TABLE "Odd Schema"."Odd Name" ("Key Col" int, "we""ird" text, "Old Col" text, "New Col" text, PRIMARY KEY ("Key Col", "we""ird"));
		INSERT INTO "Odd Schema"."Odd Name" VALUES (1, 'a,b', 'x', NULL), (2, 'c', 'y', NULL), (3, 'd', 'z', NULL)`)
	tag, err := pool.Exec(ctx, sql, []string{"1", "2", "9"}, []string{"a,b", "c", "zz"})
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() != 2 {
		t.Fatalf("updated %d rows, want 2", tag.RowsAffected())
	}
	// Idempotent: rows already right are not written again.
	if tag, err = pool.Exec(ctx, sql, []string{"1", "2"}, []string{"a,b", "c"}); err != nil || tag.RowsAffected() != 0 {
		t.Fatalf("second apply: %v rows, %v", tag.RowsAffected(), err)
	}
	var got []string
	rows, err := pool.Query(ctx, `SELECT coalesce("New Col", '-') FROM "Odd Schema"."Odd Name" ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	if got, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	if strings.Join(got, ",") != "-,X,Y" {
		t.Fatalf("New Col = %v", got)
	}

	// And the consumer with that target, end to end.
	jobID := nextJobID()
	dropAtEnd(t, pool, jobID)
	columns, err := replication.PublishedColumns(ctx, pool, []replication.Target{*target})
	if err != nil {
		t.Fatal(err)
	}
	// Column lists are PostgreSQL 15+; before, the whole row is published.
	want := `Key Col|we"ird`
	if pgtest.Shared(t).Version() < 15 {
		want = ""
	}
	if cols, ok := columns[target.Table.String()]; strings.Join(cols, "|") != want || ok != (want != "") {
		t.Fatalf("published columns %q (listed: %v), want %q", cols, ok, want)
	}
	mustExec(t, pool, replication.PublicationSQL(jobID, []migration.TableName{target.Table}, columns))
	if _, err := replication.EnsureSlot(ctx, pool, jobID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	c := replication.NewConsumer(pool, jobID, []replication.Target{*target}, testConfig(), logger(t))
	startRun(t, c)
	mustExec(t, pool, `UPDATE "Odd Schema"."Odd Name" SET "Old Col" = 'w' WHERE "Key Col" = 3;
		INSERT INTO "Odd Schema"."Odd Name" VALUES (4, 'e"f', 'q', NULL)`)
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM "Odd Schema"."Odd Name" WHERE "New Col" IS DISTINCT FROM upper("Old Col")`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d rows wrong (%v)", n, err)
	}
}

// TestPublishedColumns: the publication lists the key and the replica
// identity columns (PostgreSQL 15+), so the walsender sends keys only; an
// application UPDATE of any other column still succeeds (the list covers
// the identity) and is still published.
func TestPublishedColumns(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t, pgtest.NewDB(t))
	mustExec(t, pool, `
		CREATE TABLE pk_t (id bigint PRIMARY KEY, a text);
		CREATE TABLE comp (a int, b int, c text, PRIMARY KEY (b, a));
		CREATE TABLE by_index (id bigint PRIMARY KEY, code text NOT NULL, v text);
		CREATE UNIQUE INDEX by_index_code ON by_index (code);
		ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_code;
		CREATE TABLE full_t (id bigint PRIMARY KEY, v text);
		ALTER TABLE full_t REPLICA IDENTITY FULL;
		INSERT INTO pk_t VALUES (1, 'x'); INSERT INTO comp VALUES (1, 2, 'x');
		INSERT INTO by_index VALUES (1, 'c1', 'x'); INSERT INTO full_t VALUES (1, 'x')`)
	tn := func(name string) migration.TableName { return migration.TableName{Schema: "public", Name: name} }
	key := func(names ...string) []migration.KeyColumn {
		out := make([]migration.KeyColumn, len(names))
		for i, n := range names {
			out[i] = migration.KeyColumn{Name: n, Type: "bigint"}
		}
		return out
	}
	targets := []replication.Target{
		{Table: tn("pk_t"), Key: key("id")},
		{Table: tn("comp"), Key: key("b", "a")},
		{Table: tn("by_index"), Key: key("id")},
		{Table: tn("full_t"), Key: key("id")},
	}
	columns, err := replication.PublishedColumns(ctx, pool, targets)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"public.pk_t": "id", "public.comp": "b|a", "public.by_index": "code|id"}
	if pgtest.Shared(t).Version() < 15 {
		want = map[string]string{}
	}
	for name, w := range want {
		if got := strings.Join(columns[name], "|"); got != w {
			t.Errorf("%s: published columns %q, want %q", name, got, w)
		}
	}
	if _, ok := columns["public.full_t"]; ok || len(columns) != len(want) {
		t.Errorf("columns %v: REPLICA IDENTITY FULL must get no list", columns)
	}
	tables := make([]migration.TableName, len(targets))
	for i, tg := range targets {
		tables[i] = tg.Table
	}
	jobID := nextJobID()
	dropAtEnd(t, pool, jobID)
	mustExec(t, pool, replication.PublicationSQL(jobID, tables, columns))
	if _, err := replication.EnsureSlot(ctx, pool, jobID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// Updates of unlisted columns only: each must succeed and be published.
	for _, q := range []string{"UPDATE pk_t SET a = 'y'", "UPDATE comp SET c = 'y'", "UPDATE by_index SET v = 'y'", "UPDATE full_t SET v = 'y'"} {
		mustExec(t, pool, q)
	}
	var updates int
	err = pool.QueryRow(ctx, `SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2) WHERE get_byte(data, 0) = ascii('U')`,
		replication.SlotName(jobID), replication.PublicationName(jobID)).Scan(&updates)
	if err != nil {
		t.Fatal(err)
	}
	if updates != 4 {
		t.Fatalf("%d UPDATE messages in the stream, want 4", updates)
	}
}

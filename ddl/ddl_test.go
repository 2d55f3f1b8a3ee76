package ddl_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/refit-dev/refit/ddl"
	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/sqlstate"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testTimeout bounds every test, so that a lock wait without lock_timeout
// fails the test instead of hanging it.
const testTimeout = 60 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newLogger logs to the test and records every entry for assertions.
func newLogger(t *testing.T) (*zap.Logger, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	log := zaptest.NewLogger(t, zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(c, core)
	})))
	return log, logs
}

func newPool(t testing.TB, dsn string, maxConns int32, params map[string]string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	for k, v := range params {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// setupTable creates t(id int primary key, v text) with n rows and the
// checkpoint table the `within` callbacks write to.
func setupTable(t *testing.T, conn *pgx.Conn, n int) {
	t.Helper()
	exec(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	exec(t, conn, `INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, $1) g`, n)
	exec(t, conn, `CREATE TABLE checkpoints (id serial PRIMARY KEY, note text NOT NULL, held_lock bool NOT NULL)`)
}

func columnExists(t *testing.T, conn *pgx.Conn, table, column string) bool {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(context.Background(),
		`SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped)`,
		table, column).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// indexState returns whether the index exists, whether it is valid, and its oid.
func indexState(t *testing.T, conn *pgx.Conn, index string) (exists, valid bool, oid uint32) {
	t.Helper()
	err := conn.QueryRow(context.Background(),
		`SELECT indexrelid::oid, indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)`, index).Scan(&oid, &valid)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return true, valid, oid
}

func countRows(t *testing.T, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// locker is session A: a transaction that holds a lock until released.
type locker struct {
	conn     *pgx.Conn
	pid      uint32
	release  chan struct{}
	done     chan error
	stopOnce sync.Once
}

// holdLock opens session A, runs BEGIN and lockSQL, and keeps the
// transaction open until hold has passed or stop is called; then it commits.
// It returns once the lock is held.
func holdLock(t testing.TB, dsn, lockSQL string, hold time.Duration) *locker {
	t.Helper()
	l := &locker{conn: connect(t, dsn), release: make(chan struct{}), done: make(chan error, 1)}
	l.pid = l.conn.PgConn().PID()
	ctx := context.Background()
	tx, err := l.conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, lockSQL); err != nil {
		t.Fatalf("session A: %s: %v", lockSQL, err)
	}
	go func() {
		timer := time.NewTimer(hold)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-l.release:
		}
		l.done <- tx.Commit(ctx)
	}()
	t.Cleanup(l.stop)
	return l
}

// stop ends A's transaction (if still open) and waits for its commit.
func (l *locker) stop() {
	l.stopOnce.Do(func() {
		close(l.release)
		<-l.done
	})
}

// checkpoint is a `within` callback: it records that it ran and whether it
// runs in the statement's transaction (it then holds the table's lock).
func checkpoint(calls *atomic.Int64, note, lockMode string) func(context.Context, pgx.Tx) error {
	return func(ctx context.Context, tx pgx.Tx) error {
		calls.Add(1)
		_, err := tx.Exec(ctx, `INSERT INTO checkpoints (note, held_lock)
			SELECT $1, EXISTS (SELECT FROM pg_locks WHERE locktype = 'relation' AND relation = 't'::regclass
				AND pid = pg_backend_pid() AND mode = $2 AND granted)`, note, lockMode)
		return err
	}
}

// TestBlockedDDLRetriesWithoutQueueing: a DDL blocked by a long reader is
// retried until it succeeds, and a third session never waits behind refit's
// lock request for longer than lock_timeout.
func TestBlockedDDLRetriesWithoutQueueing(t *testing.T) {
	ctx := testContext(t)
	dsn := pgtest.NewDB(t)
	admin := connect(t, dsn)
	setupTable(t, admin, 1000)

	log, logs := newLogger(t)
	cfg := ddl.DefaultConfig()
	cfg.LockTimeout = 300 * time.Millisecond
	cfg.RetryInitial = 100 * time.Millisecond
	cfg.RetryMax = 500 * time.Millisecond
	cfg.RetryTotal = 30 * time.Second
	ex := ddl.New(newPool(t, dsn, 0, nil), cfg, log)

	// Session C: a reader in autocommit every ~20 ms during the whole test.
	readerConn := connect(t, dsn)
	var (
		readerStop = make(chan struct{})
		readerDone = make(chan error, 1)
		maxLatency time.Duration
		queries    int
	)
	go func() {
		for {
			begin := time.Now()
			var n int
			if err := readerConn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
				readerDone <- err
				return
			}
			maxLatency = max(maxLatency, time.Since(begin))
			queries++
			select {
			case <-readerStop:
				readerDone <- nil
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	// Session A: BEGIN; SELECT * FROM t (ACCESS SHARE) for ~3 s.
	a := holdLock(t, dsn, "SELECT * FROM t", 3*time.Second)
	begin := time.Now()
	var calls atomic.Int64
	err := ex.Run(ctx, ddl.Statement{
		SQL:           "ALTER TABLE t ADD COLUMN n int",
		Description:   "add column t.n",
		Transactional: true,
	}, checkpoint(&calls, "add n", "AccessExclusiveLock"))
	elapsed := time.Since(begin)
	a.stop()
	time.Sleep(200 * time.Millisecond) // C keeps reading after the DDL too
	close(readerStop)
	if rerr := <-readerDone; rerr != nil {
		t.Fatalf("session C: %v", rerr)
	}
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	t.Logf("DDL succeeded after %s with %d retries; session C: %d queries, max latency %s (lock_timeout %s)",
		elapsed.Round(time.Millisecond), ex.Retries(), queries, maxLatency.Round(time.Millisecond), cfg.LockTimeout)
	if ex.Retries() == 0 {
		t.Error("Retries() = 0, want > 0: the DDL should have been blocked by session A")
	}
	if elapsed < 2*time.Second {
		t.Errorf("DDL finished after %s, before session A released its lock", elapsed)
	}
	if !columnExists(t, admin, "t", "n") {
		t.Error("column t.n does not exist after a successful Run")
	}
	const margin = 250 * time.Millisecond
	if maxLatency > cfg.LockTimeout+margin {
		t.Errorf("session C waited up to %s, want <= lock_timeout %s + %s", maxLatency, cfg.LockTimeout, margin)
	}
	if queries < 20 {
		t.Errorf("session C ran only %d queries", queries)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("within called %d times, want 1", got)
	}
	if n := countRows(t, admin, "SELECT count(*) FROM checkpoints WHERE note = 'add n' AND held_lock"); n != 1 {
		t.Errorf("%d checkpoint rows written in the DDL's transaction, want 1", n)
	}
	if n := countRows(t, admin, "SELECT count(*) FROM checkpoints"); n != 1 {
		t.Errorf("%d checkpoint rows, want 1", n)
	}

	// The retries named session A as the blocker at least once.
	named := false
	for _, e := range logs.FilterMessage("ddl lock not granted, retrying").All() {
		if code := e.ContextMap()["sqlstate"]; code != sqlstate.LockNotAvailable {
			t.Errorf("retry logged sqlstate %v, want 55P03", code)
		}
		if bl, ok := e.ContextMap()["blockers"].([]ddl.Blocker); ok {
			for _, b := range bl {
				named = named || b.PID == int(a.pid)
			}
		}
	}
	if !named {
		t.Errorf("no retry log named session A (pid %d) as the blocker", a.pid)
	}
}

// TestGivesUpAfterRetryTotal: while the blocker outlives RetryTotal, Run
// fails with the lock timeout and changes nothing.
func TestGivesUpAfterRetryTotal(t *testing.T) {
	ctx := testContext(t)
	dsn := pgtest.NewDB(t)
	admin := connect(t, dsn)
	setupTable(t, admin, 10)

	log, logs := newLogger(t)
	cfg := ddl.DefaultConfig()
	cfg.LockTimeout = 200 * time.Millisecond
	cfg.RetryInitial = 50 * time.Millisecond
	cfg.RetryMax = 200 * time.Millisecond
	cfg.RetryTotal = time.Second
	ex := ddl.New(newPool(t, dsn, 0, nil), cfg, log)

	a := holdLock(t, dsn, "SELECT * FROM t", 10*time.Second)
	var calls atomic.Int64
	begin := time.Now()
	err := ex.Run(ctx, ddl.Statement{SQL: "ALTER TABLE t ADD COLUMN n int", Description: "add column t.n", Transactional: true},
		checkpoint(&calls, "add n", "AccessExclusiveLock"))
	elapsed := time.Since(begin)
	t.Logf("gave up after %s, %d retries: %v", elapsed.Round(time.Millisecond), ex.Retries(), err)
	if err == nil {
		t.Fatal("Run succeeded while session A held its lock")
	}
	if sqlstate.Code(err) != sqlstate.LockNotAvailable {
		t.Errorf("error %v does not wrap SQLSTATE 55P03", err)
	}
	if !sqlstate.Retryable(err) {
		t.Errorf("IsRetryable(%v) = false", err)
	}
	if ex.Retries() < 2 {
		t.Errorf("Retries() = %d, want several", ex.Retries())
	}
	// Retries() counts retries that happened: one less than the attempts.
	var attempts int
	if _, serr := fmt.Sscanf(err.Error()[strings.Index(err.Error(), "gave up after"):], "gave up after %d attempts", &attempts); serr != nil {
		t.Errorf("error %q does not say how many attempts were made: %v", err, serr)
	} else if int64(attempts) != ex.Retries()+1 {
		t.Errorf("%d attempts but Retries() = %d, want attempts-1", attempts, ex.Retries())
	}
	if n := logs.FilterMessage("ddl lock not granted, retrying").Len(); int64(n) != ex.Retries() {
		t.Errorf("%d retries logged, Retries() = %d", n, ex.Retries())
	}
	if logs.FilterMessageSnippet("ddl gave up").Len() != 1 {
		t.Error("giving up was not logged")
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("pid %d ", a.pid)) {
		t.Logf("note: the final error does not name session A (pid %d); the blocker sampler missed the last attempt", a.pid)
	}
	if elapsed < cfg.RetryTotal-cfg.RetryMax || elapsed > cfg.RetryTotal+cfg.LockTimeout+time.Second {
		t.Errorf("gave up after %s, want about RetryTotal %s", elapsed, cfg.RetryTotal)
	}
	if columnExists(t, admin, "t", "n") {
		t.Error("column t.n exists after a failed Run")
	}
	if calls.Load() != 0 || countRows(t, admin, "SELECT count(*) FROM checkpoints") != 0 {
		t.Error("within ran for a statement that never succeeded")
	}
}

func TestCreateIndexConcurrently(t *testing.T) {
	ctx := testContext(t)
	dsn := pgtest.NewDB(t)
	admin := connect(t, dsn)
	setupTable(t, admin, 1000)
	exec(t, admin, `CREATE SCHEMA "App Schema"`)
	exec(t, admin, `CREATE TABLE "App Schema"."Items" (id int PRIMARY KEY, "Code" text)`)
	exec(t, admin, `INSERT INTO "App Schema"."Items" SELECT g, 'c' || g FROM generate_series(1, 500) g`)

	log, logs := newLogger(t)
	cfg := ddl.DefaultConfig()
	cfg.LockTimeout = 500 * time.Millisecond
	cfg.RetryInitial = 50 * time.Millisecond
	cfg.RetryMax = 200 * time.Millisecond
	cfg.RetryTotal = 10 * time.Second
	ex := ddl.New(newPool(t, dsn, 0, nil), cfg, log)

	var calls atomic.Int64
	within := func(ctx context.Context, tx pgx.Tx) error {
		calls.Add(1)
		_, err := tx.Exec(ctx, `INSERT INTO checkpoints (note, held_lock) VALUES ('index', false)`)
		return err
	}

	t.Run("build and skip when valid", func(t *testing.T) {
		const index = `"App Schema"."Items_Code_idx"`
		st := ddl.Statement{
			SQL:         `CREATE INDEX CONCURRENTLY "Items_Code_idx" ON "App Schema"."Items" ("Code")`,
			Description: "create index Items_Code_idx", LongRunning: true, Index: index,
		}
		calls.Store(0)
		if err := ex.Run(ctx, st, within); err != nil {
			t.Fatal(err)
		}
		exists, valid, oid := indexState(t, admin, index)
		if !exists || !valid {
			t.Fatalf("index exists=%v valid=%v, want a valid index", exists, valid)
		}
		if calls.Load() != 1 {
			t.Errorf("within called %d times, want 1", calls.Load())
		}
		// Again: the index is valid, so nothing is built; within still runs.
		if err := ex.Run(ctx, st, within); err != nil {
			t.Fatal(err)
		}
		_, valid2, oid2 := indexState(t, admin, index)
		if !valid2 || oid2 != oid {
			t.Errorf("second run changed the index (oid %d -> %d, valid %v)", oid, oid2, valid2)
		}
		if calls.Load() != 2 {
			t.Errorf("within called %d times after the skipped run, want 2", calls.Load())
		}
		if logs.FilterMessage("index already built and valid, skipping").Len() != 1 {
			t.Error("the second run did not log that it skipped the build")
		}
	})

	t.Run("invalid leftover is dropped and rebuilt", func(t *testing.T) {
		const index = `"t_v_key"`
		exec(t, admin, `INSERT INTO t VALUES (1001, 'v1'), (1002, 'v2')`)
		// A concurrent unique build on duplicates fails and leaves an
		// INVALID index behind.
		other := connect(t, dsn)
		_, err := other.Exec(ctx, `CREATE UNIQUE INDEX CONCURRENTLY t_v_key ON t (v)`)
		if sqlstate.Code(err) != sqlstate.UniqueViolation {
			t.Fatalf("unique build on duplicates: %v, want 23505", err)
		}
		exists, valid, oldOID := indexState(t, admin, index)
		if !exists || valid {
			t.Fatalf("after the failed build: exists=%v valid=%v, want an invalid index", exists, valid)
		}
		exec(t, admin, `DELETE FROM t WHERE id > 1000`)

		calls.Store(0)
		if err := ex.Run(ctx, ddl.Statement{
			SQL: `CREATE UNIQUE INDEX CONCURRENTLY t_v_key ON t (v)`, Description: "create unique index t_v_key",
			LongRunning: true, Index: index,
		}, within); err != nil {
			t.Fatal(err)
		}
		exists, valid, oid := indexState(t, admin, index)
		if !exists || !valid || oid == oldOID {
			t.Fatalf("after Run: exists=%v valid=%v oid %d (invalid one was %d), want a new valid index", exists, valid, oid, oldOID)
		}
		if calls.Load() != 1 {
			t.Errorf("within called %d times, want 1", calls.Load())
		}
		if logs.FilterMessage("dropping invalid index left by an interrupted build").Len() != 1 {
			t.Error("no log of the invalid index being dropped")
		}
	})

	t.Run("failed unique build leaves no invalid index", func(t *testing.T) {
		const index = `public."t_v_uq2"`
		exec(t, admin, `DROP INDEX t_v_key`)
		exec(t, admin, `INSERT INTO t VALUES (2001, 'dup'), (2002, 'dup')`)
		retries := ex.Retries()
		calls.Store(0)
		begin := time.Now()
		err := ex.Run(ctx, ddl.Statement{
			SQL: `CREATE UNIQUE INDEX CONCURRENTLY t_v_uq2 ON t (v)`, Description: "create unique index t_v_uq2",
			LongRunning: true, Index: index,
		}, within)
		t.Logf("failed build returned after %s: %v", time.Since(begin).Round(time.Millisecond), err)
		if sqlstate.Code(err) != sqlstate.UniqueViolation {
			t.Fatalf("Run = %v, want a 23505 unique violation", err)
		}
		if sqlstate.Retryable(err) || ex.Retries() != retries {
			t.Errorf("a unique violation was retried (retries %d -> %d)", retries, ex.Retries())
		}
		if exists, valid, _ := indexState(t, admin, index); exists {
			t.Errorf("index %s left behind (valid=%v)", index, valid)
		}
		if calls.Load() != 0 {
			t.Errorf("within ran %d times for a failed build", calls.Load())
		}
		if logs.FilterMessage("dropped the invalid index left by the failed build").Len() != 1 {
			t.Error("no log of the failed build's invalid index being dropped")
		}
	})
}

// TestLockTimeoutOnEveryConnection runs concurrent blocked statements through
// a pool of 4 connections: every attempt on every connection gives up after
// lock_timeout, and no session setting leaks back into the pool.
func TestLockTimeoutOnEveryConnection(t *testing.T) {
	ctx := testContext(t)
	dsn := pgtest.NewDB(t)
	admin := connect(t, dsn)
	setupTable(t, admin, 100)

	log, logs := newLogger(t)
	cfg := ddl.DefaultConfig()
	cfg.LockTimeout = 200 * time.Millisecond
	cfg.StatementTimeout = 20 * time.Second
	cfg.RetryInitial = 50 * time.Millisecond
	cfg.RetryMax = 200 * time.Millisecond
	cfg.RetryTotal = time.Second
	pool := newPool(t, dsn, 4, nil)
	ex := ddl.New(pool, cfg, log)

	var defLock, defStmt string
	if err := admin.QueryRow(ctx, "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')").Scan(&defLock, &defStmt); err != nil {
		t.Fatal(err)
	}

	// SHARE UPDATE EXCLUSIVE blocks both ALTER TABLE (ACCESS EXCLUSIVE) and
	// CREATE INDEX CONCURRENTLY (SHARE UPDATE EXCLUSIVE).
	a := holdLock(t, dsn, "LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE", time.Minute)

	runAll := func(t *testing.T, stmts []ddl.Statement) {
		t.Helper()
		type result struct {
			err     error
			elapsed time.Duration
		}
		results := make([]result, len(stmts))
		var wg sync.WaitGroup
		for i, s := range stmts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				begin := time.Now()
				err := ex.Run(ctx, s, nil)
				results[i] = result{err, time.Since(begin)}
			}()
		}
		wg.Wait()
		for i, r := range results {
			t.Logf("%s: gave up after %s", stmts[i].Description, r.elapsed.Round(time.Millisecond))
			if sqlstate.Code(r.err) != sqlstate.LockNotAvailable {
				t.Errorf("%s: %v, want an error wrapping 55P03", stmts[i].Description, r.err)
			}
			if limit := cfg.RetryTotal + time.Second; r.elapsed > limit {
				t.Errorf("%s returned after %s, want <= %s", stmts[i].Description, r.elapsed, limit)
			}
		}
	}

	t.Run("transactional", func(t *testing.T) {
		var stmts []ddl.Statement
		for i := 1; i <= 4; i++ {
			stmts = append(stmts, ddl.Statement{SQL: fmt.Sprintf("ALTER TABLE t ADD COLUMN c%d int", i),
				Description: fmt.Sprintf("add column c%d", i), Transactional: true})
		}
		runAll(t, stmts)
		for i := 1; i <= 4; i++ {
			if columnExists(t, admin, "t", fmt.Sprintf("c%d", i)) {
				t.Errorf("column c%d exists", i)
			}
		}
	})
	t.Run("autocommit", func(t *testing.T) {
		var stmts []ddl.Statement
		for i := 1; i <= 4; i++ {
			name := fmt.Sprintf("t_idx%d", i)
			stmts = append(stmts, ddl.Statement{SQL: fmt.Sprintf("CREATE INDEX CONCURRENTLY %s ON t (v, id)", name),
				Description: "create index " + name, LongRunning: true, Index: name})
		}
		runAll(t, stmts)
		if n := countRows(t, admin, "SELECT count(*) FROM pg_class WHERE relname LIKE 't_idx%'"); n != 0 {
			t.Errorf("%d indexes left behind by the blocked builds", n)
		}
	})
	// Every attempt ended by a lock timeout, none by anything else.
	attempts := logs.FilterMessage("ddl lock not granted, retrying").All()
	t.Logf("%d retries logged, Retries() = %d", len(attempts), ex.Retries())
	if int64(len(attempts)) != ex.Retries() || ex.Retries() < 8 {
		t.Errorf("Retries() = %d, logged %d, want >= 2 per statement", ex.Retries(), len(attempts))
	}
	a.stop()

	// Session settings must not leak into the pooled connections.
	conns := make([]*pgxpool.Conn, 0, 4)
	pids := map[uint32]bool{}
	for range 4 {
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		pids[c.Conn().PgConn().PID()] = true
	}
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	if len(pids) != 4 {
		t.Errorf("got %d distinct connections, want 4", len(pids))
	}
	for _, c := range conns {
		var lock, stmt string
		if err := c.QueryRow(ctx, "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')").Scan(&lock, &stmt); err != nil {
			t.Fatal(err)
		}
		if lock != defLock || stmt != defStmt {
			t.Errorf("pooled connection %d: lock_timeout %q statement_timeout %q, want the defaults %q %q",
				c.Conn().PgConn().PID(), lock, stmt, defLock, defStmt)
		}
	}
}

// TestSubMillisecondLockTimeout: a lock_timeout below one millisecond must
// not become 0 (no timeout at all) on the server.
func TestSubMillisecondLockTimeout(t *testing.T) {
	ctx := testContext(t)
	dsn := pgtest.NewDB(t)
	admin := connect(t, dsn)
	setupTable(t, admin, 10)
	log, _ := newLogger(t)
	cfg := ddl.DefaultConfig()
	cfg.LockTimeout = 500 * time.Microsecond
	cfg.LockTimeoutInitial = 200 * time.Microsecond // the first attempt's wait is below 1 ms too
	cfg.RetryInitial = 50 * time.Millisecond
	cfg.RetryMax = 100 * time.Millisecond
	cfg.RetryTotal = 300 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ex := ddl.New(newPool(t, dsn, 0, nil), cfg, log)
	holdLock(t, dsn, "SELECT * FROM t", 20*time.Second)
	for _, transactional := range []bool{true, false} {
		sql := "ALTER TABLE t ADD COLUMN n int"
		if !transactional {
			sql = "CREATE INDEX CONCURRENTLY t_v_idx ON t (v)"
			holdLock(t, dsn, "LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE", 20*time.Second)
		}
		runCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := ex.Run(runCtx, ddl.Statement{SQL: sql, Description: sql, Transactional: transactional, Index: map[bool]string{false: "t_v_idx"}[transactional]}, nil)
		cancel()
		if sqlstate.Code(err) != sqlstate.LockNotAvailable {
			t.Errorf("transactional=%v: %v, want a lock timeout", transactional, err)
		}
	}
}

// TestDeadlockIsRetried provokes a real deadlock in which the executor's
// transaction is the victim: it is retried and succeeds.
func TestDeadlockIsRetried(t *testing.T) {
	ctx := testContext(t)
	dsn := pgtest.NewDB(t)
	admin := connect(t, dsn)
	exec(t, admin, "CREATE TABLE d1 (id int); CREATE TABLE d2 (id int)")

	log, logs := newLogger(t)
	cfg := ddl.DefaultConfig()
	cfg.LockTimeout = 5 * time.Second        // longer than deadlock_timeout, so the deadlock is found first
	cfg.LockTimeoutInitial = cfg.LockTimeout // from the first attempt
	cfg.RetryInitial = 50 * time.Millisecond
	cfg.RetryMax = 100 * time.Millisecond
	cfg.RetryTotal = 20 * time.Second
	ex := ddl.New(newPool(t, dsn, 0, map[string]string{"deadlock_timeout": "100ms"}), cfg, log)

	// A holds d2 and will wait for d1 with a long deadlock_timeout, so the
	// executor, waiting second, detects the cycle and is the victim.
	a := connect(t, dsn)
	exec(t, a, "SET deadlock_timeout = '20s'")
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck
	if _, err := tx.Exec(ctx, "LOCK TABLE d2 IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}

	runErr := make(chan error, 1)
	var attempts atomic.Int64
	go func() {
		runErr <- ex.Run(ctx, ddl.Statement{
			SQL:         "LOCK TABLE d1 IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(0.5); LOCK TABLE d2 IN ACCESS EXCLUSIVE MODE",
			Description: "lock d1 then d2", Transactional: true,
		}, func(context.Context, pgx.Tx) error { attempts.Add(1); return nil })
	}()
	// Wait until the executor holds d1, then make A wait for it.
	deadline := time.Now().Add(10 * time.Second)
	for countRows(t, admin, `SELECT count(*) FROM pg_locks WHERE relation = 'd1'::regclass AND mode = 'AccessExclusiveLock' AND granted`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the executor never locked d1")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE d1 IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatalf("session A was chosen as the deadlock victim: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if ex.Retries() != 1 || attempts.Load() != 1 {
		t.Errorf("Retries() = %d, within calls %d; want 1 and 1", ex.Retries(), attempts.Load())
	}
	retried := logs.FilterMessage("ddl lock not granted, retrying").All()
	if len(retried) != 1 || retried[0].ContextMap()["sqlstate"] != sqlstate.DeadlockDetected {
		t.Errorf("retry log entries %v, want one with sqlstate 40P01", retried)
	}
}

func TestSyntaxErrorIsNotRetried(t *testing.T) {
	ctx := testContext(t)
	dsn := pgtest.NewDB(t)
	admin := connect(t, dsn)
	setupTable(t, admin, 1)
	log, _ := newLogger(t)
	cfg := ddl.DefaultConfig()
	cfg.RetryInitial = time.Second
	cfg.RetryMax = time.Second
	ex := ddl.New(newPool(t, dsn, 0, nil), cfg, log)
	for _, transactional := range []bool{true, false} {
		before := ex.Retries()
		begin := time.Now()
		err := ex.Run(ctx, ddl.Statement{SQL: "ALTER TABLE t ADDD COLUMN n int", Description: "typo", Transactional: transactional}, nil)
		if sqlstate.Code(err) != sqlstate.SyntaxError {
			t.Errorf("transactional=%v: %v, want 42601", transactional, err)
		}
		if sqlstate.Retryable(err) || ex.Retries() != before {
			t.Errorf("transactional=%v: a syntax error was retried", transactional)
		}
		if d := time.Since(begin); d > 500*time.Millisecond {
			t.Errorf("transactional=%v: returned after %s, want at once", transactional, d)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	valid := ddl.DefaultConfig()
	for _, tc := range []struct {
		name   string
		modify func(*ddl.Config)
		errs   []string // substrings of the error; none means valid
	}{
		{"defaults", func(*ddl.Config) {}, nil},
		{"zero statement timeouts mean no limit", func(c *ddl.Config) { c.StatementTimeout, c.LongStatementTimeout = 0, 0 }, nil},
		{"retry max equals initial", func(c *ddl.Config) { c.RetryMax = c.RetryInitial }, nil},
		{"initial lock timeout equals lock timeout", func(c *ddl.Config) { c.LockTimeoutInitial = c.LockTimeout }, nil},
		{"zero lock timeout", func(c *ddl.Config) { c.LockTimeout = 0 }, []string{"ddl.lock_timeout must be > 0"}},
		{"zero initial lock timeout", func(c *ddl.Config) { c.LockTimeoutInitial = 0 }, []string{"ddl.lock_timeout_initial (0s) must be > 0"}},
		{"negative initial lock timeout", func(c *ddl.Config) { c.LockTimeoutInitial = -time.Millisecond }, []string{"ddl.lock_timeout_initial"}},
		// No escalation then: every attempt waits ddl.lock_timeout
		// (TestAttemptLockTimeout).
		{"initial lock timeout above lock timeout", func(c *ddl.Config) { c.LockTimeout, c.LockTimeoutInitial = 20*time.Millisecond, 50*time.Millisecond }, nil},
		{"negative lock timeout", func(c *ddl.Config) { c.LockTimeout = -time.Second }, []string{"ddl.lock_timeout"}},
		{"negative statement timeout", func(c *ddl.Config) { c.StatementTimeout = -1 }, []string{"statement timeouts"}},
		{"negative long statement timeout", func(c *ddl.Config) { c.LongStatementTimeout = -1 }, []string{"statement timeouts"}},
		{"zero retry initial", func(c *ddl.Config) { c.RetryInitial = 0 }, []string{"ddl.retry_initial"}},
		{"retry max below initial", func(c *ddl.Config) { c.RetryMax = c.RetryInitial / 2 }, []string{"ddl.retry_initial"}},
		{"zero retry total", func(c *ddl.Config) { c.RetryTotal = 0 }, []string{"ddl.retry_total"}},
		{"zero swap lock bound", func(c *ddl.Config) { c.SwapMaxLock = 0 }, []string{"ddl.swap_max_lock"}},
		{"everything wrong", func(c *ddl.Config) { *c = ddl.Config{StatementTimeout: -1} },
			[]string{"ddl.lock_timeout must", "ddl.lock_timeout_initial", "statement timeouts", "ddl.retry_initial", "ddl.retry_total", "ddl.swap_max_lock"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid
			tc.modify(&c)
			err := c.Validate()
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, s := range tc.errs {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Validate() = %q, want it to mention %q", err, s)
				}
			}
		})
	}
}

// TestCancelDuringBackoff: cancelling the context while the executor sleeps
// between attempts returns at once with the context's error.
func TestCancelDuringBackoff(t *testing.T) {
	dsn := pgtest.NewDB(t)
	admin := connect(t, dsn)
	setupTable(t, admin, 10)
	log, _ := newLogger(t)
	cfg := ddl.DefaultConfig()
	cfg.LockTimeout = 100 * time.Millisecond
	cfg.RetryInitial = 20 * time.Second // the first backoff is 10–20 s
	cfg.RetryMax = 20 * time.Second
	cfg.RetryTotal = time.Minute
	ex := ddl.New(newPool(t, dsn, 0, nil), cfg, log)
	holdLock(t, dsn, "SELECT * FROM t", 30*time.Second)

	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	runErr := make(chan error, 1)
	go func() {
		runErr <- ex.Run(ctx, ddl.Statement{SQL: "ALTER TABLE t ADD COLUMN n int", Description: "add n", Transactional: true}, nil)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for ex.Retries() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first attempt never timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // well inside the backoff
	cancel()
	begin := time.Now()
	select {
	case err := <-runErr:
		t.Logf("returned %s after cancel: %v", time.Since(begin), err)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
		if d := time.Since(begin); d > 200*time.Millisecond {
			t.Errorf("returned %s after cancel, want promptly", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	if columnExists(t, admin, "t", "n") {
		t.Error("column t.n exists")
	}
}

// TestAutocommitSingleConnectionPool: an autocommit statement with a
// checkpoint must work on a pool of one connection (the checkpoint must not
// wait for a second connection while the first is held).
func TestAutocommitSingleConnectionPool(t *testing.T) {
	dsn := pgtest.NewDB(t)
	admin := connect(t, dsn)
	setupTable(t, admin, 100)
	log, _ := newLogger(t)
	cfg := ddl.DefaultConfig()
	pool := newPool(t, dsn, 1, nil)
	ex := ddl.New(pool, cfg, log)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var (
		calls    atomic.Int64
		lockSeen = map[string]bool{}
	)
	within := func(ctx context.Context, tx pgx.Tx) error {
		calls.Add(1)
		var lock string
		if err := tx.QueryRow(ctx, "SHOW lock_timeout").Scan(&lock); err != nil {
			return err
		}
		lockSeen[lock] = true
		_, err := tx.Exec(ctx, `INSERT INTO checkpoints (note, held_lock) VALUES ('index', false)`)
		return err
	}
	st := ddl.Statement{SQL: "CREATE INDEX CONCURRENTLY t_v_idx ON t (v)", Description: "create index", LongRunning: true, Index: "t_v_idx"}
	if err := ex.Run(ctx, st, within); err != nil {
		t.Fatalf("Run on a one-connection pool: %v", err)
	}
	if err := ex.Run(ctx, st, within); err != nil {
		t.Fatalf("second Run on a one-connection pool: %v", err)
	}
	if calls.Load() != 2 || countRows(t, admin, "SELECT count(*) FROM checkpoints") != 2 {
		t.Errorf("within ran %d times, want 2", calls.Load())
	}
	// The checkpoint runs under lock_timeout too, like every statement of refit.
	if len(lockSeen) != 1 || !lockSeen["1s"] {
		t.Errorf("within saw lock_timeout %v, want 1s", lockSeen)
	}
	// And nothing leaks into the pool.
	var lock string
	if err := pool.QueryRow(ctx, "SHOW lock_timeout").Scan(&lock); err != nil {
		t.Fatal(err)
	}
	if lock != "0" {
		t.Errorf("lock_timeout leaked into the pool: %s", lock)
	}
}

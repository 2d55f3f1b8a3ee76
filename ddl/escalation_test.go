package ddl_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest/observer"

	"github.com/refit-dev/refit/ddl"
	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/sqlstate"
)

func TestAttemptLockTimeout(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		name         string
		initial, max time.Duration
		want         []time.Duration // after 0, 1, 2, … lock timeouts
	}{
		{"defaults double up to lock_timeout and stay there", 50 * ms, time.Second,
			[]time.Duration{50 * ms, 100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second, time.Second}},
		{"initial equal to lock_timeout is fixed", time.Second, time.Second,
			[]time.Duration{time.Second, time.Second, time.Second}},
		{"cap between two doublings", 50 * ms, 130 * ms,
			[]time.Duration{50 * ms, 100 * ms, 130 * ms, 130 * ms}},
		{"not a power of two", 300 * ms, time.Second,
			[]time.Duration{300 * ms, 600 * ms, time.Second, time.Second}},
		{"sub-millisecond", 200 * time.Microsecond, 500 * time.Microsecond,
			[]time.Duration{200 * time.Microsecond, 400 * time.Microsecond, 500 * time.Microsecond}},
		{"zero initial means no escalation", 0, time.Second,
			[]time.Duration{time.Second, time.Second}},
		{"initial above lock_timeout is capped", 2 * time.Second, time.Second,
			[]time.Duration{time.Second, time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ddl.DefaultConfig()
			c.LockTimeoutInitial, c.LockTimeout = tc.initial, tc.max
			for n, want := range tc.want {
				if got := c.AttemptLockTimeout(n); got != want {
					t.Errorf("AttemptLockTimeout(%d) = %s, want %s", n, got, want)
				}
			}
		})
	}

	// However many lock timeouts, the wait never exceeds lock_timeout, never
	// shrinks, and does not overflow.
	c := ddl.DefaultConfig()
	c.LockTimeoutInitial, c.LockTimeout = time.Nanosecond, 24*time.Hour
	prev := time.Duration(0)
	for _, n := range []int{0, 1, 10, 40, 62, 63, 64, 100, 1 << 20} {
		got := c.AttemptLockTimeout(n)
		if got < prev || got > c.LockTimeout || got <= 0 {
			t.Errorf("AttemptLockTimeout(%d) = %s after %s, want within (0, %s] and non-decreasing", n, got, prev, c.LockTimeout)
		}
		prev = got
	}
	if prev != c.LockTimeout {
		t.Errorf("after many lock timeouts the wait is %s, want lock_timeout %s", prev, c.LockTimeout)
	}
}

// retriedLockTimeouts returns the lock_timeout logged by each retry, in order.
func retriedLockTimeouts(t *testing.T, logs *observer.ObservedLogs) []time.Duration {
	t.Helper()
	var out []time.Duration
	for _, e := range logs.FilterMessage("ddl lock not granted, retrying").All() {
		d, ok := e.ContextMap()["lock_timeout"].(time.Duration)
		if !ok {
			t.Fatalf("retry log without a lock_timeout: %v", e.ContextMap())
		}
		if code := e.ContextMap()["sqlstate"]; code != sqlstate.LockNotAvailable {
			t.Errorf("retry logged sqlstate %v, want 55P03", code)
		}
		out = append(out, d)
	}
	return out
}

// sessionLockTimeout is a `within` callback that records the lock_timeout
// in force where it runs (the statement's attempt that succeeded).
func sessionLockTimeout(got *time.Duration) func(context.Context, pgx.Tx) error {
	return func(ctx context.Context, tx pgx.Tx) error {
		var msec int64
		if err := tx.QueryRow(ctx, "SELECT setting::bigint FROM pg_settings WHERE name = 'lock_timeout'").Scan(&msec); err != nil {
			return err
		}
		*got = time.Duration(msec) * time.Millisecond
		return nil
	}
}

// TestEscalatingLockTimeout: against a reader that holds its ACCESS SHARE
// lock for ~1.5 s, ALTER TABLE's first attempt waits only
// lock_timeout_initial, each retry doubles the wait up to lock_timeout, and
// the statement succeeds once the reader is gone. The attempts' waits are
// read from the retry logs and, for the attempt that succeeded, from the
// server's lock_timeout setting in its transaction.
func TestEscalatingLockTimeout(t *testing.T) {
	ctx := testContext(t)
	dsn := pgtest.NewDB(t)
	admin := connect(t, dsn)
	setupTable(t, admin, 100)

	log, logs := newLogger(t)
	cfg := ddl.DefaultConfig()
	cfg.LockTimeoutInitial = 50 * time.Millisecond
	cfg.LockTimeout = time.Second
	cfg.RetryInitial = 100 * time.Millisecond
	cfg.RetryMax = 400 * time.Millisecond
	cfg.RetryTotal = 30 * time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ex := ddl.New(newPool(t, dsn, 0, nil), cfg, log)

	a := holdLock(t, dsn, "SELECT * FROM t", 1500*time.Millisecond)
	var succeededWith time.Duration
	if err := ex.Run(ctx, ddl.Statement{SQL: "ALTER TABLE t ADD COLUMN n int", Description: "add column t.n", Transactional: true},
		sessionLockTimeout(&succeededWith)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	a.stop()
	if !columnExists(t, admin, "t", "n") {
		t.Fatal("column t.n does not exist after a successful Run")
	}

	retried := retriedLockTimeouts(t, logs)
	t.Logf("failed attempts waited %v; the attempt that succeeded had lock_timeout %s", retried, succeededWith)
	if len(retried) == 0 {
		t.Fatal("no retry: session A held its lock when Run started, so the first attempt must have timed out")
	}
	if int64(len(retried)) != ex.Retries() {
		t.Errorf("%d retries logged, Retries() = %d", len(retried), ex.Retries())
	}
	if retried[0] != cfg.LockTimeoutInitial {
		t.Errorf("the first attempt waited up to %s, want lock_timeout_initial %s", retried[0], cfg.LockTimeoutInitial)
	}
	for i, d := range retried {
		if want := cfg.AttemptLockTimeout(i); d != want {
			t.Errorf("attempt %d waited up to %s, want %s", i+1, d, want)
		}
	}
	if want := cfg.AttemptLockTimeout(len(retried)); succeededWith != want {
		t.Errorf("the attempt that succeeded ran with lock_timeout %s on the server, want %s", succeededWith, want)
	}
	done := logs.FilterMessage("ddl succeeded after retries").All()
	if len(done) != 1 || done[0].ContextMap()["lock_timeout"] != succeededWith {
		t.Errorf("success log %v, want one with lock_timeout %s", done, succeededWith)
	}
	named := false
	for _, e := range logs.FilterMessage("ddl lock not granted, retrying").All() {
		bl, _ := e.ContextMap()["blockers"].([]ddl.Blocker)
		for _, b := range bl {
			named = named || b.PID == int(a.pid)
		}
	}
	if !named {
		t.Errorf("no retry log named session A (pid %d) as the blocker", a.pid)
	}

	// The next statement starts over at the short wait.
	var next time.Duration
	if err := ex.Run(ctx, ddl.Statement{SQL: "ALTER TABLE t ADD COLUMN m int", Description: "add column t.m", Transactional: true},
		sessionLockTimeout(&next)); err != nil {
		t.Fatal(err)
	}
	if next != cfg.LockTimeoutInitial {
		t.Errorf("the next statement ran with lock_timeout %s, want lock_timeout_initial %s", next, cfg.LockTimeoutInitial)
	}
}

// TestAutocommitLockTimeouts: a statement outside a transaction escalates
// like any other; a concurrent index build waits up to lock_timeout from its
// first attempt.
func TestAutocommitLockTimeouts(t *testing.T) {
	ctx := testContext(t)
	dsn := pgtest.NewDB(t)
	admin := connect(t, dsn)
	setupTable(t, admin, 100)
	exec(t, admin, "CREATE INDEX t_old_idx ON t (v)")

	cfg := ddl.DefaultConfig()
	cfg.LockTimeoutInitial = 50 * time.Millisecond
	cfg.LockTimeout = 300 * time.Millisecond
	cfg.RetryInitial = 50 * time.Millisecond
	cfg.RetryMax = 200 * time.Millisecond
	cfg.RetryTotal = 30 * time.Second
	pool := newPool(t, dsn, 0, nil)

	for _, tc := range []struct {
		name string
		st   ddl.Statement
		want func(n int) time.Duration // the wait after n lock timeouts
	}{
		{"drop index concurrently escalates",
			ddl.Statement{SQL: "DROP INDEX CONCURRENTLY t_old_idx", Description: "drop index t_old_idx"},
			cfg.AttemptLockTimeout},
		{"index build waits lock_timeout",
			ddl.Statement{SQL: "CREATE INDEX CONCURRENTLY t_new_idx ON t (v)", Description: "create index t_new_idx", LongRunning: true, Index: "t_new_idx"},
			func(int) time.Duration { return cfg.LockTimeout }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, logs := newLogger(t)
			ex := ddl.New(pool, cfg, log)
			// Conflicts with both statements' SHARE UPDATE EXCLUSIVE lock.
			a := holdLock(t, dsn, "LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE", 700*time.Millisecond)
			var succeededWith time.Duration
			if err := ex.Run(ctx, tc.st, sessionLockTimeout(&succeededWith)); err != nil {
				t.Fatalf("Run: %v", err)
			}
			a.stop()
			retried := retriedLockTimeouts(t, logs)
			t.Logf("failed attempts waited %v; the attempt that succeeded had lock_timeout %s", retried, succeededWith)
			if len(retried) == 0 {
				t.Fatal("no retry: session A held its lock when Run started")
			}
			for i, d := range retried {
				if want := tc.want(i); d != want {
					t.Errorf("attempt %d waited up to %s, want %s", i+1, d, want)
				}
			}
			if want := tc.want(len(retried)); succeededWith != want {
				t.Errorf("the attempt that succeeded (and its checkpoint) ran with lock_timeout %s, want %s", succeededWith, want)
			}
		})
	}
	if exists, _, _ := indexState(t, admin, "t_old_idx"); exists {
		t.Error("t_old_idx still exists")
	}
	if exists, valid, _ := indexState(t, admin, "t_new_idx"); !exists || !valid {
		t.Errorf("t_new_idx exists=%v valid=%v, want a valid index", exists, valid)
	}
	// Session settings do not leak into the pool.
	var lock string
	if err := pool.QueryRow(ctx, "SHOW lock_timeout").Scan(&lock); err != nil {
		t.Fatal(err)
	}
	if lock != "0" {
		t.Errorf("lock_timeout leaked into the pool: %s", lock)
	}
}

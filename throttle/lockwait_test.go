package throttle_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/throttle"
)

// roleDSN creates a login role (dropped at the end of the test; roles are
// cluster-wide, so the name carries the database's OID), runs the grants
// ({role} is the role) and returns the role's DSN of the test database.
func roleDSN(t *testing.T, admin *pgxpool.Pool, base string, grants ...string) string {
	t.Helper()
	ctx := context.Background()
	var oid uint32
	if err := admin.QueryRow(ctx, "SELECT oid FROM pg_database WHERE datname = current_database()").Scan(&oid); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%s_%d", base, oid)
	q := pgx.Identifier{name}.Sanitize()
	mustExec(t, admin, "CREATE ROLE "+q+" LOGIN")
	t.Cleanup(func() {
		if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1", name); err != nil {
			t.Error(err)
		}
		if _, err := admin.Exec(ctx, "DROP OWNED BY "+q+"; DROP ROLE "+q); err != nil {
			t.Errorf("drop role %s: %v", name, err)
		}
	})
	for _, g := range grants {
		mustExec(t, admin, fmt.Sprintf(g, q))
	}
	cfg := admin.Config().ConnConfig.Copy()
	cfg.User = name
	return fmt.Sprintf("host=%s port=%d dbname=%s user=%s sslmode=disable", cfg.Host, cfg.Port, cfg.Database, name)
}

// connect opens a session named app (its application_name).
func connect(t *testing.T, dsn, app string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = app
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// lockWait is a session waiting on a row lock that another holds, without
// a lock_timeout, until release.
type lockWait struct {
	holder *pgx.Conn
	pid    uint32 // the waiter's
	done   chan error
}

// startLockWait makes the waiter update row 1 of table lk while the holder
// keeps it locked in an open transaction. The holder's transaction is
// rolled back at the end of the test at the latest.
func startLockWait(t *testing.T, holder, waiter *pgx.Conn) *lockWait {
	t.Helper()
	ctx := context.Background()
	lw := &lockWait{holder: holder, done: make(chan error, 1)}
	for _, sql := range []string{"BEGIN", "SELECT FROM lk WHERE id = 1 FOR UPDATE"} {
		if _, err := holder.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := waiter.Exec(ctx, "SET lock_timeout = 0"); err != nil {
		t.Fatal(err)
	}
	if err := waiter.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&lw.pid); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := waiter.Exec(ctx, "UPDATE lk SET v = v + 1 WHERE id = 1")
		lw.done <- err
	}()
	t.Cleanup(func() { lw.release(t) })
	return lw
}

// release ends the holder's transaction and waits for the waiter's update.
func (lw *lockWait) release(t *testing.T) {
	t.Helper()
	if lw.done == nil {
		return
	}
	if _, err := lw.holder.Exec(context.Background(), "ROLLBACK"); err != nil {
		t.Error(err)
	}
	if err := <-lw.done; err != nil {
		t.Errorf("waiter: %v", err)
	}
	lw.done = nil
}

// waitedFor polls until the session pid has been waiting on a lock for
// longer than d (a generous deadline, no timed assertion).
func waitedFor(t *testing.T, admin *pgxpool.Pool, pid uint32, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ok bool
		err := admin.QueryRow(context.Background(), `SELECT coalesce(bool_or(clock_timestamp() - waitstart > make_interval(secs => $2)), false)
			FROM pg_locks WHERE pid = $1 AND NOT granted`, pid, d.Seconds()).Scan(&ok)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %d is not waiting on a lock", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockFixture is a database with table lk, refit's role (the throttler's)
// and an application role.
type lockFixture struct {
	admin         *pgxpool.Pool
	refit, app    string // DSNs
	refitStatsDSN string // refit's role with pg_read_all_stats
}

func newLockFixture(t *testing.T) *lockFixture {
	t.Helper()
	admin := newPool(t)
	mustExec(t, admin, "CREATE TABLE lk (id int PRIMARY KEY, v int NOT NULL); INSERT INTO lk VALUES (1, 0)")
	return &lockFixture{
		admin:         admin,
		refit:         roleDSN(t, admin, "refit_plain", "GRANT SELECT, UPDATE ON lk TO %s"),
		refitStatsDSN: roleDSN(t, admin, "refit_stats", "GRANT SELECT, UPDATE ON lk TO %s", "GRANT pg_read_all_stats TO %s"),
		app:           roleDSN(t, admin, "app", "GRANT SELECT, UPDATE ON lk TO %s"),
	}
}

// TestAppLockWait: the signal fires exactly when a session that is not
// refit's has waited longer than the limit on a lock that one of the
// job's sessions holds, for refit's role with pg_read_all_stats and
// without it (the application's sessions are another role's).
func TestAppLockWait(t *testing.T) {
	cases := []struct {
		name   string
		holder string // application_name of the session holding the lock; "" = no wait
		waiter string // application_name of the waiting session
		job    int64  // Throttler.SetJob; 0 = not called
		limit  time.Duration
		held   bool
	}{
		{name: "no waiter", limit: 20 * time.Millisecond},
		{name: "waits on refit longer than the limit", holder: "refit-j1-b0", waiter: "shop", job: 1, limit: 20 * time.Millisecond, held: true},
		{name: "waits on a non-refit session", holder: "batch-job", waiter: "shop", job: 1, limit: 20 * time.Millisecond},
		{name: "waits shorter than the limit", holder: "refit-j1-b0", waiter: "shop", job: 1, limit: time.Hour},
		{name: "waits on another job's session", holder: "refit-j2-b0", waiter: "shop", job: 1, limit: 20 * time.Millisecond},
		{name: "job unknown: any refit session counts", holder: "refit-j2-b0", waiter: "shop", limit: 20 * time.Millisecond, held: true},
		{name: "the waiter is refit's", holder: "refit-j1-b0", waiter: "refit-j1-apply", job: 1, limit: 20 * time.Millisecond},
	}
	f := newLockFixture(t)
	for _, as := range []struct{ name, dsn string }{{"pg_read_all_stats", f.refitStatsDSN}, {"no stats privilege", f.refit}} {
		t.Run(as.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					pool, err := pgxpool.New(ctx, as.dsn)
					if err != nil {
						t.Fatal(err)
					}
					defer pool.Close()
					if tc.holder != "" {
						// refit's sessions run as refit's role, the others as the application's.
						roleOf := func(app string) string {
							if strings.HasPrefix(app, "refit") {
								return as.dsn
							}
							return f.app
						}
						lw := startLockWait(t, connect(t, roleOf(tc.holder), tc.holder), connect(t, roleOf(tc.waiter), tc.waiter))
						defer lw.release(t)
						// Ten times the 20 ms limits, well under the hour.
						waitedFor(t, f.admin, lw.pid, 200*time.Millisecond)
					}
					cfg := throttle.DefaultConfig()
					cfg.MaxAppLockWait = tc.limit
					th := throttle.New(pool, cfg)
					if tc.job != 0 {
						th.SetJob(tc.job)
					}
					reason, err := th.Check(ctx)
					if err != nil {
						t.Fatal(err)
					}
					want := ""
					if tc.held {
						want = throttle.ReasonAppLockWait
					}
					if reason != want {
						t.Fatalf("Check: %q, want %q", reason, want)
					}
				})
			}
		})
	}
}

// TestAppLockWaitWatcher: a wait that began and ended between two checks
// (as the waits on a batch's row locks do: they end when it commits) is
// held for by the next check, once.
func TestAppLockWaitWatcher(t *testing.T) {
	f := newLockFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, f.refit)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	cfg := throttle.DefaultConfig()
	cfg.MaxAppLockWait = 20 * time.Millisecond
	th := throttle.New(pool, cfg)
	th.SetJob(1)
	if reason, err := th.Check(ctx); err != nil || reason != "" {
		t.Fatalf("Check before any wait: %q %v", reason, err)
	}
	lw := startLockWait(t, connect(t, f.refit, "refit-j1-b0"), connect(t, f.app, "shop"))
	deadline := time.Now().Add(30 * time.Second)
	for !th.Seen() {
		if time.Now().After(deadline) {
			t.Fatal("the watcher never saw the wait")
		}
		time.Sleep(10 * time.Millisecond)
	}
	lw.release(t)
	if reason, err := th.Check(ctx); err != nil || reason != throttle.ReasonAppLockWait {
		t.Fatalf("Check after the wait: %q %v, want %q", reason, err, throttle.ReasonAppLockWait)
	}
	if reason, err := th.Check(ctx); err != nil || reason != "" {
		t.Fatalf("second Check after the wait: %q %v, want nothing (held once)", reason, err)
	}
}

// TestAppLockWaitWait: Wait holds while the wait goes on, tells the
// context's NotifyHeld function why, and returns once the lock is
// released.
func TestAppLockWaitWait(t *testing.T) {
	f := newLockFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, f.refitStatsDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	cfg := throttle.DefaultConfig()
	cfg.MaxAppLockWait, cfg.CheckInterval = 20*time.Millisecond, 10*time.Millisecond
	th := throttle.New(pool, cfg)
	th.SetJob(7)
	lw := startLockWait(t, connect(t, f.refitStatsDSN, "refit-j7-b3"), connect(t, f.app, "shop"))
	waitedFor(t, f.admin, lw.pid, 200*time.Millisecond)
	var reports, notified []string
	wctx := throttle.NotifyHeld(ctx, func(reason string) { notified = append(notified, reason) })
	checks := 0
	err = th.Wait(wctx, func(reason string) { reports = append(reports, reason) }, func() error {
		// Release after a few checks held: the wait goes on until then.
		if checks++; checks == 5 {
			lw.release(t)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checks < 6 || len(reports) != 2 || reports[0] != throttle.ReasonAppLockWait || reports[1] != "" {
		t.Fatalf("%d checks, reports %q: want held until the release, then go", checks, reports)
	}
	if len(notified) != 1 || notified[0] != throttle.ReasonAppLockWait {
		t.Fatalf("NotifyHeld got %q, want [%s]", notified, throttle.ReasonAppLockWait)
	}
}

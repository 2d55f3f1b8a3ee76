package backfill_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/throttle"
)

// namedConn opens a session of the pool's database named app.
func namedConn(t testing.TB, pool *pgxpool.Pool, app string) *pgx.Conn {
	t.Helper()
	cfg := pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = app
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestAppLockWaitShrinksBatch: when the throttle holds a batch because an
// application session waited on a lock of one of the job's sessions for
// longer than throttle.max_app_lock_wait, the next batch is half as big and
// the size then grows back.
func TestAppLockWaitShrinksBatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, store, jobID := setup(t, `CREATE TABLE t (id int PRIMARY KEY, v text, n text);
		INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 8000) i;
		CREATE TABLE lk (id int PRIMARY KEY, v int NOT NULL); INSERT INTO lk VALUES (1, 0)`)
	cfg := backfill.DefaultConfig()
	// Every batch is far faster than the target, so the size only tries to
	// grow and stays at the maximum until the signal fires.
	cfg.BatchSize, cfg.MinBatchSize, cfg.MaxBatchSize, cfg.TargetBatchTime = 1000, 10, 1000, time.Minute
	b := backfill.New(pool, store, jobID, cfg, zaptest.NewLogger(t))
	tcfg := throttle.DefaultConfig()
	tcfg.MaxAppLockWait, tcfg.CheckInterval = 20*time.Millisecond, 10*time.Millisecond
	th := throttle.New(pool, tcfg)
	th.SetJob(jobID)

	holder := namedConn(t, pool, replication.AppName(jobID, "b9"))
	waiter := namedConn(t, pool, "shop")
	waited := make(chan error, 1)
	released := true // until the lock is taken
	release := func() {
		if released {
			return
		}
		released = true
		if _, err := holder.Exec(context.Background(), "ROLLBACK"); err != nil {
			t.Error(err)
			return
		}
		if err := <-waited; err != nil {
			t.Errorf("waiter: %v", err)
		}
	}
	defer release()
	calls := 0
	var reasons []string
	b.Throttle = func(ctx context.Context) error {
		if calls++; calls == 3 {
			// Before the third batch the application waits on a row lock
			// of one of the job's sessions, for longer than the limit.
			for _, sql := range []string{"BEGIN", "SELECT FROM lk WHERE id = 1 FOR UPDATE"} {
				if _, err := holder.Exec(ctx, sql); err != nil {
					return err
				}
			}
			released = false
			var pid uint32
			if err := waiter.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return err
			}
			go func() {
				_, err := waiter.Exec(context.Background(), "UPDATE lk SET v = v + 1 WHERE id = 1")
				waited <- err
			}()
			if err := waitedFor(ctx, pool, pid, 200*time.Millisecond); err != nil {
				return err
			}
		}
		return th.Wait(ctx, func(reason string) {
			reasons = append(reasons, reason)
			if reason == throttle.ReasonAppLockWait {
				release()
			}
		}, nil)
	}
	var sizes []int
	b.OnBatch = func(p backfill.Progress) { sizes = append(sizes, p.BatchSize) }
	tbl := backfill.Table{Name: migration.TableName{Name: "t"}, Key: []migration.KeyColumn{{Name: "id", Type: "integer"}},
		Sets: []migration.ColumnSet{{Column: "n", Expr: "upper(v)"}}}
	if err := b.Run(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	if len(reasons) == 0 || reasons[0] != throttle.ReasonAppLockWait {
		t.Fatalf("throttle reasons %q, want %s first", reasons, throttle.ReasonAppLockWait)
	}
	want := []int{1000, 1000, 500, 625, 781}
	if len(sizes) < len(want) || fmt.Sprint(sizes[:len(want)]) != fmt.Sprint(want) {
		t.Fatalf("batch sizes %v, want %v…: halved after the wait, then growing back", sizes, want)
	}
}

// waitedFor polls (with a generous deadline) until the session pid has
// waited on a lock for longer than d.
func waitedFor(ctx context.Context, pool *pgxpool.Pool, pid uint32, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var ok bool
		err := pool.QueryRow(ctx, `SELECT coalesce(bool_or(clock_timestamp() - waitstart > make_interval(secs => $2)), false)
			FROM pg_locks WHERE pid = $1 AND NOT granted`, pid, d.Seconds()).Scan(&ok)
		if err != nil {
			return fmt.Errorf("session %d waiting on a lock: %w", pid, err)
		}
		if ok {
			return nil
		}
		tm := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			tm.Stop()
			return fmt.Errorf("session %d waiting on a lock: %w", pid, ctx.Err())
		case <-tm.C:
		}
	}
}

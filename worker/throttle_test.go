package worker_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/throttle"
	"github.com/refit-dev/refit/worker"
)

// TestThrottleSignals forces each throttle signal on during a backfill: the
// batches stop (rows done stays put), the status names the signal, and the
// backfill goes on once the signal clears.
func TestThrottleSignals(t *testing.T) {
	cases := []struct {
		name   string
		reason string
		config func(*throttle.Config)
		hold   func(t *testing.T, dsn string) (release func())
	}{
		{"custom query", throttle.ReasonQuery,
			func(c *throttle.Config) { c.Query = "SELECT hold FROM throttle_flag" },
			func(t *testing.T, dsn string) func() {
				return func() { execDSN(t, dsn, "UPDATE throttle_flag SET hold = false") }
			}},
		{"active sessions", throttle.ReasonActiveSessions,
			func(c *throttle.Config) { c.MaxActiveSessions = 1 },
			func(t *testing.T, dsn string) func() {
				ctx, cancel := context.WithCancel(context.Background())
				var wg sync.WaitGroup
				for i := 0; i < 3; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						conn, err := pgx.Connect(ctx, dsn)
						if err != nil {
							return
						}
						defer conn.Close(context.Background())
						_, _ = conn.Exec(ctx, "SELECT pg_sleep(600)")
					}()
				}
				return func() { cancel(); wg.Wait() }
			}},
		{"replica lag", throttle.ReasonReplicaLag,
			func(c *throttle.Config) { c.MaxReplicaLag = 300 * time.Millisecond },
			func(t *testing.T, dsn string) func() {
				// A real streaming standby whose replay is paused: its
				// replay_lag in pg_stat_replication grows while the
				// backfill writes WAL, and falls once replay resumes.
				standby := startStandby(t, dsn)
				execDSN(t, standby, "SELECT pg_wal_replay_pause()")
				waitReplayLag(t, dsn, 300*time.Millisecond)
				return func() { execDSN(t, standby, "SELECT pg_wal_replay_resume()") }
			}},
		{"rows per second", throttle.ReasonRate,
			func(c *throttle.Config) { c.MaxRowsPerSecond = 1 },
			nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			pool := newPool(t)
			dsn := pool.Config().ConnString()
			mustExec(t, pool, `CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);
				INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 20000) i; ANALYZE items;
				CREATE TABLE throttle_flag (hold boolean NOT NULL); INSERT INTO throttle_flag VALUES (true)`)
			m, err := migration.Parse("t.yaml", []byte("name: throttled\noperations:\n  - add_column:\n      table: items\n      column: {name: u, type: text}\n      up: upper(name)\n"))
			if err != nil {
				t.Fatal(err)
			}
			sub, err := worker.Submit(ctx, pool, m, migration.ContractNow, "test")
			if err != nil {
				t.Fatal(err)
			}
			var release func()
			if tc.hold != nil {
				release = tc.hold(t, dsn)
				defer release()
			}
			r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
			r.Backfill.BatchSize, r.Backfill.TargetBatchTime = 1000, 0
			tc.config(&r.Throttle)
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { _, err := r.Run(rctx, sub.Job.ID); done <- err }()
			defer func() { cancel(); <-done }()

			waitHeld(t, r, sub.Job.ID, tc.reason, 20000)
			if release == nil {
				return // the rate ceiling holds for good at 1 row/s
			}
			release()
			select {
			case err := <-done:
				done <- err
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(time.Minute):
				t.Fatal("backfill did not resume once the signal cleared")
			}
			if job, err := r.Store.Get(ctx, sub.Job.ID); err != nil || job.Phase != state.PhaseCompleted || job.ThrottledBy != "" {
				t.Fatalf("after release: %s throttled_by %q %v", job.Phase, job.ThrottledBy, err)
			}
			if held := r.Held()[tc.reason]; held < time.Second {
				t.Fatalf("held %s by %s, want at least the second it was held: %v", held, tc.reason, r.Held())
			}
		})
	}
}

// startStandby starts a physical standby of the shared cluster, waits until
// it streams, and stops it when the test ends.
func startStandby(t *testing.T, primaryDSN string) (dsn string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	primary := pgtest.Shared(t)
	standby, err := primary.StartStandby(ctx, "standby_lag")
	if errors.Is(err, pgtest.ErrExternal) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := standby.Stop(); err != nil {
			t.Error(err)
		}
	})
	conn, err := pgx.Connect(ctx, primaryDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name LIKE 'standby%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the standby never streamed")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return standby.DSN("postgres")
}

// waitReplayLag writes a little WAL on the primary until a standby's
// replay_lag exceeds min.
func waitReplayLag(t *testing.T, dsn string, min time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for {
		var lag float64
		err := conn.QueryRow(ctx, `SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8
			FROM pg_stat_replication WHERE application_name LIKE 'standby%'`).Scan(&lag)
		if err != nil {
			t.Fatal(err)
		}
		if time.Duration(lag*float64(time.Second)) > min {
			t.Logf("standby replay lag %.3fs", lag)
			return
		}
		if _, err := conn.Exec(ctx, "UPDATE throttle_flag SET hold = hold"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatal("the paused standby's replay lag never grew")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitHeld waits until the job's status names reason, then checks that no
// batch runs for a second and that the backfill of total rows is not done.
func waitHeld(t *testing.T, r *worker.Runner, jobID int64, reason string, total int64) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		job, err := r.Store.Get(ctx, jobID)
		if err != nil {
			t.Fatal(err)
		}
		if job.ThrottledBy == reason {
			break
		}
		if time.Now().After(deadline) || job.Phase != state.PhaseBackfilling && job.Phase != state.PhasePending && job.Phase != state.PhaseExpanding {
			t.Fatalf("never throttled by %s: phase %s, throttled_by %q, rows %d", reason, job.Phase, job.ThrottledBy, job.RowsDone)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	a, _ := r.Store.Get(ctx, jobID)
	time.Sleep(700 * time.Millisecond)
	b, _ := r.Store.Get(ctx, jobID)
	if a.RowsDone != b.RowsDone || b.RowsDone >= total {
		t.Fatalf("batches went on while throttled by %s: %d → %d rows", reason, a.RowsDone, b.RowsDone)
	}
	t.Logf("held by %s at %d rows", reason, b.RowsDone)
}

func execDSN(t *testing.T, dsn, sql string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatal(err)
	}
}

// TestLiveTuning: a job whose migration file caps it at 1 row/s is held by
// the ceiling; `refit set` (Store.SetSettings) lifting the cap takes effect
// at the next batch and the backfill completes; batch size changes too.
func TestLiveTuning(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	mustExec(t, pool, `CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);
		INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 20000) i; ANALYZE items`)
	src := `name: tuned
settings:
  throttle.max_rows_per_second: 1
  backfill.batch_size: 500
  backfill.target_batch_time: 0s
operations:
  - add_column:
      table: items
      column: {name: u, type: text}
      up: upper(name)
`
	m, err := migration.Parse("tuned.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := worker.Submit(ctx, pool, m, migration.ContractNow, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
	var mu sync.Mutex
	var sizes []int
	r.OnBatch = func(_ *state.Job, p backfill.Progress) {
		mu.Lock()
		sizes = append(sizes, p.BatchSize)
		mu.Unlock()
	}
	done := make(chan error, 1)
	go func() { _, err := r.Run(ctx, sub.Job.ID); done <- err }()
	waitThrottled := time.Now().Add(30 * time.Second)
	for {
		job, err := r.Store.Get(ctx, sub.Job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if job.ThrottledBy == throttle.ReasonRate && job.RowsDone == 500 {
			break
		}
		if time.Now().After(waitThrottled) {
			t.Fatalf("the file's settings did not hold the job: %+v rows %d", job.ThrottledBy, job.RowsDone)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := r.Store.SetSettings(ctx, sub.Job.ID, map[string]string{"throttle.max_rows_per_second": "0", "backfill.batch_size": "2000"}, "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("lifting the cap did not let the backfill finish")
	}
	mu.Lock()
	defer mu.Unlock()
	if sizes[0] != 500 || sizes[len(sizes)-1] > 2000 || sizes[1] != 2000 {
		t.Fatalf("batch sizes %v: want 500 first, then 2000 after refit set", sizes)
	}
}

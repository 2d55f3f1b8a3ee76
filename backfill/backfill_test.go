package backfill_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func setup(t *testing.T, ddl string) (*pgxpool.Pool, *state.Store, int64) {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.NewDB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, ddl); err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	job, err := store.CreateJob(ctx, state.NewJob{Name: t.Name(), Checksum: "x", Source: []byte("x"), ContractMode: "now", Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return pool, store, job.ID
}

func TestBackfillKeys(t *testing.T) {
	cases := []struct {
		name  string
		ddl   string
		key   []migration.KeyColumn
		rows  int64
		batch int
	}{
		{"single bigint key", `CREATE TABLE t (id bigint PRIMARY KEY, v text, n text);
			INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 10007) i`,
			[]migration.KeyColumn{{Name: "id", Type: "bigint"}}, 10007, 1000},
		{"composite key with text", `CREATE TABLE t (a int, b text, v text, n text, PRIMARY KEY (a, b));
			INSERT INTO t SELECT i % 7, 'k' || i, 'v' || i FROM generate_series(1, 5003) i`,
			[]migration.KeyColumn{{Name: "a", Type: "integer"}, {Name: "b", Type: "text"}}, 5003, 333},
		{"batch larger than table", `CREATE TABLE t (id int PRIMARY KEY, v text, n text);
			INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 10) i`,
			[]migration.KeyColumn{{Name: "id", Type: "integer"}}, 10, 1000},
		{"empty table", `CREATE TABLE t (id int PRIMARY KEY, v text, n text)`,
			[]migration.KeyColumn{{Name: "id", Type: "integer"}}, 0, 100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			pool, store, jobID := setup(t, tc.ddl)
			cfg := backfill.DefaultConfig()
			cfg.BatchSize = tc.batch
			b := backfill.New(pool, store, jobID, cfg, zaptest.NewLogger(t))
			tbl := backfill.Table{Name: migration.TableName{Name: "t"}, Key: tc.key,
				Sets: []migration.ColumnSet{{Column: "n", Expr: "upper(v)"}}}
			if err := b.Run(ctx, tbl); err != nil {
				t.Fatal(err)
			}
			var bad, total int64
			if err := pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE n IS DISTINCT FROM upper(v)), count(*) FROM t").Scan(&bad, &total); err != nil {
				t.Fatal(err)
			}
			if bad != 0 || total != tc.rows {
				t.Fatalf("%d of %d rows wrong", bad, total)
			}
			ranges, err := store.Ranges(ctx, jobID, "t")
			if err != nil {
				t.Fatal(err)
			}
			if len(ranges) != 1 || !ranges[0].Done || ranges[0].RowsDone != tc.rows || ranges[0].RowsUpdated != tc.rows {
				t.Fatalf("checkpoint %+v, want done with %d rows", ranges, tc.rows)
			}
			// A second run is a no-op: the range is done.
			if err := b.Run(ctx, tbl); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBackfillParallelRanges splits the key range and backfills the ranges
// concurrently, each with its own checkpoint; an interrupted run resumes
// every range and no row is counted twice.
func TestBackfillParallelRanges(t *testing.T) {
	ctx := context.Background()
	pool, store, jobID := setup(t, `CREATE TABLE t (a int, b text, v text, n text, PRIMARY KEY (a, b));
		INSERT INTO t SELECT i % 97, 'k' || i, 'v' || i FROM generate_series(1, 30011) i`)
	cfg := backfill.DefaultConfig()
	cfg.BatchSize, cfg.TargetBatchTime, cfg.Parallelism = 500, 0, 4
	tbl := backfill.Table{Name: migration.TableName{Name: "t"},
		Key:  []migration.KeyColumn{{Name: "a", Type: "integer"}, {Name: "b", Type: "text"}},
		Sets: []migration.ColumnSet{{Column: "n", Expr: "upper(v)"}}}
	// First run: stop after 12 batches in all.
	b := backfill.New(pool, store, jobID, cfg, zaptest.NewLogger(t))
	rctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	batches := 0
	b.OnBatch = func(backfill.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if batches++; batches == 12 {
			cancel()
		}
	}
	if err := b.Run(rctx, tbl); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	ranges, err := store.Ranges(ctx, jobID, "t")
	if err != nil {
		t.Fatal(err)
	}
	started := 0
	for _, r := range ranges {
		if r.RowsDone > 0 {
			started++
		}
	}
	if len(ranges) != 4 || started < 2 {
		t.Fatalf("want 4 ranges, several started concurrently: %+v", ranges)
	}
	// Resume with another parallelism: the stored ranges are kept.
	cfg.Parallelism = 2
	if err := backfill.New(pool, store, jobID, cfg, zaptest.NewLogger(t)).Run(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	var bad, total int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE n IS DISTINCT FROM upper(v)), count(*) FROM t").Scan(&bad, &total); err != nil {
		t.Fatal(err)
	}
	if ranges, err = store.Ranges(ctx, jobID, "t"); err != nil {
		t.Fatal(err)
	}
	var done int64
	for _, r := range ranges {
		if !r.Done {
			t.Fatalf("range %d not done", r.ID)
		}
		done += r.RowsDone
	}
	if bad != 0 || done != total || total != 30011 {
		t.Fatalf("%d rows wrong; rows counted %d of %d", bad, done, total)
	}
}

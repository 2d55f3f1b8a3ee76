package backfill_test

import (
	"context"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/migration"
)

// TestBackfillCheckpointMovedUnderIt: while a range runs, its checkpoint
// moves under it, as when the last batch of an interrupted run of the job
// commits on the server after its client has gone (seen on PostgreSQL 16 in
// TestBackfillParallelRanges' resume): that batch did its rows, and the
// range's next batch, starting from the old checkpoint, is refused
// (state.ErrRangeMoved) and rolls back. The range goes on from the moved
// checkpoint and the backfill completes with every row right and each
// row counted once.
func TestBackfillCheckpointMovedUnderIt(t *testing.T) {
	ctx := context.Background()
	pool, store, jobID := setup(t, `CREATE TABLE t (id int PRIMARY KEY, v text, n text);
		INSERT INTO t SELECT i, 'v' || i, NULL FROM generate_series(1, 5000) i`)
	cfg := backfill.DefaultConfig()
	cfg.BatchSize, cfg.TargetBatchTime = 500, 0
	b := backfill.New(pool, store, jobID, cfg, zaptest.NewLogger(t))
	var once sync.Once
	var moveErr error
	b.OnBatch = func(backfill.Progress) {
		once.Do(func() {
			// Another batch of 300 rows, committed behind this run's back.
			_, moveErr = pool.Exec(ctx, `WITH cur AS (SELECT after_key[1]::int AS a FROM refit.backfill_ranges WHERE job_id = $1),
				done AS (UPDATE t SET n = upper(v) FROM cur WHERE id > cur.a AND id <= cur.a + 300 RETURNING 1)
				UPDATE refit.backfill_ranges SET after_key = ARRAY[((SELECT a FROM cur) + 300)::text], rows_done = rows_done + (SELECT count(*) FROM done),
					rows_updated = rows_updated + (SELECT count(*) FROM done), batches = batches + 1
				WHERE job_id = $1`, jobID)
		})
	}
	tbl := backfill.Table{Name: migration.TableName{Name: "t"}, Key: []migration.KeyColumn{{Name: "id", Type: "integer"}},
		Sets: []migration.ColumnSet{{Column: "n", Expr: "upper(v)"}}}
	if err := b.Run(ctx, tbl); err != nil {
		t.Fatalf("backfill with its checkpoint moved under it: %v", err)
	}
	if moveErr != nil {
		t.Fatal(moveErr)
	}
	var wrong int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM t WHERE n IS DISTINCT FROM upper(v)").Scan(&wrong); err != nil || wrong != 0 {
		t.Fatalf("%d rows wrong (%v)", wrong, err)
	}
	ranges, err := store.Ranges(ctx, jobID, "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(ranges) != 1 || !ranges[0].Done || ranges[0].RowsDone != 5000 {
		t.Fatalf("range %+v, want done with 5000 rows counted once", ranges)
	}
}

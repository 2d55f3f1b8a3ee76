package replication_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
)

// TestDropLeavesWritersAlone drops a job's publication again and again
// while application sessions, each freshly connected (so with cold catalog
// caches), write to the published table. A plain DROP PUBLICATION failed
// about one write in sixty here with "cache lookup failed for publication"
// (XX000), as internal/chaos first saw; replication.Drop must fail none.
func TestDropLeavesWritersAlone(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	pool := newPool(t, dsn)
	mustExec(t, pool, docsDDL)
	mustExec(t, pool, "INSERT INTO docs SELECT g, 'x' FROM generate_series(1, 100) g")
	docs := []migration.TableName{{Schema: "public", Name: "docs"}}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes atomic.Int64
	var mu sync.Mutex
	var failures []error
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := pgx.Connect(ctx, dsn)
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
					return
				}
				_, err = conn.Exec(ctx, "UPDATE docs SET v = $2 WHERE id = $1", i%100+1, "y")
				conn.Close(ctx)
				writes.Add(1)
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < 500; i++ {
		id := nextJobID()
		mustExec(t, pool, replication.PublicationSQL(id, docs, nil))
		time.Sleep(time.Duration(i%4) * time.Millisecond)
		if err := replication.Drop(ctx, pool, id); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if writes.Load() < 100 {
		t.Fatalf("only %d writes ran", writes.Load())
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d application writes failed while publications were dropped; first: %v", len(failures), writes.Load(), failures[0])
	}
}

package workload

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// CreateDocs creates a docs table with n rows whose bodies are TOASTed
// (> 2 kB, incompressible), so that an update of another column streams
// the body as "unchanged TOAST" without data.
func CreateDocs(ctx context.Context, pool *pgxpool.Pool, n int) error {
	_, err := pool.Exec(ctx, fmt.Sprintf(`
		CREATE TABLE docs (id bigserial PRIMARY KEY, title text NOT NULL, body text NOT NULL);
		INSERT INTO docs (title, body)
		SELECT 'doc ' || i, (SELECT string_agg(md5(i::text || '-' || j), '') FROM generate_series(1, 80) j)
		FROM generate_series(1, %d) i;
		ANALYZE docs;`, n))
	return err
}

// DocsMigration derives two columns from docs and indexes one of them.
const DocsMigration = `name: docs_derived
operations:
  - add_column:
      table: docs
      column: {name: title_upper, type: text, nullable: false}
      up: upper(title)
  - add_column:
      table: docs
      column: {name: body_len, type: int, nullable: false}
      up: length(body)
  - create_index:
      name: docs_title_upper
      table: docs
      columns: [title_upper]
`

// VerifyDocsSQL counts rows and rows whose derived columns are wrong.
const VerifyDocsSQL = `SELECT count(*), count(*) FILTER (WHERE title_upper IS DISTINCT FROM upper(title) OR body_len IS DISTINCT FROM length(body)) FROM docs`

// OldDocsApp is the application version that knows only the old columns of
// docs: it inserts (TOASTed bodies), updates the title only, updates the
// body, deletes, and runs small multi-row transactions.
type OldDocsApp struct {
	pool   *pgxpool.Pool
	dsn    string
	maxID  atomic.Int64
	writes atomic.Int64
	errs   atomic.Int64
	mu     sync.Mutex
	last   error
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// oldAppName is the application_name of the old application's sessions.
const oldAppName = "refit-workload-old-app"

// StartOldDocsApp starts workers writers on their own pool (plain sessions
// with the server's defaults) until Stop.
func StartOldDocsApp(ctx context.Context, dsn string, workers int) (*OldDocsApp, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = oldAppName
	cfg.MaxConns = int32(max(workers, 1))
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	a := &OldDocsApp{pool: pool, dsn: dsn}
	var m int64
	if err := pool.QueryRow(ctx, "SELECT coalesce(max(id), 1) FROM docs").Scan(&m); err != nil {
		pool.Close()
		return nil, err
	}
	a.maxID.Store(m)
	ctx, a.cancel = context.WithCancel(ctx)
	for i := 0; i < workers; i++ {
		a.wg.Add(1)
		go func(i int) { defer a.wg.Done(); a.run(ctx, uint64(i+1)) }(i)
	}
	return a, nil
}

// Stop stops the writers and returns writes, errors and the last error. It
// returns once every session of the application has ended on the server: a
// write cancelled by Stop may still commit there, and until its session is
// gone the application is not retired.
func (a *OldDocsApp) Stop() (writes, errs int64, last error) {
	a.cancel()
	a.wg.Wait()
	a.pool.Close()
	if err := WaitSessionsGone(context.Background(), a.dsn, oldAppName, 10*time.Second); err != nil {
		a.mu.Lock()
		a.errs.Add(1)
		a.last = err
		a.mu.Unlock()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.writes.Load(), a.errs.Load(), a.last
}

// WaitSessionsGone waits until no session with application_name app exists.
func WaitSessionsGone(ctx context.Context, dsn, app string, timeout time.Duration) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	deadline := time.Now().Add(timeout)
	for {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d sessions of %s still open after %s", n, app, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (a *OldDocsApp) run(ctx context.Context, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	for ctx.Err() == nil {
		id := 1 + rng.Int64N(a.maxID.Load())
		var err error
		switch rng.IntN(10) {
		case 0, 1:
			var nid int64
			err = a.pool.QueryRow(ctx, `INSERT INTO docs (title, body) SELECT 'new ' || $1, string_agg(md5($1 || j::text), '') FROM generate_series(1, 80) j RETURNING id`, fmt.Sprint(rng.Int64())).Scan(&nid)
			for cur := a.maxID.Load(); err == nil && nid > cur && !a.maxID.CompareAndSwap(cur, nid); cur = a.maxID.Load() {
			}
		case 2, 3, 4, 5:
			_, err = a.pool.Exec(ctx, "UPDATE docs SET title = $2 WHERE id = $1", id, fmt.Sprintf("title %d", rng.Int64()))
		case 6, 7:
			_, err = a.pool.Exec(ctx, "UPDATE docs SET body = body || 'x' WHERE id = $1", id)
		case 8:
			_, err = a.pool.Exec(ctx, "DELETE FROM docs WHERE id = $1", id)
		case 9:
			tx, terr := a.pool.Begin(ctx)
			if terr != nil {
				err = terr
				break
			}
			if _, err = tx.Exec(ctx, "UPDATE docs SET title = title || '!' WHERE id BETWEEN $1 AND $1 + 5", id); err == nil {
				err = tx.Commit(ctx)
			} else {
				_ = tx.Rollback(ctx) //nolint:errcheck // the update error is what counts
			}
		}
		switch {
		case err == nil:
			a.writes.Add(1)
		case ctx.Err() == nil:
			a.errs.Add(1)
			a.mu.Lock()
			a.last = err
			a.mu.Unlock()
		}
	}
}

// Package backfill owns filling new columns of existing rows: batched,
// resumable, keyset-paginated UPDATEs in short transactions.
//
// Each batch first finds its upper key with an index-only walk of the key
// (`ORDER BY key OFFSET n-1 LIMIT 1`), then updates the key range
// (after, upper] in one statement guarded by `new IS DISTINCT FROM <up>`, and
// moves the range's checkpoint in the same transaction. So a batch either
// commits with its checkpoint or not at all: a crash redoes at most the batch
// in flight, never one that committed, and the guard turns any re-run over
// rows that are already right into a read. Row comparison on the whole key,
// `(k1, k2) > ($1, $2)`, makes composite keys use the index like single ones.
package backfill

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/sqlstate"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/throttle"
)

// Config tunes the backfill.
type Config struct {
	// BatchSize is the number of rows (keys) of the first batch.
	BatchSize int `mapstructure:"batch_size" json:"batch_size"`
	// MinBatchSize and MaxBatchSize bound the adaptive batch size.
	MinBatchSize int `mapstructure:"min_batch_size" json:"min_batch_size"`
	MaxBatchSize int `mapstructure:"max_batch_size" json:"max_batch_size"`
	// TargetBatchTime is the duration the batch size adapts toward; it is
	// also about how long a batch keeps its rows locked. 0 = fixed size.
	TargetBatchTime time.Duration `mapstructure:"target_batch_time" json:"target_batch_time"`
	// LockTimeout bounds each batch's wait for row locks held by the application.
	LockTimeout time.Duration `mapstructure:"lock_timeout" json:"lock_timeout"`
	// StatementTimeout bounds each batch statement.
	StatementTimeout time.Duration `mapstructure:"statement_timeout" json:"statement_timeout"`
	// Sleep is a pause between batches (a simple throttle); 0 = none.
	Sleep time.Duration `mapstructure:"sleep" json:"sleep"`
	// Parallelism splits the key range into this many ranges, backfilled
	// concurrently, each with its own checkpoint.
	Parallelism int `mapstructure:"parallelism" json:"parallelism"`
	// MaxRetries bounds consecutive retries of one batch on lock timeouts,
	// deadlocks and serialization failures.
	MaxRetries int `mapstructure:"max_retries" json:"max_retries"`
}

// DefaultConfig returns the built-in defaults.
func DefaultConfig() Config {
	return Config{BatchSize: 5000, MinBatchSize: 100, MaxBatchSize: 50000, TargetBatchTime: 50 * time.Millisecond,
		LockTimeout: time.Second, StatementTimeout: time.Minute, MaxRetries: 50, Parallelism: 1}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.BatchSize < 1 {
		errs = append(errs, errors.New("backfill.batch_size must be >= 1"))
	}
	if c.MinBatchSize < 1 || c.MaxBatchSize < c.MinBatchSize {
		errs = append(errs, errors.New("backfill.min_batch_size must be >= 1 and <= backfill.max_batch_size"))
	}
	if c.TargetBatchTime < 0 {
		errs = append(errs, errors.New("backfill.target_batch_time must be >= 0 (0 = fixed batch size)"))
	}
	if c.LockTimeout <= 0 {
		errs = append(errs, errors.New("backfill.lock_timeout must be > 0"))
	}
	if c.StatementTimeout < 0 || c.Sleep < 0 {
		errs = append(errs, errors.New("backfill.statement_timeout and backfill.sleep must be >= 0"))
	}
	if c.Parallelism < 1 || c.Parallelism > 64 {
		errs = append(errs, errors.New("backfill.parallelism must be between 1 and 64"))
	}
	if c.MaxRetries < 0 {
		errs = append(errs, errors.New("backfill.max_retries must be >= 0"))
	}
	return errors.Join(errs...)
}

// Table is one table to backfill.
type Table struct {
	Name migration.TableName
	Key  []migration.KeyColumn
	Sets []migration.ColumnSet
}

// Progress is reported after every batch.
type Progress struct {
	Table       string
	RowsDone    int64 // keys passed, all ranges
	RowsUpdated int64 // rows actually changed
	Batches     int64
	BatchSize   int
	BatchRows   int64 // rows (keys) of the last batch
	BatchTime   time.Duration
}

// Backfiller runs the backfill of one job.
type Backfiller struct {
	pool  *pgxpool.Pool
	cfg   Config
	log   *zap.Logger
	jobID int64
	store *state.Store
	// OnBatch, if set, is called after every committed batch.
	OnBatch func(Progress)
	// Session, if set, prepares the backfill's dedicated connection (refit
	// tags it with a replication origin so the sync consumer skips its
	// writes). The connection is closed afterwards, never returned to the pool.
	Session func(ctx context.Context, conn *pgx.Conn, rangeID int) error
	// Tune, if set, is called before every batch and returns the current
	// configuration (live tuning): batch size bounds, target time and sleep
	// take effect at once.
	Tune func() Config
	// Throttle, if set, is called before every batch and may block until
	// the batch may run (or return an error to stop). Its context carries
	// throttle.NotifyHeld: when a throttle.Throttler's Wait holds for
	// throttle.ReasonAppLockWait, the next batch is smaller
	// (Controller.Backoff).
	Throttle func(ctx context.Context) error
}

// New returns a backfiller for a job.
func New(pool *pgxpool.Pool, store *state.Store, jobID int64, cfg Config, log *zap.Logger) *Backfiller {
	return &Backfiller{pool: pool, store: store, jobID: jobID, cfg: cfg, log: log.Named("backfill").With(zap.Int64("job", jobID))}
}

// EstimateRows returns the planner's row estimate, or an exact count when
// the table was never analyzed.
func EstimateRows(ctx context.Context, pool *pgxpool.Pool, t migration.TableName) (int64, error) {
	var n float64
	if err := pool.QueryRow(ctx, "SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)", t.Quoted()).Scan(&n); err != nil {
		return 0, fmt.Errorf("estimate rows of %s: %w", t, err)
	}
	if n >= 0 {
		return int64(n), nil
	}
	var c int64
	err := pool.QueryRow(ctx, "SELECT count(*) FROM "+t.Quoted()).Scan(&c)
	return c, err
}

// Run backfills t to the end, resuming from the checkpoints in refit.backfill_ranges.
func (b *Backfiller) Run(ctx context.Context, t Table) error {
	if len(t.Key) == 0 {
		return fmt.Errorf("backfill %s: table has no usable key", t.Name)
	}
	if len(t.Sets) == 0 {
		return nil
	}
	tname := t.Name.String()
	q := newQueries(t)
	ranges, err := b.store.Ranges(ctx, b.jobID, tname)
	if err != nil {
		return fmt.Errorf("load checkpoints: %w", err)
	}
	if len(ranges) == 0 {
		// The split is decided once and stored: a resumed run (even with
		// another parallelism) continues the same ranges.
		bounds, err := b.split(ctx, q, t, max(b.cfg.Parallelism, 1))
		if err != nil {
			return fmt.Errorf("split %s into ranges: %w", t.Name, err)
		}
		var rs []state.Range
		for i := 0; i <= len(bounds); i++ {
			r := state.Range{Table: tname, ID: i}
			if i > 0 {
				r.Lower = bounds[i-1]
			}
			if i < len(bounds) {
				r.Upper = bounds[i]
			}
			rs = append(rs, r)
		}
		if err := b.store.CreateRanges(ctx, b.jobID, rs); err != nil {
			return fmt.Errorf("create checkpoints: %w", err)
		}
		if ranges, err = b.store.Ranges(ctx, b.jobID, tname); err != nil {
			return fmt.Errorf("load checkpoints: %w", err)
		}
	}
	total := &sharedProgress{p: Progress{Table: tname}}
	var todo []state.Range
	for _, r := range ranges {
		total.p.RowsDone += r.RowsDone
		total.p.RowsUpdated += r.RowsUpdated
		total.p.Batches += r.Batches
		if !r.Done {
			todo = append(todo, r)
		}
	}
	// Ranges run concurrently, at most Parallelism at a time; the first
	// error stops the others (their checkpoints stay where they were).
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, max(b.cfg.Parallelism, 1))
	var wg sync.WaitGroup
	for _, r := range todo {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(r state.Range) {
			defer wg.Done()
			defer func() { <-sem }()
			if r.After != nil {
				b.log.Info("resuming backfill range", zap.String("table", tname), zap.Int("range", r.ID), zap.Strings("after", r.After), zap.Int64("rows_done", r.RowsDone))
			}
			if err := b.runRange(ctx, q, r, total); err != nil {
				cancel(err)
			}
		}(r)
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// sharedProgress is the progress of all ranges of a table.
type sharedProgress struct {
	mu sync.Mutex
	p  Progress
}

// split returns n-1 keys that cut the table into n ranges of about the same
// number of rows (walking the key index once per cut), or fewer when the
// table is small.
func (b *Backfiller) split(ctx context.Context, q *queries, t Table, n int) ([][]string, error) {
	if n <= 1 {
		return nil, nil
	}
	var rows int64
	if err := b.pool.QueryRow(ctx, q.count(false, false)).Scan(&rows); err != nil {
		return nil, err
	}
	if rows < int64(n)*int64(max(b.cfg.MinBatchSize, 1)) {
		return nil, nil
	}
	var bounds [][]string
	for i := 1; i < n; i++ {
		key := make([]string, len(q.key))
		dest := make([]any, len(key))
		for j := range key {
			dest[j] = &key[j]
		}
		off := rows * int64(i) / int64(n)
		if err := b.pool.QueryRow(ctx, q.findUpper(false, false, int(off)+1)).Scan(dest...); err != nil {
			return nil, err
		}
		bounds = append(bounds, key)
	}
	return bounds, nil
}

func (b *Backfiller) runRange(ctx context.Context, q *queries, r state.Range, total *sharedProgress) (err error) {
	pc, err := b.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire backfill connection: %w", err)
	}
	// Hijacked: session state (the replication origin) must not leak into the pool.
	conn := pc.Hijack()
	defer func() {
		if cerr := conn.Close(context.WithoutCancel(ctx)); cerr != nil && err == nil {
			err = fmt.Errorf("close backfill connection: %w", cerr)
		}
	}()
	if b.Session != nil {
		if err := b.Session(ctx, conn, r.ID); err != nil {
			return err
		}
	}
	// after is where the next batch starts; stored is the range's
	// checkpoint as stored (nil before its first batch, where after is the
	// range's lower bound), which each batch's checkpoint moves on from.
	after, stored := r.After, r.After
	if after == nil {
		after = r.Lower
	}
	moved := 0
	cfg := b.cfg
	ctl := NewController(cfg.BatchSize, cfg.MinBatchSize, cfg.MaxBatchSize, cfg.TargetBatchTime)
	for {
		if b.Throttle != nil {
			appWait := false
			hctx := throttle.NotifyHeld(ctx, func(reason string) { appWait = appWait || reason == throttle.ReasonAppLockWait })
			if err := b.Throttle(hctx); err != nil {
				return err
			}
			if appWait {
				// The application waited on refit's locks: the rows the
				// batches lock stay locked for less time when they are fewer.
				ctl.Backoff()
			}
		}
		// Read the tuning after a throttle wait: a refit set during it applies
		// to this very batch.
		if b.Tune != nil {
			next := b.Tune()
			if next.MinBatchSize != cfg.MinBatchSize || next.MaxBatchSize != cfg.MaxBatchSize || next.TargetBatchTime != cfg.TargetBatchTime {
				ctl.Retune(next.MinBatchSize, next.MaxBatchSize, next.TargetBatchTime)
			}
			if next.BatchSize != cfg.BatchSize {
				ctl.SetSize(next.BatchSize)
			}
			cfg = next
		}
		start := time.Now()
		var res batchResult
		var err error
		size := ctl.Size()
		for attempt := 0; ; attempt++ {
			t0 := time.Now()
			res, err = b.batch(ctx, conn, q, r, stored, after, size)
			if err == nil {
				ctl.Observe(size, time.Since(t0))
				break
			}
			if !sqlstate.Retryable(err) || attempt >= b.cfg.MaxRetries || ctx.Err() != nil {
				break
			}
			// A lock timeout, deadlock or serialization failure: the
			// database is busy here, so the retry is smaller.
			size = ctl.Observe(size, time.Since(t0)+cfg.TargetBatchTime*4)
			wait := time.Duration(50+rand.IntN(200)) * time.Millisecond * time.Duration(min(attempt+1, 10))
			b.log.Warn("backfill batch retry", zap.String("table", r.Table), zap.Int("attempt", attempt+1), zap.Error(err), zap.Duration("backoff", wait))
			if err := sleep(ctx, wait); err != nil {
				return err
			}
		}
		if errors.Is(err, state.ErrRangeMoved) && moved < maxRangeMoves && ctx.Err() == nil {
			// The checkpoint moved under this batch (it rolled back): most
			// often the last batch of an interrupted run of this job, whose
			// COMMIT the server finished after its client had gone. Go on
			// from where the range is now. A live process running the job
			// beside this one (a lost claim) is stopped by the claim
			// watchdog; the bound ends a tug of war meanwhile.
			moved++
			cur, rerr := b.reloadRange(ctx, r)
			if rerr != nil {
				return rerr
			}
			b.log.Warn("backfill range checkpoint moved; going on from it", zap.String("table", r.Table), zap.Int("range", r.ID),
				zap.Strings("after", cur.After), zap.Bool("done", cur.Done))
			if cur.Done {
				return nil
			}
			after, stored = cur.After, cur.After
			if after == nil {
				after = r.Lower
			}
			continue
		}
		if err != nil {
			if sqlstate.Content(err) && ctx.Err() == nil {
				// A value that does not convert (an alter_column's using, an
				// up): name the row, so it can be fixed.
				if key, kerr := b.badRow(ctx, conn, q, after, r.Upper, size); kerr == nil && key != nil {
					err = fmt.Errorf("the row with key (%s) cannot be backfilled: %w", strings.Join(key, ", "), err)
				}
			}
			return fmt.Errorf("backfill %s range %d after %v: %w", r.Table, r.ID, after, err)
		}
		total.mu.Lock()
		total.p.RowsDone += res.scanned
		total.p.RowsUpdated += res.updated
		total.p.Batches++
		total.p.BatchSize = size
		total.p.BatchRows = res.scanned
		total.p.BatchTime = time.Since(start)
		snapshot := total.p
		total.mu.Unlock()
		b.log.Debug("backfill batch", zap.String("table", r.Table), zap.Int("range", r.ID), zap.Int("batch_size", size),
			zap.Int64("rows", res.scanned), zap.Int64("changed", res.updated), zap.Duration("took", snapshot.BatchTime))
		if b.OnBatch != nil {
			b.OnBatch(snapshot)
		}
		if res.done {
			return nil
		}
		after, stored = res.upper, res.upper
		if cfg.Sleep > 0 {
			if err := sleep(ctx, cfg.Sleep); err != nil {
				return err
			}
		}
	}
}

// maxRangeMoves bounds how often one range goes on from a checkpoint moved
// under it (see runRange).
const maxRangeMoves = 10

// reloadRange reads range r's checkpoint as stored.
func (b *Backfiller) reloadRange(ctx context.Context, r state.Range) (state.Range, error) {
	ranges, err := b.store.Ranges(ctx, b.jobID, r.Table)
	if err != nil {
		return state.Range{}, fmt.Errorf("reload backfill range %d of %s: %w", r.ID, r.Table, err)
	}
	for _, cur := range ranges {
		if cur.ID == r.ID {
			return cur, nil
		}
	}
	return state.Range{}, fmt.Errorf("backfill range %d of %s is gone", r.ID, r.Table)
}

// badRow finds the first row of a failed batch (up to n keys after after)
// whose own update fails, trying them one by one in a transaction that is
// rolled back. nil: none failed alone.
func (b *Backfiller) badRow(ctx context.Context, conn *pgx.Conn, q *queries, after, upper []string, n int) ([]string, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // always rolled back
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d; SET LOCAL statement_timeout = %d",
		b.cfg.LockTimeout.Milliseconds(), b.cfg.StatementTimeout.Milliseconds())); err != nil {
		return nil, err
	}
	texts := make([]string, len(q.key))
	order := make([]string, len(q.key))
	for i, k := range q.key {
		texts[i] = fmt.Sprintf("%s::text", migration.QuoteIdent(k.Name))
		order[i] = migration.QuoteIdent(k.Name)
	}
	rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT %d", strings.Join(texts, ", "), q.table,
		q.bounds(after != nil, upper != nil), strings.Join(order, ", "), n), append(q.keyArgs(after), q.keyArgs(upper)...)...)
	if err != nil {
		return nil, err
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]string, error) {
		k := make([]string, len(q.key))
		d := make([]any, len(k))
		for i := range k {
			d[i] = &k[i]
		}
		return k, r.Scan(d...)
	})
	if err != nil {
		return nil, err
	}
	one := migration.RecomputeSQL(q.table, q.sets, q.keyTuple()+" = "+q.params(1))
	for _, k := range keys {
		if _, err := tx.Exec(ctx, "SAVEPOINT refit_row"); err != nil {
			return nil, err
		}
		_, err := tx.Exec(ctx, one, q.keyArgs(k)...)
		if _, rerr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT refit_row"); rerr != nil {
			return nil, rerr
		}
		if err != nil {
			return k, nil
		}
	}
	return nil, nil
}

type batchResult struct {
	upper   []string
	scanned int64
	updated int64
	done    bool
}

// batch runs one batch and its checkpoint in one transaction.
func (b *Backfiller) batch(ctx context.Context, conn *pgx.Conn, q *queries, r state.Range, stored, after []string, n int) (res batchResult, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d; SET LOCAL statement_timeout = %d",
			b.cfg.LockTimeout.Milliseconds(), b.cfg.StatementTimeout.Milliseconds())); err != nil {
			return err
		}
		// Upper key of this batch: the n-th key after the checkpoint.
		args := append(q.keyArgs(after), q.keyArgs(r.Upper)...)
		upper := make([]string, len(q.key))
		dest := make([]any, len(upper))
		for i := range upper {
			dest[i] = &upper[i]
		}
		err := tx.QueryRow(ctx, q.findUpper(after != nil, r.Upper != nil, n), args...).Scan(dest...)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			// Fewer than n keys remain: this is the range's last batch.
			res.done = true
			upper = r.Upper
		case err != nil:
			return fmt.Errorf("find batch end: %w", err)
		default:
			res.scanned = int64(n)
		}
		args = append(q.keyArgs(after), q.keyArgs(upper)...)
		if res.done {
			var cnt int64
			if err := tx.QueryRow(ctx, q.count(after != nil, upper != nil), args...).Scan(&cnt); err != nil {
				return fmt.Errorf("count last batch: %w", err)
			}
			res.scanned = cnt
		}
		tag, err := tx.Exec(ctx, q.update(after != nil, upper != nil), args...)
		if err != nil {
			return fmt.Errorf("update batch: %w", err)
		}
		res.updated = tag.RowsAffected()
		res.upper = upper
		var ckpt []string
		if !res.done {
			ckpt = upper
		}
		return state.AdvanceRangeTx(ctx, tx, b.jobID, r.Table, r.ID, stored, ckpt, res.done, res.scanned, res.updated)
	})
	return res, err
}

// queries renders the SQL of one table's batches.
type queries struct {
	table string
	key   []migration.KeyColumn
	sets  []migration.ColumnSet
}

func newQueries(t Table) *queries {
	return &queries{table: t.Name.Quoted(), key: t.Key, sets: t.Sets}
}

func (q *queries) keyArgs(k []string) []any {
	out := make([]any, len(k))
	for i, v := range k {
		out[i] = v
	}
	return out
}

// keyTuple renders "(k1, k2)".
func (q *queries) keyTuple() string {
	cols := make([]string, len(q.key))
	for i, k := range q.key {
		cols[i] = migration.QuoteIdent(k.Name)
	}
	return "(" + strings.Join(cols, ", ") + ")"
}

// params renders "(CAST($i::text AS t1), …)" starting at $from.
func (q *queries) params(from int) string {
	ps := make([]string, len(q.key))
	for i, k := range q.key {
		ps[i] = fmt.Sprintf("CAST($%d::text AS %s)", from+i, k.Type)
	}
	return "(" + strings.Join(ps, ", ") + ")"
}

// bounds renders the WHERE clause for (after, upper]; parameters of after
// come first, then those of upper.
func (q *queries) bounds(hasAfter, hasUpper bool) string {
	var conds []string
	next := 1
	if hasAfter {
		conds = append(conds, q.keyTuple()+" > "+q.params(next))
		next += len(q.key)
	}
	if hasUpper {
		conds = append(conds, q.keyTuple()+" <= "+q.params(next))
	}
	if len(conds) == 0 {
		return "true"
	}
	return strings.Join(conds, " AND ")
}

func (q *queries) findUpper(hasAfter, hasUpper bool, n int) string {
	texts := make([]string, len(q.key))
	order := make([]string, len(q.key))
	for i, k := range q.key {
		// Aliased: an output column named like the key would make ORDER BY
		// sort by the text form.
		texts[i] = fmt.Sprintf("%s::text AS refit_k%d", migration.QuoteIdent(k.Name), i)
		order[i] = migration.QuoteIdent(k.Name)
	}
	return fmt.Sprintf("SELECT %s FROM %s WHERE %s ORDER BY %s OFFSET %d LIMIT 1",
		strings.Join(texts, ", "), q.table, q.bounds(hasAfter, hasUpper), strings.Join(order, ", "), n-1)
}

func (q *queries) count(hasAfter, hasUpper bool) string {
	return fmt.Sprintf("SELECT count(*) FROM %s WHERE %s", q.table, q.bounds(hasAfter, hasUpper))
}

// update renders the batch UPDATE (migration.RecomputeSQL). Its guard skips
// rows that are already right, so re-running a range is a read, not a write.
func (q *queries) update(hasAfter, hasUpper bool) string {
	return migration.RecomputeSQL(q.table, q.sets, q.bounds(hasAfter, hasUpper))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

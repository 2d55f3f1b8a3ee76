package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/sqlstate"
	"github.com/refit-dev/refit/state"
)

// errHoldExceeded: a swap attempt would have held its lock longer than
// ddl.swap_max_lock; it rolled back and is retried.
var errHoldExceeded = errors.New("the swap would hold its lock longer than ddl.swap_max_lock")

// verify runs a verify step (migration.Verify): every row's shadow column
// must equal its expression. Rows that differ are re-checked after a drain
// (their write may not have been applied yet); any that still differ fail
// the job before the swap, with sample keys. The step is checkpointed like
// any other; it changes nothing.
func (r *Runner) verify(ctx context.Context, log *zap.Logger, job *state.Job, s migration.Step, n int) error {
	v := s.Verify
	start := time.Now()
	m, err := backfill.Verify(ctx, r.Pool, v.Table, v.Key, v.Column, v.Expr, r.tuned.Load().bf.BatchSize)
	if err != nil {
		return err
	}
	keys := m.Keys
	if m.Rows > 0 && r.sync != nil {
		if err := r.sync.consumer.Drain(ctx); err != nil {
			return err
		}
		if keys, err = backfill.Recheck(ctx, r.Pool, v.Table, v.Key, v.Column, v.Expr, keys); err != nil {
			return err
		}
	}
	log.Info("verified", zap.String("table", v.Table.String()), zap.String("column", v.Column),
		zap.Int64("differed", m.Rows), zap.Int("still_differ", len(keys)), zap.Duration("took", time.Since(start)))
	if len(keys) > 0 || (m.Rows > int64(len(m.Keys)) && r.sync == nil) {
		return fmt.Errorf("verify: %d row(s) of %s whose %s differs from %s after a drain, e.g. keys %s: the swap does not start (is something writing %s directly?)",
			len(keys), v.Table, v.Column, v.Expr, backfill.SampleKeys(keys, 5), v.Column)
	}
	return pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
		return state.SetStepTx(ctx, tx, job.ID, state.ContractStep, n)
	})
}

// swap runs a swap step (migration.Swap): in one transaction it takes
// ACCESS EXCLUSIVE on the table, drains the stream inside the lock, applies
// the keys still pending, runs the swap's statements and its checkpoint,
// and commits, all within ddl.swap_max_lock of taking the lock; an attempt
// that cannot rolls back (the drained keys go back to the consumer) and is
// retried with backoff, the lock wait escalating as for any DDL, up to
// ddl.retry_total. Every attempt is recorded in job_events.
func (r *Runner) swap(ctx context.Context, log *zap.Logger, job *state.Job, s migration.Step, n int) error {
	if r.sync == nil {
		return fmt.Errorf("swap of %s: the stream is not running, so the last writes before the lock could not be drained", s.Swap.Table)
	}
	cfg := r.DDL.Config()
	start := time.Now()
	backoff := cfg.RetryInitial
	lockTimeouts := 0
	for attempt := 1; ; attempt++ {
		lockWait := cfg.AttemptLockTimeout(lockTimeouts)
		held, keys, err := r.swapOnce(ctx, job, s, n, lockWait, cfg.SwapMaxLock)
		msg := fmt.Sprintf("swap attempt %d: lock wait up to %s, held %s, %d keys drained inside the lock", attempt, lockWait, held.Round(time.Microsecond), keys)
		if err != nil {
			msg += ": " + err.Error()
		}
		if eerr := r.Store.Event(context.WithoutCancel(ctx), job.ID, r.Actor, msg); eerr != nil {
			log.Warn("could not record the swap attempt", zap.Error(eerr))
		}
		if err == nil {
			if r.OnSwapped != nil {
				r.OnSwapped(job)
			}
			log.Info("swapped", zap.String("table", s.Swap.Table.String()), zap.Int("attempt", attempt),
				zap.Duration("lock_held", held), zap.Int("keys_drained", keys))
			return nil
		}
		if !errors.Is(err, errHoldExceeded) && !sqlstate.Retryable(err) || ctx.Err() != nil {
			return err
		}
		if sqlstate.Is(err, sqlstate.LockNotAvailable) {
			lockTimeouts++
		}
		sleep := backoff/2 + rand.N(backoff/2+1)
		if time.Since(start)+sleep > cfg.RetryTotal {
			return fmt.Errorf("swap of %s: gave up after %d attempts in %s (ddl.retry_total): %w", s.Swap.Table, attempt, time.Since(start).Round(time.Millisecond), err)
		}
		log.Warn("swap attempt rolled back, retrying", zap.Int("attempt", attempt), zap.Error(err), zap.Duration("backoff", sleep))
		if err := sleepCtx(ctx, sleep); err != nil {
			return err
		}
		backoff = min(backoff*2, cfg.RetryMax)
	}
}

// swapOnce is one attempt of swap; held is how long it held the lock.
func (r *Runner) swapOnce(ctx context.Context, job *state.Job, s migration.Step, n int, lockWait, maxHold time.Duration) (held time.Duration, keys int, err error) {
	conn, err := r.Pool.Acquire(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after commit: no-op
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d; SET LOCAL statement_timeout = %d",
		max(1, lockWait.Milliseconds()), max(1, (lockWait+maxHold).Milliseconds()))); err != nil {
		return 0, 0, err
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+s.Swap.Table.Quoted()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		return 0, 0, err
	}
	locked := time.Now()
	hctx, cancel := context.WithDeadlineCause(ctx, locked.Add(maxHold), errHoldExceeded)
	defer cancel()
	fail := func(err error) (time.Duration, int, error) {
		if cause := context.Cause(hctx); errors.Is(cause, errHoldExceeded) {
			err = fmt.Errorf("%w (%v)", errHoldExceeded, err)
		}
		return time.Since(locked), keys, err
	}
	h, err := r.sync.consumer.DrainLocked(hctx, tx, r.Pool)
	if err != nil {
		return fail(err)
	}
	keys = h.Keys()
	committed := false
	defer func() {
		if !committed {
			r.sync.consumer.Resume(h) // the keys were not applied after all
		}
	}()
	if r.OnSwapLocked != nil {
		r.OnSwapLocked(job)
	}
	if _, err := h.Apply(hctx, tx); err != nil {
		return fail(fmt.Errorf("apply the keys drained inside the lock: %w", err))
	}
	for _, stmt := range s.Swap.Statements {
		if _, err := tx.Exec(hctx, stmt); err != nil {
			return fail(fmt.Errorf("%s: %w", stmt, err))
		}
	}
	if err := state.SetStepTx(hctx, tx, job.ID, state.ContractStep, n); err != nil {
		return fail(err)
	}
	if time.Since(locked) > maxHold {
		return fail(errHoldExceeded)
	}
	if err := tx.Commit(hctx); err != nil {
		return fail(err)
	}
	committed = true
	return time.Since(locked), keys, nil
}

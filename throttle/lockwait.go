package throttle

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/refit-dev/refit/replication"
)

// The app-lock-wait signal watches the application directly: it fires
// while a session that is not refit's has waited on a lock longer than
// throttle.max_app_lock_wait and pg_blocking_pids says one of refit's
// sessions is in its way (holds the lock, or waits ahead of it in the
// lock's queue).
//
// Looking only when the backfill asks (between batches) would see almost
// nothing: the waits a batch causes are on its row locks, and they end when
// the batch commits, just before the next check. So while the signal is on
// a watcher polls pg_locks every pollInterval during the batches too and
// remembers that it saw such a wait; the next Check holds for it (once,
// and the backfill makes its next batch smaller), and each Check also looks
// itself, so the backfill stays held for as long as waits go on. A wait
// longer than the limit plus the poll interval is always seen; one just
// over the limit may not be.
//
// Privileges: pg_locks, pg_blocking_pids and the datid and
// application_name columns of pg_stat_activity are visible to every role,
// so the query needs neither superuser nor pg_read_all_stats. Were an
// application_name hidden, the session would count as the application's
// (a waiter) and not as refit's (a blocker): refit's own sessions, whose
// names decide what blocks, always run as refit's role and are visible to
// it.

// appLockWaitsSQL counts the sessions of this database, not named refit…,
// that have waited longer than $1 seconds on a lock a session named like
// $2 is in the way of. waitstart (PostgreSQL 14+) is NULL for a moment
// after a wait starts; such a wait is not yet counted.
const appLockWaitsSQL = `SELECT count(*) FROM pg_locks w
	JOIN pg_stat_activity a ON a.pid = w.pid
	WHERE NOT w.granted
	  AND w.waitstart < clock_timestamp() - make_interval(secs => $1)
	  AND a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
	  AND coalesce(a.application_name, '') NOT LIKE 'refit%'
	  AND EXISTS (SELECT FROM pg_stat_activity h
		WHERE h.pid = ANY (pg_blocking_pids(w.pid)) AND h.application_name LIKE $2)`

// Bounds of the watcher's poll interval (half the limit, see pollInterval).
const (
	minPollInterval = 10 * time.Millisecond
	// watchIdle stops a watcher that no Check has asked for this long (a
	// paused or finished backfill); the next Check starts another.
	watchIdle = time.Minute
)

// pollInterval is how often the watcher looks: half the limit, at least
// minPollInterval (each look reads the lock table), at most check_interval.
func pollInterval(cfg Config) time.Duration {
	return min(max(cfg.MaxAppLockWait/2, minPollInterval), cfg.CheckInterval)
}

// lockWatch is the state of the throttler's watcher.
type lockWatch struct {
	mu      sync.Mutex
	gen     uint64
	running context.Context // the running watcher's context; nil when none runs
	seen    bool            // a wait over the limit since the last Check
	asked   time.Time       // the last Check
}

// appLockWaits runs appLockWaitsSQL.
func (t *Throttler) appLockWaits(ctx context.Context, limit time.Duration) (int, error) {
	pattern := "refit-%"
	if job := t.job.Load(); job > 0 {
		pattern = replication.AppName(job, "") + "%"
	}
	var n int
	if err := t.pool.QueryRow(ctx, appLockWaitsSQL, limit.Seconds(), pattern).Scan(&n); err != nil {
		return 0, fmt.Errorf("throttle: count application lock waits: %w", err)
	}
	return n, nil
}

// checkAppLockWait reports whether the app-lock-wait signal fires: the
// watcher saw a wait since the last Check, or there is one now. It starts
// the watcher, bound to ctx, if none runs.
func (t *Throttler) checkAppLockWait(ctx context.Context, cfg Config) (bool, error) {
	w := &t.locks
	w.mu.Lock()
	seen := w.seen
	w.seen = false
	w.asked = time.Now()
	if w.running == nil || w.running.Err() != nil {
		w.gen++
		w.running = ctx
		go t.watchLocks(ctx, w.gen)
	}
	w.mu.Unlock()
	if seen {
		return true, nil
	}
	n, err := t.appLockWaits(ctx, cfg.MaxAppLockWait)
	return n > 0, err
}

// watchLocks is the watcher: it polls until ctx ends, the signal is
// switched off or no Check asked for watchIdle. A failed poll is skipped:
// the Check's own look runs the same query and returns its error.
func (t *Throttler) watchLocks(ctx context.Context, gen uint64) {
	w := &t.locks
	defer func() {
		w.mu.Lock()
		if w.gen == gen {
			w.running = nil
		}
		w.mu.Unlock()
	}()
	for {
		cfg := t.config()
		w.mu.Lock()
		idle := time.Since(w.asked) > watchIdle
		w.mu.Unlock()
		if cfg.MaxAppLockWait <= 0 || idle {
			return
		}
		if err := sleep(ctx, pollInterval(cfg)); err != nil {
			return
		}
		if n, err := t.appLockWaits(ctx, cfg.MaxAppLockWait); err == nil && n > 0 {
			w.mu.Lock()
			w.seen = true
			w.mu.Unlock()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

// Package throttle owns the signals that hold the backfill back so that it
// moves as fast as the database can afford and no faster: replica replay
// lag, the number of active application sessions, application sessions
// waiting on refit's locks, a custom query, and a rows-per-second ceiling.
// Each signal is off unless configured; any one is enough to hold the next
// batch, and the one that fired is reported by name (refit status, metrics)
// so an operator always knows why refit waits.
package throttle

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Reasons reported when a signal fires.
const (
	ReasonReplicaLag     = "replica_lag"
	ReasonActiveSessions = "active_sessions"
	ReasonQuery          = "query"
	ReasonRate           = "max_rows_per_second"
	ReasonAppLockWait    = "app_lock_wait"
)

// Config selects the signals.
type Config struct {
	// MaxReplicaLag holds batches while any physical standby's replay lag
	// (pg_stat_replication.replay_lag) is above it; 0 = off.
	MaxReplicaLag time.Duration `mapstructure:"max_replica_lag" json:"max_replica_lag"`
	// MaxActiveSessions holds batches while more application sessions than
	// this are active (running a statement); 0 = off.
	MaxActiveSessions int `mapstructure:"max_active_sessions" json:"max_active_sessions"`
	// MaxAppLockWait holds batches while a session that is not refit's has
	// waited longer than this on a lock that one of the job's sessions
	// holds or waits ahead for, and makes the backfill's next batch
	// smaller; 0 = off. See lockwait.go.
	MaxAppLockWait time.Duration `mapstructure:"max_app_lock_wait" json:"max_app_lock_wait"`
	// Query is a custom SQL query returning one boolean; true holds batches.
	// It runs in a read-only transaction, at most QueryTimeout; see
	// ValidateQuery for what is accepted.
	Query string `mapstructure:"query" json:"query,omitempty"`
	// MaxRowsPerSecond caps the backfill's rate; 0 = off.
	MaxRowsPerSecond int `mapstructure:"max_rows_per_second" json:"max_rows_per_second"`
	// CheckInterval is how often a held backfill looks again.
	CheckInterval time.Duration `mapstructure:"check_interval" json:"check_interval"`
}

// DefaultConfig: every signal off, re-checked every 100 ms.
func DefaultConfig() Config { return Config{CheckInterval: 100 * time.Millisecond} }

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.MaxReplicaLag < 0 || c.MaxActiveSessions < 0 || c.MaxRowsPerSecond < 0 {
		return errors.New("throttle limits must be >= 0 (0 = off)")
	}
	if c.MaxAppLockWait < 0 {
		return errors.New("throttle.max_app_lock_wait must be >= 0 (0 = off)")
	}
	if c.CheckInterval <= 0 {
		return errors.New("throttle.check_interval must be > 0")
	}
	return nil
}

// Throttler evaluates the signals for one backfill; safe for the
// concurrent ranges of a parallel backfill.
type Throttler struct {
	mu    sync.Mutex
	cfg   Config
	pool  *pgxpool.Pool
	start time.Time
	rows  atomic.Int64
	// job is the job whose sessions count as refit's for the app-lock-wait
	// signal; 0 = every refit session.
	job   atomic.Int64
	locks lockWatch
}

// New returns a throttler; the rate ceiling counts from now.
func New(pool *pgxpool.Pool, cfg Config) *Throttler {
	return &Throttler{cfg: cfg, pool: pool, start: time.Now()}
}

// SetJob narrows the app-lock-wait signal to the sessions of one job
// (application_name refit-j<job>-…, see replication.AppName). Until it is
// called, a wait on any refit session (refit-…) counts.
func (t *Throttler) SetJob(jobID int64) { t.job.Store(jobID) }

// Observe accounts rows written (for the rate ceiling).
func (t *Throttler) Observe(rows int64) { t.rows.Add(rows) }

// SetConfig changes the signals (live tuning); the rate ceiling keeps
// counting from the start.
func (t *Throttler) SetConfig(cfg Config) {
	t.mu.Lock()
	t.cfg = cfg
	t.mu.Unlock()
}

func (t *Throttler) config() Config {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cfg
}

// Check returns the reason the next batch must wait, or "" when it may run.
func (t *Throttler) Check(ctx context.Context) (string, error) {
	cfg := t.config()
	if cfg.MaxRowsPerSecond > 0 {
		due := t.start.Add(time.Duration(float64(t.rows.Load()) / float64(cfg.MaxRowsPerSecond) * float64(time.Second)))
		if time.Now().Before(due) {
			return ReasonRate, nil
		}
	}
	if cfg.MaxAppLockWait > 0 {
		hold, err := t.checkAppLockWait(ctx, cfg)
		if err != nil {
			return "", err
		}
		if hold {
			return ReasonAppLockWait, nil
		}
	}
	if cfg.MaxActiveSessions > 0 {
		var n int
		err := t.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
			  AND application_name NOT LIKE 'refit%'`).Scan(&n)
		if err != nil {
			return "", fmt.Errorf("throttle: count active sessions: %w", err)
		}
		if n > cfg.MaxActiveSessions {
			return ReasonActiveSessions, nil
		}
	}
	if cfg.MaxReplicaLag > 0 {
		var lag float64
		err := t.pool.QueryRow(ctx, `SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8 FROM pg_stat_replication
			WHERE application_name NOT LIKE 'refit%'`).Scan(&lag)
		if err != nil {
			return "", fmt.Errorf("throttle: read replica lag: %w", err)
		}
		if time.Duration(lag*float64(time.Second)) > cfg.MaxReplicaLag {
			return ReasonReplicaLag, nil
		}
	}
	if cfg.Query != "" {
		hold, err := evaluate(ctx, t.pool, cfg.Query)
		if err != nil {
			return "", err
		}
		if hold {
			return ReasonQuery, nil
		}
	}
	return "", nil
}

// Wait blocks until no signal fires. report is called with the reason each
// time it changes, and with "" when the backfill may go on after a wait;
// so is the function attached to ctx with NotifyHeld, for each reason held
// for. refresh, if set, runs before every check (live tuning, operator
// control); its error ends the wait.
func (t *Throttler) Wait(ctx context.Context, report func(reason string), refresh func() error) error {
	last := ""
	for {
		if refresh != nil {
			if err := refresh(); err != nil {
				return err
			}
		}
		reason, err := t.Check(ctx)
		if err != nil {
			return err
		}
		if reason != last {
			report(reason)
			if f, ok := ctx.Value(heldKey{}).(func(string)); ok && reason != "" {
				f(reason)
			}
			last = reason
		}
		if reason == "" {
			return nil
		}
		tm := time.NewTimer(t.config().CheckInterval)
		select {
		case <-ctx.Done():
			tm.Stop()
			return ctx.Err()
		case <-tm.C:
		}
	}
}

type heldKey struct{}

// NotifyHeld returns a context with which Wait calls held with each reason
// it holds for (once per change of reason). It is how the caller of a
// throttle hook learns why it was held without the hook's signature
// changing: the backfill makes its next batch smaller after an
// app_lock_wait. held runs in the goroutine that called Wait.
func NotifyHeld(ctx context.Context, held func(reason string)) context.Context {
	return context.WithValue(ctx, heldKey{}, held)
}

// Package ddl owns the safe execution of schema changes on a live database.
//
// Every statement runs with a short lock_timeout, so an application query
// never queues behind refit's lock request for longer than that timeout:
// PostgreSQL's lock queue is FIFO, and a waiting ACCESS EXCLUSIVE request
// blocks every later reader of the table, so the wait itself must be short.
// When the lock is not granted in time (sqlstate.LockNotAvailable), or the
// transaction is chosen as a deadlock victim or fails to serialize (any
// sqlstate.Retryable error), the executor backs off with capped, jittered,
// escalating sleeps and tries again, up to a total time bound. The timeout
// is set on every connection for every attempt, including the last.
//
// The lock_timeout itself escalates too: a statement's first attempt waits
// at most ddl.lock_timeout_initial (50 ms by default), and each lock timeout
// of that statement doubles the next attempt's wait, up to ddl.lock_timeout
// (see Config.AttemptLockTimeout). A blocker then costs the application a
// few short stalls instead of one stall of lock_timeout per attempt, and a
// workload whose lock holders overlap for longer than the short waits is
// still met with the full lock_timeout. Concurrent index builds wait up to
// ddl.lock_timeout at every attempt: their lock does not queue the
// application, and a timeout late in a build throws the build away.
//
// Transactional statements run one per short transaction, together with the
// caller's checkpoint, so each happens exactly once. Statements that cannot
// run in a transaction (CREATE/DROP INDEX CONCURRENTLY) run in autocommit with
// session-level timeouts; a concurrent index build that fails leaves an
// INVALID index behind, which is dropped before the next attempt.
package ddl

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/refit-dev/refit/sqlstate"
)

// Config bounds how refit waits for locks.
type Config struct {
	// LockTimeout is the longest any statement of refit waits for a lock.
	LockTimeout time.Duration `mapstructure:"lock_timeout" json:"lock_timeout"`
	// LockTimeoutInitial is the lock_timeout of a statement's first attempt;
	// each lock timeout doubles it, up to LockTimeout (AttemptLockTimeout).
	// Concurrent index builds wait up to LockTimeout from the first attempt.
	LockTimeoutInitial time.Duration `mapstructure:"lock_timeout_initial" json:"lock_timeout_initial"`
	// StatementTimeout bounds short DDL statements.
	StatementTimeout time.Duration `mapstructure:"statement_timeout" json:"statement_timeout"`
	// LongStatementTimeout bounds scans (VALIDATE CONSTRAINT, index builds);
	// 0 means no limit. lock_timeout still applies to their lock waits.
	LongStatementTimeout time.Duration `mapstructure:"long_statement_timeout" json:"long_statement_timeout"`
	// RetryInitial is the first backoff; each retry doubles it up to RetryMax.
	RetryInitial time.Duration `mapstructure:"retry_initial" json:"retry_initial"`
	RetryMax     time.Duration `mapstructure:"retry_max" json:"retry_max"`
	// SwapMaxLock bounds how long a swap (alter_column's cut-over) holds its
	// ACCESS EXCLUSIVE lock: an attempt that would hold it longer (its
	// drain inside the lock is slow) rolls back and is retried.
	SwapMaxLock time.Duration `mapstructure:"swap_max_lock" json:"swap_max_lock"`
	// RetryTotal is the total time one statement may spend retrying.
	RetryTotal time.Duration `mapstructure:"retry_total" json:"retry_total"`
}

// DefaultConfig returns the built-in defaults.
func DefaultConfig() Config {
	return Config{
		LockTimeout:          time.Second,
		LockTimeoutInitial:   50 * time.Millisecond,
		StatementTimeout:     30 * time.Second,
		LongStatementTimeout: 0,
		RetryInitial:         200 * time.Millisecond,
		RetryMax:             10 * time.Second,
		RetryTotal:           10 * time.Minute,
		SwapMaxLock:          time.Second,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.LockTimeout <= 0 {
		errs = append(errs, errors.New("ddl.lock_timeout must be > 0"))
	}
	// An initial wait at or above ddl.lock_timeout means no escalation
	// (AttemptLockTimeout): `--lock-timeout 20ms` alone stays valid.
	if c.LockTimeoutInitial <= 0 {
		errs = append(errs, fmt.Errorf("ddl.lock_timeout_initial (%s) must be > 0: it is the first attempt's lock wait, which escalates up to ddl.lock_timeout",
			c.LockTimeoutInitial))
	}
	if c.StatementTimeout < 0 || c.LongStatementTimeout < 0 {
		errs = append(errs, errors.New("ddl statement timeouts must be >= 0"))
	}
	if c.RetryInitial <= 0 || c.RetryMax < c.RetryInitial {
		errs = append(errs, errors.New("ddl.retry_initial must be > 0 and <= ddl.retry_max"))
	}
	if c.SwapMaxLock <= 0 {
		errs = append(errs, errors.New("ddl.swap_max_lock must be > 0"))
	}
	if c.RetryTotal <= 0 {
		errs = append(errs, errors.New("ddl.retry_total must be > 0"))
	}
	return errors.Join(errs...)
}

// AttemptLockTimeout is the lock_timeout of a statement's attempt after
// lockTimeouts earlier attempts of the same statement ended in a lock
// timeout: LockTimeoutInitial doubled once per lock timeout, capped at
// LockTimeout. It is never above LockTimeout, the longest any statement of
// refit waits for a lock. A LockTimeoutInitial of 0 (a Config not built
// from DefaultConfig, which Validate refuses) means no escalation.
//
// Why it starts short: while refit's request waits, every later query on
// the table queues behind it, so what a blocker costs the application is
// the sum over attempts of each attempt's wait. Most blockers are one long
// transaction: once it ends, any attempt gets the lock at once, however
// short its timeout, so the short first attempts lose nothing. A longer
// wait only helps when the lock holders overlap (a new long reader starts
// before the last one ends), and then only a wait longer than the holders'
// remaining time succeeds; each lock timeout is a sign of that, so the wait
// doubles, at the pace of the backoff between attempts.
//
// Why it caps instead of resetting to the initial wait: once the doubling
// has reached LockTimeout, every shorter wait has already failed for this
// statement, and starting over would spend most of the remaining attempts
// (within ddl.retry_total) on waits that are likely to fail again, each
// still stalling the application, while the full wait, the one that can
// succeed against overlapping holders, would be tried only once per cycle.
// At the cap an attempt costs the application at most LockTimeout, as every
// attempt did before the escalation, and the backoff has grown towards
// ddl.retry_max, so those attempts are sparse. The escalation starts over
// for each statement: a blocker of one statement says nothing about the
// next. Deadlocks and serialization failures do not escalate: they say
// nothing about the wait being too short.
func (c Config) AttemptLockTimeout(lockTimeouts int) time.Duration {
	if c.LockTimeoutInitial <= 0 || c.LockTimeoutInitial >= c.LockTimeout {
		return c.LockTimeout
	}
	d := c.LockTimeoutInitial
	for range lockTimeouts {
		if d >= c.LockTimeout/2 {
			return c.LockTimeout
		}
		d *= 2
	}
	return d
}

// Statement is one DDL statement to run safely.
type Statement struct {
	SQL         string
	Args        []any
	Description string
	// Transactional statements run inside BEGIN … COMMIT with SET LOCAL
	// timeouts; the others run in autocommit (CONCURRENTLY).
	Transactional bool
	// LongRunning selects LongStatementTimeout instead of StatementTimeout.
	LongRunning bool
	// Index, when set, is the (quoted, qualified) name of the index the
	// statement builds: a valid one means the statement already ran; an
	// INVALID one is dropped before building. Such a build waits up to
	// LockTimeout at every attempt (see attemptLockTimeout).
	Index string
}

// Executor runs statements under the safety rules.
type Executor struct {
	pool *pgxpool.Pool
	cfg  Config
	log  *zap.Logger

	retries atomic.Int64
}

// New returns an executor over pool.
func New(pool *pgxpool.Pool, cfg Config, log *zap.Logger) *Executor {
	return &Executor{pool: pool, cfg: cfg, log: log.Named("ddl")}
}

// Retries is the number of retries so far, after lock timeouts, deadlocks
// and serialization failures (sqlstate.Retryable).
func (e *Executor) Retries() int64 { return e.retries.Load() }

// Config returns the executor's configuration.
func (e *Executor) Config() Config { return e.cfg }

// Run executes s, retrying lock timeouts, deadlocks and serialization
// failures (sqlstate.Retryable). For a transactional statement, within (if
// not nil) runs in the same transaction after the statement, so the
// statement and the caller's checkpoint commit together. For the others,
// within runs in its own transaction after success.
func (e *Executor) Run(ctx context.Context, s Statement, within func(context.Context, pgx.Tx) error) error {
	log := e.log.With(zap.String("statement", s.Description))
	start := time.Now()
	backoff := e.cfg.RetryInitial
	lockTimeouts := 0
	for attempt := 1; ; attempt++ {
		lockTimeout := e.attemptLockTimeout(s, lockTimeouts)
		var blockers *blockerReport
		var err error
		if s.Transactional {
			blockers, err = e.runTx(ctx, s, lockTimeout, within)
		} else {
			blockers, err = e.runAutocommit(ctx, s, lockTimeout, within, log)
		}
		if err == nil {
			if attempt > 1 {
				log.Info("ddl succeeded after retries", zap.Int("attempts", attempt),
					zap.Duration("lock_timeout", lockTimeout), zap.Duration("elapsed", time.Since(start)))
			}
			return nil
		}
		if !sqlstate.Retryable(err) || ctx.Err() != nil {
			return fmt.Errorf("%s: %w", s.Description, err)
		}
		if sqlstate.Is(err, sqlstate.LockNotAvailable) {
			lockTimeouts++
		}
		sleep := backoff/2 + rand.N(backoff/2+1)
		fields := []zap.Field{zap.Int("attempt", attempt), zap.String("sqlstate", sqlstate.Code(err)),
			zap.Duration("lock_timeout", lockTimeout)}
		var blocked []Blocker
		if blockers != nil {
			blocked = blockers.get()
			fields = append(fields, zap.Any("blockers", blocked))
		}
		if time.Since(start)+sleep > e.cfg.RetryTotal {
			// No retry happens: neither counted nor logged as one.
			elapsed := time.Since(start).Round(time.Millisecond)
			log.Warn("ddl gave up: lock not granted within ddl.retry_total", append(fields, zap.Duration("elapsed", elapsed))...)
			return fmt.Errorf("%s: gave up after %d attempts in %s (ddl.retry_total %s)%s: %w",
				s.Description, attempt, elapsed, e.cfg.RetryTotal, describeBlockers(blocked), err)
		}
		e.retries.Add(1)
		log.Warn("ddl lock not granted, retrying", append(fields, zap.Duration("backoff", sleep))...)
		if cerr := sleepCtx(ctx, sleep); cerr != nil {
			return fmt.Errorf("%s: %w (while backing off after: %v)", s.Description, cerr, err)
		}
		backoff = min(backoff*2, e.cfg.RetryMax)
	}
}

// attemptLockTimeout is the lock_timeout of the attempt of s after
// lockTimeouts lock timeouts of s: Config.AttemptLockTimeout, except for a
// concurrent index build (s.Index set), which waits up to LockTimeout from
// the first attempt. Its SHARE UPDATE EXCLUSIVE request does not queue the
// application's reads and writes (their modes do not conflict with it), so
// a short wait would spare the application nothing; and lock_timeout also
// bounds the build's waits for older transactions after its scans, where a
// timeout throws the built index away (it is INVALID and rebuilt).
func (e *Executor) attemptLockTimeout(s Statement, lockTimeouts int) time.Duration {
	if s.Index != "" {
		return e.cfg.LockTimeout
	}
	return e.cfg.AttemptLockTimeout(lockTimeouts)
}

func (e *Executor) statementTimeout(s Statement) time.Duration {
	if s.LongRunning {
		return e.cfg.LongStatementTimeout
	}
	return e.cfg.StatementTimeout
}

// setTimeouts returns the SET (scope "LOCAL" or "SESSION") statements of the
// timeouts of an attempt of s that waits up to lockTimeout for its locks.
// PostgreSQL takes whole milliseconds and reads 0 as "no limit", so a
// positive duration is rounded up, never down to 0.
func (e *Executor) setTimeouts(scope string, s Statement, lockTimeout time.Duration) string {
	return fmt.Sprintf("SET %s lock_timeout = %d; SET %s statement_timeout = %d",
		scope, ceilMillis(lockTimeout), scope, ceilMillis(e.statementTimeout(s)))
}

func ceilMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

func (e *Executor) runTx(ctx context.Context, s Statement, lockTimeout time.Duration, within func(context.Context, pgx.Tx) error) (_ *blockerReport, err error) {
	conn, err := e.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire connection: %w", err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if rbErr := tx.Rollback(context.WithoutCancel(ctx)); rbErr != nil && !errors.Is(rbErr, pgx.ErrTxClosed) {
			err = errors.Join(err, fmt.Errorf("rollback: %w", rbErr))
		}
	}()
	if _, err := tx.Exec(ctx, e.setTimeouts("LOCAL", s, lockTimeout)); err != nil {
		return nil, fmt.Errorf("set timeouts: %w", err)
	}
	blockers := e.watchBlockers(ctx, conn.Conn().PgConn().PID(), lockTimeout)
	_, err = tx.Exec(ctx, s.SQL, s.Args...)
	blockers.stop()
	if err != nil {
		return blockers, err
	}
	if within != nil {
		if err := within(ctx, tx); err != nil {
			return nil, err
		}
	}
	return nil, tx.Commit(ctx)
}

func (e *Executor) runAutocommit(ctx context.Context, s Statement, lockTimeout time.Duration, within func(context.Context, pgx.Tx) error, log *zap.Logger) (*blockerReport, error) {
	conn, err := e.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire connection: %w", err)
	}
	// Session settings must not leak to the next user of the pooled connection.
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), "RESET lock_timeout; RESET statement_timeout"); err != nil {
			conn.Conn().Close(context.WithoutCancel(ctx)) //nolint:errcheck // the connection is discarded anyway
		}
		conn.Release()
	}()
	if _, err := conn.Exec(ctx, e.setTimeouts("SESSION", s, lockTimeout)); err != nil {
		return nil, fmt.Errorf("set timeouts: %w", err)
	}
	if s.Index != "" {
		valid, exists, err := indexState(ctx, conn.Conn(), s.Index)
		if err != nil {
			return nil, err
		}
		switch {
		case exists && valid:
			log.Info("index already built and valid, skipping", zap.String("index", s.Index))
			return nil, e.finish(ctx, conn.Conn(), within)
		case exists:
			log.Warn("dropping invalid index left by an interrupted build", zap.String("index", s.Index))
			if _, err := conn.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+s.Index); err != nil {
				return nil, fmt.Errorf("drop invalid index %s: %w", s.Index, err)
			}
		}
	}
	blockers := e.watchBlockers(ctx, conn.Conn().PgConn().PID(), lockTimeout)
	_, err = conn.Exec(ctx, s.SQL, s.Args...)
	blockers.stop()
	if err != nil {
		if s.Index != "" {
			// A failed concurrent build leaves an INVALID index: never leave
			// it. Drop only an invalid one: a valid index of that name was
			// not left by this build (it failed), so it is not ours to drop.
			bg := context.WithoutCancel(ctx)
			valid, exists, checkErr := indexState(bg, conn.Conn(), s.Index)
			switch {
			case checkErr != nil:
				err = errors.Join(err, checkErr)
			case exists && !valid:
				if _, dropErr := conn.Exec(bg, "DROP INDEX CONCURRENTLY IF EXISTS "+s.Index); dropErr != nil {
					err = errors.Join(err, fmt.Errorf("drop invalid index %s: %w", s.Index, dropErr))
				} else {
					log.Info("dropped the invalid index left by the failed build", zap.String("index", s.Index), zap.String("sqlstate", sqlstate.Code(err)))
				}
			}
		}
		return blockers, err
	}
	return nil, e.finish(ctx, conn.Conn(), within)
}

// finish runs within in its own transaction on conn, the connection the
// statement ran on (a second connection from the pool could deadlock a small
// pool), under the same timeouts as the statements: the session settings of
// runAutocommit are still in force.
func (e *Executor) finish(ctx context.Context, conn *pgx.Conn, within func(context.Context, pgx.Tx) error) error {
	if within == nil {
		return nil
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return within(ctx, tx) })
}

func indexState(ctx context.Context, conn *pgx.Conn, index string) (valid, exists bool, err error) {
	err = conn.QueryRow(ctx, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", index).Scan(&valid)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("check index %s: %w", index, err)
	}
	return valid, true, nil
}

// Blocker is a session that held a lock refit waited for.
type Blocker struct {
	PID      int    `json:"pid"`
	State    string `json:"state"`
	Query    string `json:"query"`
	XactAge  string `json:"xact_age"`
	AppName  string `json:"application_name"`
	WaitEvnt string `json:"wait_event,omitempty"`
}

type blockerReport struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	list   []Blocker
}

func (b *blockerReport) stop() {
	b.cancel()
	<-b.done
}

func (b *blockerReport) get() []Blocker {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.list
}

// watchBlockers samples pg_blocking_pids(pid) from another connection while
// the statement waits (up to lockTimeout), so a lock timeout can name who
// held the lock.
func (e *Executor) watchBlockers(ctx context.Context, pid uint32, lockTimeout time.Duration) *blockerReport {
	ctx, cancel := context.WithCancel(ctx)
	b := &blockerReport{cancel: cancel, done: make(chan struct{})}
	delay := min(lockTimeout/2, 200*time.Millisecond)
	go func() {
		defer close(b.done)
		t := time.NewTimer(delay)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rows, err := e.pool.Query(ctx, `SELECT pid, coalesce(state, ''), left(coalesce(query, ''), 300),
				coalesce((now() - xact_start)::text, ''), coalesce(application_name, ''), coalesce(wait_event, '')
				FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids($1))`, int(pid))
			if err != nil {
				return
			}
			list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Blocker, error) {
				var bl Blocker
				err := r.Scan(&bl.PID, &bl.State, &bl.Query, &bl.XactAge, &bl.AppName, &bl.WaitEvnt)
				bl.Query = maskLiterals(strings.Join(strings.Fields(bl.Query), " "))
				return bl, err
			})
			if err == nil && len(list) > 0 {
				b.mu.Lock()
				b.list = list
				b.mu.Unlock()
			}
			t.Reset(delay)
		}
	}()
	return b
}

// literalRe matches a string literal (or the unterminated start of one,
// where pg_stat_activity's text was cut).
var literalRe = regexp.MustCompile(`'(?:[^']|'')*(?:'|$)`)

// maskLiterals replaces the string literals of another session's query
// with '…' before refit logs it: the text may carry a secret (ALTER ROLE …
// PASSWORD '…') or the application's data.
func maskLiterals(q string) string {
	return literalRe.ReplaceAllString(q, "'…'")
}

// describeBlockers summarizes who held the lock, for the final error.
func describeBlockers(list []Blocker) string {
	if len(list) == 0 {
		return ""
	}
	parts := make([]string, 0, len(list))
	for _, b := range list {
		parts = append(parts, fmt.Sprintf("pid %d (%s, transaction age %s): %.80s", b.PID, b.State, b.XactAge, b.Query))
	}
	return "; last blocked by " + strings.Join(parts, ", ")
}

// Sleep waits for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

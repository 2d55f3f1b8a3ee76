package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/state"
)

// errRetainedWAL marks a job failed because its slot retained too much WAL;
// the slot is dropped with it, so the disk cannot fill.
var errRetainedWAL = errors.New("replication slot retains too much WAL")

// syncer is the running sync of one job: the consumer and a monitor that
// persists its figures and watches the slot's retained WAL.
type syncer struct {
	consumer *replication.Consumer
	cancel   context.CancelFunc
	done     chan struct{}
	err      atomic.Pointer[error]
	// throttled is set while the slot retains more than MaxRetainedWAL.
	throttled atomic.Bool
	once      sync.Once
	onStop    func(replication.Stats)

	pool       *pgxpool.Pool
	jobID      int64
	maxBacklog int64
	reasonMu   sync.Mutex
	reason     string
	onThrottle func(ctx context.Context, reason string)
	onHeld     func(reason string, d time.Duration) // after each hold, with its last reason
}

// targets returns the tables the job keeps in sync: those with derived
// columns. A table whose backfill only fills volatile defaults needs no
// sync (rows written after expand are the application's).
func targets(plan *migration.Plan, facts *migration.Facts) ([]replication.Target, error) {
	var out []replication.Target
	for _, b := range plan.Backfills {
		tf := facts.Table(b.Table)
		if tf == nil {
			return nil, fmt.Errorf("no facts recorded for table %s", b.Table)
		}
		sets := migration.Derived(b.Sets)
		if len(sets) == 0 {
			continue
		}
		out = append(out, replication.Target{Table: tf.Name, Key: tf.Key, Sets: sets})
	}
	return out, nil
}

// prepareReplication creates the publication and the slot before the
// backfill. If the slot had to be (re)created while the job already had
// backfill progress, that progress no longer covers the gap, so the
// backfill starts over (cheaply: rows already right are only read).
func (r *Runner) prepareReplication(ctx context.Context, log *zap.Logger, job *state.Job, tgts []replication.Target) error {
	if err := replication.CheckRequirements(ctx, r.Pool, replication.JobOrigins(r.tuned.Load().bf.Parallelism), job.ID); err != nil {
		return err
	}
	tables := make([]migration.TableName, len(tgts))
	for i, t := range tgts {
		tables[i] = t.Table
	}
	if err := replication.CheckReplicaIdentity(ctx, r.Pool, tables); err != nil {
		return err
	}
	exists, err := replication.PublicationExists(ctx, r.Pool, job.ID)
	if err != nil {
		return err
	}
	if !exists {
		columns, err := replication.PublishedColumns(ctx, r.Pool, tgts)
		if err != nil {
			return err
		}
		if err := r.DDL.Run(ctx, statement(migration.Step{SQL: replication.PublicationSQL(job.ID, tables, columns), Transactional: true,
			Description: "create publication " + replication.PublicationName(job.ID)}), nil); err != nil {
			return err
		}
	}
	failover, why, err := replication.FailoverSlot(ctx, r.Pool, r.Replication.FailoverSlot)
	if err != nil {
		return err
	}
	created, err := replication.EnsureSlotWith(ctx, r.Pool, job.ID, replication.SlotOptions{CreateTimeout: r.Replication.SlotCreateTimeout, Failover: failover})
	if err != nil {
		return err
	}
	if created {
		log.Info("replication slot created", zap.String("slot", replication.SlotName(job.ID)), zap.Bool("failover", failover), zap.String("why", why))
		if job.RowsDone > 0 {
			log.Warn("slot was recreated: backfill starts over to cover the gap", zap.Int64("rows_done", job.RowsDone))
			if err := r.Store.ResetBackfill(ctx, job.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// startSync starts the consumer and the monitor. failRun is called with the
// consumer's error if it stops by itself.
func (r *Runner) startSync(ctx context.Context, log *zap.Logger, job *state.Job, tgts []replication.Target, failRun context.CancelCauseFunc) *syncer {
	ctx, cancel := context.WithCancel(ctx)
	s := &syncer{cancel: cancel, done: make(chan struct{}), onStop: r.OnSyncStopped,
		pool: r.Pool, jobID: job.ID, maxBacklog: r.Replication.MaxDecodeBacklog,
		onThrottle: func(ctx context.Context, reason string) {
			_ = r.Store.SetThrottled(context.WithoutCancel(ctx), job.ID, reason) //nolint:errcheck // status only
		},
		onHeld: func(reason string, d time.Duration) { r.noteHeld(job.ID, reason, d) }}
	s.consumer = replication.NewConsumer(r.Pool, job.ID, tgts, r.Replication, r.Log)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := s.consumer.Run(ctx); err != nil && ctx.Err() == nil {
			err = fmt.Errorf("sync consumer: %w", err)
			s.err.Store(&err)
			failRun(err)
		}
	}()
	go func() {
		defer wg.Done()
		r.monitor(ctx, log, job.ID, s, failRun)
	}()
	go func() { wg.Wait(); close(s.done) }()
	return s
}

// stop stops the consumer and the monitor and waits for them.
func (s *syncer) stop() {
	if s == nil {
		return
	}
	s.once.Do(func() {
		s.cancel()
		<-s.done
		if s.onStop != nil {
			s.onStop(s.consumer.Stats())
		}
	})
}

// monitor persists the sync figures and enforces the retained-WAL limits.
func (r *Runner) monitor(ctx context.Context, log *zap.Logger, jobID int64, s *syncer, failRun context.CancelCauseFunc) {
	t := time.NewTicker(r.Replication.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		info, err := replication.Slot(ctx, r.Pool, jobID)
		if err != nil || !info.Exists {
			continue
		}
		st := s.consumer.Stats()
		sy := state.Sync{ConfirmedLSN: st.ConfirmedLSN.String(), LagBytes: info.LagBytes, RetainedBytes: info.RetainedBytes, KeysApplied: st.KeysApplied,
			OriginFilter: st.OriginFilter}
		if !st.LastCommitTime.IsZero() {
			lc, ap := st.LastCommitTime, st.LastAppliedAt
			sy.LastCommitAt, sy.AppliedAt = &lc, &ap
		}
		if !st.LastChangedAt.IsZero() {
			ch := st.LastChangedAt
			sy.ChangedAt = &ch
		}
		if err := r.Store.UpdateSync(ctx, jobID, sy); err != nil && ctx.Err() == nil {
			log.Warn("could not record sync status", zap.Error(err))
		}
		switch {
		case r.Replication.FailRetainedWAL > 0 && info.RetainedBytes > r.Replication.FailRetainedWAL:
			failRun(fmt.Errorf("%w: %d bytes > replication.fail_retained_wal %d", errRetainedWAL, info.RetainedBytes, r.Replication.FailRetainedWAL))
			return
		case r.Replication.MaxRetainedWAL > 0 && info.RetainedBytes > r.Replication.MaxRetainedWAL:
			if !s.throttled.Swap(true) {
				log.Warn("backfill throttled: slot retains too much WAL", zap.Int64("retained_bytes", info.RetainedBytes), zap.Int64("limit", r.Replication.MaxRetainedWAL))
			}
		default:
			if s.throttled.Swap(false) {
				log.Info("backfill throttle released", zap.Int64("retained_bytes", info.RetainedBytes))
			}
		}
	}
}

// throttle holds the next backfill batch while the slot retains too much
// WAL (checked by the monitor) or the walsender is too far behind in
// decoding (checked here, before every batch: it is one cheap query). While
// throttled refit writes nothing but its status.
func (s *syncer) throttle(ctx context.Context) error {
	if s == nil {
		return nil
	}
	throttled := false
	var since time.Time
	var last string
	defer func() {
		if throttled {
			s.setThrottled(ctx, "")
			if s.onHeld != nil {
				s.onHeld(last, time.Since(since))
			}
		}
	}()
	for {
		reason := ""
		switch {
		case s.throttled.Load():
			reason = "slot_retained_wal"
		case s.maxBacklog > 0:
			backlog, ok, err := replication.DecodeBacklog(ctx, s.pool, s.jobID)
			if err != nil {
				return err
			}
			if ok && backlog > s.maxBacklog {
				reason = "sync_decode_backlog"
			}
		}
		if reason == "" {
			return nil
		}
		if !throttled {
			throttled, since = true, time.Now()
		}
		last = reason
		s.setThrottled(ctx, reason)
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// setThrottled records the throttle reason when it changes.
func (s *syncer) setThrottled(ctx context.Context, reason string) {
	s.reasonMu.Lock()
	same := s.reason == reason
	s.reason = reason
	s.reasonMu.Unlock()
	if !same && s.onThrottle != nil {
		s.onThrottle(ctx, reason)
	}
}

// tagSession is the backfill's session hook: tag its writes with an origin.
func (r *Runner) tagSession(jobID int64) func(ctx context.Context, conn *pgx.Conn, rangeID int) error {
	return func(ctx context.Context, conn *pgx.Conn, rangeID int) error {
		if _, err := conn.Exec(ctx, "SELECT set_config('application_name', $1, false)", replication.AppName(jobID, fmt.Sprintf("b%d", rangeID))); err != nil {
			return fmt.Errorf("name backfill session: %w", err)
		}
		return replication.TagSession(ctx, conn, replication.OriginName(jobID, fmt.Sprintf("b%d", rangeID)), r.Log)
	}
}

// UnresponsiveAfter is how long the consumer of a slot that retains more
// than replication.fail_retained_wal may stay silent (no standby status
// reply to its walsender; a live one replies every status_interval) before
// Sweep treats the process that runs the job as unresponsive and enforces
// the hard limit itself.
const UnresponsiveAfter = 10 * time.Second

// sweepInterval is how often a daemon sweeps each target (Sweep).
const sweepInterval = 5 * time.Second

// Sweep drops refit replication objects (slots, publications, origins)
// that belong to no live job, and fails live jobs whose slot retains more
// than the hard limit (dropping the slot), so that neither an orphan nor an
// abandoned job can fill the disk. `refit run` sweeps at start, a daemon
// at start and every few seconds.
//
// The process that runs a job enforces the hard limit itself (its sync
// monitor). Sweep does it for a job whose slot no walsender streams, and for
// one whose consumer has been silent for UnresponsiveAfter: a process that
// was stopped (SIGSTOP, a frozen VM) keeps its connections, and so its
// walsender and the slot, and enforces nothing. It then also ends the job's
// sessions of that process (walsender, apply, backfill: they hold the
// job's replication origins), fails the job, and drops its slot. The process
// keeps its claim on the job until it goes on or goes away; when it goes
// on, it stops, reporting that another process failed the job. A retry
// (refit run, refit retry) backfills again.
func Sweep(ctx context.Context, store *state.Store, cfg replication.Config, log *zap.Logger) error {
	pool := store.Pool()
	ids, err := replication.Orphans(ctx, pool)
	if err != nil {
		return err
	}
	live, err := store.LiveJobIDs(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if !live[id] {
			log.Info("dropping orphaned replication objects", zap.Int64("job", id), zap.String("slot", replication.SlotName(id)))
			if err := replication.Drop(ctx, pool, id); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if cfg.FailRetainedWAL <= 0 {
			continue
		}
		if err := enforceHardLimit(ctx, store, cfg, log, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// enforceHardLimit fails a live job whose slot retains more than
// replication.fail_retained_wal while no responsive process streams it, and
// drops the slot (see Sweep).
func enforceHardLimit(ctx context.Context, store *state.Store, cfg replication.Config, log *zap.Logger, id int64) error {
	pool := store.Pool()
	info, err := replication.Slot(ctx, pool, id)
	if err != nil || !info.Exists || info.RetainedBytes <= cfg.FailRetainedWAL {
		return err
	}
	who := "no process streams it"
	if info.Active {
		silence, ok, err := replication.ConsumerSilence(ctx, pool, id)
		if err != nil {
			return err
		}
		if !ok || silence < UnresponsiveAfter {
			return nil // its process is alive: its own monitor enforces the limit
		}
		who = fmt.Sprintf("the process running it has not answered its walsender for %s", silence.Round(time.Second))
	}
	job, err := store.Get(ctx, id)
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("%v: %d bytes > replication.fail_retained_wal %d and %s; slot dropped, a retry backfills again",
		errRetainedWAL, info.RetainedBytes, cfg.FailRetainedWAL, who)
	log.Error("failing a job whose slot retains too much WAL", zap.Int64("job", id), zap.Int64("retained_bytes", info.RetainedBytes),
		zap.String("reason", msg))
	var errs []error
	if job.Phase != state.PhaseFailed {
		if err := store.Transition(ctx, id, job.Phase, state.PhaseFailed, "sweep", msg); err != nil {
			errs = append(errs, err)
		}
	}
	if info.Active {
		if _, err := replication.TerminateStale(ctx, pool, id); err != nil {
			errs = append(errs, err)
		}
	}
	if err := replication.Drop(ctx, pool, id); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

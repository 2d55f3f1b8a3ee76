package worker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/ddl"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/throttle"
)

// Target is one database a daemon watches.
type Target struct {
	Name string `mapstructure:"name" json:"name"`
	DSN  string `mapstructure:"dsn" json:"-"`
}

// Settings tune the daemon.
type Settings struct {
	// PollInterval is how often each target's jobs are looked at (control
	// arrives at once through LISTEN/NOTIFY; polling is the fallback and
	// what bounds the takeover of a dead daemon's job).
	PollInterval time.Duration `mapstructure:"poll_interval" json:"poll_interval"`
	// MaxJobs bounds the jobs this daemon runs at once (jobs on the same
	// table always run one at a time, in submission order).
	MaxJobs int `mapstructure:"max_jobs" json:"max_jobs"`
	// ShutdownTimeout bounds how long SIGTERM waits for jobs to checkpoint.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout" json:"shutdown_timeout"`
	// QuietPeriod is the auto contract gate's wait after the last write
	// that still needed syncing.
	QuietPeriod time.Duration `mapstructure:"quiet_period" json:"quiet_period"`
}

// DefaultSettings returns the built-in defaults.
func DefaultSettings() Settings {
	return Settings{PollInterval: time.Second, MaxJobs: 4, ShutdownTimeout: 30 * time.Second, QuietPeriod: 5 * time.Minute}
}

// Validate checks the settings.
func (s Settings) Validate() error {
	if s.PollInterval <= 0 || s.ShutdownTimeout <= 0 || s.QuietPeriod <= 0 || s.MaxJobs < 1 {
		return errors.New("worker.poll_interval, shutdown_timeout, quiet_period must be > 0 and worker.max_jobs >= 1")
	}
	return nil
}

// DaemonConfig is everything a daemon needs.
type DaemonConfig struct {
	ID          string // who this daemon is, for job_events and status
	Targets     []Target
	Settings    Settings
	DDL         ddl.Config
	Backfill    backfill.Config
	Replication replication.Config
	Throttle    throttle.Config
	// RedactError removes a target's password from an error about
	// connecting to it before it is logged (cmd/refit: config.RedactError);
	// nil logs such errors as pgx returns them.
	RedactError func(err error, dsn string) error
}

// Daemon claims and runs jobs on its targets until its context ends.
// Several daemons may watch the same targets: a job is run by the one that
// holds its session advisory lock; when that daemon dies its session ends,
// the lock is released, and another daemon's next poll takes the job over
// and resumes it from its checkpoints.
type Daemon struct {
	cfg     DaemonConfig
	log     *zap.Logger
	metrics *Metrics

	tuning atomic.Pointer[baseTuning] // backfill/throttle from the config file, reloaded live

	mu      sync.Mutex
	targets []*target
	running int
	wg      sync.WaitGroup
}

type target struct {
	name  string
	pool  *pgxpool.Pool
	store *state.Store
	ddl   *ddl.Executor
	wake  chan struct{}
	jobs  map[int64]context.CancelFunc // run by this daemon
	ready bool
}

type baseTuning struct {
	bf backfill.Config
	th throttle.Config
}

// NewDaemon returns a daemon; metrics may be nil.
func NewDaemon(cfg DaemonConfig, log *zap.Logger, metrics *Metrics) *Daemon {
	d := &Daemon{cfg: cfg, log: log.Named("worker").With(zap.String("worker", cfg.ID)), metrics: metrics}
	d.tuning.Store(&baseTuning{bf: cfg.Backfill, th: cfg.Throttle})
	return d
}

// SetTuning replaces the backfill and throttle settings (a reloaded config
// file); running jobs without a per-job override apply them at their next
// batch.
func (d *Daemon) SetTuning(bf backfill.Config, th throttle.Config) {
	d.tuning.Store(&baseTuning{bf: bf, th: th})
	d.log.Info("backfill and throttle settings reloaded")
}

// Ready reports whether every target is connected.
func (d *Daemon) Ready() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.targets) < len(d.cfg.Targets) {
		return false
	}
	for _, t := range d.targets {
		if !t.ready {
			return false
		}
	}
	return true
}

// Run works until ctx ends, then lets running jobs checkpoint (bounded by
// ShutdownTimeout) and returns.
func (d *Daemon) Run(ctx context.Context) error {
	if len(d.cfg.Targets) == 0 {
		return errors.New("no targets configured (targets: [{name, dsn}])")
	}
	jobsCtx, stopJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopJobs()
	var loops sync.WaitGroup
	for _, tc := range d.cfg.Targets {
		t := &target{name: tc.Name, wake: make(chan struct{}, 1), jobs: map[int64]context.CancelFunc{}}
		d.mu.Lock()
		d.targets = append(d.targets, t)
		d.mu.Unlock()
		loops.Add(1)
		go func() {
			defer loops.Done()
			d.serve(ctx, jobsCtx, t, tc.DSN)
		}()
	}
	d.log.Info("worker started", zap.Int("targets", len(d.cfg.Targets)))
	<-ctx.Done()
	d.log.Info("worker stopping: checkpointing running jobs", zap.Duration("bound", d.cfg.Settings.ShutdownTimeout))
	stopJobs()
	done := make(chan struct{})
	go func() { d.wg.Wait(); loops.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d.cfg.Settings.ShutdownTimeout):
		d.log.Warn("worker stop bound reached with jobs still stopping")
	}
	d.mu.Lock()
	for _, t := range d.targets {
		if t.pool != nil {
			t.pool.Close()
		}
	}
	d.mu.Unlock()
	d.log.Info("worker stopped")
	return nil
}

// serve connects to a target (retrying), then schedules its jobs on every
// poll tick and on every control notification.
func (d *Daemon) serve(ctx, jobsCtx context.Context, t *target, dsn string) {
	log := d.log.With(zap.String("target", t.name))
	for {
		pool, err := Connect(ctx, dsn, int32(d.cfg.Settings.MaxJobs*4+4))
		if err == nil {
			var store *state.Store
			if store, err = state.Open(ctx, pool); err == nil {
				d.mu.Lock()
				t.pool, t.store, t.ddl, t.ready = pool, store, ddl.New(pool, d.cfg.DDL, log), true
				d.mu.Unlock()
				break
			}
			pool.Close()
		}
		if d.cfg.RedactError != nil {
			err = d.cfg.RedactError(err, dsn)
		}
		log.Warn("target not reachable, retrying", zap.Error(err))
		if sleepCtx(ctx, 5*time.Second) != nil {
			return
		}
	}
	sweep := func() {
		if err := Sweep(ctx, t.store, d.cfg.Replication, log); err != nil && ctx.Err() == nil {
			log.Warn("sweep of orphaned replication objects and retained WAL failed", zap.Error(err))
		}
	}
	sweep()
	lastSweep := time.Now()
	go d.listen(ctx, t, log)
	tick := time.NewTicker(d.cfg.Settings.PollInterval)
	defer tick.Stop()
	for {
		if err := d.schedule(ctx, jobsCtx, t, log); err != nil && ctx.Err() == nil {
			log.Warn("scheduling failed", zap.Error(err))
		}
		// Again and again, not only at start: the hard limit of retained
		// WAL must hold for a job whose own process stopped responding.
		if time.Since(lastSweep) >= sweepInterval {
			sweep()
			lastSweep = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.wake:
		}
	}
}

// listen turns NOTIFYs on the control channel into immediate scheduling.
func (d *Daemon) listen(ctx context.Context, t *target, log *zap.Logger) {
	for ctx.Err() == nil {
		conn, err := t.pool.Acquire(ctx)
		if err != nil {
			_ = sleepCtx(ctx, time.Second)
			continue
		}
		_, err = conn.Exec(ctx, "LISTEN "+pgx.Identifier{state.ControlChannel}.Sanitize())
		for err == nil {
			if _, err = conn.Conn().WaitForNotification(ctx); err == nil {
				select {
				case t.wake <- struct{}{}:
				default:
				}
			}
		}
		// The connection may carry the LISTEN: never give it back.
		conn.Hijack().Close(context.WithoutCancel(ctx)) //nolint:errcheck // discarding
		if ctx.Err() == nil {
			log.Debug("listen connection lost; polling meanwhile", zap.Error(err))
			_ = sleepCtx(ctx, time.Second)
		}
	}
}

// schedule starts the jobs that may run now: live jobs in submission
// order, one at a time per table, up to MaxJobs in this daemon.
func (d *Daemon) schedule(ctx, jobsCtx context.Context, t *target, log *zap.Logger) error {
	jobs, err := t.store.List(ctx)
	if err != nil {
		return err
	}
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].ID < jobs[j].ID })
	busy := map[string]bool{}
	for _, j := range jobs {
		if j.Phase.Terminal() {
			continue
		}
		tables := JobTables(j)
		blocked := false
		for _, tb := range tables {
			if busy[tb] {
				blocked = true
			}
			busy[tb] = true
		}
		if blocked || j.Phase == state.PhasePaused || j.Phase == state.PhaseFailed {
			continue
		}
		d.mu.Lock()
		_, mine := t.jobs[j.ID]
		full := d.running >= d.cfg.Settings.MaxJobs
		if !mine && !full {
			jctx, cancel := context.WithCancel(jobsCtx)
			t.jobs[j.ID] = cancel
			d.running++
			d.wg.Add(1)
			go d.runJob(jctx, t, j.ID, log)
		}
		d.mu.Unlock()
	}
	return nil
}

func (d *Daemon) runJob(ctx context.Context, t *target, id int64, log *zap.Logger) {
	defer d.wg.Done()
	defer func() {
		d.mu.Lock()
		t.jobs[id]()
		delete(t.jobs, id)
		d.running--
		d.mu.Unlock()
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}()
	r := &Runner{
		Pool: t.pool, Store: t.store, DDL: t.ddl,
		Backfill: d.cfg.Backfill, Replication: d.cfg.Replication, Throttle: d.cfg.Throttle,
		Log: log, Actor: d.cfg.ID, QuietPeriod: d.cfg.Settings.QuietPeriod,
		Base: func() (backfill.Config, throttle.Config) {
			t := d.tuning.Load()
			return t.bf, t.th
		},
	}
	if d.metrics != nil {
		d.metrics.instrument(r, t.name)
	}
	out, err := r.Run(ctx, id)
	switch {
	case errors.Is(err, ErrJobBusy):
		// Another daemon runs it.
	case errors.Is(err, ErrBlocked):
		log.Debug("job waits for an earlier job on its table", zap.Int64("job", id), zap.Error(err))
	case errors.Is(err, ErrClaimLost):
		// Picked up again at the next poll, unless another daemon has it.
		log.Warn("job claim lost; the job is left for whoever claims it next", zap.Int64("job", id), zap.Error(err))
	case err != nil && ctx.Err() != nil:
		log.Info("job stopped for shutdown; it resumes from its checkpoint", zap.Int64("job", id))
	case err != nil:
		log.Error("job failed", zap.Int64("job", id), zap.Error(err))
	default:
		log.Info("job run ended", zap.Int64("job", id), zap.Stringer("outcome", out))
	}
}

// TargetJob is a job with the name of its target, for /jobs.
type TargetJob struct {
	Target string `json:"target"`
	*state.Job
}

// Jobs lists the jobs of every connected target.
func (d *Daemon) Jobs(ctx context.Context) ([]TargetJob, error) {
	var out []TargetJob
	var errs []error
	for _, t := range d.connected() {
		jobs, err := t.store.List(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("target %s: %w", t.name, err))
			continue
		}
		for _, j := range jobs {
			out = append(out, TargetJob{Target: t.name, Job: j})
		}
	}
	return out, errors.Join(errs...)
}

// connected returns the targets that are connected, safe to use unlocked.
func (d *Daemon) connected() []*target {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*target
	for _, t := range d.targets {
		if t.ready {
			out = append(out, t)
		}
	}
	return out
}

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

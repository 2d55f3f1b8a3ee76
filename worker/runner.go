// Package worker owns running jobs: the phase machine that drives one job
// from pending to completed (or aborted), shared by the one-shot `refit run`
// and the daemon.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/ddl"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/sqlstate"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/throttle"
)

// Outcome says why Run returned without error.
type Outcome int

// Outcomes of Run.
const (
	OutcomeCompleted       Outcome = iota // the job completed
	OutcomeAborted                        // the job was rolled back
	OutcomeWaitingContract                // the job is in the window, waiting for the contract gate
	OutcomePaused                         // the job is paused by the operator
)

func (o Outcome) String() string {
	switch o {
	case OutcomeCompleted:
		return "completed"
	case OutcomeAborted:
		return "aborted"
	case OutcomeWaitingContract:
		return "waiting for the contract gate"
	case OutcomePaused:
		return "paused"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// ErrJobBusy means another process is running the job.
var ErrJobBusy = errors.New("the job is being run by another refit process")

// Runner drives jobs through their phases.
type Runner struct {
	Pool     *pgxpool.Pool
	Store    *state.Store
	DDL      *ddl.Executor
	Backfill backfill.Config
	// Replication configures the sync of the window.
	Replication replication.Config
	// Throttle selects the signals that hold the backfill back.
	Throttle throttle.Config
	// Base, if set, supplies Backfill and Throttle live (the daemon's
	// reloaded config file); per-job settings still apply on top.
	Base func() (backfill.Config, throttle.Config)
	Log  *zap.Logger
	// Actor names who makes transitions in job_events (e.g. "run@host").
	Actor string
	// OnPhase, if set, is called when the job enters a phase (before work).
	OnPhase func(job *state.Job, phase state.Phase)
	// OnBatch, if set, is called after every backfill batch.
	OnBatch func(job *state.Job, p backfill.Progress)
	// OnHeld, if set, is called after each wait of a backfill range on a
	// throttle signal, with the signal and the time waited.
	OnHeld func(jobID int64, reason string, d time.Duration)
	// StopAtWindow makes Run return OutcomeWaitingContract when the job is in
	// the window and its contract gate is closed, instead of staying there to
	// apply the stream until the gate opens.
	StopAtWindow bool
	// GatePoll is how often a job in the window re-reads its gate (default 1s).
	GatePoll time.Duration
	// OnSyncStopped, if set, receives the consumer's final figures (keys
	// applied, commit→apply lags) each time a sync of this runner stops.
	OnSyncStopped func(replication.Stats)
	// OnDrained, if set, is called at contract once the stream has been
	// drained to a sentinel, before the first contract step.
	OnDrained func(job *state.Job)

	// OnSwapLocked, if set, is called inside a swap's transaction once the
	// lock is held and the stream drained, before the swap's statements;
	// OnSwapped after it committed (tests interrupt a run there).
	OnSwapLocked func(job *state.Job)
	OnSwapped    func(job *state.Job)

	// QuietPeriod is, for contract mode auto, how long no application write
	// may have needed syncing before the gate opens by itself.
	QuietPeriod time.Duration
	// ClaimCheck is how often the run checks that the session holding the
	// job's advisory lock is alive (default 1s); see ErrClaimLost.
	ClaimCheck time.Duration

	sync        *syncer     // the running sync of the current Run, if any
	phase       state.Phase // the phase being worked on
	controlMu   sync.Mutex  // the backfill's ranges call control concurrently
	lastControl time.Time
	tuned       atomic.Pointer[tuning] // Backfill/Throttle with the job's settings
	held        heldClock              // time the backfill waited on throttles
}

// heldClock sums, per throttle reason, the time backfill batches waited.
// With parallel ranges each range's waits count, so the sum can exceed the
// wall time.
type heldClock struct {
	mu    sync.Mutex
	total map[string]time.Duration
}

func (h *heldClock) add(reason string, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.total == nil {
		h.total = map[string]time.Duration{}
	}
	h.total[reason] += d
}

// noteHeld records a wait of a backfill range on a throttle signal.
func (r *Runner) noteHeld(jobID int64, reason string, d time.Duration) {
	r.held.add(reason, d)
	if r.OnHeld != nil {
		r.OnHeld(jobID, reason, d)
	}
}

// Held returns how long this runner's backfills waited on each throttle
// signal (the operator's pause not included).
func (r *Runner) Held() map[string]time.Duration {
	r.held.mu.Lock()
	defer r.held.mu.Unlock()
	out := make(map[string]time.Duration, len(r.held.total))
	for k, v := range r.held.total {
		out[k] = v
	}
	return out
}

// tuning is the effective configuration of a job: the runner's base with
// the job's settings (the file's settings key, refit set) on top.
type tuning struct {
	raw string
	bf  backfill.Config
	th  throttle.Config
}

// retune recomputes the effective configuration when the job's settings
// changed; invalid settings are reported and the previous ones kept.
func (r *Runner) retune(log *zap.Logger, job *state.Job) {
	baseBF, baseTH := r.Backfill, r.Throttle
	if r.Base != nil {
		baseBF, baseTH = r.Base()
	}
	raw := fmt.Sprintf("%s|%+v|%+v", job.Settings, baseBF, baseTH)
	if cur := r.tuned.Load(); cur != nil && cur.raw == raw {
		return
	}
	settings, err := ParseSettings(job.Settings)
	if err == nil {
		var bf backfill.Config
		var th throttle.Config
		if bf, th, err = ApplySettings(settings, baseBF, baseTH); err == nil {
			if r.tuned.Load() != nil {
				log.Info("job settings changed", zap.String("settings", raw))
			}
			r.tuned.Store(&tuning{raw: raw, bf: bf, th: th})
			return
		}
	}
	log.Warn("ignoring invalid job settings", zap.String("settings", raw), zap.Error(err))
	if r.tuned.Load() == nil {
		r.tuned.Store(&tuning{raw: raw, bf: baseBF, th: baseTH})
	}
}

// lockNamespace is the first key of the session advisory lock that marks a
// job as being run ("refi").
const lockNamespace = 0x72656669

// Run drives the job until it completes, aborts, waits for the contract
// gate, pauses, or fails. Only one process runs a job at a time: a session
// advisory lock on the job is held for the whole run.
func (r *Runner) Run(ctx context.Context, jobID int64) (Outcome, error) {
	log := r.Log.Named("job").With(zap.Int64("job", jobID))
	conn, err := r.Pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("acquire lock connection: %w", err)
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", int32(lockNamespace), int32(jobID)).Scan(&got); err != nil {
		return 0, fmt.Errorf("lock job %d: %w", jobID, err)
	}
	if !got {
		return 0, ErrJobBusy
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1, $2)", int32(lockNamespace), int32(jobID)); err != nil {
			conn.Conn().Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing releases the lock anyway
		}
	}()

	if n, err := replication.TerminateStale(ctx, r.Pool, jobID); err != nil {
		return 0, fmt.Errorf("end stale sessions of job %d: %w", jobID, err)
	} else if n > 0 {
		log.Warn("ended sessions left by a previous refit process of this job", zap.Int("sessions", n))
	}
	if err := r.Replication.Validate(); err != nil {
		return 0, fmt.Errorf("replication config: %w", err)
	}
	if _, _, err := replication.FailoverSlot(ctx, r.Pool, r.Replication.FailoverSlot); err != nil {
		return 0, err // before anything of the job runs
	}
	if err := r.Throttle.Validate(); err != nil {
		return 0, fmt.Errorf("throttle config: %w", err)
	}
	// The run stops if the sync consumer fails or the claim is lost; the
	// cause says why.
	runCtx, failRun := context.WithCancelCause(ctx)
	defer failRun(nil)
	stopWatch := watchClaim(runCtx, conn, jobID, r.ClaimCheck, failRun)
	defer stopWatch() // before the unlock above uses conn
	defer func() { r.sync.stop(); r.sync = nil }()
	defer func() {
		if !errors.Is(context.Cause(runCtx), ErrClaimLost) { // else it is another process's heartbeat now
			_ = r.Store.Heartbeat(context.WithoutCancel(ctx), jobID, "") //nolint:errcheck // informational
		}
	}()
	for first := true; ; first = false {
		job, err := r.Store.Get(ctx, jobID)
		if err != nil {
			return 0, fmt.Errorf("load job %d: %w", jobID, err)
		}
		if job.Phase == state.PhaseFailed && !first {
			// Failed by another process while this one ran it (the sweep's
			// hard limit on retained WAL): never retried behind its back.
			return 0, r.failedElsewhere(ctx, job, nil)
		}
		if err := r.Store.Heartbeat(ctx, jobID, r.Actor); err != nil {
			return 0, fmt.Errorf("heartbeat: %w", err)
		}
		log := log.With(zap.String("migration", job.Name))
		r.retune(log, job)
		m, facts, err := r.load(ctx, job)
		var next state.Phase
		var outcome Outcome
		var stop bool
		if err == nil {
			plan := migration.BuildPlan(m, facts)
			if err = r.checkPlan(ctx, job, plan); err == nil {
				r.phase = job.Phase
				next, outcome, stop, err = r.step(runCtx, log, job, plan, facts, failRun)
			}
		}
		if errors.Is(err, state.ErrPhaseChanged) && ctx.Err() == nil && context.Cause(runCtx) == nil {
			// An operator (or another process) moved the job: carry on from
			// its new phase.
			log.Info("job phase changed by another actor; reloading")
			continue
		}
		if cause := context.Cause(runCtx); errors.Is(cause, ErrClaimLost) {
			// Whatever this run was doing, the job may be another
			// process's now: leave its state alone.
			log.Error("job claim lost; stopping without changing the job", zap.Stringer("phase", job.Phase), zap.Error(cause))
			return 0, cause
		}
		if err != nil {
			if ctx.Err() != nil {
				// Interrupted (SIGINT/SIGTERM): the checkpoint is in place; resume later.
				return 0, fmt.Errorf("interrupted in %s: %w", job.Phase, ctx.Err())
			}
			if errors.Is(err, ErrBlocked) {
				// Not a failure: the job stays pending behind the earlier one.
				return 0, err
			}
			if cause := context.Cause(runCtx); cause != nil && runCtx.Err() != nil {
				err = cause
			}
			r.sync.stop()
			r.sync = nil
			if errors.Is(err, errRetainedWAL) {
				if derr := replication.Drop(context.WithoutCancel(ctx), r.Pool, jobID); derr != nil {
					err = errors.Join(err, derr)
				}
			}
			log.Error("job failed", zap.Stringer("phase", job.Phase), zap.Error(err))
			if terr := r.Store.Transition(context.WithoutCancel(ctx), jobID, job.Phase, state.PhaseFailed, r.Actor, err.Error()); terr != nil {
				if errors.Is(terr, state.ErrPhaseChanged) {
					if cur, gerr := r.Store.Get(context.WithoutCancel(ctx), jobID); gerr == nil && cur.Phase == state.PhaseFailed {
						return 0, r.failedElsewhere(ctx, cur, err)
					}
				}
				return 0, errors.Join(err, terr)
			}
			return 0, err
		}
		if stop {
			return outcome, nil
		}
		if next != job.Phase {
			err := r.Store.Transition(ctx, jobID, job.Phase, next, r.Actor, "")
			if errors.Is(err, state.ErrPhaseChanged) {
				continue
			}
			if err != nil {
				return 0, err
			}
			log.Info("job phase changed", zap.Stringer("from", job.Phase), zap.Stringer("to", next))
		}
	}
}

// ErrFailedElsewhere means another process failed the job while this one
// ran it (the sweep's hard limit on retained WAL, for a process that had
// stopped responding).
var ErrFailedElsewhere = errors.New("the job was failed by another refit process")

// failedElsewhere reports a job that another process failed meanwhile,
// with who and why from its events, and what this run stopped on (cause,
// may be nil).
func (r *Runner) failedElsewhere(ctx context.Context, job *state.Job, cause error) error {
	actor := "another refit process"
	if events, err := r.Store.Events(context.WithoutCancel(ctx), job.ID); err == nil {
		for i := len(events) - 1; i >= 0; i-- {
			if events[i].To == state.PhaseFailed.String() && events[i].From != state.PhaseFailed.String() {
				actor = events[i].Actor
				break
			}
		}
	}
	err := fmt.Errorf("job %d (%s): %w (%s) while this one ran it: %s; refit run or refit retry resumes it",
		job.ID, job.Name, ErrFailedElsewhere, actor, job.Error)
	if cause != nil {
		return fmt.Errorf("%w (this run then stopped on: %w)", err, cause)
	}
	return err
}

// ErrPlanChanged means the plan a job renders now is not the one it
// started with.
var ErrPlanChanged = errors.New("the job's plan changed since it started")

// checkPlan records the plan's fingerprint when the job starts expanding
// and refuses to go on with a job whose plan renders differently now (a
// refit version that plans the same file otherwise, or a changed stored
// migration): step N of one plan is not step N of another. An abort with
// --force goes on regardless (its undo steps are then best effort).
func (r *Runner) checkPlan(ctx context.Context, job *state.Job, plan *migration.Plan) error {
	if job.Phase == state.PhasePending || job.Phase == state.PhaseFailed || job.Phase.Terminal() {
		return nil // a failed job is checked in the phase it resumes
	}
	fp := plan.Fingerprint()
	stored := job.PlanFingerprint
	if stored == "" {
		if job.Phase != state.PhaseExpanding || job.ExpandStep != 0 {
			return nil // started by a refit before fingerprints: nothing to compare
		}
		var err error
		if stored, err = r.Store.SetPlanFingerprint(ctx, job.ID, fp); err != nil {
			return err
		}
	}
	if stored == fp {
		return nil
	}
	if job.Phase == state.PhaseAborting {
		if force, err := r.Store.ForceAbort(ctx, job.ID); err != nil || force {
			return err
		}
	}
	return fmt.Errorf("job %d (%s) started with plan %.12s…, but this refit plans it as %.12s… (a different refit version or migration): "+
		"finish it with the refit version that started it, or roll it back with refit abort --force %d: %w",
		job.ID, job.Name, stored, fp, job.ID, ErrPlanChanged)
}

// load parses the job's stored migration and facts. A job submitted through
// SQL (refit.submit) has no facts yet: it is validated against the database
// here, and an invalid one fails with the validation error.
func (r *Runner) load(ctx context.Context, job *state.Job) (*migration.Migration, *migration.Facts, error) {
	m, err := migration.Parse(job.File, job.Source)
	if err != nil {
		return nil, nil, err
	}
	if m.Name != job.Name {
		return nil, nil, fmt.Errorf("the job is named %q but its migration is named %q", job.Name, m.Name)
	}
	var facts migration.Facts
	if err := json.Unmarshal(job.Facts, &facts); err != nil {
		return nil, nil, fmt.Errorf("stored facts: %w", err)
	}
	if facts.ServerVersion != 0 || job.Phase != state.PhasePending {
		return m, &facts, nil
	}
	// Settings first: facts stored would skip this check on a retry.
	if _, _, err := ValidateMigrationSettings(ctx, r.Pool, m, r.Backfill, r.Throttle); err != nil {
		return nil, nil, err
	}
	f, err := validate(ctx, r.Pool, m)
	if err != nil {
		return nil, nil, err
	}
	b, err := json.Marshal(f)
	if err != nil {
		return nil, nil, err
	}
	mode := m.Contract
	if mode == "" {
		mode = migration.ContractManual
	}
	if err := r.Store.SetFacts(ctx, job.ID, b, string(mode)); err != nil {
		return nil, nil, err
	}
	if len(m.Settings) > 0 {
		if err := r.Store.SetSettings(ctx, job.ID, m.Settings, r.Actor); err != nil {
			return nil, nil, err
		}
	}
	if job.ContractMode == "" {
		job.ContractMode = string(mode)
	}
	return m, f, nil
}

// control reports state.ErrPhaseChanged when an operator has moved the job
// away from the phase being worked on (pause, abort). It reads the job at
// most every controlInterval, so callers may call it before every batch.
func (r *Runner) control(ctx context.Context, jobID int64) error {
	r.controlMu.Lock()
	if time.Since(r.lastControl) < controlInterval {
		r.controlMu.Unlock()
		return nil
	}
	r.lastControl = time.Now()
	r.controlMu.Unlock()
	job, err := r.Store.Get(ctx, jobID)
	if err != nil {
		return err
	}
	r.retune(r.Log.Named("job").With(zap.Int64("job", jobID)), job)
	if job.Phase != r.phase {
		return fmt.Errorf("job %d is now %s: %w", jobID, job.Phase, state.ErrPhaseChanged)
	}
	return nil
}

const controlInterval = 500 * time.Millisecond

// step does the work of the job's current phase and says where to go next.
func (r *Runner) step(ctx context.Context, log *zap.Logger, job *state.Job, plan *migration.Plan, facts *migration.Facts, failRun context.CancelCauseFunc) (next state.Phase, outcome Outcome, stop bool, err error) {
	if r.OnPhase != nil && !job.Phase.Terminal() {
		r.OnPhase(job, job.Phase)
	}
	switch job.Phase {
	case state.PhasePending:
		if err := checkBlocked(ctx, r.Store, job); err != nil {
			return 0, 0, false, err
		}
		return state.PhaseExpanding, 0, false, nil

	case state.PhaseExpanding:
		if err := r.runSteps(ctx, log, job.ID, plan.Expand, job.ExpandStep, state.ExpandStep); err != nil {
			return 0, 0, false, err
		}
		return state.PhaseBackfilling, 0, false, nil

	case state.PhaseBackfilling:
		tgts, err := targets(plan, facts)
		if err != nil {
			return 0, 0, false, err
		}
		if len(tgts) > 0 {
			// The slot exists before the first batch: no gap between the
			// backfill (live rows) and the stream (everything after).
			if err := r.prepareReplication(ctx, log, job, tgts); err != nil {
				return 0, 0, false, err
			}
			if r.sync == nil {
				r.sync = r.startSync(ctx, log, job, tgts, failRun)
			}
		}
		if err := r.backfill(ctx, log, job, plan, facts); err != nil {
			return 0, 0, false, err
		}
		if r.sync != nil && job.PostStep < len(plan.PostBackfill) {
			// Indexes (a unique one above all) must see the new columns as
			// of now, including writes that wait in the stream.
			if err := r.sync.consumer.Drain(ctx); err != nil {
				return 0, 0, false, err
			}
		}
		if err := r.runSteps(ctx, log, job.ID, plan.PostBackfill, job.PostStep, state.PostStep); err != nil {
			return 0, 0, false, err
		}
		return state.PhaseSyncing, 0, false, nil

	case state.PhaseSyncing:
		tgts, err := targets(plan, facts)
		if err != nil {
			return 0, 0, false, err
		}
		if len(tgts) > 0 && r.sync == nil {
			info, err := replication.Slot(ctx, r.Pool, job.ID)
			if err != nil {
				return 0, 0, false, err
			}
			if !info.Exists {
				log.Warn("replication slot is gone: backfilling again to cover the gap")
				return state.PhaseBackfilling, 0, false, nil
			}
			r.sync = r.startSync(ctx, log, job, tgts, failRun)
		}
		return r.window(ctx, job)

	case state.PhaseContracting:
		tgts, err := targets(plan, facts)
		if err != nil {
			return 0, 0, false, err
		}
		again, err := r.contract(ctx, log, job, plan, tgts, failRun)
		if err != nil {
			return 0, 0, false, err
		}
		if again {
			return state.PhaseBackfilling, 0, false, nil
		}
		r.sync.stop()
		r.sync = nil
		if err := replication.Drop(ctx, r.Pool, job.ID); err != nil {
			return 0, 0, false, err
		}
		err = pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
			if err := state.RecordAppliedTx(ctx, tx, job.Name, job.Checksum, job.ID); err != nil {
				return err
			}
			return state.TransitionTx(ctx, tx, job.ID, state.PhaseContracting, state.PhaseCompleted, r.Actor, "")
		})
		if err != nil {
			return 0, 0, false, fmt.Errorf("complete job: %w", err)
		}
		log.Info("job phase changed", zap.Stringer("from", state.PhaseContracting), zap.Stringer("to", state.PhaseCompleted))
		return 0, OutcomeCompleted, true, nil

	case state.PhaseCompleted:
		return 0, OutcomeCompleted, true, nil

	case state.PhaseAborting:
		r.sync.stop()
		r.sync = nil
		// The slot goes first: an abort whose undo fails must not keep
		// retaining WAL while the operator sorts it out.
		if err := replication.Drop(ctx, r.Pool, job.ID); err != nil {
			return 0, 0, false, err
		}
		force, err := r.Store.ForceAbort(ctx, job.ID)
		if err != nil {
			return 0, 0, false, err
		}
		if err := r.rollback(ctx, log, job, plan, force); err != nil {
			return 0, 0, false, err
		}
		return state.PhaseAborted, 0, false, nil

	case state.PhaseAborted:
		return 0, OutcomeAborted, true, nil

	case state.PhasePaused:
		return 0, OutcomePaused, true, nil

	case state.PhaseFailed:
		if job.ResumePhase == nil {
			return 0, 0, false, errors.New("failed job has no phase to resume")
		}
		log.Info("retrying failed job", zap.Stringer("resume_phase", *job.ResumePhase), zap.String("error", job.Error))
		return *job.ResumePhase, 0, false, nil
	}
	return 0, 0, false, fmt.Errorf("job %d is in unknown phase %s", job.ID, job.Phase)
}

// window keeps the job in the window, applying the stream, until its
// contract gate opens or an operator moves it (abort, pause).
func (r *Runner) window(ctx context.Context, job *state.Job) (state.Phase, Outcome, bool, error) {
	poll := r.GatePoll
	if poll <= 0 {
		poll = time.Second
	}
	entered := time.Now()
	for {
		if job.ContractOpen || job.ContractMode == string(migration.ContractNow) || r.quiet(job, entered) {
			return state.PhaseContracting, 0, false, nil
		}
		if r.StopAtWindow {
			return 0, OutcomeWaitingContract, true, nil
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, 0, false, ctx.Err()
		case <-t.C:
		}
		cur, err := r.Store.Get(ctx, job.ID)
		if err != nil {
			return 0, 0, false, err
		}
		if cur.Phase != state.PhaseSyncing {
			// Moved by an operator: no transition here; Run reloads the job
			// and carries on from its new phase.
			return state.PhaseSyncing, 0, false, nil
		}
		job = cur
	}
}

// syncBroken reports whether one of the first n contract steps broke sync.
func (r *Runner) syncBroken(plan *migration.Plan, n int) bool {
	for _, s := range plan.Contract[:min(n, len(plan.Contract))] {
		if s.BreaksSync {
			return true
		}
	}
	return false
}

// contract runs the contract steps. Until a step that breaks sync, the
// consumer keeps applying the stream: it is drained to a sentinel before the
// first step, and if a step such as VALIDATE finds a row that violates the
// new constraint (a late write of an old application version), it is
// drained again and the step retried, a few times, before the job fails.
//
// It returns backfillAgain when the slot was lost before any contract step:
// then the gap is covered by backfilling again.
func (r *Runner) contract(ctx context.Context, log *zap.Logger, job *state.Job, plan *migration.Plan, tgts []replication.Target, failRun context.CancelCauseFunc) (backfillAgain bool, err error) {
	if len(tgts) > 0 && !r.syncBroken(plan, job.ContractStep) {
		info, err := replication.Slot(ctx, r.Pool, job.ID)
		if err != nil {
			return false, err
		}
		switch {
		case !info.Exists && job.ContractStep == 0:
			log.Warn("replication slot is gone before contract: backfilling again to cover the gap")
			return true, r.Store.ResetBackfill(ctx, job.ID)
		case info.Exists:
			if r.sync == nil {
				r.sync = r.startSync(ctx, log, job, tgts, failRun)
			}
			if err := r.sync.consumer.Drain(ctx); err != nil {
				return false, err
			}
		}
	}
	if r.OnDrained != nil && job.ContractStep == 0 {
		r.OnDrained(job)
	}
	for i := job.ContractStep; i < len(plan.Contract); i++ {
		s := plan.Contract[i]
		switch {
		case s.Verify != nil:
			log.Info("running step", zap.String("stage", string(state.ContractStep)), zap.Int("step", i+1), zap.Int("of", len(plan.Contract)), zap.String("verify", s.SQL))
			if err := r.verify(ctx, log, job, s, i+1); err != nil {
				return false, r.stepError(ctx, s, err)
			}
			continue
		case s.Swap != nil:
			log.Info("running step", zap.String("stage", string(state.ContractStep)), zap.Int("step", i+1), zap.Int("of", len(plan.Contract)), zap.String("swap", s.SQL))
			if err := r.swap(ctx, log, job, s, i+1); err != nil {
				return false, r.stepError(ctx, s, err)
			}
			// The stream ends with the swap: it derived the shadow, which
			// the application now writes itself.
			r.sync.stop()
			r.sync = nil
			continue
		}
		if s.BreaksSync && r.sync != nil {
			if err := r.sync.consumer.Drain(ctx); err != nil {
				return false, err
			}
			r.sync.stop()
			r.sync = nil
		}
		n := i + 1
		log.Info("running step", zap.String("stage", string(state.ContractStep)), zap.Int("step", n), zap.Int("of", len(plan.Contract)), zap.String("sql", s.SQL))
		for attempt := 1; ; attempt++ {
			err := r.DDL.Run(ctx, statement(s), func(ctx context.Context, tx pgx.Tx) error {
				return state.SetStepTx(ctx, tx, job.ID, state.ContractStep, n)
			})
			if err == nil {
				break
			}
			if r.sync == nil || attempt >= 3 || !sqlstate.Is(err, sqlstate.CheckViolation, sqlstate.NotNullViolation, sqlstate.ForeignKeyViolation) {
				return false, r.stepError(ctx, s, err)
			}
			log.Warn("a row violates the new constraint: draining the stream again and retrying", zap.Int("attempt", attempt), zap.Error(err))
			if err := r.sync.consumer.Drain(ctx); err != nil {
				return false, err
			}
		}
	}
	return false, nil
}

// quiet reports whether the auto contract gate opens: no application write
// has needed syncing (changed a row when applied) for QuietPeriod.
func (r *Runner) quiet(job *state.Job, entered time.Time) bool {
	if job.ContractMode != string(migration.ContractAuto) || r.QuietPeriod <= 0 {
		return false
	}
	last := entered
	if job.Sync.ChangedAt != nil && job.Sync.ChangedAt.After(last) {
		last = *job.Sync.ChangedAt
	}
	return time.Since(last) >= r.QuietPeriod
}

// runSteps runs steps[from:], checkpointing each one.
func (r *Runner) runSteps(ctx context.Context, log *zap.Logger, jobID int64, steps []migration.Step, from int, col state.StepColumn) error {
	for i := from; i < len(steps); i++ {
		s := steps[i]
		n := i + 1
		log.Info("running step", zap.String("stage", string(col)), zap.Int("step", n), zap.Int("of", len(steps)), zap.String("sql", s.SQL))
		err := r.DDL.Run(ctx, statement(s), func(ctx context.Context, tx pgx.Tx) error {
			return state.SetStepTx(ctx, tx, jobID, col, n)
		})
		if err != nil {
			return r.stepError(ctx, s, err)
		}
	}
	return nil
}

// stepError names the operation of a failed step and, where the step knows
// how to find them, the rows that made it fail.
func (r *Runner) stepError(ctx context.Context, s migration.Step, err error) error {
	if s.Violations != nil && sqlstate.Is(err, sqlstate.CheckViolation, sqlstate.NotNullViolation, sqlstate.ForeignKeyViolation, sqlstate.UniqueViolation) {
		if report, rerr := s.Violations.Report(context.WithoutCancel(ctx), r.Pool); rerr == nil && report != "" {
			return fmt.Errorf("operations[%d] (%s): %s: %w", s.Op, s.Kind, report, err)
		}
	}
	return fmt.Errorf("operations[%d] (%s): %w", s.Op, s.Kind, err)
}

func statement(s migration.Step) ddl.Statement {
	return ddl.Statement{SQL: s.SQL, Args: s.Args, Description: s.Description,
		Transactional: s.Transactional, LongRunning: s.LongRunning, Index: s.Index}
}

func (r *Runner) backfill(ctx context.Context, log *zap.Logger, job *state.Job, plan *migration.Plan, facts *migration.Facts) error {
	if len(plan.Backfills) == 0 {
		return nil
	}
	var total int64
	for _, b := range plan.Backfills {
		n, err := backfill.EstimateRows(ctx, r.Pool, b.Table)
		if err != nil {
			return err
		}
		total += n
	}
	if err := r.Store.SetRowsTotal(ctx, job.ID, total); err != nil {
		return err
	}
	job.RowsTotal = total
	tuned := r.tuned.Load()
	bf := backfill.New(r.Pool, r.Store, job.ID, tuned.bf, r.Log)
	bf.Session = r.tagSession(job.ID)
	bf.Tune = func() backfill.Config { return r.tuned.Load().bf }
	th := throttle.New(r.Pool, tuned.th)
	th.SetJob(job.ID) // throttle.max_app_lock_wait: waits on this job's sessions
	bf.Throttle = func(ctx context.Context) error {
		if err := r.control(ctx, job.ID); err != nil {
			return err
		}
		if err := r.sync.throttle(ctx); err != nil {
			return err
		}
		var since time.Time
		var last string
		return th.Wait(ctx, func(reason string) {
			if reason != "" {
				log.Info("backfill throttled", zap.String("throttled_by", reason))
				if since.IsZero() {
					since = time.Now()
				}
				last = reason
			} else if !since.IsZero() {
				r.noteHeld(job.ID, last, time.Since(since))
				since = time.Time{}
			}
			_ = r.Store.SetThrottled(context.WithoutCancel(ctx), job.ID, reason) //nolint:errcheck // status only
		}, func() error {
			// While held, keep reading control and settings: a pause, an
			// abort or a refit set that lifts the limit acts at once.
			if err := r.control(ctx, job.ID); err != nil {
				return err
			}
			th.SetConfig(r.tuned.Load().th)
			return nil
		})
	}
	bf.OnBatch = func(p backfill.Progress) {
		th.Observe(p.BatchRows)
		if r.OnBatch != nil {
			r.OnBatch(job, p)
		}
	}
	for _, b := range plan.Backfills {
		tf := facts.Table(b.Table)
		if tf == nil {
			return fmt.Errorf("no facts recorded for table %s", b.Table)
		}
		start := time.Now()
		if err := bf.Run(ctx, backfill.Table{Name: b.Table, Key: tf.Key, Sets: b.Sets}); err != nil {
			return err
		}
		var held time.Duration
		for _, d := range r.Held() {
			held += d
		}
		log.Info("table backfilled", zap.String("table", b.Table.String()), zap.Duration("elapsed", time.Since(start)),
			zap.Duration("throttled", held))
	}
	return nil
}

// rollback undoes expand (and post-backfill) in reverse order. A rollback
// step runs only if the forward step it undoes may have run: transactional
// forward steps ran iff their checkpoint says so; a non-transactional one
// may have run if it was the one in flight.
//
// With force (refit abort --force) an undo step that fails is skipped, with
// an event naming it, so a broken sql down cannot make a job impossible to
// abort.
func (r *Runner) rollback(ctx context.Context, log *zap.Logger, job *state.Job, plan *migration.Plan, force bool) error {
	forward := plan.Forward()
	done := job.ExpandStep
	if done == len(plan.Expand) {
		done += job.PostStep
	}
	for i := job.RollbackStep; i < len(plan.Rollback); i++ {
		s := plan.Rollback[i]
		n := i + 1
		ran := s.Requires < done || (s.Requires == done && s.Requires < len(forward) && !forward[s.Requires].Transactional)
		if !ran {
			if err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error { return state.SetStepTx(ctx, tx, job.ID, state.RollbackStep, n) }); err != nil {
				return err
			}
			continue
		}
		log.Info("running rollback step", zap.Int("step", n), zap.Int("of", len(plan.Rollback)), zap.String("sql", s.SQL))
		err := r.DDL.Run(ctx, statement(s), func(ctx context.Context, tx pgx.Tx) error {
			return state.SetStepTx(ctx, tx, job.ID, state.RollbackStep, n)
		})
		if err != nil && force && ctx.Err() == nil {
			log.Warn("rollback step failed; skipped (abort --force)", zap.Int("step", n), zap.Int("op", s.Op), zap.String("kind", s.Kind), zap.Error(err))
			msg := fmt.Sprintf("abort --force skipped rollback step %d of %d, operations[%d] (%s): %s: %v", n, len(plan.Rollback), s.Op, s.Kind, s.Description, err)
			err = pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
				if err := state.EventTx(ctx, tx, job.ID, r.Actor, msg); err != nil {
					return err
				}
				return state.SetStepTx(ctx, tx, job.ID, state.RollbackStep, n)
			})
		}
		if err != nil {
			return fmt.Errorf("rollback of operations[%d] (%s): %w", s.Op, s.Kind, err)
		}
	}
	return r.Store.ResetBackfill(ctx, job.ID)
}

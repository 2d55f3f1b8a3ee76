package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/ddl"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

func newRunCmd(a *app) *cobra.Command {
	var contract string
	var exitAtWindow bool
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Run a migration in the foreground: expand, backfill, contract",
		Long: `Run a migration in the foreground. refit validates it against the database,
expands the schema, creates a publication and a logical replication slot,
backfills the new columns in batches while the stream keeps them in sync with
every write to the old ones, and then stays in the window, applying the
stream, until the contract gate opens: at once with --contract now, or when
someone runs 'refit complete JOB' with --contract manual. Then it drains the
stream and contracts. Re-running the same file resumes an interrupted or
failed job from its checkpoint; an applied migration is a no-op.`,
		Example: `  refit run examples/split_full_name.yaml --dsn postgres://app@db/app --contract now`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			pool, m, sub, err := a.submit(ctx, args[0], contract, "run")
			if err != nil {
				return err
			}
			defer pool.Close()
			if sub.AlreadyApplied {
				fmt.Fprintf(a.out, "migration %q is already applied (same checksum): nothing to do\n", m.Name)
				return nil
			}
			if sub.Resumed {
				fmt.Fprintf(a.out, "resuming job %d (%s) from phase %s\n", sub.Job.ID, sub.Job.Name, sub.Job.Phase)
			} else {
				fmt.Fprintf(a.out, "created job %d for migration %q (contract: %s)\n", sub.Job.ID, sub.Job.Name, sub.Job.ContractMode)
			}
			store, err := state.Open(ctx, pool)
			if err != nil {
				return err
			}
			if err := worker.Sweep(ctx, store, a.cfg.Replication, a.log); err != nil {
				a.log.Warn("sweeping orphaned replication objects failed", zap.Error(err))
			}
			p := newProgress(a.out)
			r := a.runner(pool, store, p)
			r.StopAtWindow = exitAtWindow
			if sub.Job.ContractMode == string(migration.ContractManual) && !exitAtWindow {
				fmt.Fprintf(a.out, "the job will wait in the window, keeping new columns in sync, until: refit complete %d\n", sub.Job.ID)
			}
			outcome, err := r.Run(ctx, sub.Job.ID)
			p.flush()
			if errors.Is(err, worker.ErrBlocked) {
				if !sub.Resumed {
					// This run created the job: do not leave it queued
					// behind the other one for a worker to run later.
					if aerr := a.abortPending(ctx, r, store, sub.Job.ID, err.Error()); aerr != nil {
						return errors.Join(err, aerr)
					}
				}
				return jobEnded{exitBlocked, err.Error()}
			}
			if err != nil {
				return err
			}
			switch outcome {
			case worker.OutcomeAborted:
				return jobEnded{exitAborted, fmt.Sprintf("job %d (%s): aborted; the migration was not applied", sub.Job.ID, sub.Job.Name)}
			case worker.OutcomePaused:
				return jobEnded{exitPaused, fmt.Sprintf("job %d (%s): paused by an operator; it has not finished (refit resume %d)", sub.Job.ID, sub.Job.Name, sub.Job.ID)}
			case worker.OutcomeWaitingContract:
				fmt.Fprintf(a.out, "job %d is in the window (phase syncing), waiting for the contract gate.\n"+
					"Until a refit process runs it again its slot retains WAL. When no application version uses the old shape any more:\n"+
					"  refit complete %d      (or: refit run %s --contract now)\n", sub.Job.ID, sub.Job.ID, args[0])
			default:
				fmt.Fprintf(a.out, "job %d (%s): %s\n", sub.Job.ID, sub.Job.Name, outcome)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&contract, "contract", "", "contract gate: now or manual (default: the file's contract key, else manual)")
	cmd.Flags().BoolVar(&exitAtWindow, "exit-at-window", false, "exit once the job is in the window instead of staying to sync until 'refit complete'")
	cmd.Flags().Int("batch-size", 0, "rows per backfill batch (backfill.batch_size)")
	cmd.Flags().Duration("lock-timeout", 0, "lock_timeout of every DDL and batch (ddl.lock_timeout)")
	return cmd
}

// abortPending ends a pending job that never started (aborting → aborted,
// nothing to roll back).
func (a *app) abortPending(ctx context.Context, r *worker.Runner, store *state.Store, id int64, why string) error {
	if err := store.Transition(ctx, id, state.PhasePending, state.PhaseAborting, actor("run"), why); err != nil {
		return err
	}
	_, err := r.Run(ctx, id)
	return err
}

// runner builds the phase runner from the configuration.
func (a *app) runner(pool *pgxpool.Pool, store *state.Store, p *progress) *worker.Runner {
	r := &worker.Runner{
		Pool:        pool,
		Store:       store,
		DDL:         ddl.New(pool, a.cfg.DDL, a.log),
		Backfill:    a.cfg.Backfill,
		Replication: a.cfg.Replication,
		Throttle:    a.cfg.Throttle,
		Log:         a.log,
		Actor:       actor("run"),
	}
	if p != nil {
		r.OnPhase = p.phase
		r.OnBatch = p.batch
	}
	return r
}

func actor(cmd string) string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return fmt.Sprintf("%s@%s/%d", cmd, host, os.Getpid())
}

// progress prints phase changes and, at most once a second, a backfill line
// with rows done/total, rows/s and ETA.
type progress struct {
	mu        sync.Mutex
	w         io.Writer
	start     time.Time
	startRows int64
	last      time.Time
	lastLine  string
	pending   bool
}

func newProgress(w io.Writer) *progress { return &progress{w: w} }

func (p *progress) phase(job *state.Job, ph state.Phase) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "phase %s\n", ph)
	if ph == state.PhaseBackfilling {
		p.start, p.startRows = time.Now(), job.RowsDone
	}
}

func (p *progress) batch(job *state.Job, b backfill.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.start.IsZero() {
		p.start, p.startRows = now, 0
	}
	elapsed := now.Sub(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(b.RowsDone-p.startRows) / elapsed
	}
	total := max(job.RowsTotal, b.RowsDone)
	eta := "?"
	if rate > 0 {
		eta = (time.Duration(float64(total-b.RowsDone)/rate) * time.Second).Round(time.Second).String()
	}
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(b.RowsDone) / float64(total)
	}
	p.lastLine = fmt.Sprintf("backfill %s: %d/%d rows (%.1f%%), %.0f rows/s, ETA %s, %d rows changed",
		b.Table, b.RowsDone, total, pct, rate, eta, b.RowsUpdated)
	p.pending = true
	if now.Sub(p.last) >= time.Second {
		fmt.Fprintln(p.w, p.lastLine)
		p.last, p.pending = now, false
	}
}

func (p *progress) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending {
		fmt.Fprintln(p.w, p.lastLine)
		p.pending = false
	}
}

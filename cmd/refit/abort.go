package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

func newAbortCmd(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "abort JOB",
		Short: "Roll a job back (only before contract) and drop what expand created",
		Long: `Abort a job that has not reached contract: its expand is undone in reverse
order (indexes, new columns, enum types, seeded rows with a key) and the job
ends as aborted. JOB is a job id (#ID) or a migration name. After contract
there is no rollback: fix forward with a new migration.

The replication slot and publication are dropped first, so an abort whose undo
fails does not keep retaining WAL. With --force an undo step that fails (a
broken sql down, an object someone already dropped) is skipped, with an event
in job_events naming it; check what it should have undone by hand.`,
		Example: `  refit abort split_full_name
  refit abort --force '#16384000002'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return a.withJob(ctx, args[0], func(pool *pgxpool.Pool, store *state.Store, job *state.Job) error {
				switch {
				case job.Phase == state.PhaseAborted:
					fmt.Fprintf(a.out, "job %d (%s) is already aborted\n", job.ID, job.Name)
					return nil
				}
				if err := worker.Abortable(job); err != nil {
					return err
				}
				if force {
					if err := store.SetForceAbort(ctx, job.ID, actor("abort")); err != nil {
						return err
					}
				}
				if job.Phase != state.PhaseAborting {
					if err := store.Transition(ctx, job.ID, job.Phase, state.PhaseAborting, actor("abort"), "abort requested"); err != nil {
						return err
					}
				}
				outcome, err := a.runner(pool, store, nil).Run(ctx, job.ID)
				if errors.Is(err, worker.ErrJobBusy) {
					// A worker runs the job: it sees the abort within a second.
					fmt.Fprintf(a.out, "job %d (%s): the process running it is rolling it back…\n", job.ID, job.Name)
					return waitPhase(ctx, store, job.ID, state.PhaseAborted, 10*time.Minute, a.out)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "job %d (%s): %s\n", job.ID, job.Name, outcome)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "skip an undo step that fails (recorded in job_events) instead of failing the abort")
	return cmd
}

// waitPhase polls a job until it reaches want, fails, or timeout passes.
func waitPhase(ctx context.Context, store *state.Store, id int64, want state.Phase, timeout time.Duration, out io.Writer) error {
	deadline := time.Now().Add(timeout)
	for {
		job, err := store.Get(ctx, id)
		if err != nil {
			return err
		}
		switch {
		case job.Phase == want:
			fmt.Fprintf(out, "job %d (%s): %s\n", job.ID, job.Name, job.Phase)
			return nil
		case job.Phase == state.PhaseFailed:
			return fmt.Errorf("job %d (%s) failed: %s", job.ID, job.Name, job.Error)
		case time.Now().After(deadline):
			return fmt.Errorf("job %d (%s) is still %s after %s", job.ID, job.Name, job.Phase, timeout)
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

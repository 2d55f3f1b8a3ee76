package main

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/state"
)

func newPauseCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "pause JOB",
		Short: "Pause a job: the process running it stops at its next checkpoint",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withJob(cmd.Context(), args[0], func(_ *pgxpool.Pool, store *state.Store, job *state.Job) error {
				if job.Phase.Terminal() || job.Phase == state.PhasePaused || job.Phase == state.PhaseFailed {
					return fmt.Errorf("job %d (%s) is %s: nothing to pause", job.ID, job.Name, job.Phase)
				}
				if err := store.Transition(cmd.Context(), job.ID, job.Phase, state.PhasePaused, actor("pause"), "paused by operator"); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "job %d (%s) paused in %s; resume with: refit resume %d\n", job.ID, job.Name, job.Phase, job.ID)
				return nil
			})
		},
	}
}

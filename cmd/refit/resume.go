package main

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/state"
)

func newResumeCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "resume JOB",
		Short: "Resume a paused job where it stopped",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withJob(cmd.Context(), args[0], func(_ *pgxpool.Pool, store *state.Store, job *state.Job) error {
				if job.Phase != state.PhasePaused || job.ResumePhase == nil {
					return fmt.Errorf("job %d (%s) is %s, not paused", job.ID, job.Name, job.Phase)
				}
				if err := store.Transition(cmd.Context(), job.ID, state.PhasePaused, *job.ResumePhase, actor("resume"), "resumed by operator"); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "job %d (%s) resumed in %s\n", job.ID, job.Name, *job.ResumePhase)
				return nil
			})
		},
	}
}

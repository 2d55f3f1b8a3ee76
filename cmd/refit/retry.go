package main

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/state"
)

func newRetryCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "retry JOB",
		Short: "Resume a failed job from its checkpoint",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withJob(cmd.Context(), args[0], func(_ *pgxpool.Pool, store *state.Store, job *state.Job) error {
				if job.Phase != state.PhaseFailed || job.ResumePhase == nil {
					return fmt.Errorf("job %d (%s) is %s, not failed", job.ID, job.Name, job.Phase)
				}
				if err := store.Transition(cmd.Context(), job.ID, state.PhaseFailed, *job.ResumePhase, actor("retry"), "retry after: "+job.Error); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "job %d (%s) will resume in %s (last error: %s)\n", job.ID, job.Name, *job.ResumePhase, oneLine(job.Error))
				return nil
			})
		},
	}
}

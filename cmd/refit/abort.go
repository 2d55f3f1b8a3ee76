package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/state"
)

func newAbortCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "abort JOB",
		Short: "Roll a job back (only before contract) and drop what expand created",
		Long: `Abort a job that has not reached contract: its expand is undone in reverse
order (indexes, new columns, enum types, seeded rows with a key) and the job
ends as aborted. JOB is a job id or a migration name. After contract there is
no rollback: fix forward with a new migration.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			pool, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer pool.Close()
			store, err := state.Open(ctx, pool)
			if err != nil {
				return err
			}
			job, err := store.Find(ctx, args[0])
			if err != nil {
				return fmt.Errorf("job %s: %w", args[0], err)
			}
			switch {
			case job.Phase == state.PhaseAborted:
				fmt.Fprintf(a.out, "job %d (%s) is already aborted\n", job.ID, job.Name)
				return nil
			case !job.Phase.Abortable() || (job.ResumePhase != nil && !job.ResumePhase.Abortable()):
				return fmt.Errorf("job %d (%s) is %s: contract has started, so it cannot be rolled back; fix forward with a new migration", job.ID, job.Name, job.Phase)
			}
			if job.Phase != state.PhaseAborting {
				if err := store.Transition(ctx, job.ID, job.Phase, state.PhaseAborting, actor("abort"), "abort requested"); err != nil {
					return err
				}
			}
			outcome, err := a.runner(pool, store, nil).Run(ctx, job.ID)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "job %d (%s): %s\n", job.ID, job.Name, outcome)
			return nil
		},
	}
}

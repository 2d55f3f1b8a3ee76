package main

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

func newCompleteCmd(a *app) *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:   "complete JOB",
		Short: "Open the contract gate of a job in the window",
		Long: `Open the contract gate: the application no longer uses the old shape, so the
job may drain the stream and contract. The process running the job (a
'refit run' waiting in the window, or a worker) notices within a second. If no
process runs the job, 'complete' runs the contract itself in the foreground
(unless --no-wait). JOB is a job id or a migration name.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return a.withJob(ctx, args[0], func(pool *pgxpool.Pool, store *state.Store, job *state.Job) error {
				if job.Phase.Terminal() {
					return fmt.Errorf("job %d (%s) is already %s", job.ID, job.Name, job.Phase)
				}
				if err := store.OpenContract(ctx, job.ID, actor("complete")); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "contract gate of job %d (%s) opened\n", job.ID, job.Name)
				if noWait {
					return nil
				}
				outcome, err := a.runner(pool, store, newProgress(a.out)).Run(ctx, job.ID)
				if errors.Is(err, worker.ErrJobBusy) {
					fmt.Fprintln(a.out, "another refit process runs the job; it will contract now")
					return nil
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "job %d (%s): %s\n", job.ID, job.Name, outcome)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "only open the gate; do not run the contract here")
	return cmd
}

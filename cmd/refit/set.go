package main

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

func newSetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "set JOB key=value...",
		Short: "Retune a job while it runs (takes effect at its next batch)",
		Long: "Change a job's settings while it runs; the process running it applies them at the next batch.\n" +
			"Tunable keys: " + strings.Join(worker.TunableKeys(), ", ") + ".\n" +
			"backfill.parallelism applies to a backfill that has not split its key range yet.",
		Example: `  refit set split_full_name backfill.batch_size=2000 backfill.target_batch_time=100ms
  refit set 42 throttle.max_rows_per_second=20000`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			settings := map[string]string{}
			for _, kv := range args[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageError{fmt.Errorf("%q: want key=value", kv)}
				}
				settings[k] = v
			}
			return a.withJob(cmd.Context(), args[0], func(pool *pgxpool.Pool, store *state.Store, job *state.Job) error {
				if job.Phase.Terminal() {
					return fmt.Errorf("job %d (%s) is %s", job.ID, job.Name, job.Phase)
				}
				current, err := worker.ParseSettings(job.Settings)
				if err != nil {
					return err
				}
				for k, v := range settings {
					current[k] = v
				}
				if _, _, err := worker.ApplySettings(current, a.cfg.Backfill, a.cfg.Throttle); err != nil {
					return usageError{err}
				}
				// The job's database runs the throttle query once, read-only.
				if _, _, err := worker.ValidateSettings(cmd.Context(), pool, current, a.cfg.Backfill, a.cfg.Throttle); err != nil {
					return invalidSetting(err)
				}
				if err := store.SetSettings(cmd.Context(), job.ID, settings, actor("set")); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "job %d (%s): %s (applied at the next batch)\n", job.ID, job.Name, strings.Join(args[1:], " "))
				return nil
			})
		},
	}
}

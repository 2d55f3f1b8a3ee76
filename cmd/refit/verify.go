package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
)

func newVerifyCmd(a *app) *cobra.Command {
	var settle time.Duration
	cmd := &cobra.Command{
		Use:   "verify JOB",
		Short: "Compare every shadow column of a job with its expression over the row",
		Long: `Read the tables of a job that changes columns through a shadow (alter_column)
in key order and compare, row by row, the shadow column with its using
expression over the live row: what the swap will put in place. It changes
nothing and runs beside the application and the sync. Rows that differ are
checked again after --settle (the sync may not have applied a write yet);
the ones that still differ are listed with sample keys and the command
exits 1. The same check runs by itself before each swap, which never starts
with a known mismatch. JOB is a job id or a migration name.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return a.withJob(ctx, args[0], func(pool *pgxpool.Pool, _ *state.Store, job *state.Job) error {
				m, err := migration.Parse(job.File, job.Source)
				if err != nil {
					return fmt.Errorf("job %d: %w", job.ID, err)
				}
				var facts migration.Facts
				if err := json.Unmarshal(job.Facts, &facts); err != nil || len(facts.Tables) == 0 {
					return fmt.Errorf("job %d (%s) has not been validated against the database yet (phase %s): nothing to verify", job.ID, job.Name, job.Phase)
				}
				var checks []*migration.Verify
				for _, s := range migration.BuildPlan(m, &facts).Contract {
					if s.Verify != nil {
						checks = append(checks, s.Verify)
					}
				}
				if len(checks) == 0 {
					return fmt.Errorf("job %d (%s) has no shadow column to verify", job.ID, job.Name)
				}
				var failed []string
				for _, v := range checks {
					var exists bool
					if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped)`,
						v.Table.Quoted(), v.Column).Scan(&exists); err != nil {
						return err
					}
					if !exists {
						fmt.Fprintf(a.out, "%s.%s: not there (before expand, or swapped into place already)\n", v.Table, v.Column)
						continue
					}
					start := time.Now()
					mm, err := backfill.Verify(ctx, pool, v.Table, v.Key, v.Column, v.Expr, a.cfg.Backfill.BatchSize)
					if err != nil {
						return err
					}
					keys := mm.Keys
					if mm.Rows > 0 {
						t := time.NewTimer(settle)
						select {
						case <-ctx.Done():
							t.Stop()
							return ctx.Err()
						case <-t.C:
						}
						if keys, err = backfill.Recheck(ctx, pool, v.Table, v.Key, v.Column, v.Expr, keys); err != nil {
							return err
						}
					}
					fmt.Fprintf(a.out, "%s.%s = %s: %d rows differed, %d still differ after %s (%s)\n",
						v.Table, v.Column, v.Expr, mm.Rows, len(keys), settle, time.Since(start).Round(time.Millisecond))
					if len(keys) > 0 {
						failed = append(failed, fmt.Sprintf("%s.%s: %d rows differ, e.g. keys %s", v.Table, v.Column, len(keys), backfill.SampleKeys(keys, 5)))
					}
				}
				if len(failed) > 0 {
					return errors.New("verify: " + strings.Join(failed, "; "))
				}
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&settle, "settle", time.Second, "wait this long before checking differing rows again")
	return cmd
}

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/worker"
)

func newSubmitCmd(a *app) *cobra.Command {
	var contract string
	cmd := &cobra.Command{
		Use:   "submit FILE",
		Short: "Validate a migration and queue it for the workers; prints the job id",
		Long: `Validate a migration against the target database (changing nothing) and
queue it as a pending job for 'refit worker'. Prints the job id. The same can
be done from SQL with refit.submit(name, source, contract) — see docs/worker.md.`,
		Example: `  refit submit migrations/split.yaml --dsn $DSN --contract manual`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var mode migration.ContractMode
			if contract != "" {
				var err error
				if mode, err = migration.ParseContractMode(contract); err != nil {
					return usageError{fmt.Errorf("--contract: %w", err)}
				}
			}
			m, err := migration.Load(args[0])
			if err != nil {
				return err
			}
			pool, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer pool.Close()
			sub, err := worker.Submit(ctx, pool, m, mode, actor("submit"))
			if err != nil {
				return err
			}
			switch {
			case sub.AlreadyApplied:
				fmt.Fprintf(a.errOut, "migration %q is already applied (same checksum): nothing to do\n", m.Name)
			case sub.Resumed:
				fmt.Fprintf(a.errOut, "migration %q already has a live job (phase %s)\n", m.Name, sub.Job.Phase)
				fmt.Fprintln(a.out, sub.Job.ID)
			default:
				fmt.Fprintln(a.out, sub.Job.ID)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&contract, "contract", "", "contract gate: now, manual or auto (default: the file's contract key, else manual)")
	return cmd
}

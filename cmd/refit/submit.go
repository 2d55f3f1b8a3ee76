package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/backfill"
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
			pool, m, sub, err := a.submit(ctx, args[0], contract, "submit")
			if err != nil {
				return err
			}
			defer pool.Close()
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

// submit loads, validates and submits a migration file (shared by run and
// submit). The caller closes the returned pool.
func (a *app) submit(ctx context.Context, file, contract, verb string) (*pgxpool.Pool, *migration.Migration, *worker.Submission, error) {
	var mode migration.ContractMode
	if contract != "" {
		var err error
		if mode, err = migration.ParseContractMode(contract); err != nil {
			return nil, nil, nil, usageError{fmt.Errorf("--contract: %w", err)}
		}
	}
	m, err := migration.Load(file)
	if err != nil {
		return nil, nil, nil, err
	}
	pool, err := a.connect(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	if _, err := a.checkSettings(ctx, pool, m); err != nil {
		pool.Close()
		return nil, nil, nil, err
	}
	sub, err := worker.Submit(ctx, pool, m, mode, actor(verb))
	if err != nil {
		pool.Close()
		return nil, nil, nil, err
	}
	return pool, m, sub, nil
}

// checkSettings validates, against the target database and changing
// nothing, the migration's settings key on top of the configuration, as the
// job will run them: a bad setting is an invalid migration naming the file
// and the field, a bad configured throttle.query a usage error (both exit
// 2). It returns the backfill configuration of the job.
func (a *app) checkSettings(ctx context.Context, pool *pgxpool.Pool, m *migration.Migration) (backfill.Config, error) {
	bf, _, err := worker.ValidateMigrationSettings(ctx, pool, m, a.cfg.Backfill, a.cfg.Throttle)
	if err != nil {
		return bf, invalidSetting(err)
	}
	return bf, nil
}

// invalidSetting marks a value that worker.ValidateSettings refused as the
// caller's input (exit 2); other errors, such as a lost connection, stay
// failures.
func invalidSetting(err error) error {
	var se *worker.SettingError
	if errors.As(err, &se) {
		return usageError{err}
	}
	return err
}

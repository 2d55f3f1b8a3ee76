package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/throttle"
)

// Submission is the result of Submit.
type Submission struct {
	Job *state.Job
	// AlreadyApplied is set when the migration is in refit.migrations with
	// the same checksum: nothing to do.
	AlreadyApplied bool
	// Resumed is set when a live job of this migration already existed.
	Resumed bool
}

// Submit turns a parsed migration into a job, or finds the live job of the
// same migration to resume. It validates the migration against the database
// before creating anything: an invalid migration changes nothing, not even
// the refit schema. contract overrides the file's contract mode when not
// empty.
func Submit(ctx context.Context, pool *pgxpool.Pool, m *migration.Migration, contract migration.ContractMode, actor string) (*Submission, error) {
	mode := contract
	if mode == "" {
		mode = m.Contract
	}
	if mode == "" {
		mode = migration.ContractManual
	}
	exists, err := state.Exists(ctx, pool)
	if err != nil {
		return nil, fmt.Errorf("check refit schema: %w", err)
	}
	if exists {
		store, err := state.Open(ctx, pool)
		if err != nil {
			return nil, err
		}
		applied, err := store.CheckApplied(ctx, m.Name, m.Checksum)
		if err != nil {
			return nil, err
		}
		if applied {
			return &Submission{AlreadyApplied: true}, nil
		}
		job, err := store.LiveByName(ctx, m.Name)
		switch {
		case err == nil:
			if job.Checksum != m.Checksum {
				return nil, fmt.Errorf("job %d of migration %q runs a different version of the file (checksum %.12s…, file %.12s…): abort it or restore the file", job.ID, m.Name, job.Checksum, m.Checksum)
			}
			if contract != "" && string(contract) != job.ContractMode {
				if err := store.SetContractMode(ctx, job.ID, string(contract)); err != nil {
					return nil, err
				}
				job.ContractMode = string(contract)
			}
			return &Submission{Job: job, Resumed: true}, nil
		case !errors.Is(err, state.ErrNotFound):
			return nil, err
		}
	}
	if _, _, err = ApplySettings(m.Settings, backfill.DefaultConfig(), throttle.DefaultConfig()); err != nil {
		return nil, &migration.Error{File: m.File, Op: -1, Field: "settings", Msg: err.Error()}
	}
	settingsJSON := []byte("{}")
	if len(m.Settings) > 0 {
		if settingsJSON, err = json.Marshal(m.Settings); err != nil {
			return nil, err
		}
	}
	facts, err := validate(ctx, pool, m)
	if err != nil {
		return nil, err
	}
	factsJSON, err := json.Marshal(facts)
	if err != nil {
		return nil, err
	}
	store, err := state.Open(ctx, pool)
	if err != nil {
		return nil, err
	}
	job, err := store.CreateJob(ctx, state.NewJob{Name: m.Name, Checksum: m.Checksum, File: m.File,
		Source: m.Source, Facts: factsJSON, Settings: settingsJSON, ContractMode: string(mode), Actor: actor})
	if err != nil {
		return nil, err
	}
	return &Submission{Job: job}, nil
}

// Validate checks a migration against the database without changing
// anything, as every job is checked before it is created (refit run, refit
// submit) or claimed (the daemon): the privileges it needs (CheckPrivileges,
// a *PrivilegeError listing every missing one), its tables, columns, types
// and expressions (migration.Inspect), and that its sync can run. It returns
// the facts the plan needs.
func Validate(ctx context.Context, pool *pgxpool.Pool, m *migration.Migration) (*migration.Facts, error) {
	return validate(ctx, pool, m)
}

// validate inspects a migration against the database (changing nothing) and
// checks that its sync can run. Privileges are checked first: inspection
// itself needs some (TEMPORARY, CREATE on a new type's schema), and a
// missing one is reported together with every other, with its GRANT.
func validate(ctx context.Context, pool *pgxpool.Pool, m *migration.Migration) (*migration.Facts, error) {
	if err := CheckPrivileges(ctx, pool, m, nil, nil); err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	facts, err := migration.Inspect(ctx, conn.Conn(), m)
	conn.Release()
	if err != nil {
		return nil, err
	}
	if err := checkReplication(ctx, pool, migration.BuildPlan(m, facts), facts); err != nil {
		return nil, err
	}
	return facts, nil
}

// checkReplication verifies up front that a migration that backfills can
// keep its new columns in sync: logical replication is available and every
// backfilled table has a replica identity.
func checkReplication(ctx context.Context, pool *pgxpool.Pool, plan *migration.Plan, facts *migration.Facts) error {
	tgts, err := targets(plan, facts)
	if err != nil || len(tgts) == 0 {
		return err
	}
	if err := replication.CheckRequirements(ctx, pool, replication.JobOrigins(1)); err != nil { // one range at least; the runner checks the job's parallelism
		return err
	}
	tables := make([]migration.TableName, len(tgts))
	for i, t := range tgts {
		tables[i] = t.Table
	}
	return replication.CheckReplicaIdentity(ctx, pool, tables)
}

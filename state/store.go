// Package state owns refit's bookkeeping inside the target database: the
// `refit` schema with its jobs, their phase transitions (job_events), the
// backfill checkpoints (backfill_ranges) and the history of applied
// migrations (migrations, the analog of alembic_version).
//
// Everything a worker needs to resume a job lives here, in the database being
// changed, so a worker that dies loses nothing: the next one reads the phase
// and checkpoints back and carries on.
package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/sqlstate"
)

// ErrNotFound is returned when no job matches.
var ErrNotFound = errors.New("job not found")

// ErrPhaseChanged means another actor (an operator's pause or abort, another
// process) moved the job first; the caller should reload it.
var ErrPhaseChanged = errors.New("the job's phase was changed by another actor")

// ErrChecksumMismatch means a migration name was applied with other contents.
var ErrChecksumMismatch = errors.New("migration was already applied with different contents")

// Store reads and writes the refit schema.
type Store struct {
	pool *pgxpool.Pool
}

// schemaLock serialises schema creation across concurrent refit processes.
const schemaLock = 0x7265666974 // "refit"

// Open ensures the refit schema exists and is up to date.
//
// Before it reads or writes anything in schema refit it checks, in the
// transaction that holds the schema lock, that the schema and everything in
// it is controlled by trusted roles: the role refit connects as, superusers,
// and the roles named with TrustedOwners (see verifyTrust). Otherwise it
// returns an *UntrustedError (wrapped) and changes nothing: a schema refit
// created in advance by another role could carry a trigger, a rule or a
// policy that runs that role's code with refit's privileges. A missing
// schema is created owned by current_user, with no privileges for PUBLIC.
func Open(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	var o openOptions
	for _, opt := range opts {
		opt(&o)
	}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// Nothing refit runs here may resolve to another schema's object.
		if _, err := tx.Exec(ctx, "SET LOCAL search_path = pg_catalog, pg_temp"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '5s'"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(schemaLock)); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1)", schemaName).Scan(&exists); err != nil {
			return err
		}
		schema := pgx.Identifier{schemaName}.Sanitize()
		if !exists {
			// IF NOT EXISTS: another role may create it meanwhile (refit
			// processes are serialised by the lock); verifyTrust judges it.
			if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema+" AUTHORIZATION CURRENT_USER"); err != nil {
				return fmt.Errorf("create schema %s: %w", schema, err)
			}
		}
		if err := verifyTrust(ctx, tx, o.trustedOwners); err != nil {
			return err
		}
		if !exists {
			if _, err := tx.Exec(ctx, "REVOKE ALL ON SCHEMA "+schema+" FROM PUBLIC"); err != nil {
				return fmt.Errorf("revoke privileges on schema %s from PUBLIC: %w", schema, err)
			}
		}
		if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS refit.meta (version int NOT NULL)"); err != nil {
			return err
		}
		var version int
		err := tx.QueryRow(ctx, "SELECT version FROM refit.meta").Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			if _, err := tx.Exec(ctx, "INSERT INTO refit.meta (version) VALUES (0)"); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		if version > len(schemaSteps) {
			return fmt.Errorf("the refit schema is at version %d, newer than this refit (%d): upgrade refit", version, len(schemaSteps))
		}
		for i := version; i < len(schemaSteps); i++ {
			if _, err := tx.Exec(ctx, schemaSteps[i]); err != nil {
				return fmt.Errorf("schema step %d: %w", i+1, err)
			}
		}
		if _, err := tx.Exec(ctx, "UPDATE refit.meta SET version = $1", len(schemaSteps)); err != nil {
			return err
		}
		return grantOperator(ctx, tx)
	})
	if err != nil {
		return nil, fmt.Errorf("prepare refit schema: %w", err)
	}
	return &Store{pool: pool}, nil
}

// Exists reports whether the refit schema exists, without creating it.
func Exists(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, "SELECT to_regclass('refit.jobs') IS NOT NULL").Scan(&ok)
	return ok, err
}

// Pool returns the store's pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Job is one row of refit.jobs plus derived progress.
type Job struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	Checksum string `json:"checksum"`
	File     string `json:"file"`
	Source   []byte `json:"-"`
	Facts    []byte `json:"-"`
	Settings []byte `json:"settings,omitempty"` // per-job tuning (JSON object of config key → value)
	// PlanFingerprint is the fingerprint of the plan the job started
	// expanding with ("" before that).
	PlanFingerprint string     `json:"plan_fingerprint,omitempty"`
	Phase           Phase      `json:"phase"`
	ResumePhase     *Phase     `json:"resume_phase,omitempty"`
	ContractMode    string     `json:"contract_mode"`
	ContractOpen    bool       `json:"contract_open"`
	ExpandStep      int        `json:"expand_step"`
	PostStep        int        `json:"post_step"`
	ContractStep    int        `json:"contract_step"`
	RollbackStep    int        `json:"rollback_step"`
	RowsTotal       int64      `json:"rows_total"`
	RowsDone        int64      `json:"rows_done"`
	RowsUpdated     int64      `json:"rows_updated"`
	Error           string     `json:"error,omitempty"`
	Sync            Sync       `json:"sync"`
	ThrottledBy     string     `json:"throttled_by"`
	Owner           string     `json:"owner,omitempty"`
	HeartbeatAt     *time.Time `json:"heartbeat_at,omitempty"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
	PhaseStartedAt  time.Time  `json:"phase_started_at"`
	FinishedAt      *time.Time `json:"finished_at,omitempty"`
}

const jobColumns = `j.id, j.name, j.checksum, j.file, j.source, j.facts, j.phase, j.resume_phase, coalesce(j.contract_mode, ''), j.contract_open,
	j.expand_step, j.post_step, j.contract_step, j.rollback_step, j.rows_total,
	coalesce((SELECT sum(rows_done) FROM refit.backfill_ranges r WHERE r.job_id = j.id), 0)::bigint,
	coalesce((SELECT sum(rows_updated) FROM refit.backfill_ranges r WHERE r.job_id = j.id), 0)::bigint,
	coalesce(j.error, ''), coalesce(j.owner, ''), j.created_at, j.updated_at, j.phase_started_at, j.finished_at,
	coalesce(j.sync_confirmed_lsn, ''), coalesce(j.sync_lag_bytes, 0), coalesce(j.sync_retained_bytes, 0), j.sync_keys_applied,
	j.sync_last_commit_at, j.sync_applied_at, coalesce(j.throttled_by, ''), j.sync_changed_at, j.heartbeat_at, j.settings,
	coalesce(j.plan_fingerprint, ''), coalesce(j.sync_origin_filter, '')`

func scanJob(row pgx.Row) (*Job, error) {
	var j Job
	var phase string
	var resume *string
	err := row.Scan(&j.ID, &j.Name, &j.Checksum, &j.File, &j.Source, &j.Facts, &phase, &resume, &j.ContractMode, &j.ContractOpen,
		&j.ExpandStep, &j.PostStep, &j.ContractStep, &j.RollbackStep, &j.RowsTotal, &j.RowsDone, &j.RowsUpdated,
		&j.Error, &j.Owner, &j.CreatedAt, &j.UpdatedAt, &j.PhaseStartedAt, &j.FinishedAt,
		&j.Sync.ConfirmedLSN, &j.Sync.LagBytes, &j.Sync.RetainedBytes, &j.Sync.KeysApplied,
		&j.Sync.LastCommitAt, &j.Sync.AppliedAt, &j.ThrottledBy, &j.Sync.ChangedAt, &j.HeartbeatAt, &j.Settings,
		&j.PlanFingerprint, &j.Sync.OriginFilter)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if j.Phase, err = ParsePhase(phase); err != nil {
		return nil, err
	}
	if j.Sync.LastCommitAt != nil && j.Sync.AppliedAt != nil {
		j.Sync.LagSeconds = j.Sync.AppliedAt.Sub(*j.Sync.LastCommitAt).Seconds()
	}
	if resume != nil {
		p, err := ParsePhase(*resume)
		if err != nil {
			return nil, err
		}
		j.ResumePhase = &p
	}
	return &j, nil
}

// NewJob describes a job to create.
type NewJob struct {
	Name, Checksum, File string
	Source               []byte
	Facts                []byte // JSON of migration.Facts taken before expand
	Settings             []byte // JSON object of per-job settings (the file's settings key)
	ContractMode         string
	Actor                string
}

// CreateJob inserts a pending job. A live job with the same name is an error.
func (s *Store) CreateJob(ctx context.Context, n NewJob) (*Job, error) {
	if len(n.Facts) == 0 {
		n.Facts = []byte("{}")
	}
	if len(n.Settings) == 0 {
		n.Settings = []byte("{}")
	}
	var job *Job
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var id int64
		err := tx.QueryRow(ctx, `INSERT INTO refit.jobs (name, checksum, file, source, facts, contract_mode, settings)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`, n.Name, n.Checksum, n.File, n.Source, string(n.Facts), n.ContractMode, string(n.Settings)).Scan(&id)
		if sqlstate.Is(err, sqlstate.UniqueViolation) {
			return fmt.Errorf("a job for migration %q is already running", n.Name)
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO refit.job_events (job_id, to_phase, actor, message) VALUES ($1, 'pending', $2, 'submitted')`, id, n.Actor); err != nil {
			return err
		}
		if err := notifyTx(ctx, tx, id); err != nil {
			return err
		}
		job, err = scanJob(tx.QueryRow(ctx, "SELECT "+jobColumns+" FROM refit.jobs j WHERE id = $1", id))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create job: %w", err)
	}
	return job, nil
}

// Get loads a job by id.
func (s *Store) Get(ctx context.Context, id int64) (*Job, error) {
	return scanJob(s.pool.QueryRow(ctx, "SELECT "+jobColumns+" FROM refit.jobs j WHERE id = $1", id))
}

// Find loads a job by id or by migration name (the newest job of that name).
func (s *Store) Find(ctx context.Context, ref string) (*Job, error) {
	// "#ID" is always a job id.
	if rest, ok := strings.CutPrefix(ref, "#"); ok {
		id, err := strconv.ParseInt(rest, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q: want #<job id>: %w", ref, ErrNotFound)
		}
		return s.Get(ctx, id)
	}
	byName, err := scanJob(s.pool.QueryRow(ctx, "SELECT "+jobColumns+" FROM refit.jobs j WHERE name = $1 ORDER BY id DESC LIMIT 1", ref))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	id, perr := strconv.ParseInt(ref, 10, 64)
	if perr != nil {
		return byName, err
	}
	byID, idErr := s.Get(ctx, id)
	switch {
	case idErr != nil && !errors.Is(idErr, ErrNotFound):
		return nil, idErr
	case byID != nil && byName != nil && byID.ID != byName.ID:
		// Never guess between two jobs.
		return nil, fmt.Errorf("%q is both job #%d (%s) and the migration name of job #%d: say #%d for the first; %w",
			ref, byID.ID, byID.Name, byName.ID, byID.ID, ErrAmbiguous)
	case byID != nil:
		return byID, nil
	}
	return byName, err
}

// ErrAmbiguous means a job reference matches more than one job.
var ErrAmbiguous = errors.New("ambiguous job reference")

// LiveByName returns the job of this name that is neither completed nor aborted.
func (s *Store) LiveByName(ctx context.Context, name string) (*Job, error) {
	return scanJob(s.pool.QueryRow(ctx, "SELECT "+jobColumns+" FROM refit.jobs j WHERE name = $1 AND phase NOT IN ('completed', 'aborted')", name))
}

// List returns all jobs, newest first.
func (s *Store) List(ctx context.Context) ([]*Job, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+jobColumns+" FROM refit.jobs j ORDER BY id DESC")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// Transition moves a job from one phase to another and records the event.
// It fails if the job is no longer in from (another actor moved it).
func (s *Store) Transition(ctx context.Context, id int64, from, to Phase, actor, message string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return TransitionTx(ctx, tx, id, from, to, actor, message)
	})
}

// TransitionTx is Transition inside the caller's transaction.
func TransitionTx(ctx context.Context, tx pgx.Tx, id int64, from, to Phase, actor, message string) error {
	if !CanTransition(from, to) {
		return fmt.Errorf("transition job %d %s → %s: %w", id, from, to, ErrTransition)
	}
	var resume any
	if to == PhasePaused || to == PhaseFailed {
		resume = from.String()
		if from == PhasePaused || from == PhaseFailed {
			resume = nil // keep the one already stored
		}
	}
	tag, err := tx.Exec(ctx, `UPDATE refit.jobs SET phase = $3,
			resume_phase = CASE WHEN $3 IN ('paused', 'failed') THEN coalesce($4, resume_phase) ELSE NULL END,
			error = CASE WHEN $3 = 'failed' THEN $5 WHEN $3 IN ('completed', 'aborted') THEN error ELSE NULL END,
			updated_at = now(),
			phase_started_at = now(),
			finished_at = CASE WHEN $3 IN ('completed', 'aborted') THEN now() END
		WHERE id = $1 AND phase = $2`, id, from.String(), to.String(), resume, message)
	if err != nil {
		return fmt.Errorf("transition job %d %s → %s: %w", id, from, to, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("transition job %d %s → %s: %w (it is no longer %s)", id, from, to, ErrPhaseChanged, from)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO refit.job_events (job_id, from_phase, to_phase, actor, message) VALUES ($1, $2, $3, $4, $5)`,
		id, from.String(), to.String(), actor, message); err != nil {
		return fmt.Errorf("record event: %w", err)
	}
	return notifyTx(ctx, tx, id)
}

// ControlChannel is the LISTEN/NOTIFY channel on which every change of a
// job's phase or gate is announced (payload: the job id), so daemons react
// at once; they poll as well, in case a notification is missed.
const ControlChannel = "refit_control"

func notifyTx(ctx context.Context, tx pgx.Tx, id int64) error {
	_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", ControlChannel, strconv.FormatInt(id, 10))
	return err
}

// StepColumn names the checkpoint column of a step stage.
type StepColumn string

// Step checkpoint columns.
const (
	ExpandStep   StepColumn = "expand_step"
	PostStep     StepColumn = "post_step"
	ContractStep StepColumn = "contract_step"
	RollbackStep StepColumn = "rollback_step"
)

// SetStepTx records that n steps of a stage are done, inside the step's own
// transaction (so the step and its checkpoint commit together). It moves
// the checkpoint from n-1 only: if another process recorded step n first
// (one that took the job over while this one still ran it, its claim on
// the job lost with its session), it fails with ErrPhaseChanged, the
// transaction rolls back with the step, and the step has run once.
func SetStepTx(ctx context.Context, tx pgx.Tx, id int64, col StepColumn, n int) error {
	c := pgx.Identifier{string(col)}.Sanitize()
	tag, err := tx.Exec(ctx, fmt.Sprintf("UPDATE refit.jobs SET %s = $2, updated_at = now() WHERE id = $1 AND %s = $2 - 1", c, c), id, n)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("step %d of %s of job %d was already recorded by another process: %w", n, col, id, ErrPhaseChanged)
	}
	return nil
}

// SetRowsTotal records the estimated number of rows to backfill.
func (s *Store) SetRowsTotal(ctx context.Context, id, n int64) error {
	_, err := s.pool.Exec(ctx, "UPDATE refit.jobs SET rows_total = $2, updated_at = now() WHERE id = $1", id, n)
	return err
}

// OpenContract opens the contract gate of a job.
func (s *Store) OpenContract(ctx context.Context, id int64, actor string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE refit.jobs SET contract_open = true, updated_at = now() WHERE id = $1", id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO refit.job_events (job_id, from_phase, to_phase, actor, message)
			SELECT id, phase, phase, $2, 'contract gate opened' FROM refit.jobs WHERE id = $1`, id, actor); err != nil {
			return err
		}
		return notifyTx(ctx, tx, id)
	})
}

// SetFacts stores the facts taken when a job is prepared (a job submitted
// through SQL is inspected by the worker that claims it) and resolves its
// contract mode.
func (s *Store) SetFacts(ctx context.Context, id int64, facts []byte, contractMode string) error {
	_, err := s.pool.Exec(ctx, "UPDATE refit.jobs SET facts = $2, contract_mode = coalesce(contract_mode, $3), updated_at = now() WHERE id = $1", id, string(facts), contractMode)
	return err
}

// SetContractMode changes the contract mode of a job (e.g. from the CLI).
func (s *Store) SetContractMode(ctx context.Context, id int64, mode string) error {
	_, err := s.pool.Exec(ctx, "UPDATE refit.jobs SET contract_mode = $2, updated_at = now() WHERE id = $1", id, mode)
	return err
}

// Applied returns the checksum of an applied migration, if any.
func (s *Store) Applied(ctx context.Context, name string) (checksum string, ok bool, err error) {
	err = s.pool.QueryRow(ctx, "SELECT checksum FROM refit.migrations WHERE name = $1", name).Scan(&checksum)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	return checksum, err == nil, err
}

// CheckApplied returns (true, nil) when the migration was applied with this
// checksum, ErrChecksumMismatch when with another, (false, nil) when never.
func (s *Store) CheckApplied(ctx context.Context, name, checksum string) (bool, error) {
	sum, ok, err := s.Applied(ctx, name)
	if err != nil || !ok {
		return false, err
	}
	if sum != checksum {
		return false, fmt.Errorf("%w: %q has checksum %.12s… in refit.migrations, the file has %.12s…; write a new migration instead (fix forward)", ErrChecksumMismatch, name, sum, checksum)
	}
	return true, nil
}

// RecordAppliedTx adds the migration to the history, inside the transaction
// that completes the job.
func RecordAppliedTx(ctx context.Context, tx pgx.Tx, name, checksum string, jobID int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO refit.migrations (name, checksum, job_id) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, job_id = EXCLUDED.job_id, applied_at = now()`, name, checksum, jobID)
	return err
}

// Event is one row of refit.job_events.
type Event struct {
	At      time.Time `json:"at"`
	From    string    `json:"from,omitempty"`
	To      string    `json:"to"`
	Actor   string    `json:"actor"`
	Message string    `json:"message"`
}

// Events returns a job's transitions, oldest first.
func (s *Store) Events(ctx context.Context, id int64) ([]Event, error) {
	rows, err := s.pool.Query(ctx, "SELECT at, coalesce(from_phase, ''), to_phase, actor, message FROM refit.job_events WHERE job_id = $1 ORDER BY id", id)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		err := r.Scan(&e.At, &e.From, &e.To, &e.Actor, &e.Message)
		return e, err
	})
}

// Range is one backfill range checkpoint.
type Range struct {
	Table       string
	ID          int
	Lower       []string // exclusive lower bound; nil = from the start
	Upper       []string // inclusive upper bound; nil = to the end
	After       []string // last key done; nil = nothing done yet
	Done        bool
	RowsDone    int64
	RowsUpdated int64
	Batches     int64
}

// Ranges returns a job's backfill ranges for a table, creating them with
// create() on first use.
func (s *Store) Ranges(ctx context.Context, jobID int64, table string) ([]Range, error) {
	rows, err := s.pool.Query(ctx, `SELECT table_name, range_id, lower_key, upper_key, after_key, done, rows_done, rows_updated, batches
		FROM refit.backfill_ranges WHERE job_id = $1 AND table_name = $2 ORDER BY range_id`, jobID, table)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Range, error) {
		var x Range
		err := r.Scan(&x.Table, &x.ID, &x.Lower, &x.Upper, &x.After, &x.Done, &x.RowsDone, &x.RowsUpdated, &x.Batches)
		return x, err
	})
}

// CreateRanges stores the initial ranges of a table's backfill.
func (s *Store) CreateRanges(ctx context.Context, jobID int64, ranges []Range) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, r := range ranges {
			if _, err := tx.Exec(ctx, `INSERT INTO refit.backfill_ranges (job_id, table_name, range_id, lower_key, upper_key)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, jobID, r.Table, r.ID, r.Lower, r.Upper); err != nil {
				return err
			}
		}
		return nil
	})
}

// ErrRangeMoved means a backfill range's checkpoint was not where the batch
// started from: another process (one that claimed the job after this one
// lost its claim) moved it. It is an ErrPhaseChanged: reload the job.
var ErrRangeMoved = fmt.Errorf("the backfill range's checkpoint was moved by another process: %w", ErrPhaseChanged)

// AdvanceRangeTx checkpoints one batch inside the batch's transaction: it
// moves the range's checkpoint from from (where the batch started; nil for
// the range's start) to after (nil: keep it, with done), or returns
// ErrRangeMoved if the range is no longer at from or is done (and the
// batch's transaction must roll back), so that two processes running the
// same range never overwrite each other's checkpoint and counts.
func AdvanceRangeTx(ctx context.Context, tx pgx.Tx, jobID int64, table string, rangeID int, from, after []string, done bool, rows, updated int64) error {
	tag, err := tx.Exec(ctx, `UPDATE refit.backfill_ranges SET after_key = coalesce($5, after_key), done = $6,
		rows_done = rows_done + $7, rows_updated = rows_updated + $8, batches = batches + 1, updated_at = now()
		WHERE job_id = $1 AND table_name = $2 AND range_id = $3 AND after_key IS NOT DISTINCT FROM $4::text[] AND NOT done`,
		jobID, table, rangeID, from, after, done, rows, updated)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("range %d of %s: %w", rangeID, table, ErrRangeMoved)
	}
	return nil
}

// ResetBackfill forgets a job's backfill checkpoints (used when an aborted
// migration is expanded again).
func (s *Store) ResetBackfill(ctx context.Context, jobID int64) error {
	_, err := s.pool.Exec(ctx, "DELETE FROM refit.backfill_ranges WHERE job_id = $1", jobID)
	return err
}

// Sync is the replication state of a job, as last reported by its consumer.
type Sync struct {
	ConfirmedLSN  string     `json:"confirmed_lsn,omitempty"`
	LagBytes      int64      `json:"lag_bytes"`      // current WAL − slot's confirmed position
	RetainedBytes int64      `json:"retained_bytes"` // WAL the slot keeps on disk
	KeysApplied   int64      `json:"keys_applied"`
	LastCommitAt  *time.Time `json:"last_commit_at,omitempty"` // commit time of the last applied transaction
	AppliedAt     *time.Time `json:"applied_at,omitempty"`     // when it was applied
	LagSeconds    float64    `json:"lag_seconds"`              // applied_at − last_commit_at
	// ChangedAt is the last time an apply changed a row: a write that only
	// set the old columns, i.e. an application version still using the old
	// shape. The auto contract gate waits for a quiet period after it.
	ChangedAt *time.Time `json:"changed_at,omitempty"`
	// OriginFilter is where the sync drops refit's own writes from the
	// stream: "walsender" (PostgreSQL 16+, origin 'none') or "client".
	OriginFilter string `json:"origin_filter,omitempty"`
}

// UpdateSync records the consumer's latest figures.
func (s *Store) UpdateSync(ctx context.Context, id int64, sy Sync) error {
	_, err := s.pool.Exec(ctx, `UPDATE refit.jobs SET sync_confirmed_lsn = $2, sync_lag_bytes = $3, sync_retained_bytes = $4,
		sync_keys_applied = $5, sync_last_commit_at = $6, sync_applied_at = $7, sync_changed_at = coalesce($8, sync_changed_at),
		sync_origin_filter = coalesce(nullif($9, ''), sync_origin_filter) WHERE id = $1`,
		id, sy.ConfirmedLSN, sy.LagBytes, sy.RetainedBytes, sy.KeysApplied, sy.LastCommitAt, sy.AppliedAt, sy.ChangedAt, sy.OriginFilter)
	return err
}

// SetThrottled records which signal throttles the job ("" = none).
func (s *Store) SetThrottled(ctx context.Context, id int64, by string) error {
	_, err := s.pool.Exec(ctx, "UPDATE refit.jobs SET throttled_by = nullif($2, '') WHERE id = $1 AND throttled_by IS DISTINCT FROM nullif($2, '')", id, by)
	return err
}

// LiveJobIDs returns the ids of jobs that are neither completed nor aborted.
func (s *Store) LiveJobIDs(ctx context.Context) (map[int64]bool, error) {
	rows, err := s.pool.Query(ctx, "SELECT id FROM refit.jobs WHERE phase NOT IN ('completed', 'aborted')")
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, err
	}
	out := map[int64]bool{}
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// Heartbeat records which process runs the job; it is informational (the
// claim itself is a session advisory lock held by that process).
func (s *Store) Heartbeat(ctx context.Context, id int64, owner string) error {
	_, err := s.pool.Exec(ctx, "UPDATE refit.jobs SET owner = nullif($2, ''), heartbeat_at = CASE WHEN $2 = '' THEN NULL ELSE now() END WHERE id = $1", id, owner)
	return err
}

// Notify announces a change of a job on the control channel.
func (s *Store) Notify(ctx context.Context, id int64) error {
	_, err := s.pool.Exec(ctx, "SELECT pg_notify($1, $2)", ControlChannel, strconv.FormatInt(id, 10))
	return err
}

// SetSettings merges per-job settings (refit set); running jobs pick them up
// at their next batch.
func (s *Store) SetSettings(ctx context.Context, id int64, settings map[string]string, actor string) error {
	b, err := json.Marshal(settings)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE refit.jobs SET settings = settings || $2::jsonb, updated_at = now() WHERE id = $1", id, string(b)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO refit.job_events (job_id, from_phase, to_phase, actor, message)
			SELECT id, phase, phase, $2, 'settings: ' || $3 FROM refit.jobs WHERE id = $1`, id, actor, string(b)); err != nil {
			return err
		}
		return notifyTx(ctx, tx, id)
	})
}

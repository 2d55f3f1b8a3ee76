package state

// Job controls that are not phase changes: forced aborts, events, the
// plan fingerprint.

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SetForceAbort marks a job so that its rollback skips an undo step that
// fails (refit abort --force), recording who asked.
func (s *Store) SetForceAbort(ctx context.Context, id int64, actor string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE refit.jobs SET force_abort = true, updated_at = now() WHERE id = $1", id); err != nil {
			return fmt.Errorf("set force abort of job %d: %w", id, err)
		}
		return EventTx(ctx, tx, id, actor, "abort --force requested: a rollback step that fails is skipped")
	})
}

// ForceAbort reports whether the job's rollback skips failing undo steps.
func (s *Store) ForceAbort(ctx context.Context, id int64) (bool, error) {
	var force bool
	if err := s.pool.QueryRow(ctx, "SELECT force_abort FROM refit.jobs WHERE id = $1", id).Scan(&force); err != nil {
		return false, fmt.Errorf("read force abort of job %d: %w", id, err)
	}
	return force, nil
}

// EventTx records an event that is not a phase change (from = to = the
// job's current phase).
func EventTx(ctx context.Context, tx pgx.Tx, id int64, actor, message string) error {
	if _, err := tx.Exec(ctx, `INSERT INTO refit.job_events (job_id, from_phase, to_phase, actor, message)
		SELECT id, phase, phase, $2, $3 FROM refit.jobs WHERE id = $1`, id, actor, message); err != nil {
		return fmt.Errorf("record event of job %d: %w", id, err)
	}
	return nil
}

// Event records an event that is not a phase change (EventTx in a
// transaction of its own).
func (s *Store) Event(ctx context.Context, id int64, actor, message string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return EventTx(ctx, tx, id, actor, message) })
}

// SetPlanFingerprint records the fingerprint of the plan a job starts
// expanding with, once: it returns the fingerprint stored (an earlier one
// if there was one).
func (s *Store) SetPlanFingerprint(ctx context.Context, id int64, fp string) (string, error) {
	var stored string
	err := s.pool.QueryRow(ctx, `UPDATE refit.jobs SET plan_fingerprint = coalesce(plan_fingerprint, $2) WHERE id = $1
		RETURNING plan_fingerprint`, id, fp).Scan(&stored)
	if err != nil {
		return "", fmt.Errorf("record plan fingerprint of job %d: %w", id, err)
	}
	return stored, nil
}

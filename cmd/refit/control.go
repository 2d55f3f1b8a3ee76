package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/state"
)

// withJob connects, opens the store and finds JOB (an id or a name).
func (a *app) withJob(ctx context.Context, ref string, f func(*pgxpool.Pool, *state.Store, *state.Job) error) error {
	pool, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	store, err := state.Open(ctx, pool)
	if err != nil {
		return err
	}
	job, err := store.Find(ctx, ref)
	if err != nil {
		return fmt.Errorf("job %s: %w", ref, err)
	}
	return f(pool, store, job)
}

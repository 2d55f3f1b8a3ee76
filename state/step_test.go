package state_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/refit-dev/refit/state"
)

// TestSetStepTxOnce: a step's checkpoint moves from n-1 to n only. A second
// process that ran the same step (it took the job over while the first
// still ran it: the first's claim was lost with its session) fails with
// ErrPhaseChanged, and its transaction, the step's own work included, rolls
// back: the step has run once. Found by internal/chaos (a sql step recorded
// twice after the session holding the job's advisory lock was terminated
// and the other worker replica took the job over).
func TestSetStepTxOnce(t *testing.T) {
	ctx := context.Background()
	pool, store, job := newJob(t, "once")
	if _, err := pool.Exec(ctx, "CREATE TABLE ran (step int)"); err != nil {
		t.Fatal(err)
	}
	step := func(ctx context.Context, tx pgx.Tx, n int) error {
		if _, err := tx.Exec(ctx, "INSERT INTO ran VALUES ($1)", n); err != nil {
			return err
		}
		return state.SetStepTx(ctx, tx, job.ID, state.ExpandStep, n)
	}
	runs := func(n int) int {
		var c int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM ran WHERE step = $1", n).Scan(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}

	// One after the other.
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return step(ctx, tx, 1) }); err != nil {
		t.Fatal(err)
	}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return step(ctx, tx, 1) })
	if !errors.Is(err, state.ErrPhaseChanged) {
		t.Fatalf("step 1 again: %v, want ErrPhaseChanged", err)
	}
	if n := runs(1); n != 1 {
		t.Fatalf("step 1 committed %d times", n)
	}

	// At the same time: the second waits for the first's row lock, then
	// finds the checkpoint moved.
	first, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := step(ctx, first, 2); err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() { second <- pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return step(ctx, tx, 2) }) }()
	select { // the second waits on the row lock
	case err := <-second:
		t.Fatalf("the second step did not wait for the first: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-second; !errors.Is(err, state.ErrPhaseChanged) {
		t.Fatalf("concurrent step 2: %v, want ErrPhaseChanged", err)
	}
	if n := runs(2); n != 1 {
		t.Fatalf("step 2 committed %d times", n)
	}
	got, err := store.Get(ctx, job.ID)
	if err != nil || got.ExpandStep != 2 {
		t.Fatalf("expand_step %v (%v), want 2", got, err)
	}
}

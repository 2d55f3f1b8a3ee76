package state_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/state"
)

// TestAdvanceRangeTxMovesOnce: a batch's checkpoint moves the range from
// where the batch started only. A second process running the same range
// from the same checkpoint (it took the job over while the first, whose
// claim was lost, still ran a batch) gets ErrRangeMoved, an
// ErrPhaseChanged, and its batch rolls back; so does a batch on a range
// already done. Before, the later batch overwrote the checkpoint (possibly
// moving it back) and counted its rows twice.
func TestAdvanceRangeTxMovesOnce(t *testing.T) {
	ctx := context.Background()
	pool, store, job := newJob(t, "ranges")
	if err := store.CreateRanges(ctx, job.ID, []state.Range{{Table: "public.t", ID: 0}}); err != nil {
		t.Fatal(err)
	}
	advance := func(from, to []string, done bool) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			return state.AdvanceRangeTx(ctx, tx, job.ID, "public.t", 0, from, to, done, 10, 5)
		})
	}
	steps := []struct {
		name     string
		from, to []string
		done     bool
		moved    bool
	}{
		{name: "first batch", to: []string{"10"}},
		{name: "first batch again, by another process", to: []string{"10"}, moved: true},
		{name: "second batch", from: []string{"10"}, to: []string{"20"}},
		{name: "a stale process's batch from 10", from: []string{"10"}, to: []string{"20"}, moved: true},
		{name: "last batch", from: []string{"20"}, done: true},
		{name: "last batch again", from: []string{"20"}, done: true, moved: true},
	}
	for _, s := range steps {
		err := advance(s.from, s.to, s.done)
		if s.moved != errors.Is(err, state.ErrRangeMoved) || s.moved != errors.Is(err, state.ErrPhaseChanged) || (!s.moved && err != nil) {
			t.Fatalf("%s: %v, want moved=%v", s.name, err, s.moved)
		}
	}
	ranges, err := store.Ranges(ctx, job.ID, "public.t")
	if err != nil {
		t.Fatal(err)
	}
	r := ranges[0]
	if !r.Done || !slices.Equal(r.After, []string{"20"}) || r.RowsDone != 30 || r.RowsUpdated != 15 || r.Batches != 3 {
		t.Fatalf("range after three batches (and three refused): %+v, want done after 20 with 30 rows, 15 updated, 3 batches", r)
	}
}

// newJob opens a store on a fresh database and creates a job named name.
func newJob(t *testing.T, name string) (*pgxpool.Pool, *state.Store, *state.Job) {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.NewDB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store, err := state.Open(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	job, err := store.CreateJob(ctx, state.NewJob{Name: name, Checksum: "c", File: name + ".yaml", Source: []byte("name: " + name), ContractMode: "now", Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return pool, store, job
}

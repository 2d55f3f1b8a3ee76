package state_test

import (
	"context"
	"errors"
	"testing"

	"github.com/refit-dev/refit/state"
)

// TestTransitions: the one table of phase changes. Every phase change a
// job makes is in it; the ones no job makes are refused before anything is
// written, and a refused one leaves the job and its events as they were.
func TestTransitions(t *testing.T) {
	allowed := []struct{ from, to state.Phase }{
		{state.PhasePending, state.PhaseExpanding},
		{state.PhaseExpanding, state.PhaseBackfilling},
		{state.PhaseBackfilling, state.PhaseSyncing},
		{state.PhaseSyncing, state.PhaseContracting},
		{state.PhaseContracting, state.PhaseCompleted},
		{state.PhaseSyncing, state.PhaseBackfilling},     // slot lost in the window
		{state.PhaseContracting, state.PhaseBackfilling}, // slot lost before the first contract step
		{state.PhaseBackfilling, state.PhasePaused},
		{state.PhasePaused, state.PhaseBackfilling},
		{state.PhaseContracting, state.PhaseFailed},
		{state.PhaseFailed, state.PhaseContracting}, // retry
		{state.PhaseFailed, state.PhaseAborting},
		{state.PhasePending, state.PhaseAborting},
		{state.PhaseAborting, state.PhaseAborted},
		{state.PhaseAborting, state.PhaseFailed},
	}
	refused := []struct{ from, to state.Phase }{
		{state.PhasePending, state.PhaseCompleted},
		{state.PhaseExpanding, state.PhaseSyncing}, // skips the backfill
		{state.PhaseContracting, state.PhaseAborting},
		{state.PhaseCompleted, state.PhaseAborting},
		{state.PhaseCompleted, state.PhaseExpanding},
		{state.PhaseAborted, state.PhasePending},
		{state.PhaseAborting, state.PhaseSyncing},
		{state.PhaseFailed, state.PhaseCompleted},
	}
	for _, tr := range allowed {
		if !state.CanTransition(tr.from, tr.to) {
			t.Errorf("%s → %s is refused, want allowed", tr.from, tr.to)
		}
	}
	for _, tr := range refused {
		if state.CanTransition(tr.from, tr.to) {
			t.Errorf("%s → %s is allowed, want refused", tr.from, tr.to)
		}
	}
	// Through the store: a refused change writes nothing.
	ctx := context.Background()
	_, store, job := newJob(t, "phases")
	err := store.Transition(ctx, job.ID, state.PhasePending, state.PhaseCompleted, "test", "skip")
	if !errors.Is(err, state.ErrTransition) {
		t.Fatalf("pending → completed: %v, want ErrTransition", err)
	}
	j, err := store.Get(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	events, err := store.Events(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.Phase != state.PhasePending || len(events) != 1 {
		t.Fatalf("after a refused change: phase %s, %d events (want pending, only the creation)", j.Phase, len(events))
	}
	if err := store.Transition(ctx, job.ID, state.PhasePending, state.PhaseExpanding, "test", ""); err != nil {
		t.Fatalf("pending → expanding: %v", err)
	}
}

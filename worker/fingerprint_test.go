package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// TestResumeRefusesChangedPlan: a job records the fingerprint of the plan it
// started expanding with; a resume whose plan renders differently (here:
// the stored fingerprint of another refit version) stops with a clear error
// instead of running step N of another plan, and abort --force still ends it.
func TestResumeRefusesChangedPlan(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	mustExec(t, pool, itemsSchema)
	before := catalog(t, pool)
	m, err := migration.Parse("fp.yaml", []byte(`name: fp
operations:
  - add_column:
      table: items
      column: {name: name_upper, type: text}
      up: upper(name)
`))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeWaitingContract {
		t.Fatalf("first run: %v %v", out, err)
	}
	job, err := r.Store.Get(ctx, sub.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := migration.BuildPlan(m, nil); job.PlanFingerprint == "" || job.PlanFingerprint == want.Fingerprint() {
		t.Fatalf("stored fingerprint %q: want the plan with facts, not empty or the plan without", job.PlanFingerprint)
	}
	// The same job resumes fine with the same plan.
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeWaitingContract {
		t.Fatalf("resume with the same plan: %v %v", out, err)
	}
	mustExec(t, pool, "UPDATE refit.jobs SET plan_fingerprint = 'f00dbeef0000' || plan_fingerprint WHERE id = $1", sub.Job.ID)
	_, err = r.Run(ctx, sub.Job.ID)
	if !errors.Is(err, worker.ErrPlanChanged) || !strings.Contains(err.Error(), "f00dbeef0000") || !strings.Contains(err.Error(), "abort --force") {
		t.Fatalf("resume with another plan: %v", err)
	}
	// abort without --force is refused the same way; with --force it ends.
	if job, err = r.Store.Get(ctx, sub.Job.ID); err != nil || job.Phase != state.PhaseFailed {
		t.Fatalf("job %v %v, want failed", job.Phase, err)
	}
	if err := r.Store.Transition(ctx, sub.Job.ID, state.PhaseFailed, state.PhaseAborting, "test", "abort"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(ctx, sub.Job.ID); !errors.Is(err, worker.ErrPlanChanged) {
		t.Fatalf("abort without --force: %v", err)
	}
	if err := r.Store.SetForceAbort(ctx, sub.Job.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if err := r.Store.Transition(ctx, sub.Job.ID, state.PhaseFailed, state.PhaseAborting, "test", "abort --force"); err != nil {
		t.Fatal(err)
	}
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeAborted {
		t.Fatalf("abort --force: %v %v", out, err)
	}
	if after := catalog(t, pool); after != before {
		t.Fatalf("abort left the catalog changed:\nbefore %s\nafter  %s", before, after)
	}
}

package worker

import (
	"encoding/json"
	"fmt"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
)

// Abortable says whether a job may still be rolled back, and why not.
// Before contract it may. A job that failed in contract may too when none
// of its contract steps changed anything: every step checkpointed is a
// verify step (it only reads) and the step that failed is transactional, so
// it did not commit either (a failed VALIDATE of a new constraint, a verify
// that found rows differing, a swap that gave up: abort removes what expand
// built). After any other contract step there is no rollback: fix forward.
func Abortable(job *state.Job) error {
	if job.Phase.Abortable() && (job.ResumePhase == nil || job.ResumePhase.Abortable()) {
		return nil
	}
	refuse := fmt.Errorf("job %d (%s) is %s: contract has started, so it cannot be rolled back; fix forward with a new migration", job.ID, job.Name, job.Phase)
	if job.Phase != state.PhaseFailed || job.ResumePhase == nil || *job.ResumePhase != state.PhaseContracting {
		return refuse
	}
	m, err := migration.Parse(job.File, job.Source)
	if err != nil {
		return fmt.Errorf("job %d: %w", job.ID, err)
	}
	var facts migration.Facts
	if err := json.Unmarshal(job.Facts, &facts); err != nil {
		return fmt.Errorf("job %d: stored facts: %w", job.ID, err)
	}
	plan := migration.BuildPlan(m, &facts)
	// The steps that ran must have changed nothing (verify steps read only).
	for _, s := range plan.Contract[:min(job.ContractStep, len(plan.Contract))] {
		if s.Verify == nil {
			return refuse
		}
	}
	if next := job.ContractStep; next < len(plan.Contract) && !plan.Contract[next].Transactional && plan.Contract[next].Verify == nil {
		return refuse // a non-transactional step may have run without its checkpoint
	}
	return nil
}

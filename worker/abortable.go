package worker

import (
	"encoding/json"
	"fmt"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
)

// Abortable says whether a job may still be rolled back, and why not.
// Before contract it may. A job that failed in contract may too when none
// of its contract steps ran: no contract step is checkpointed and the first
// one is transactional, so it did not commit either (a failed VALIDATE of a
// new constraint is the common case: abort removes the NOT VALID
// constraint). After any contract step there is no rollback: fix forward.
func Abortable(job *state.Job) error {
	if job.Phase.Abortable() && (job.ResumePhase == nil || job.ResumePhase.Abortable()) {
		return nil
	}
	refuse := fmt.Errorf("job %d (%s) is %s: contract has started, so it cannot be rolled back; fix forward with a new migration", job.ID, job.Name, job.Phase)
	if job.Phase != state.PhaseFailed || job.ResumePhase == nil || *job.ResumePhase != state.PhaseContracting || job.ContractStep != 0 {
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
	if plan := migration.BuildPlan(m, &facts); len(plan.Contract) > 0 && !plan.Contract[0].Transactional {
		return refuse // a non-transactional first step may have run without its checkpoint
	}
	return nil
}

package state

import (
	"errors"
	"fmt"
	"slices"
)

// Phase is where a job is in its life. The order of the constants is the
// order a job moves through them; Paused, Failed, Aborting and Aborted are
// side states.
type Phase int

// Phases of a job.
const (
	PhasePending Phase = iota
	PhaseExpanding
	PhaseBackfilling
	PhaseSyncing
	PhaseContracting
	PhaseCompleted
	PhasePaused
	PhaseFailed
	PhaseAborting
	PhaseAborted
)

var phaseNames = [...]string{
	PhasePending:     "pending",
	PhaseExpanding:   "expanding",
	PhaseBackfilling: "backfilling",
	PhaseSyncing:     "syncing",
	PhaseContracting: "contracting",
	PhaseCompleted:   "completed",
	PhasePaused:      "paused",
	PhaseFailed:      "failed",
	PhaseAborting:    "aborting",
	PhaseAborted:     "aborted",
}

func (p Phase) String() string {
	if p >= 0 && int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// ParsePhase is the inverse of String.
func ParsePhase(s string) (Phase, error) {
	for i, n := range phaseNames {
		if n == s {
			return Phase(i), nil
		}
	}
	return 0, fmt.Errorf("unknown phase %q", s)
}

// transitions is every phase change a job may make, in one place: the
// forward path (pending → expanding → backfilling → syncing → contracting →
// completed), a backfill again when the slot was lost (syncing or
// contracting → backfilling), pause and failure from any live phase,
// resume and retry back to the phase a job was paused or failed in (or to
// aborting), and abort before contract (aborting → aborted). A job in
// contracting is not aborted (fix forward); one that failed there may be,
// when no contract step changed anything (worker.Abortable). Completed and
// aborted are final.
var transitions = map[Phase][]Phase{
	PhasePending:     {PhaseExpanding, PhasePaused, PhaseFailed, PhaseAborting},
	PhaseExpanding:   {PhaseBackfilling, PhasePaused, PhaseFailed, PhaseAborting},
	PhaseBackfilling: {PhaseSyncing, PhasePaused, PhaseFailed, PhaseAborting},
	PhaseSyncing:     {PhaseContracting, PhaseBackfilling, PhasePaused, PhaseFailed, PhaseAborting},
	PhaseContracting: {PhaseCompleted, PhaseBackfilling, PhasePaused, PhaseFailed},
	PhasePaused:      {PhasePending, PhaseExpanding, PhaseBackfilling, PhaseSyncing, PhaseContracting, PhaseAborting, PhaseFailed},
	PhaseFailed:      {PhasePending, PhaseExpanding, PhaseBackfilling, PhaseSyncing, PhaseContracting, PhaseAborting},
	PhaseAborting:    {PhaseAborted, PhasePaused, PhaseFailed},
}

// ErrTransition means a phase change that no job makes (see transitions).
var ErrTransition = errors.New("a job does not change phase that way")

// CanTransition reports whether a job may go from one phase to another.
func CanTransition(from, to Phase) bool { return slices.Contains(transitions[from], to) }

// Terminal reports whether the job will never run again.
func (p Phase) Terminal() bool { return p == PhaseCompleted || p == PhaseAborted }

// Abortable reports whether an abort may still roll the job back: only
// before contract (contract is fix-forward).
func (p Phase) Abortable() bool {
	return p < PhaseContracting || p == PhasePaused || p == PhaseFailed || p == PhaseAborting
}

// MarshalText stores phases by name.
func (p Phase) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText parses a phase name.
func (p *Phase) UnmarshalText(b []byte) error {
	v, err := ParsePhase(string(b))
	*p = v
	return err
}

package state

import "fmt"

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

package chaos

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Tally is what a Run did and found.
type Tally struct {
	Seed  uint64
	Fired int
	// Faults counts the faults fired by kind and by the job's phase when
	// each fired.
	Faults map[string]map[string]int
	// Stalled counts the faults fired while a step of refit's waited on the
	// harness (its lock, or its xid at slot creation; lock holds included),
	// by aim; Retried the lock holds during which refit's DDL was seen
	// waiting again after a lock timeout.
	Stalled   map[string]int
	LockHolds int
	Retried   int

	Migrations int            // completed
	Aborted    int            // aborted on purpose (and checked)
	Entries    map[string]int // completed migrations by entry point

	RunStarts    int         // refit run processes started
	RunExits     map[int]int // by exit code (-1: killed)
	WorkerStarts int         // refit worker processes started
	Retries      int         // refit retry of a daemon's failed job
	JobFailures  int         // job failures seen (each fault may cause one)
	// Unexpected are failures with no fault since the entry point last
	// (re)started the job: each is a finding.
	Unexpected []string

	Verifications int
	RowsChecked   int64
	lastRows      int64
	Writes        writerStats
	WriterErrors  int64
	Discrepancies int
	Leftovers     int

	Wall time.Duration
}

func newTally(seed uint64) *Tally {
	return &Tally{Seed: seed, Faults: map[string]map[string]int{}, Stalled: map[string]int{}, Entries: map[string]int{}, RunExits: map[int]int{}}
}

func (t *Tally) fired(f *fault) {
	t.Fired++
	k := f.kind.String()
	if t.Faults[k] == nil {
		t.Faults[k] = map[string]int{}
	}
	t.Faults[k][f.phase]++
	if f.blocked || f.kind == lockHold {
		t.Stalled[f.aim.String()]++
	}
	if f.kind == lockHold {
		t.LockHolds++
	}
}

func (t *Tally) unexpected(s string) { t.Unexpected = append(t.Unexpected, s) }

// String renders the tally as printed by make chaos.
func (t *Tally) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos tally (seed %d): %d faults fired; %d migrations completed (%s), %d aborted on purpose\n",
		t.Seed, t.Fired, t.Migrations, mapString(t.Entries), t.Aborted)
	phases := []string{"expanding", "backfilling", "syncing", "contracting", "aborting"}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  fault\t%s\ttotal\t\n", strings.Join(phases, "\t"))
	col := make([]int, len(phases)+1)
	for k := kind(0); k < numKinds; k++ {
		row := t.Faults[k.String()]
		var cells []string
		sum := 0
		for i, p := range phases {
			cells = append(cells, fmt.Sprint(row[p]))
			sum += row[p]
			col[i] += row[p]
		}
		col[len(phases)] += sum
		fmt.Fprintf(tw, "  %s\t%s\t%d\t\n", k, strings.Join(cells, "\t"), sum)
	}
	var cells []string
	for _, c := range col[:len(phases)] {
		cells = append(cells, fmt.Sprint(c))
	}
	fmt.Fprintf(tw, "  total\t%s\t%d\t\n", strings.Join(cells, "\t"), col[len(phases)])
	_ = tw.Flush()
	fmt.Fprintf(&b, "  fired while refit waited on the harness (its lock; its xid at slot creation), by step: %s; lock holds %d, refit's DDL seen retrying in %d\n",
		mapString(t.Stalled), t.LockHolds, t.Retried)
	fmt.Fprintf(&b, "  resumes: refit run started %d times (exit codes %s), refit worker started %d times, refit retry %d; job failures seen %d, unexpected %d\n",
		t.RunStarts, exitString(t.RunExits), t.WorkerStarts, t.Retries, t.JobFailures, len(t.Unexpected))
	fmt.Fprintf(&b, "  rows checked %d in %d verifications; writes in the ledger %d (%d inserts, %d updates, %d deletes), of unknown outcome %d (%d committed), resent after the server came back %d; application errors %d\n",
		t.RowsChecked, t.Verifications, t.Writes.committed(), t.Writes.Inserts, t.Writes.Updates, t.Writes.Deletes,
		t.Writes.Unknown, t.Writes.UnknownCommitted, t.Writes.Retried, t.WriterErrors)
	fmt.Fprintf(&b, "  discrepancies %d, leftovers %d; wall time %s\n", t.Discrepancies, t.Leftovers, t.Wall.Round(time.Second))
	for _, u := range t.Unexpected {
		fmt.Fprintf(&b, "  unexpected: %s\n", u)
	}
	return b.String()
}

func mapString(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func exitString(m map[int]int) string {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		name := fmt.Sprint(k)
		if k == -1 {
			name = "killed"
		}
		parts = append(parts, fmt.Sprintf("%s×%d", name, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

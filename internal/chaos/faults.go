package chaos

import (
	"math/rand/v2"
	"slices"
	"time"
)

// kind is a kind of fault.
type kind int

const (
	killRun            kind = iota // SIGKILL of `refit run`
	killWorker                     // SIGKILL of the `refit worker` daemon running the job
	pgRestart                      // PostgreSQL stopped with pg_ctl -m immediate, then restarted
	terminateBackend               // pg_terminate_backend of one of refit's sessions (by application_name)
	terminateWalsender             // pg_terminate_backend of the job's walsender
	lockHold                       // ACCESS SHARE held in an open transaction across a DDL step, > lock_timeout
	numKinds
)

func (k kind) String() string {
	return [...]string{"kill_run", "kill_worker", "pg_restart", "terminate_backend", "terminate_walsender", "lock_hold"}[k]
}

// aim is where in a migration a fault is injected.
type aim int

const (
	// atAbort: while a rollback DDL of the attempt that is aborted on
	// purpose waits on an ACCESS SHARE lock the harness holds.
	atAbort aim = iota
	// atExpand: while an expand DDL waits on the harness's ACCESS SHARE
	// lock (so the fault lands inside the phase, however short).
	atExpand
	// atSlot: while the creation of the job's replication slot waits for a
	// transaction of the harness's that holds an xid (as a long application
	// transaction would make it wait).
	atSlot
	// atBackfill: when the backfill has passed a random fraction of the rows.
	atBackfill
	// atIndex: while the post-backfill CREATE INDEX CONCURRENTLY waits for
	// the harness's open transaction (its snapshot).
	atIndex
	// atWindow: a random time after the job entered the window.
	atWindow
	// atContract: while a contract DDL waits on the harness's lock.
	atContract
	numAims
)

func (a aim) String() string {
	return [...]string{"abort", "expand", "slot creation", "backfill", "index build", "window", "contract"}[a]
}

// capacity bounds the faults of one aim in one migration.
var capacity = [numAims]int{atAbort: 2, atExpand: 2, atSlot: 2, atBackfill: 3, atIndex: 2, atWindow: 3, atContract: 2}

// fault is one planned fault, and what happened when it was fired.
type fault struct {
	kind  kind
	aim   aim
	frac  float64       // atBackfill: fraction of the rows
	delay time.Duration // atWindow: time in the window

	// Set when fired.
	phase   string // the job's phase at that moment
	blocked bool   // refit was waiting on the harness's lock
	retried bool   // lockHold: refit's DDL was seen waiting again after a lock timeout
	note    string
}

// allows reports whether fault kind k can be aimed at a in migration m.
func (m *migration) allows(k kind, a aim) bool {
	switch k {
	case killRun:
		if m.entry != entryRun {
			return false
		}
	case killWorker:
		if m.entry != entryWorker {
			return false
		}
	case terminateWalsender:
		if !m.sync || a == atExpand || a == atSlot || a == atAbort {
			return false
		}
	case lockHold:
		if a == atBackfill || a == atWindow || a == atSlot {
			return false // no DDL there to hold back
		}
	}
	switch a {
	case atAbort:
		return m.abortFirst
	case atSlot:
		return m.sync
	case atExpand:
		return m.expandDDL
	case atBackfill:
		return m.rows
	case atIndex:
		return m.indexBuild
	case atContract:
		return m.contractDDL
	}
	return true
}

// kindClass is a fault kind where "kill" stands for the kill of whichever
// entry point runs the migration.
type kindClass int

const killEntry kindClass = -1

func (c kindClass) resolve(m *migration) kind {
	if c == killEntry {
		if m.entry == entryRun {
			return killRun
		}
		return killWorker
	}
	return kind(c)
}

type combo struct {
	class kindClass
	aim   aim
}

// planFaults spreads n faults over the migrations, seeded: first one of
// every kind (so a short smoke still meets each), then PostgreSQL restarts
// mid-backfill and mid-window, then every other kind × aim that the
// migrations allow, then at random. Each fault goes to the least loaded
// migration that allows it.
func planFaults(rng *rand.Rand, migs []*migration, n int) [][]*fault {
	out := make([][]*fault, len(migs))
	load := func(i int, a aim) int {
		c := 0
		for _, f := range out[i] {
			if f.aim == a {
				c++
			}
		}
		return c
	}
	place := func(c combo) bool {
		var best []int
		bestLoad := -1
		for i, m := range migs {
			if !m.allows(c.class.resolve(m), c.aim) || load(i, c.aim) >= capacity[c.aim] {
				continue
			}
			if c.class == kindClass(lockHold) && slices.ContainsFunc(out[i], func(f *fault) bool { return f.kind == lockHold && f.aim == c.aim }) {
				continue // after a lock hold the step goes through: one per aim
			}
			switch l := len(out[i]); {
			case bestLoad < 0 || l < bestLoad:
				best, bestLoad = []int{i}, l
			case l == bestLoad:
				best = append(best, i)
			}
		}
		if len(best) == 0 {
			return false
		}
		i := best[rng.IntN(len(best))]
		out[i] = append(out[i], newFault(rng, c.class.resolve(migs[i]), c.aim))
		return true
	}
	var queue []combo
	queue = append(queue,
		combo{kindClass(pgRestart), atBackfill}, combo{killEntry, atWindow}, combo{kindClass(terminateWalsender), atBackfill},
		combo{kindClass(lockHold), atExpand}, combo{kindClass(terminateBackend), atContract},
		combo{kindClass(pgRestart), atWindow}, combo{kindClass(lockHold), atContract}, combo{kindClass(lockHold), atIndex},
		combo{killEntry, atSlot}, combo{kindClass(lockHold), atAbort}, combo{killEntry, atAbort})
	var rest []combo
	for _, c := range []kindClass{kindClass(killRun), kindClass(killWorker), kindClass(pgRestart), kindClass(terminateBackend), kindClass(terminateWalsender), kindClass(lockHold)} {
		for a := aim(0); a < numAims; a++ {
			rest = append(rest, combo{c, a})
		}
	}
	rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	queue = append(queue, rest...)
	placed := 0
	for _, c := range queue {
		if placed == n {
			break
		}
		if place(c) {
			placed++
		}
	}
	// The rest at random, mostly where the work is long (backfill, window).
	weights := []struct {
		c combo
		w int
	}{
		{combo{killEntry, atBackfill}, 4}, {combo{killEntry, atWindow}, 3}, {combo{killEntry, atExpand}, 1}, {combo{killEntry, atIndex}, 1}, {combo{killEntry, atContract}, 2},
		{combo{kindClass(pgRestart), atBackfill}, 4}, {combo{kindClass(pgRestart), atWindow}, 3}, {combo{kindClass(pgRestart), atExpand}, 1},
		{combo{kindClass(pgRestart), atIndex}, 1}, {combo{kindClass(pgRestart), atContract}, 1},
		{combo{kindClass(terminateBackend), atBackfill}, 2}, {combo{kindClass(terminateBackend), atWindow}, 2}, {combo{kindClass(terminateBackend), atContract}, 1},
		{combo{kindClass(terminateWalsender), atBackfill}, 2}, {combo{kindClass(terminateWalsender), atWindow}, 2},
		{combo{kindClass(lockHold), atExpand}, 1}, {combo{kindClass(lockHold), atContract}, 1}, {combo{kindClass(lockHold), atIndex}, 1},
		{combo{killEntry, atSlot}, 1}, {combo{kindClass(pgRestart), atSlot}, 1}, {combo{kindClass(terminateBackend), atSlot}, 1},
		{combo{killEntry, atAbort}, 1}, {combo{kindClass(pgRestart), atAbort}, 1}, {combo{kindClass(terminateBackend), atAbort}, 1},
	}
	total := 0
	for _, w := range weights {
		total += w.w
	}
	for tries := 0; placed < n && tries < 100*n; tries++ {
		r := rng.IntN(total)
		for _, w := range weights {
			if r -= w.w; r < 0 {
				if place(w.c) {
					placed++
				}
				break
			}
		}
	}
	for i := range out {
		sortFaults(out[i])
	}
	return out
}

func newFault(rng *rand.Rand, k kind, a aim) *fault {
	f := &fault{kind: k, aim: a}
	switch a {
	case atBackfill:
		f.frac = 0.05 + 0.75*rng.Float64()
	case atWindow:
		f.delay = time.Duration(50+rng.IntN(900)) * time.Millisecond
	}
	return f
}

// sortFaults orders a migration's faults as they happen: by aim, then by
// position; a lock hold comes last in its aim (the step goes through after
// it, so nothing else can stall there).
func sortFaults(fs []*fault) {
	slices.SortStableFunc(fs, func(a, b *fault) int {
		switch {
		case a.aim != b.aim:
			return int(a.aim) - int(b.aim)
		case (a.kind == lockHold) != (b.kind == lockHold):
			if a.kind == lockHold {
				return 1
			}
			return -1
		case a.frac != b.frac:
			if a.frac < b.frac {
				return -1
			}
			return 1
		}
		return int(a.delay - b.delay)
	})
}

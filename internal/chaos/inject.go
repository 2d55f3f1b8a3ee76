package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/refit-dev/refit/replication"
)

// errMissed means the job went past a fault's aim before the fault could
// fire there.
var errMissed = errors.New("the job went past the fault's aim")

// fire waits for the fault's aim and injects it.
func (h *harness) fire(ctx context.Context, f *fault) error {
	switch f.aim {
	case atAbort:
		return h.stalled(ctx, f, rankAborting, h.startAbort, h.holdLock)
	case atExpand:
		return h.stalled(ctx, f, rankExpanding, nil, h.holdLock)
	case atSlot:
		return h.stalled(ctx, f, rankBackfilling, nil, func(ctx context.Context) (int, func(), error) {
			if err := h.holdXid(ctx); err != nil {
				return 0, nil, err
			}
			var pid int
			if err := h.xid.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return 0, nil, fmt.Errorf("xid connection: %w", err)
			}
			return pid, func() {}, nil // kept for the next fault at slot creation
		})
	case atIndex:
		if h.m.rows {
			// The lock is taken near the end of the backfill: a backfill
			// batch does not wait on it, the index build after it does.
			var past bool
			err := h.waitFor(ctx, "the end of the backfill", func(st *jobStatus) bool {
				past = st != nil && st.rank() > rankBackfilling
				return past || (st != nil && st.rank() == rankBackfilling && (st.rangesDone || st.frac() >= 0.9))
			})
			if err != nil {
				return err
			}
			if past {
				return fmt.Errorf("%w: the index was built", errMissed)
			}
		}
		return h.stalled(ctx, f, rankBackfilling, nil, h.holdLock)
	case atContract:
		return h.stalled(ctx, f, rankContracting, h.openGate, h.holdLock)
	case atBackfill:
		var past bool
		var at *jobStatus
		err := h.waitFor(ctx, fmt.Sprintf("%.0f%% of the backfill", 100*f.frac), func(st *jobStatus) bool {
			past = st != nil && st.rank() > rankBackfilling
			at = st
			return past || (st != nil && st.phase == "backfilling" && st.frac() >= f.frac)
		})
		if err != nil {
			return err
		}
		if past {
			return fmt.Errorf("%w: the backfill ended before %.0f%%", errMissed, 100*f.frac)
		}
		f.note = fmt.Sprintf("rows %d/%d", at.rowsDone, at.rowsTotal)
		return h.inject(ctx, f, "backfilling", 0)
	case atWindow:
		var entered time.Time
		err := h.waitFor(ctx, "the window", func(st *jobStatus) bool {
			if st == nil || st.phase != "syncing" {
				return false
			}
			if entered.IsZero() {
				entered = time.Now()
			}
			return time.Since(entered) >= f.delay
		})
		if err != nil {
			return err
		}
		f.note = fmt.Sprintf("%s into the window", f.delay)
		return h.inject(ctx, f, "syncing", 0)
	}
	return fmt.Errorf("unknown aim %d", f.aim)
}

// holdLock opens a session holding ACCESS SHARE on the table in an open
// REPEATABLE READ transaction (whose snapshot also holds back CREATE INDEX
// CONCURRENTLY); it returns the session's pid and its release.
func (h *harness) holdLock(ctx context.Context) (int, func(), error) {
	conn, err := h.ctl.Acquire(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("lock connection: %w", err)
	}
	c := conn.Hijack() // its session ends with the fault or the hold
	release := func() { c.Close(context.WithoutCancel(ctx)) }
	var pid int
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		release()
		return 0, nil, fmt.Errorf("lock connection: %w", err)
	}
	if _, err := c.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ; LOCK TABLE "+table+" IN ACCESS SHARE MODE; SELECT count(*) FROM (SELECT 1 FROM "+table+" LIMIT 1) s"); err != nil {
		release()
		return 0, nil, fmt.Errorf("take the lock: %w", err)
	}
	return pid, release, nil
}

// stalled makes one of refit's steps wait on a session of the harness's
// (hold: a lock, or an xid), triggers the phase (trigger, if any), waits
// until one of refit's sessions waits for that session while the job is in
// the phase of rank want, and then fires the fault: a lock hold keeps the
// lock for at least three lock timeouts, so the DDL times out and retries;
// any other fault is injected while refit waits, and the hold released
// after it.
func (h *harness) stalled(ctx context.Context, f *fault, want int, trigger func(context.Context) error, hold func(context.Context) (int, func(), error)) error {
	holder, release, err := hold(ctx)
	if err != nil {
		return err
	}
	defer release()
	if trigger != nil {
		if err := trigger(ctx); err != nil {
			return err
		}
	}
	var waiter, past bool
	var phase string
	var pid int
	deadline := time.Now().Add(30 * time.Second)
	err = h.waitFor(ctx, "refit to wait on the harness", func(st *jobStatus) bool {
		if st != nil && st.rank() > want {
			past = true
			return true
		}
		if st == nil || ranks[st.phase] != want {
			return time.Now().After(deadline)
		}
		phase = st.phase
		pid, waiter = h.waiterOf(ctx, holder)
		return waiter || time.Now().After(deadline)
	})
	if err != nil {
		return err
	}
	switch {
	case past:
		return fmt.Errorf("%w: no step waited on the harness", errMissed)
	case !waiter:
		return fmt.Errorf("%w: no refit session waited on the harness within 30s", errMissed)
	}
	f.blocked = true
	if f.kind != lockHold {
		return h.inject(ctx, f, phase, pid)
	}
	// Held across three lock timeouts at least, and until the DDL has been
	// seen waiting again: it gave up and retried (a concurrent index build
	// leaves an INVALID index that refit drops before it builds again).
	h.record(f, phase)
	seen := map[string]bool{}
	start := time.Now()
	for time.Since(start) < 3*ddlLockTimeout || (len(seen) < 2 && time.Since(start) < 10*ddlLockTimeout) {
		var waits []string
		rows, err := h.ctl.Query(ctx, `SELECT pid || '@' || query_start FROM pg_stat_activity
			WHERE application_name LIKE 'refit%' AND datname = current_database() AND $1 = ANY (pg_blocking_pids(pid))`, holder)
		if err == nil {
			waits, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			return fmt.Errorf("watch the waiting DDL: %w", err)
		}
		for _, w := range waits {
			seen[w] = true
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	held := time.Since(start)
	release()
	f.retried = len(seen) >= 2
	if f.retried {
		h.tally.Retried++
	}
	f.note = fmt.Sprintf("held %s, refit's DDL waited %d times", held.Round(10*time.Millisecond), len(seen))
	h.logf("  fault %d: %s in %s (%s)", h.tally.Fired, f.kind, phase, f.note)
	return nil
}

// waiterOf returns one of refit's sessions that waits for a session holder
// holds, opened by a refit process that is alive: a killed process's
// sessions linger until PostgreSQL notices (client_connection_check_interval).
func (h *harness) waiterOf(ctx context.Context, holder int) (int, bool) {
	var since time.Time
	for _, p := range append([]*proc{h.run, h.abort}, h.daemons...) {
		if p != nil && !p.exited() && (since.IsZero() || p.started.Before(since)) {
			since = p.started
		}
	}
	if since.IsZero() {
		return 0, false
	}
	// A session older than the last kill may be the killed process's until
	// PostgreSQL has had time to notice.
	if !h.lastKill.IsZero() && time.Since(h.lastKill) < 1500*time.Millisecond && h.lastKill.After(since) {
		since = h.lastKill
	}
	var pid int
	err := h.ctl.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'refit%'
		AND datname = current_database() AND backend_start >= $2 AND $1 = ANY (pg_blocking_pids(pid)) LIMIT 1`, holder, since).Scan(&pid)
	return pid, err == nil
}

// record counts a fired fault.
func (h *harness) record(f *fault, phase string) {
	f.phase = phase
	h.tally.fired(f)
	h.faultSince = true
	h.resumeAt = time.Now().Add(time.Duration(h.rng.IntN(300)) * time.Millisecond)
}

// inject fires fault f now; the job is in phase. waiter, if not 0, is the
// refit session that waits on the harness's lock (the one a
// terminate_backend ends).
func (h *harness) inject(ctx context.Context, f *fault, phase string, waiter int) error {
	// A refit run that is not running cannot be killed: start it first.
	switch f.kind {
	case killRun:
		if err := h.waitFor(ctx, "refit run", func(*jobStatus) bool { return h.run != nil && !h.run.exited() }); err != nil {
			return err
		}
	case killWorker:
		if err := h.waitFor(ctx, "refit worker", func(st *jobStatus) bool { return h.liveDaemon(st) != nil }); err != nil {
			return err
		}
	}
	var target string
	switch f.kind {
	case killRun:
		target = fmt.Sprintf("pid %d", h.run.pid())
		h.run.kill()
		h.lastKill = time.Now()
	case killWorker:
		st, err := h.status(ctx)
		if err != nil {
			return err
		}
		d := h.liveDaemon(st)
		target = fmt.Sprintf("pid %d", d.pid())
		if st != nil && st.owner != "" {
			target += ", owner " + st.owner
		}
		d.kill()
		h.lastKill = time.Now()
	case pgRestart:
		if err := h.restartServer(ctx); err != nil {
			return err
		}
	case terminateBackend:
		pid, name, err := h.refitBackend(ctx, phase, waiter)
		if err != nil {
			return err
		}
		if _, err := h.ctl.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
			return fmt.Errorf("terminate backend %d: %w", pid, err)
		}
		target = fmt.Sprintf("pid %d %s", pid, name)
	case terminateWalsender:
		pid, err := h.walsender(ctx)
		if err != nil {
			return err
		}
		if _, err := h.ctl.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
			return fmt.Errorf("terminate walsender %d: %w", pid, err)
		}
		target = fmt.Sprintf("walsender pid %d", pid)
	default:
		return fmt.Errorf("inject %s: not a fault to inject now", f.kind)
	}
	h.record(f, phase)
	switch {
	case f.note != "" && target != "":
		target += ", " + f.note
	case f.note != "":
		target = f.note
	}
	h.logf("  fault %d: %s in %s (%s)", h.tally.Fired, f.kind, phase, target)
	return nil
}

// restartServer stops PostgreSQL the way a crash does and starts it again
// on the same port and data directory.
func (h *harness) restartServer(ctx context.Context) error {
	h.srv.markDown()
	if err := h.cluster.Kill(ctx); err != nil {
		return err
	}
	h.releaseXid()
	h.app.Reset()
	h.ctl.Reset()
	if err := sleep(ctx, time.Duration(100+h.rng.IntN(500))*time.Millisecond); err != nil {
		return err
	}
	if err := h.cluster.Restart(ctx); err != nil {
		return err
	}
	h.app.Reset()
	h.ctl.Reset()
	h.srv.markUp()
	return nil
}

// refitBackend picks a session of refit's to terminate, seeded: mostly the
// one waiting on the harness's hold if any, else one of the job's own
// sessions for the phase (a backfill range in the backfill, the apply in
// the window); sometimes the session holding the job's advisory lock (the
// claim that only one process runs the job), sometimes any of refit's.
func (h *harness) refitBackend(ctx context.Context, phase string, waiter int) (int, string, error) {
	type cand struct {
		pid  int
		name string
		lock bool
	}
	var found []cand
	err := retryFor(ctx, 5*time.Second, func() (bool, error) {
		rows, err := h.ctl.Query(ctx, `SELECT a.pid, a.application_name,
			EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)
			FROM pg_stat_activity a
			WHERE a.application_name LIKE 'refit%' AND a.datname = current_database() AND a.backend_type = 'client backend'
			AND a.pid <> pg_backend_pid() ORDER BY a.pid`)
		if err != nil {
			return false, err
		}
		found, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (cand, error) {
			var c cand
			return c, r.Scan(&c.pid, &c.name, &c.lock)
		})
		return len(found) > 0, err
	})
	if err != nil {
		return 0, "", fmt.Errorf("find refit's sessions: %w", err)
	}
	if len(found) == 0 {
		return 0, "", fmt.Errorf("%w: no refit session to terminate", errMissed)
	}
	pickOf := func(keep func(cand) bool) []cand {
		var out []cand
		for _, c := range found {
			if keep(c) {
				out = append(out, c)
			}
		}
		return out
	}
	var pick []cand
	switch r := h.rng.IntN(4); {
	case r == 0:
		pick = pickOf(func(c cand) bool { return c.lock })
	case r == 1:
		pick = found
	case waiter != 0:
		pick = pickOf(func(c cand) bool { return c.pid == waiter })
	case phase == "backfilling":
		pick = pickOf(func(c cand) bool { return strings.Contains(c.name, "-b") })
	case phase == "syncing":
		pick = pickOf(func(c cand) bool { return strings.HasSuffix(c.name, "-apply") })
	}
	if len(pick) == 0 {
		pick = found
	}
	c := pick[h.rng.IntN(len(pick))]
	name := c.name
	switch {
	case c.pid == waiter:
		name += ", waiting on the harness"
	case c.lock:
		name += ", holding the job's advisory lock"
	}
	return c.pid, name, nil
}

// walsender is the pid of the job's walsender, waiting a little for the
// consumer to (re)connect.
func (h *harness) walsender(ctx context.Context) (int, error) {
	st, err := h.status(ctx)
	if err != nil {
		return 0, err
	}
	if st == nil {
		return 0, fmt.Errorf("%w: no job", errMissed)
	}
	var pid int
	err = retryFor(ctx, 5*time.Second, func() (bool, error) {
		err := h.ctl.QueryRow(ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
			replication.SlotName(st.id)).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, h.ensure(ctx)
		}
		return err == nil, err
	})
	if err != nil {
		return 0, err
	}
	if pid == 0 {
		return 0, fmt.Errorf("%w: no walsender streams slot %s", errMissed, replication.SlotName(st.id))
	}
	return pid, nil
}

// retryFor calls f every 20ms until it reports done, fails, or d passes.
func retryFor(ctx context.Context, d time.Duration, f func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		done, err := f()
		if done || err != nil || time.Now().After(deadline) {
			return err
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

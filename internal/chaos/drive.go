package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// migrate runs one migration to completion, firing its faults. A migration
// marked abortFirst first runs an attempt that is aborted in its window
// (its atAbort faults hit the rollback) and checked to leave the schema as
// it was. It returns the faults that missed their aim (the job went past it
// first).
func (h *harness) migrate(ctx context.Context, m *migration, faults []*fault) ([]*fault, error) {
	ctx, cancel := context.WithTimeout(ctx, migrationLimit)
	defer cancel()
	h.m = m
	h.file = filepath.Join(h.cfg.Dir, m.name+".yaml")
	if err := os.WriteFile(h.file, []byte(m.yaml), 0o600); err != nil {
		return nil, fmt.Errorf("write migration: %w", err)
	}
	h.logf("migration %d %s by %s: %d faults", m.seq, m.name, m.entry, len(faults))
	var missed []*fault
	fire := func(f *fault) error {
		err := h.fire(ctx, f)
		if errors.Is(err, errMissed) {
			h.logf("  %s@%s missed its aim (%v): carried to a later migration", f.kind, f.aim, err)
			missed = append(missed, f)
			return nil
		}
		return err
	}
	of := func(aims ...aim) []*fault {
		var out []*fault
		for _, f := range faults {
			if slices.Contains(aims, f.aim) {
				out = append(out, f)
			}
		}
		return out
	}
	if m.abortFirst {
		if err := h.abortAttempt(ctx, of(atAbort), fire); err != nil {
			return nil, h.explain(fmt.Errorf("the attempt aborted on purpose: %w", err))
		}
	}
	h.newAttempt(ctx)
	defer h.releaseXid()
	if len(of(atSlot)) > 0 {
		// Taken before the job starts: the slot's creation waits for it.
		if err := h.holdXid(ctx); err != nil {
			return nil, err
		}
	}
	// The transaction holding an xid ends a while after the faults at slot
	// creation, as a long application transaction would: the entry point is
	// resumed meanwhile.
	endXid := func() error {
		if h.xid == nil {
			return nil
		}
		if err := h.dwell(ctx, time.Duration(300+h.rng.IntN(1200))*time.Millisecond); err != nil {
			return err
		}
		h.releaseXid()
		return nil
	}
	for _, f := range of(atExpand, atSlot, atBackfill, atIndex, atWindow) {
		if f.aim > atSlot {
			if err := endXid(); err != nil {
				return nil, h.explain(err)
			}
		}
		if err := fire(f); err != nil {
			return nil, h.explain(err)
		}
	}
	if err := endXid(); err != nil {
		return nil, h.explain(err)
	}
	// The old application version writes in the window for a while (its
	// writes are synced), then the new version, which writes the derived
	// columns too, replaces it before the contract gate opens.
	if err := h.waitFor(ctx, "the window", func(st *jobStatus) bool { return st != nil && st.rank() >= rankSyncing }); err != nil {
		return nil, h.explain(err)
	}
	if err := h.dwell(ctx, time.Duration(200+h.rng.IntN(300))*time.Millisecond); err != nil {
		return nil, h.explain(err)
	}
	h.switchShape(m)
	for _, f := range of(atContract) {
		if err := fire(f); err != nil {
			return nil, h.explain(err)
		}
	}
	if err := h.openGate(ctx); err != nil {
		return nil, h.explain(err)
	}
	if err := h.waitFor(ctx, "completion", func(st *jobStatus) bool {
		return st != nil && st.phase == "completed" && (m.entry == entryWorker || h.run == nil)
	}); err != nil {
		return nil, h.explain(err)
	}
	if err := h.stopDaemons(ctx); err != nil {
		return nil, err
	}
	h.completed = append(h.completed, m)
	if err := h.verify(ctx, m); err != nil {
		return nil, h.explain(err)
	}
	h.tally.Migrations++
	h.tally.Entries[m.entry.String()]++
	return missed, nil
}

// newAttempt starts a new job of the current migration.
func (h *harness) newAttempt(ctx context.Context) {
	h.submitted, h.gateOpen, h.abortStarted, h.faultSince, h.lastJobErr, h.lastPhase = false, false, false, false, "", ""
	h.minJob = 0
	_ = h.ctl.QueryRow(ctx, "SELECT coalesce(max(id), 0) FROM refit.jobs").Scan(&h.minJob) //nolint:errcheck // no refit schema yet: 0
}

// switchShape makes the application write m's derived columns (and give
// its volatile columns values of its own, now and then).
func (h *harness) switchShape(m *migration) {
	cur := h.w.shape.Load()
	next := &shape{derived: slices.Clone(cur.derived), tokens: slices.Clone(cur.tokens)}
	next.derived = append(next.derived, m.derived...)
	for _, v := range m.volatile {
		next.tokens = append(next.tokens, v.column)
	}
	h.w.setShape(next)
}

// abortAttempt runs the migration into the window (the old application
// writing), aborts it with `refit abort` (faults may hit the rollback), and
// checks that the schema is as before and nothing is left.
func (h *harness) abortAttempt(ctx context.Context, faults []*fault, fire func(*fault) error) error {
	before, err := h.schema(ctx)
	if err != nil {
		return err
	}
	h.newAttempt(ctx)
	if err := h.waitFor(ctx, "the window", func(st *jobStatus) bool { return st != nil && st.rank() >= rankSyncing }); err != nil {
		return err
	}
	if err := h.dwell(ctx, 300*time.Millisecond); err != nil {
		return err
	}
	for _, f := range faults {
		if err := fire(f); err != nil {
			return err
		}
	}
	if err := h.startAbort(ctx); err != nil {
		return err
	}
	if err := h.waitFor(ctx, "the abort", func(st *jobStatus) bool {
		return st != nil && st.phase == "aborted" && (h.m.entry == entryWorker || h.run == nil) && h.abort == nil
	}); err != nil {
		return err
	}
	if err := h.stopDaemons(ctx); err != nil {
		return err
	}
	h.w.pause()
	defer h.w.resume()
	after, err := h.schema(ctx)
	if err != nil {
		return err
	}
	if after != before {
		return fmt.Errorf("the abort did not restore the schema:\nbefore %s\nafter  %s", before, after)
	}
	if err := h.checkRows(ctx); err != nil {
		return err
	}
	if err := h.checkAudit(ctx); err != nil {
		return err
	}
	if err := h.checkLeftovers(ctx, "abort"); err != nil {
		return err
	}
	h.tally.Aborted++
	h.logf("  aborted on purpose in the window: schema restored, rows as the ledger says, nothing left")
	return nil
}

// startAbort runs `refit abort` in the background (it waits for the process
// running the job to roll it back, or rolls it back itself); once.
func (h *harness) startAbort(ctx context.Context) error {
	if h.abortStarted {
		return nil
	}
	if err := h.waitFor(ctx, "the job", func(st *jobStatus) bool { return st != nil }); err != nil {
		return err
	}
	p, err := h.start("refit abort", "abort", h.m.name, "--config", h.conf)
	if err != nil {
		return err
	}
	h.abort, h.abortStarted = p, true
	return nil
}

// start starts a refit process; with Config.LogDir its output is kept there
// too, one file per process, numbered in start order.
func (h *harness) start(name string, args ...string) (*proc, error) {
	logPath := ""
	if h.cfg.LogDir != "" {
		h.procs++
		logPath = filepath.Join(h.cfg.LogDir, fmt.Sprintf("%04d-%s-%s.log", h.procs, h.m.name, strings.ReplaceAll(name, " ", "-")))
	}
	return startProc(name, h.cfg.Binary, logPath, args...)
}

// dwell waits d while supervising the entry point.
func (h *harness) dwell(ctx context.Context, d time.Duration) error {
	until := time.Now().Add(d)
	return h.waitFor(ctx, "a pause", func(*jobStatus) bool { return !time.Now().Before(until) })
}

// openGate opens the contract gate (refit complete --no-wait).
func (h *harness) openGate(ctx context.Context) error {
	if h.gateOpen {
		return nil
	}
	if err := h.waitFor(ctx, "the job", func(st *jobStatus) bool { return st != nil }); err != nil {
		return err
	}
	if _, err := h.cli(ctx, "complete", h.m.name, "--no-wait"); err != nil {
		return err
	}
	h.gateOpen = true
	return nil
}

// cli runs a short refit command and returns its output.
func (h *harness) cli(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	p, err := h.start("refit "+args[0], append(args, "--config", h.conf)...)
	if err != nil {
		return "", err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.kill()
		return p.out.String(), fmt.Errorf("refit %s: %w\n%s", strings.Join(args, " "), ctx.Err(), p.out.tail(4096))
	}
	if code := p.exitCode(); code != 0 {
		return p.out.String(), fmt.Errorf("refit %s exited %d:\n%s", strings.Join(args, " "), code, p.out.tail(4096))
	}
	return p.out.String(), nil
}

// holdXid opens (if it is not open) a transaction that holds an xid: the
// creation of a logical slot waits for it.
func (h *harness) holdXid(ctx context.Context) error {
	if h.xid != nil && !h.xid.IsClosed() {
		return nil
	}
	conn, err := h.ctl.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("xid connection: %w", err)
	}
	c := conn.Hijack()
	if _, err := c.Exec(ctx, "BEGIN; SELECT pg_current_xact_id()"); err != nil {
		c.Close(context.WithoutCancel(ctx))
		return fmt.Errorf("take an xid: %w", err)
	}
	h.xid = c
	return nil
}

func (h *harness) releaseXid() {
	if h.xid != nil {
		h.xid.Close(context.Background())
		h.xid = nil
	}
}

// jobStatus is the current attempt's job as refit.jobs has it.
type jobStatus struct {
	id         int64
	phase      string
	resume     string
	err        string
	owner      string
	rowsDone   int64
	rowsTotal  int64
	rangesDone bool
}

const (
	rankPending = iota
	rankExpanding
	rankBackfilling
	rankSyncing
	rankContracting
	rankCompleted
	rankAborting
	rankAborted
)

var ranks = map[string]int{"pending": rankPending, "expanding": rankExpanding, "backfilling": rankBackfilling,
	"syncing": rankSyncing, "contracting": rankContracting, "completed": rankCompleted, "aborting": rankAborting, "aborted": rankAborted}

// rank orders the job's phase; a failed (or paused) job ranks as the phase
// it resumes in.
func (s *jobStatus) rank() int {
	if s.phase == "failed" || s.phase == "paused" {
		return ranks[s.resume]
	}
	return ranks[s.phase]
}

// frac is the fraction of the rows the backfill has passed.
func (s *jobStatus) frac() float64 {
	if s.rowsTotal <= 0 {
		return 0
	}
	return float64(s.rowsDone) / float64(s.rowsTotal)
}

// status reads the attempt's job; nil while there is none.
func (h *harness) status(ctx context.Context) (*jobStatus, error) {
	var s jobStatus
	err := h.ctl.QueryRow(ctx, `SELECT j.id, j.phase, coalesce(j.resume_phase, ''), coalesce(j.error, ''), coalesce(j.owner, ''),
		coalesce((SELECT sum(rows_done) FROM refit.backfill_ranges r WHERE r.job_id = j.id), 0)::bigint, j.rows_total,
		coalesce((SELECT bool_and(done) FROM refit.backfill_ranges r WHERE r.job_id = j.id), false)
		FROM refit.jobs j WHERE j.name = $1 AND j.id > $2 ORDER BY j.id DESC LIMIT 1`, h.m.name, h.minJob).
		Scan(&s.id, &s.phase, &s.resume, &s.err, &s.owner, &s.rowsDone, &s.rowsTotal, &s.rangesDone)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil && strings.Contains(err.Error(), "42P01"): // no refit schema yet
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read the job: %w", err)
	}
	return &s, nil
}

// waitFor supervises the entry point until cond holds.
func (h *harness) waitFor(ctx context.Context, what string, cond func(*jobStatus) bool) error {
	for {
		if err := h.ensure(ctx); err != nil {
			return err
		}
		st, err := h.status(ctx)
		if err != nil {
			return err
		}
		if cond(st) {
			return nil
		}
		if err := sleep(ctx, waitStep); err != nil {
			desc := "no job"
			if st != nil {
				desc = fmt.Sprintf("job %d %s (resume %s) error %q", st.id, st.phase, st.resume, st.err)
			}
			return fmt.Errorf("waiting for %s: %w (%s)", what, err, desc)
		}
	}
}

// ensure supervises the entry point and resumes the job the way an
// operator would after a fault: it re-runs `refit run` when it exited
// before the job ended, restarts a dead worker replica, and runs `refit
// retry` for a job the workers left failed.
func (h *harness) ensure(ctx context.Context) error {
	st, err := h.status(ctx)
	if err != nil {
		return err
	}
	if st != nil && st.phase != h.lastPhase {
		h.lastPhase = st.phase
		h.logf("  job %d: %s", st.id, st.phase)
	}
	if st != nil && st.err != "" && st.err != h.lastJobErr {
		h.lastJobErr = st.err
		h.noteFailure(st)
	}
	if h.abort != nil && h.abort.exited() {
		// It fails when the rollback fails (a fault): the entry point
		// resumes the rollback.
		code := h.abort.exitCode()
		if code != 0 && !h.faultSince {
			h.tally.unexpected(fmt.Sprintf("refit abort exited %d with no fault since it started:\n%s", code, h.abort.out.tail(3000)))
		}
		h.logf("  refit abort (pid %d) exited %d", h.abort.pid(), code)
		h.abort = nil
	}
	ended := st != nil && (st.phase == "completed" || st.phase == "aborted")
	switch h.m.entry {
	case entryRun:
		if h.run != nil && !h.run.exited() {
			return nil
		}
		if h.run != nil {
			code := h.run.exitCode()
			h.tally.RunExits[code]++
			if code != 0 && code != 3 && code != -1 && !h.faultSince {
				h.tally.unexpected(fmt.Sprintf("refit run exited %d with no fault since it started:\n%s", code, h.run.out.tail(3000)))
			}
			h.logf("  refit run (pid %d) exited %d", h.run.pid(), code)
			h.lastOut, h.run = h.run.out, nil
		}
		if ended || time.Now().Before(h.resumeAt) {
			return nil
		}
		p, err := h.start("refit run", "run", h.file, "--config", h.conf, "--contract", "manual")
		if err != nil {
			return err
		}
		h.run, h.faultSince = p, false
		h.tally.RunStarts++
	case entryWorker:
		if h.daemons == nil {
			h.daemons = make([]*proc, 2)
		}
		for i, d := range h.daemons {
			if d != nil && d.exited() {
				h.logf("  refit worker (pid %d) exited %d", d.pid(), d.exitCode())
				h.lastOut, h.daemons[i] = d.out, nil
			}
			if h.daemons[i] == nil && !ended && !time.Now().Before(h.resumeAt) {
				p, err := h.start("refit worker", "worker", "--config", h.conf)
				if err != nil {
					return err
				}
				h.daemons[i] = p
				h.tally.WorkerStarts++
			}
		}
		switch {
		case st == nil && !h.submitted:
			if _, err := h.cli(ctx, "submit", h.file, "--contract", "manual"); err != nil {
				return err
			}
			h.submitted = true
		case st != nil && st.phase == "failed" && !time.Now().Before(h.resumeAt):
			if !h.faultSince {
				h.tally.unexpected(fmt.Sprintf("job %d failed with no fault since it was last resumed: %s", st.id, st.err))
			}
			if _, err := h.cli(ctx, "retry", h.m.name); err != nil {
				// A runner of the job that is still at work (its claim lost
				// with a terminated session) may have resumed it first.
				if now, serr := h.status(ctx); serr != nil || now == nil || now.phase == "failed" {
					return err
				}
			}
			h.faultSince = false
			h.tally.Retries++
		}
	}
	return nil
}

// noteFailure records a job failure the harness saw.
func (h *harness) noteFailure(st *jobStatus) {
	h.tally.JobFailures++
	msg := st.err
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	h.logf("  job %d failed in %s: %s", st.id, st.resume, msg)
}

// liveDaemon returns the worker replica that owns the job (refit.jobs.owner
// names its pid), else a live one.
func (h *harness) liveDaemon(st *jobStatus) *proc {
	var live []*proc
	for _, d := range h.daemons {
		if d != nil && !d.exited() {
			if st != nil && ownerPid.FindStringSubmatch(st.owner) != nil && ownerPid.FindStringSubmatch(st.owner)[1] == strconv.Itoa(d.pid()) {
				return d
			}
			live = append(live, d)
		}
	}
	if len(live) == 0 {
		return nil
	}
	return live[h.rng.IntN(len(live))]
}

var ownerPid = regexp.MustCompile(`/(\d+)$`)

func (h *harness) stopRun() {
	if h.run != nil {
		h.run.kill()
		h.run = nil
	}
	if h.abort != nil {
		h.abort.kill()
		h.abort = nil
	}
}

// stopDaemons stops the worker replicas with SIGTERM (they must exit 0).
func (h *harness) stopDaemons(ctx context.Context) error {
	var errs []error
	for i, d := range h.daemons {
		if d == nil {
			continue
		}
		h.daemons[i] = nil
		if err := d.terminate(ctx, 20*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("%w:\n%s", err, d.out.tail(3000)))
		}
	}
	return errors.Join(errs...)
}

// explain adds the state of the job and the refit processes' output to err.
func (h *harness) explain(err error) error {
	var b strings.Builder
	if st, serr := h.status(context.Background()); serr == nil && st != nil {
		fmt.Fprintf(&b, "\n--- job %d: phase %s (resume %s), rows %d/%d, error: %s", st.id, st.phase, st.resume, st.rowsDone, st.rowsTotal, st.err)
	}
	shown := false
	for _, p := range append([]*proc{h.run, h.abort}, h.daemons...) {
		if p != nil {
			fmt.Fprintf(&b, "\n--- %s (pid %d) output:\n%s", p.name, p.pid(), p.out.tail(6000))
			shown = true
		}
	}
	if !shown && h.lastOut != nil {
		fmt.Fprintf(&b, "\n--- output of the last refit process:\n%s", h.lastOut.tail(6000))
	}
	return fmt.Errorf("%w%s", err, b.String())
}

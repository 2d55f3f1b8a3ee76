package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// TestAlterColumnValueDoesNotConvert: a value that the using expression
// cannot convert fails the job before any swap, naming the row's key and
// the value: one already in the table (the backfill finds it), and one the
// application writes in the window (the sync finds it). The column keeps
// its type, and abort leaves the catalog as it was.
func TestAlterColumnValueDoesNotConvert(t *testing.T) {
	const schema = `CREATE TABLE codes (id int PRIMARY KEY, code text);
		INSERT INTO codes SELECT i, i::text FROM generate_series(1, 2000) i;`
	const ops = `
  - alter_column: {table: codes, column: code, type: integer}`
	for _, tc := range []struct {
		name  string
		setup string // before the job
		late  string // in the window
		phase state.Phase
	}{
		{name: "in the table", setup: "UPDATE codes SET code = 'twelve' WHERE id = 1234", phase: state.PhaseBackfilling},
		{name: "written in the window", late: "UPDATE codes SET code = 'twelve' WHERE id = 1234", phase: state.PhaseSyncing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			pool := newPool(t)
			mustExec(t, pool, schema)
			before := catalog(t, pool)
			if tc.setup != "" {
				mustExec(t, pool, tc.setup)
			}
			m, err := migration.Parse("codes.yaml", []byte("name: codes\noperations:"+ops+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
			if err != nil {
				t.Fatal(err)
			}
			r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel+1)))
			if tc.late != "" {
				if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeWaitingContract {
					t.Fatalf("run to the window: %v %v", out, err)
				}
				mustExec(t, pool, tc.late)
				r.StopAtWindow = false
				r.GatePoll = 50 * time.Millisecond
			}
			_, err = r.Run(ctx, sub.Job.ID)
			if err == nil || !strings.Contains(err.Error(), "key (1234)") || !strings.Contains(err.Error(), `"twelve"`) {
				t.Fatalf("run: %v, want an error naming key (1234) and the value", err)
			}
			t.Logf("the job failed as it should: %v", err)
			j, gerr := r.Store.Get(ctx, sub.Job.ID)
			if gerr != nil {
				t.Fatal(gerr)
			}
			if j.Phase != state.PhaseFailed || j.ResumePhase == nil || *j.ResumePhase != tc.phase {
				t.Fatalf("job %s (resume %v), want failed in %s", j.Phase, j.ResumePhase, tc.phase)
			}
			if !condition(t, pool, `SELECT format_type(atttypid, atttypmod) = 'text' FROM pg_attribute WHERE attrelid = 'codes'::regclass AND attname = 'code'`) {
				t.Fatal("the column changed type although the job failed before the swap")
			}
			if err := worker.Abortable(j); err != nil {
				t.Fatalf("not abortable: %v", err)
			}
			if err := r.Store.Transition(ctx, j.ID, state.PhaseFailed, state.PhaseAborting, "test", "abort"); err != nil {
				t.Fatal(err)
			}
			if out, err := r.Run(ctx, j.ID); err != nil || out != worker.OutcomeAborted {
				t.Fatalf("abort: %v %v", out, err)
			}
			if after := catalog(t, pool); after != before {
				t.Fatalf("abort left the catalog changed:\nbefore: %s\nafter:  %s", before, after)
			}
		})
	}
}

// TestSwapInterrupted: the run is interrupted inside the swap, with the lock
// held and the stream drained (its transaction rolls back: nothing of it
// remains, and the keys it had drained were never confirmed), or just after
// the swap committed; another runner then resumes the job. Both end with
// every row's new column equal to what the application wrote, while the
// application wrote throughout without an error.
func TestSwapInterrupted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after bool // interrupt after the commit, else inside the lock
	}{
		{name: "inside the lock"},
		{name: "after the commit", after: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			pool := newPool(t)
			mustExec(t, pool, amountsSchema)
			m, err := migration.Parse("amounts.yaml", []byte("name: amounts\noperations:\n  - alter_column: {table: orders, column: amount, type: bigint}\n"))
			if err != nil {
				t.Fatal(err)
			}
			sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
			if err != nil {
				t.Fatal(err)
			}
			log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel+1))
			r1 := newRunner(t, pool, log)
			r1.StopAtWindow, r1.GatePoll = false, 50*time.Millisecond
			runCtx, cancel := context.WithCancel(ctx)
			interrupt := func(*state.Job) { cancel() }
			if tc.after {
				r1.OnSwapped = interrupt
			} else {
				r1.OnSwapLocked = interrupt
			}
			done := make(chan error, 1)
			go func() { _, err := r1.Run(runCtx, sub.Job.ID); done <- err }()
			waitPhase(t, r1.Store, sub.Job.ID, state.PhaseSyncing, time.Minute)
			app := startWriter(t, pool, amountsWriter)
			app.waitWrites(t, 30)
			if err := r1.Store.OpenContract(ctx, sub.Job.ID, "test"); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				t.Logf("first run: %v", err)
			case <-time.After(time.Minute):
				t.Fatal("the first run was not interrupted")
			}
			swapped := condition(t, pool, `SELECT format_type(atttypid, atttypmod) = 'bigint' FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'amount'`)
			if swapped != tc.after {
				t.Fatalf("after the interruption the column is swapped: %v, want %v", swapped, tc.after)
			}
			app.waitWrites(t, 60)

			r2 := newRunner(t, newPoolFor(t, pool), log)
			r2.StopAtWindow, r2.GatePoll = false, 50*time.Millisecond
			if out, err := r2.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeCompleted {
				t.Fatalf("resumed run: %v %v", out, err)
			}
			writes, appErr := app.stop()
			if appErr != nil {
				t.Fatalf("the application saw an error: %v", appErr)
			}
			if !condition(t, pool, `SELECT `+amountsConverged+` AND (SELECT format_type(atttypid, atttypmod) = 'bigint' AND attnotnull FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'amount')
				AND NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname LIKE 'refit%' AND NOT attisdropped)`) {
				t.Fatal("after the resumed run the column does not hold what the application wrote, or refit's columns are left")
			}
			events, err := r2.Store.Events(ctx, sub.Job.ID)
			if err != nil {
				t.Fatal(err)
			}
			var attempts []string
			for _, e := range events {
				if strings.HasPrefix(e.Message, "swap attempt") {
					attempts = append(attempts, e.Message)
				}
			}
			t.Logf("application: %d writes, 0 errors; swap attempts recorded: %q", writes, attempts)
			if len(attempts) == 0 {
				t.Fatal("no swap attempt was recorded in job_events")
			}
		})
	}
}

// newPoolFor opens another refit pool on the database of pool, as a second
// refit process would.
func newPoolFor(t *testing.T, pool *pgxpool.Pool) *pgxpool.Pool {
	t.Helper()
	p, err := worker.Connect(context.Background(), pool.Config().ConnString(), 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

package worker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/refit-dev/refit/internal/workload"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

// startOldApp starts the old application on its own pool (plain sessions,
// the server's default deadlock_timeout, unlike refit's).
func startOldApp(t *testing.T, refitPool *pgxpool.Pool, workers int) (stop func() (int64, int64, error)) {
	t.Helper()
	app, err := workload.StartOldDocsApp(context.Background(), refitPool.Config().ConnString(), workers)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var w, e int64
	var last error
	return func() (int64, int64, error) {
		once.Do(func() { w, e, last = app.Stop() })
		return w, e, last
	}
}

func docsSetup(t *testing.T, pool *pgxpool.Pool) *migration.Migration {
	t.Helper()
	if err := workload.CreateDocs(context.Background(), pool, 20000); err != nil {
		t.Fatal(err)
	}
	m, err := migration.Parse("docs.yaml", []byte(workload.DocsMigration))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func verifyDocs(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	var n, bad int64
	if err := pool.QueryRow(context.Background(), workload.VerifyDocsSQL).Scan(&n, &bad); err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Fatalf("%d of %d rows have new columns != up(old columns)", bad, n)
	}
	return n
}

func waitPhase(t *testing.T, store *state.Store, id int64, want state.Phase, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j, err := store.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Phase == want {
			return
		}
		if j.Phase == state.PhaseFailed || time.Now().After(deadline) {
			t.Fatalf("job is %s (error %q), want %s", j.Phase, j.Error, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func replicationObjects(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), `SELECT concat_ws('|',
		(SELECT string_agg(slot_name::text, ',' ORDER BY slot_name) FROM pg_replication_slots WHERE database = current_database()),
		(SELECT string_agg(pubname::text, ',' ORDER BY pubname) FROM pg_publication),
		(SELECT string_agg(roname, ',' ORDER BY roname) FROM pg_replication_origin
		  WHERE substring(roname from '^refit_j([0-9]+)_')::bigint IN (SELECT id FROM refit.jobs)))`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWindowSync: the old application inserts, updates (old columns only,
// including TOASTed rows updated on another column) and deletes during the
// backfill and the window; after the drain and contract every surviving row
// has new = up(old), and the slot, publication and origins are gone.
func TestWindowSync(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	m := docsSetup(t, pool)
	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	r.StopAtWindow = false
	r.GatePoll = 100 * time.Millisecond
	r.Backfill.BatchSize = 500
	r.Backfill.Sleep = 5 * time.Millisecond

	stopApp := startOldApp(t, pool, 3)
	done := make(chan error, 1)
	var outcome worker.Outcome
	go func() {
		var err error
		outcome, err = r.Run(ctx, sub.Job.ID)
		done <- err
	}()
	waitPhase(t, r.Store, sub.Job.ID, state.PhaseSyncing, 2*time.Minute)
	time.Sleep(time.Second) // the old app keeps writing in the window
	writes, errs, last := stopApp()
	if writes < 100 || errs > 0 {
		t.Fatalf("the old application wrote %d times with %d errors (last %v)", writes, errs, last)
	}
	t.Logf("old application: %d writes", writes)
	if err := r.Store.OpenContract(ctx, sub.Job.ID, "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || outcome != worker.OutcomeCompleted {
			t.Fatalf("run: %v %v", outcome, err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("job did not complete after the gate opened")
	}
	n := verifyDocs(t, pool)
	t.Logf("verified %d rows", n)
	job, err := r.Store.Get(ctx, sub.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if job.Sync.KeysApplied == 0 {
		t.Fatalf("the consumer applied no keys although the old application wrote")
	}
	if objs := replicationObjects(t, pool); objs != "" {
		t.Fatalf("left behind: %s", objs)
	}
}

// TestIdleSlotStaysBounded: with no application writes, once the job is in
// the window the slot's confirmed position keeps up (refit's own writes are
// skipped by origin, so they do not feed back) and retained WAL stays bounded.
func TestIdleSlotStaysBounded(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	m := docsSetup(t, pool)
	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	r.StopAtWindow = false
	r.GatePoll = 100 * time.Millisecond
	r.Replication.StatusInterval = 200 * time.Millisecond
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := r.Run(rctx, sub.Job.ID); done <- err }()
	defer func() { cancel(); <-done }()
	waitPhase(t, r.Store, sub.Job.ID, state.PhaseSyncing, 2*time.Minute)
	time.Sleep(time.Second)
	var samples, retained []int64
	for i := 0; i < 10; i++ {
		time.Sleep(300 * time.Millisecond)
		info, err := replication.Slot(ctx, pool, sub.Job.ID)
		if err != nil || !info.Exists {
			t.Fatalf("slot: %+v %v", info, err)
		}
		samples = append(samples, info.LagBytes)
		retained = append(retained, info.RetainedBytes)
	}
	t.Logf("slot lag bytes while idle: %v; retained bytes: %v", samples, retained)
	if growth := retained[len(retained)-1] - retained[0]; growth > 1<<20 {
		t.Fatalf("retained WAL grew by %d bytes in 3 s with no writes", growth)
	}
	for _, s := range samples[len(samples)-4:] {
		if s > 64<<10 {
			t.Fatalf("idle slot does not keep up: lag %d bytes (samples %v)", s, samples)
		}
	}
	job, err := r.Store.Get(ctx, sub.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if job.Sync.KeysApplied != 0 {
		t.Fatalf("with no application writes the consumer applied %d keys: refit's own writes came back", job.Sync.KeysApplied)
	}
}

// TestAbortInWindow: abort during syncing leaves no slot, publication,
// origin, new column or index behind.
func TestAbortInWindow(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	m := docsSetup(t, pool)
	before := catalog(t, pool)
	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	r.StopAtWindow = false
	r.GatePoll = 100 * time.Millisecond
	stopApp := startOldApp(t, pool, 1)
	defer stopApp()
	done := make(chan error, 1)
	var outcome worker.Outcome
	go func() {
		var err error
		outcome, err = r.Run(ctx, sub.Job.ID)
		done <- err
	}()
	waitPhase(t, r.Store, sub.Job.ID, state.PhaseSyncing, 2*time.Minute)
	if objs := replicationObjects(t, pool); objs == "" {
		t.Fatal("no slot/publication while syncing")
	}
	if err := r.Store.Transition(ctx, sub.Job.ID, state.PhaseSyncing, state.PhaseAborting, "test", "abort"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || outcome != worker.OutcomeAborted {
			t.Fatalf("abort: %v %v", outcome, err)
		}
	case <-time.After(time.Minute):
		t.Fatal("abort did not finish")
	}
	stopApp()
	if after := catalog(t, pool); after != before {
		t.Fatalf("catalog changed:\nbefore %s\nafter  %s", before, after)
	}
	if objs := replicationObjects(t, pool); objs != "" {
		t.Fatalf("left behind: %s", objs)
	}
}

// TestSweepOrphans: refit_* slots and publications of no live job are
// dropped at start; those of a live job are kept.
func TestSweepOrphans(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	m := docsSetup(t, pool)
	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeWaitingContract {
		t.Fatalf("run: %v %v", out, err)
	}
	mustExec(t, pool, `SELECT pg_create_logical_replication_slot('refit_job_424242', 'pgoutput');
		CREATE PUBLICATION refit_job_424242 FOR TABLE docs;
		SELECT pg_replication_origin_create('refit_j424242_b0')`)
	if err := worker.Sweep(ctx, r.Store, replication.DefaultConfig(), zaptest.NewLogger(t)); err != nil {
		t.Fatal(err)
	}
	live := replication.SlotName(sub.Job.ID)
	if got, want := replicationObjects(t, pool), fmt.Sprintf("%s|%s|refit_j%d_apply,refit_j%d_b0", live, live, sub.Job.ID, sub.Job.ID); got != want {
		t.Fatalf("after sweep: %q, want %q", got, want)
	}
}

// TestRetainedWALLimits: past replication.max_retained_wal the backfill
// pauses (and the status names why); past replication.fail_retained_wal the
// job fails and its slot is dropped, and a retry backfills again from the
// start so that nothing of the gap is lost.
func TestRetainedWALLimits(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	m := docsSetup(t, pool)
	sub, err := worker.Submit(ctx, pool, m, migration.ContractNow, "test")
	if err != nil {
		t.Fatal(err)
	}

	// Soft limit: batches stop while the slot retains more than 1 byte.
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
	r.Replication.MaxRetainedWAL = 1
	r.Replication.StatusInterval = 100 * time.Millisecond
	r.Backfill.BatchSize = 200
	r.Backfill.Sleep = 20 * time.Millisecond
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := r.Run(rctx, sub.Job.ID); done <- err }()
	stopRun := sync.OnceFunc(func() { cancel(); <-done })
	defer stopRun()
	var job *state.Job
	deadline := time.Now().Add(30 * time.Second)
	for {
		if job, err = r.Store.Get(ctx, sub.Job.ID); err != nil {
			t.Fatal(err)
		}
		if job.ThrottledBy == "slot_retained_wal" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never throttled: %+v", job)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the batch in flight finishes
	before, _ := r.Store.Get(ctx, sub.Job.ID)
	time.Sleep(time.Second)
	after, _ := r.Store.Get(ctx, sub.Job.ID)
	if after.RowsDone != before.RowsDone || after.RowsDone >= 20000 {
		t.Fatalf("backfill kept writing while throttled: %d → %d rows", before.RowsDone, after.RowsDone)
	}
	stopRun()
	t.Logf("throttled at %d rows", after.RowsDone)

	// Hard limit: the job fails and the slot is dropped.
	r = newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.FatalLevel)))
	r.Replication.MaxRetainedWAL, r.Replication.FailRetainedWAL = 0, 1
	r.Replication.StatusInterval = 100 * time.Millisecond
	r.Backfill.BatchSize = 200
	r.Backfill.Sleep = 20 * time.Millisecond
	if _, err := r.Run(ctx, sub.Job.ID); err == nil || !strings.Contains(err.Error(), "retains too much WAL") {
		t.Fatalf("run past the hard limit: %v", err)
	}
	if job, err = r.Store.Get(ctx, sub.Job.ID); err != nil || job.Phase != state.PhaseFailed {
		t.Fatalf("job: %+v %v", job, err)
	}
	if info, err := replication.Slot(ctx, pool, sub.Job.ID); err != nil || info.Exists {
		t.Fatalf("slot still there after the hard limit: %+v %v", info, err)
	}

	// Retry with sane limits while the old application writes: the slot is
	// recreated, the backfill starts over, every row ends right.
	stopApp := startOldApp(t, pool, 2)
	r = newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
	r.GatePoll = 100 * time.Millisecond
	r.OnDrained = func(*state.Job) { stopApp() }
	if out, err := r.Run(ctx, sub.Job.ID); err != nil || out != worker.OutcomeCompleted {
		t.Fatalf("retry: %v %v", out, err)
	}
	verifyDocs(t, pool)
}

// TestAutoContractGate: with contract auto the job stays in the window while
// an application version still writes only the old columns, and contracts
// by itself once no such write happened for the quiet period.
func TestAutoContractGate(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	m := docsSetup(t, pool)
	sub, err := worker.Submit(ctx, pool, m, migration.ContractAuto, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
	r.StopAtWindow = false
	r.GatePoll = 100 * time.Millisecond
	r.QuietPeriod = 1500 * time.Millisecond
	r.Replication.StatusInterval = 100 * time.Millisecond
	stopApp := startOldApp(t, pool, 1)
	defer stopApp()
	done := make(chan error, 1)
	go func() { _, err := r.Run(ctx, sub.Job.ID); done <- err }()
	waitPhase(t, r.Store, sub.Job.ID, state.PhaseSyncing, 2*time.Minute)
	time.Sleep(3 * time.Second) // > quiet period, but the old app keeps writing
	if job, _ := r.Store.Get(ctx, sub.Job.ID); job.Phase != state.PhaseSyncing {
		t.Fatalf("contracted while the old application still wrote: %s (changed_at %v, keys %d)", job.Phase, job.Sync.ChangedAt, job.Sync.KeysApplied)
	}
	stopped := time.Now()
	stopApp()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("auto gate never opened")
	}
	job, err := r.Store.Get(ctx, sub.Job.ID)
	if err != nil || job.Phase != state.PhaseCompleted {
		t.Fatalf("job: %v %v", job.Phase, err)
	}
	t.Logf("completed %s after the old application stopped (quiet period %s)", time.Since(stopped).Round(time.Millisecond), r.QuietPeriod)
	verifyDocs(t, pool)
}

// TestTwoDatabasesOneServer: jobs in two databases of the same server get
// distinct ids, so their slots and origins (cluster-wide names) do not
// collide and both sync at once.
func TestTwoDatabasesOneServer(t *testing.T) {
	ctx := context.Background()
	var jobs []int64
	var runners []*worker.Runner
	for i := 0; i < 2; i++ {
		pool := newPool(t)
		m := docsSetup(t, pool)
		sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, "test")
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, sub.Job.ID)
		runners = append(runners, newRunner(t, pool, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))))
	}
	if jobs[0] == jobs[1] {
		t.Fatalf("both databases gave job id %d", jobs[0])
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range runners {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = runners[i].Run(ctx, jobs[i])
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("database %d: %v", i, err)
		}
	}
	t.Logf("job ids %v", jobs)
}

package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/examples"
	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/internal/workload"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
	"github.com/refit-dev/refit/worker"
)

func newDemoCmd(a *app) *cobra.Command {
	var rows, rate int
	var compare bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the article's migration end to end on a throwaway PostgreSQL",
		Long: `Start a throwaway PostgreSQL (initdb in a temp dir), create a users table,
and apply examples/split_full_name.yaml while a writer plays the application:
v1 (full_name only) before expand, v2 (full_name and first/last name) during
the window, retired before contract. Prints what happened and phase timings.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.demo(cmd.Context(), rows, rate, compare)
		},
	}
	cmd.Flags().IntVar(&rows, "rows", 1_000_000, "rows in the users table")
	cmd.Flags().IntVar(&rate, "rate", 100, "application writes per second per writer connection (2 connections)")
	cmd.Flags().BoolVar(&compare, "compare", true, "also time a single UPDATE of all rows on a copy of the table")
	cmd.Flags().Int("batch-size", 0, "rows per backfill batch (backfill.batch_size)")
	return cmd
}

func (a *app) demo(ctx context.Context, rows, rate int, compare bool) (err error) {
	out := a.out
	t0 := time.Now()
	fmt.Fprintln(out, "== starting a throwaway PostgreSQL")
	cluster, err := pgtest.Start(ctx, pgtest.Options{Logger: a.log})
	if err != nil {
		return err
	}
	defer func() {
		if stopErr := cluster.Stop(); stopErr != nil {
			err = fmt.Errorf("%w (and stopping PostgreSQL: %w)", err, stopErr)
		}
	}()
	dsn, err := cluster.CreateDatabase(ctx, "refit_demo")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   PostgreSQL %d on port %d, database refit_demo (%s)\n", cluster.Version(), cluster.Port(), time.Since(t0).Round(time.Millisecond))
	a.cfg.DSN = dsn
	pool, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()

	t := time.Now()
	fmt.Fprintf(out, "== creating users with %d rows (id, full_name, email, created_at)\n", rows)
	if err := workload.CreateUsers(ctx, pool, rows); err != nil {
		return fmt.Errorf("create users: %w", err)
	}
	fmt.Fprintf(out, "   done in %s\n", time.Since(t).Round(time.Millisecond))

	var single time.Duration
	if compare {
		if single, err = singleUpdate(ctx, pool); err != nil {
			return err
		}
		fmt.Fprintf(out, "== reference: one UPDATE of all %d rows on a copy of the table took %s (%.0f rows/s)\n",
			rows, single.Round(time.Millisecond), float64(rows)/single.Seconds())
		// The copy's dirty buffers would otherwise be checkpointed during
		// refit's run.
		if err := quiesce(ctx, pool); err != nil {
			return err
		}
	}

	m, err := migration.Parse("examples/split_full_name.yaml", examples.SplitFullName)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "== plan")
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	facts, err := migration.Inspect(ctx, conn.Conn(), m)
	conn.Release()
	if err != nil {
		return err
	}
	printPlan(indent{out}, m, migration.BuildPlan(m, facts), facts, a.cfg.Backfill.BatchSize, a.cfg.DDL)

	// The application has its own plain sessions (refit's carry refit settings).
	appPool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer appPool.Close()
	writer := workload.NewWriter(appPool, rate, 2, workload.V1)
	wctx, stopWriter := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); writer.Run(wctx) }()
	defer func() { stopWriter(); wg.Wait() }()
	fmt.Fprintf(out, "== application v1 writing (inserts and updates of full_name only, ~%d/s)\n", 2*rate)
	time.Sleep(500 * time.Millisecond)

	sub, err := worker.Submit(ctx, pool, m, migration.ContractManual, actor("demo"))
	if err != nil {
		return err
	}
	store, err := state.Open(ctx, pool)
	if err != nil {
		return err
	}
	p := newProgress(indent{out})
	r := a.runner(pool, store, p)
	r.GatePoll = 100 * time.Millisecond
	var verified int64
	var verifyErr error
	r.OnPhase = func(job *state.Job, ph state.Phase) {
		p.phase(job, ph)
		if ph != state.PhaseSyncing {
			return
		}
		// The window: deploy v2 next to v1, then retire both and open the gate.
		go func() {
			writer.SetVersion(workload.V2)
			fmt.Fprintln(out, "   application v2 deployed: writes full_name, first_name and last_name")
			time.Sleep(time.Second)
			writer.SetVersion(workload.Retired)
			fmt.Fprintln(out, "   old versions retired; opening the contract gate (refit complete)")
			if err := store.OpenContract(ctx, job.ID, actor("demo")); err != nil {
				verifyErr = err
			}
		}()
	}
	r.OnDrained = func(*state.Job) {
		verified, verifyErr = verifySplit(ctx, pool)
	}
	fmt.Fprintf(out, "== refit run (job %d): v1 keeps writing old columns; the stream keeps the new ones in sync\n", sub.Job.ID)
	outcome, err := r.Run(ctx, sub.Job.ID)
	p.flush()
	if err != nil {
		return err
	}
	if verifyErr != nil {
		return verifyErr
	}
	fmt.Fprintf(out, "   outcome: %s\n", outcome)
	stopWriter()
	wg.Wait()

	job, err := store.Get(ctx, sub.Job.ID)
	if err != nil {
		return err
	}
	events, err := store.Events(ctx, sub.Job.ID)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "== phase timings")
	// Phase changes only (the gate opening is an event inside syncing).
	var changes []state.Event
	for _, e := range events {
		if e.From != e.To {
			changes = append(changes, e)
		}
	}
	var backfillTime time.Duration
	for i, e := range changes {
		if i+1 < len(changes) {
			d := changes[i+1].At.Sub(e.At)
			fmt.Fprintf(out, "   %-12s %10s\n", e.To, d.Round(time.Millisecond))
			if e.To == state.PhaseBackfilling.String() {
				backfillTime = d
			}
		}
	}
	total := events[len(events)-1].At.Sub(events[0].At)
	fmt.Fprintf(out, "   %-12s %10s\n", "total", total.Round(time.Millisecond))
	fmt.Fprintln(out, "== results")
	fmt.Fprintf(out, "   rows backfilled: %d scanned, %d changed, in %s (backfill phase incl. index build)\n", job.RowsDone, job.RowsUpdated, backfillTime.Round(time.Millisecond))
	if compare && backfillTime > 0 {
		fmt.Fprintf(out, "   backfill phase rate %.0f rows/s vs single UPDATE %.0f rows/s\n", float64(job.RowsDone)/backfillTime.Seconds(), float64(rows)/single.Seconds())
	}
	ws := writer.Stats()
	fmt.Fprintf(out, "   application: %d inserts, %d updates, %d errors; latency p50 %s p99 %s max %s\n",
		ws.Inserts, ws.Updates, ws.Errors, ws.P50.Round(time.Microsecond), ws.P99.Round(time.Microsecond), ws.Max.Round(time.Microsecond))
	if ws.LastErr != nil {
		fmt.Fprintf(out, "   last application error: %v\n", ws.LastErr)
	}
	fmt.Fprintf(out, "   sync: %d keys applied from the stream\n", job.Sync.KeysApplied)
	fmt.Fprintf(out, "   verified after the drain, before contract: all %d rows have first_name/last_name = split of full_name\n", verified)
	checks, err := verifyContracted(ctx, pool)
	if err != nil {
		return err
	}
	for _, c := range checks {
		fmt.Fprintf(out, "   ✓ %s\n", c)
	}
	fmt.Fprintf(out, "== demo finished in %s\n", time.Since(t0).Round(time.Millisecond))
	return nil
}

// singleUpdate times one UPDATE of every row on a copy of users: the
// in-database limit the backfill is compared against.
func singleUpdate(ctx context.Context, pool *pgxpool.Pool) (time.Duration, error) {
	if _, err := pool.Exec(ctx, `CREATE TABLE users_reference AS SELECT * FROM users;
		ALTER TABLE users_reference ADD PRIMARY KEY (id), ADD COLUMN first_name varchar(100), ADD COLUMN last_name varchar(100)`); err != nil {
		return 0, fmt.Errorf("copy users: %w", err)
	}
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE users_reference"); err != nil {
		return 0, fmt.Errorf("vacuum copy: %w", err)
	}
	if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
		return 0, fmt.Errorf("checkpoint: %w", err)
	}
	start := time.Now()
	if _, err := pool.Exec(ctx, `UPDATE users_reference SET first_name = split_part(full_name, ' ', 1),
		last_name = substring(full_name from position(' ' in full_name) + 1)`); err != nil {
		return 0, fmt.Errorf("reference update: %w", err)
	}
	d := time.Since(start)
	_, err := pool.Exec(ctx, "DROP TABLE users_reference")
	return d, err
}

// verifySplit checks every row against the up expressions (before contract,
// while full_name still exists) and returns the number of rows.
func verifySplit(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var n, bad int64
	err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE first_name IS DISTINCT FROM split_part(full_name, ' ', 1)
		OR last_name IS DISTINCT FROM substring(full_name from position(' ' in full_name) + 1) OR status IS DISTINCT FROM 'active')
		FROM users`).Scan(&n, &bad)
	if err != nil {
		return 0, fmt.Errorf("verify rows: %w", err)
	}
	if bad != 0 {
		return n, fmt.Errorf("verify rows: %d of %d rows do not match the up expressions", bad, n)
	}
	return n, nil
}

// verifyContracted checks the final schema.
func verifyContracted(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	var notNull int
	var fullName, indexValid bool
	err := pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname IN ('first_name','last_name','status') AND attnotnull),
		EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'full_name' AND NOT attisdropped),
		coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('idx_users_last_name')), false)`).Scan(&notNull, &fullName, &indexValid)
	if err != nil {
		return nil, fmt.Errorf("verify schema: %w", err)
	}
	if notNull != 3 || fullName || !indexValid {
		return nil, fmt.Errorf("verify schema: NOT NULL columns %d/3, full_name present %v, index valid %v", notNull, fullName, indexValid)
	}
	return []string{"first_name, last_name, status are NOT NULL", "full_name is dropped", "idx_users_last_name is valid"}, nil
}

// indent prefixes every line written through it.
type indent struct {
	w interface{ Write([]byte) (int, error) }
}

func (i indent) Write(b []byte) (int, error) {
	var out []byte
	start := true
	for _, c := range b {
		if start {
			out = append(out, ' ', ' ', ' ')
			start = false
		}
		out = append(out, c)
		if c == '\n' {
			start = true
		}
	}
	if _, err := i.w.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

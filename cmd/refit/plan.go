package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/ddl"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/worker"
)

func newPlanCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "plan FILE",
		Short: "Print every statement a migration will run, with its lock and cost",
		Long: `Print every statement refit will run for a migration, stage by stage, with the
lock each takes and whether it scans or rewrites the table. Nothing is run.
With --dsn (or REFIT_DSN) the migration is also validated against the database
(tables, columns, types and expressions, and the throttle query, run once
read-only), still without changing anything. The backfill's batch size is the
file's settings on top of the configuration, as the job will run.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := migration.Load(args[0])
			if err != nil {
				return err
			}
			// The job's backfill configuration: the file's settings on top
			// of the configuration.
			bf, _, err := worker.ApplyMigrationSettings(m, a.cfg.Backfill, a.cfg.Throttle)
			if err != nil {
				return err
			}
			var facts *migration.Facts
			if a.cfg.DSN != "" {
				pool, err := a.connect(cmd.Context())
				if err != nil {
					return err
				}
				defer pool.Close()
				if bf, err = a.checkSettings(cmd.Context(), pool, m); err != nil {
					return err
				}
				// The same validation as run, submit and a worker's claim:
				// the database's view of every operation, the sync's
				// requirements and every privilege the job needs.
				if facts, err = worker.Validate(cmd.Context(), pool, m); err != nil {
					return err
				}
			}
			printPlan(a.out, m, migration.BuildPlan(m, facts), facts, bf.BatchSize, a.cfg.DDL)
			return nil
		},
	}
}

func printPlan(w io.Writer, m *migration.Migration, p *migration.Plan, facts *migration.Facts, batch int, d ddl.Config) {
	fmt.Fprintf(w, "Migration %q (%s, sha256 %.12s…), %d operations\n", m.Name, m.File, m.Checksum, len(m.Operations))
	if facts == nil {
		fmt.Fprintln(w, "(not checked against a database: pass --dsn to validate tables, columns, types and expressions)")
	}
	if first := d.AttemptLockTimeout(0); first < d.LockTimeout {
		fmt.Fprintf(w, "Every statement waits for its lock up to %s at first, doubling on each retry up to lock_timeout %s (index builds: %s from the start), retried with backoff while the lock is not granted.\n",
			first, d.LockTimeout, d.LockTimeout)
	} else {
		fmt.Fprintf(w, "Every statement runs with lock_timeout %s and is retried with backoff when the lock is not granted.\n", d.LockTimeout)
	}
	section := func(title string, steps []migration.Step) {
		fmt.Fprintf(w, "\n%s\n", title)
		if len(steps) == 0 {
			fmt.Fprintln(w, "  (nothing)")
			return
		}
		for i, s := range steps {
			tx := "own short transaction"
			if !s.Transactional {
				tx = "outside any transaction"
			}
			fmt.Fprintf(w, "  %d. [operations[%d] %s] %s\n", i+1, s.Op, s.Kind, s.Description)
			fmt.Fprintf(w, "     %s\n", oneLine(s.SQL))
			if len(s.Args) > 0 {
				fmt.Fprintf(w, "     (%d parameters)\n", len(s.Args))
			}
			fmt.Fprintf(w, "     lock: %s · cost: %s · %s\n", s.Lock, s.Cost, tx)
		}
	}
	section("Expand (before the backfill)", p.Expand)
	var synced []migration.Backfill
	for _, b := range p.Backfills {
		if sets := migration.Derived(b.Sets); len(sets) > 0 {
			synced = append(synced, migration.Backfill{Table: b.Table, Sets: sets})
		}
	}
	if len(synced) > 0 {
		var tables []string
		for _, b := range synced {
			tables = append(tables, b.Table.Quoted())
		}
		fmt.Fprintln(w, "\nSync (before the first batch, dropped at complete or abort)")
		fmt.Fprintf(w, "  - CREATE PUBLICATION refit_job_<id> FOR TABLE %s WITH (publish = 'insert, update')\n", strings.Join(tables, ", "))
		fmt.Fprintln(w, "    lock: SHARE UPDATE EXCLUSIVE (reads and writes continue) · cost: catalog only · own short transaction")
		fmt.Fprintln(w, "  - SELECT pg_create_logical_replication_slot('refit_job_<id>', 'pgoutput')")
		fmt.Fprintln(w, "    lock: none; waits for transactions holding an xid to end (bounded by replication.slot_create_timeout)")
		fmt.Fprintln(w, "  - then, until contract: every INSERT/UPDATE of the old columns marks its key dirty, and refit runs")
		for _, b := range synced {
			fmt.Fprintf(w, "    UPDATE %s SET %s WHERE key = ANY(dirty keys) AND the new values differ\n", b.Table.Quoted(), migration.SetList(b.Sets))
		}
	}
	fmt.Fprintf(w, "\nBackfill (batches of %d rows, each its own transaction with its checkpoint)\n", batch)
	if len(p.Backfills) == 0 {
		fmt.Fprintln(w, "  (nothing)")
	}
	for _, b := range p.Backfills {
		key := "its primary key"
		if facts != nil {
			if tf := facts.Table(b.Table); tf != nil {
				var ks []string
				for _, k := range tf.Key {
					ks = append(ks, k.Name)
				}
				key = "(" + strings.Join(ks, ", ") + ")"
			}
		}
		fmt.Fprintf(w, "  - UPDATE %s SET %s\n", b.Table.Quoted(), migration.SetList(b.Sets))
		fmt.Fprintf(w, "    WHERE key in (last checkpoint, batch end] AND %s; keyset on %s\n", migration.Guard(b.Sets), key)
		for _, s := range b.Sets {
			switch {
			case s.Fill:
				fmt.Fprintf(w, "    (%s: a volatile default, given once to the rows that existed before it; never synced)\n", s.Column)
			case s.Data:
				fmt.Fprintf(w, "    (%s: a data fix, applied once per row by its batch; never synced)\n", s.Column)
			}
		}
		fmt.Fprintln(w, "    lock: ROW EXCLUSIVE plus row locks of one batch · cost: rewrites each row once, in batches")
	}
	section("Post-backfill (indexes, built after the data so the backfill does not maintain them)", p.PostBackfill)
	section("Contract (after the contract gate opens; no rollback from here: fix forward)", p.Contract)
	section("Rollback (what `refit abort` runs before contract)", p.Rollback)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/state"
)

// One job at a time per table, in submission order: every entry point (the
// daemon's scheduler, `refit run`, `refit abort`'s runner) starts a job only
// when no earlier live job shares a table with it. Failed and paused jobs
// still hold their tables: their expand is in place and may be resumed or
// rolled back.

// ErrBlocked means an earlier live job holds one of the job's tables.
var ErrBlocked = errors.New("an earlier job holds the table")

// BlockedError names the job that holds the table.
type BlockedError struct {
	Job   int64      // the job that waits
	Table string     // a table both change
	By    *state.Job // the earliest live job holding it
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("job %d waits: table %s is held by job %d (%s, phase %s), submitted earlier; "+
		"one job runs per table at a time: finish it (refit complete %d) or abort it (refit abort %d) first",
		e.Job, e.Table, e.By.ID, e.By.Name, e.By.Phase, e.By.ID, e.By.ID)
}

func (e *BlockedError) Unwrap() error { return ErrBlocked }

// JobTables returns the tables a job changes, from its stored migration,
// as the database resolved them when the job was validated (its facts), so
// `users` in one file and `public.users` in another are one table.
func JobTables(j *state.Job) []string {
	m, err := migration.Parse(j.File, j.Source)
	if err != nil {
		return nil
	}
	var facts *migration.Facts
	if len(j.Facts) > 0 {
		var f migration.Facts
		if json.Unmarshal(j.Facts, &f) == nil {
			facts = &f
		}
	}
	return MigrationTables(m, facts)
}

// MigrationTables returns the tables a migration changes as "schema.name":
// resolved through facts when known, else public when unqualified.
func MigrationTables(m *migration.Migration, facts *migration.Facts) []string {
	seen := map[string]bool{}
	var out []string
	for _, op := range m.Operations {
		for _, t := range op.Tables() {
			if tf := facts.Table(t); tf != nil && tf.Name.Schema != "" {
				t = tf.Name
			} else if t.Schema == "" {
				t.Schema = "public"
			}
			if name := t.Schema + "." + t.Name; !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
		}
	}
	return out
}

// checkBlocked returns a *BlockedError if a live job submitted before job
// shares a table with it.
func checkBlocked(ctx context.Context, store *state.Store, job *state.Job) error {
	mine := JobTables(job)
	if len(mine) == 0 {
		return nil
	}
	jobs, err := store.List(ctx)
	if err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	want := map[string]bool{}
	for _, t := range mine {
		want[t] = true
	}
	var first *BlockedError
	for _, j := range jobs {
		if j.ID >= job.ID || j.Phase.Terminal() {
			continue
		}
		for _, t := range JobTables(j) {
			if want[t] && (first == nil || j.ID < first.By.ID) {
				first = &BlockedError{Job: job.ID, Table: t, By: j}
			}
		}
	}
	if first != nil {
		return first
	}
	return nil
}

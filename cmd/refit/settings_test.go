package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/state"
)

// badThrottleQueries are refused wherever a throttle query enters; want is
// in the error.
var badThrottleQueries = []struct{ query, want string }{
	{"SELECT false; CREATE TABLE canary_tq ()", "SQLSTATE 42601"},
	{"SELECT 1/0 = 1", "SQLSTATE 22012"},
	{"SELECT 1", "one boolean column"},
	{"SELECT true, false", "2 columns"},
	{"SELECT true WHERE false", "exactly one row"},
	{"CREATE TABLE x ()", "no columns"},
	{"SELECT nextval('s') > 0", "SQLSTATE 25006"},
	{"   ", "is empty"},
}

const goodThrottleQuery = "SELECT count(*) > 100 FROM pg_stat_activity"

// throttleQueryFile is a migration of the users table whose settings set
// throttle.query (quoted as JSON, which YAML reads as a double-quoted string).
func throttleQueryFile(t *testing.T, query string) string {
	t.Helper()
	q, err := json.Marshal(query)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "tq.yaml", fmt.Sprintf(`name: tq
settings:
  throttle.query: %s
operations:
  - add_column:
      table: users
      column: {name: upper_name, type: text}
      up: upper(full_name)
`, q))
}

// dbState is what a refused throttle query must leave alone: the canary
// tables, the sequence, the jobs and their settings.
func dbState(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	if err := pool.QueryRow(context.Background(), `SELECT concat_ws('|',
		to_regclass('canary_tq') IS NOT NULL, to_regclass('x') IS NOT NULL, (SELECT is_called FROM s),
		(SELECT string_agg(id || ':' || name || ':' || settings::text, ',' ORDER BY id) FROM refit.jobs))`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestThrottleQueryRefused: refit set, refit plan --dsn, refit run and
// refit submit refuse a throttle query that is not one read-only statement
// returning one boolean row, with exit 2, an error saying what is wrong
// (naming the file and the field for a migration's settings) and nothing
// changed; a good query is accepted.
func TestThrottleQueryRefused(t *testing.T) {
	dsn, pool := newUsers(t, 100)
	mustExecCLI(t, pool, "CREATE SEQUENCE s")
	env := []string{"REFIT_DSN=" + dsn}
	if res := runRefit(t, env, "submit", examplePath(t)); res.code != 0 {
		t.Fatalf("submit: %s", res.stderr)
	}
	if res := runRefit(t, env, "set", "split_full_name", "backfill.batch_size=2000"); res.code != 0 {
		t.Fatalf("set: %s", res.stderr)
	}
	before := dbState(t, pool)
	for _, tc := range badThrottleQueries {
		t.Run(tc.query, func(t *testing.T) {
			res := runRefit(t, env, "set", "split_full_name", "throttle.query="+tc.query)
			if res.code != 2 || !strings.Contains(res.stderr, "throttle.query") || !strings.Contains(res.stderr, tc.want) {
				t.Errorf("set: exit %d, want 2 and %q in:\n%s", res.code, tc.want, res.stderr)
			}
			file := throttleQueryFile(t, tc.query)
			for _, cmd := range []string{"plan", "run", "submit"} {
				res := runRefit(t, env, cmd, file, "--dsn", dsn)
				if res.code != 2 {
					t.Errorf("%s: exit %d, want 2:\n%s%s", cmd, res.code, res.stdout, res.stderr)
				}
				for _, w := range []string{file, `field "settings.throttle.query"`, tc.want} {
					if !strings.Contains(res.stderr, w) {
						t.Errorf("%s: stderr lacks %q:\n%s", cmd, w, res.stderr)
					}
				}
			}
			if after := dbState(t, pool); after != before {
				t.Fatalf("the database changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}

	// The configuration's throttle.query is checked too.
	res := runRefit(t, []string{"REFIT_THROTTLE_QUERY=SELECT 1/0 = 1"}, "plan", examplePath(t), "--dsn", dsn)
	if res.code != 2 || !strings.Contains(res.stderr, "in the configuration") || !strings.Contains(res.stderr, "SQLSTATE 22012") {
		t.Errorf("plan with a bad configured query: exit %d:\n%s", res.code, res.stderr)
	}
	if after := dbState(t, pool); after != before {
		t.Fatalf("the database changed:\nbefore %s\nafter  %s", before, after)
	}

	if res := runRefit(t, env, "plan", throttleQueryFile(t, goodThrottleQuery), "--dsn", dsn); res.code != 0 {
		t.Fatalf("plan with a good query: exit %d: %s", res.code, res.stderr)
	}
	if res := runRefit(t, env, "set", "split_full_name", "throttle.query="+goodThrottleQuery); res.code != 0 {
		t.Fatalf("set a good query: exit %d: %s", res.code, res.stderr)
	}
	var stored string
	if err := pool.QueryRow(context.Background(), "SELECT settings->>'throttle.query' FROM refit.jobs WHERE name = 'split_full_name'").Scan(&stored); err != nil || stored != goodThrottleQuery {
		t.Fatalf("stored throttle.query %q (%v)", stored, err)
	}
	// An empty query switches the signal off.
	if res := runRefit(t, env, "set", "split_full_name", "throttle.query="); res.code != 0 {
		t.Fatalf("set an empty query (off): exit %d: %s", res.code, res.stderr)
	}
	if err := pool.QueryRow(context.Background(), "SELECT settings->>'throttle.query' FROM refit.jobs WHERE name = 'split_full_name'").Scan(&stored); err != nil || stored != "" {
		t.Fatalf("stored throttle.query %q (%v), want empty", stored, err)
	}
}

// TestDaemonRefusesBadThrottleQuery: a migration submitted through SQL with
// a bad throttle query fails when a worker claims it, with an error naming
// the file and the field, before anything is changed.
func TestDaemonRefusesBadThrottleQuery(t *testing.T) {
	ctx := context.Background()
	dsn, pool := newUsers(t, 100)
	if _, err := state.Open(ctx, pool); err != nil {
		t.Fatal(err)
	}
	source := `name: tq
settings:
  throttle.query: "SELECT false; CREATE TABLE canary_tq ()"
operations:
  - add_column:
      table: users
      column: {name: upper_name, type: text}
      up: upper(full_name)
`
	var id int64
	if err := pool.QueryRow(ctx, "SELECT refit.submit('tq', $1, 'now')", source).Scan(&id); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, workerConfig(t, dsn))
	waitJobs(t, pool, 30*time.Second, fmt.Sprintf("EXISTS (SELECT 1 FROM refit.jobs WHERE id = %d AND phase = 'failed')", id))
	var msg string
	var canary, column bool
	if err := pool.QueryRow(ctx, `SELECT error, to_regclass('canary_tq') IS NOT NULL,
		EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'upper_name')
		FROM refit.jobs WHERE id = $1`, id).Scan(&msg, &canary, &column); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, `field "settings.throttle.query"`) || !strings.Contains(msg, "SQLSTATE 42601") {
		t.Errorf("job error %q", msg)
	}
	if canary || column {
		t.Errorf("the database changed: canary_tq %v, users.upper_name %v", canary, column)
	}
}

// TestStatusJSON: refit status --json prints a job's settings as a JSON
// object ({} when none), for one job and for the list.
func TestStatusJSON(t *testing.T) {
	dsn, _ := newUsers(t, 100)
	env := []string{"REFIT_DSN=" + dsn}
	if res := runRefit(t, env, "submit", examplePath(t)); res.code != 0 {
		t.Fatalf("submit: %s", res.stderr)
	}
	status := func(args ...string) []map[string]any {
		t.Helper()
		res := runRefit(t, env, append([]string{"status", "--json"}, args...)...)
		if res.code != 0 {
			t.Fatalf("status: %s", res.stderr)
		}
		var jobs []map[string]any
		if len(args) == 1 {
			var j map[string]any
			if err := json.Unmarshal([]byte(res.stdout), &j); err != nil {
				t.Fatalf("status --json %s: %v\n%s", args[0], err, res.stdout)
			}
			jobs = append(jobs, j)
		} else if err := json.Unmarshal([]byte(res.stdout), &jobs); err != nil {
			t.Fatalf("status --json: %v\n%s", err, res.stdout)
		}
		return jobs
	}
	if s, ok := status("split_full_name")[0]["settings"].(map[string]any); !ok || len(s) != 0 {
		t.Fatalf("settings before set: %#v, want {}", status("split_full_name")[0]["settings"])
	}
	if res := runRefit(t, env, "set", "split_full_name", "backfill.batch_size=2000", "throttle.query="+goodThrottleQuery); res.code != 0 {
		t.Fatalf("set: %s", res.stderr)
	}
	want := map[string]any{"backfill.batch_size": "2000", "throttle.query": goodThrottleQuery}
	for _, args := range [][]string{{"split_full_name"}, nil} {
		jobs := status(args...)
		if len(jobs) != 1 {
			t.Fatalf("status --json %v: %d jobs", args, len(jobs))
		}
		s, ok := jobs[0]["settings"].(map[string]any)
		if !ok || fmt.Sprint(s) != fmt.Sprint(want) {
			t.Errorf("status --json %v: settings %#v, want the object %v", args, jobs[0]["settings"], want)
		}
	}
}

// TestPlanBatchSize: refit plan prints the batch size the job will start
// with: the file's settings over the configuration; a bad setting is an
// invalid migration even without a database.
func TestPlanBatchSize(t *testing.T) {
	file := func(settings string) string {
		return writeFile(t, "b.yaml", "name: b\n"+settings+`operations:
  - add_column:
      table: users
      column: {name: upper_name, type: text}
      up: upper(full_name)
`)
	}
	noDB := []string{"REFIT_DSN="}
	for _, tc := range []struct {
		name, settings string
		env            []string
		want           string
	}{
		{"default", "", nil, "batches of 5000 rows"},
		{"configuration", "", []string{"REFIT_BACKFILL_BATCH_SIZE=777"}, "batches of 777 rows"},
		{"file", "settings:\n  backfill.batch_size: 1234\n", nil, "batches of 1234 rows"},
		{"file over configuration", "settings:\n  backfill.batch_size: 1234\n", []string{"REFIT_BACKFILL_BATCH_SIZE=777"}, "batches of 1234 rows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runRefit(t, append(noDB, tc.env...), "plan", file(tc.settings))
			if res.code != 0 || !strings.Contains(res.stdout, tc.want) {
				t.Fatalf("exit %d, want %q in:\n%s%s", res.code, tc.want, res.stdout, res.stderr)
			}
		})
	}
	bad := file("settings:\n  backfill.batch_size: 0\n")
	if res := runRefit(t, noDB, "plan", bad); res.code != 2 || !strings.Contains(res.stderr, bad) || !strings.Contains(res.stderr, `field "settings"`) {
		t.Fatalf("bad batch size: exit %d:\n%s", res.code, res.stderr)
	}
}

func mustExecCLI(t *testing.T, pool *pgxpool.Pool, sql string) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

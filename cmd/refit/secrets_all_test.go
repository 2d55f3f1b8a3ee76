package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/internal/pgtest"
)

// serverLogFrom returns a function that reads what the shared cluster's
// server log got since now ("" for an existing server, REFIT_TEST_DSN).
func serverLogFrom(t *testing.T) func() string {
	t.Helper()
	dataDir := pgtest.Shared(t).DataDir()
	if dataDir == "" {
		return func() string { return "" }
	}
	path := filepath.Join(filepath.Dir(dataDir), "postgres.log")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	offset := fi.Size()
	return func() string {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(f)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
}

// refitRows is every row refit keeps in the target database, as text: every
// table of schema refit (row_to_json, so every column) and the migrations'
// sources decoded.
func refitRows(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	if err := pool.QueryRow(context.Background(), `SELECT concat_ws(E'\n',
		(SELECT string_agg(row_to_json(j)::text, E'\n') FROM refit.jobs j),
		(SELECT string_agg(convert_from(source, 'UTF8') || facts::text || settings::text, E'\n') FROM refit.jobs),
		(SELECT string_agg(row_to_json(e)::text, E'\n') FROM refit.job_events e),
		(SELECT string_agg(row_to_json(m)::text, E'\n') FROM refit.migrations m),
		(SELECT string_agg(row_to_json(r)::text, E'\n') FROM refit.backfill_ranges r),
		(SELECT string_agg(row_to_json(x)::text, E'\n') FROM refit.meta x))`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSecretsEveryCommand runs every command — plan, run, submit, set,
// status --json, worker (with /metrics and /jobs fetched over HTTP) and
// abort — at --log-level debug with a password DSN in each form (URL with
// a percent-encoded password, URL with the password in the query,
// keyword/value escaped, keyword/value quoted), as a role the server asks
// for that password, and looks for the password in everything written:
// each command's stdout and stderr, the worker's log, /metrics, /jobs, every
// row of the refit schema (refit.jobs with all its columns,
// refit.job_events, …), the application_name and query of refit's sessions
// (the walsender included), and what the server logged meanwhile.
func TestSecretsEveryCommand(t *testing.T) {
	role, enforced := secretRole(t)
	if !enforced {
		t.Log("an existing server (REFIT_TEST_DSN): its pg_hba.conf decides whether the password is asked for")
	}
	serverLog := serverLogFrom(t)
	forms := map[string]bool{
		"URL percent-encoded, right":        true,
		"URL query password, right":         true,
		"keyword/value password=x, right":   true,
		"keyword/value quoted, right":       true,
		"postgresql URL, right":             false,
		"keyword/value password = x, right": false,
		"keyword/value password= x, right":  false,
	}
	ran := 0
	for _, probe := range secretForms(role, "x", 1) {
		want, known := forms[probe.name]
		if probe.want != connects || !want {
			if probe.want == connects && !known {
				t.Fatalf("form %q is new: choose whether this test runs it", probe.name)
			}
			continue
		}
		ran++
		t.Run(probe.name, func(t *testing.T) {
			dsn, pool := newUsers(t, 2000)
			createTables(t, pool, map[string]int{"items": 3000})
			u, err := url.Parse(dsn)
			if err != nil {
				t.Fatal(err)
			}
			port, err := strconv.Atoi(u.Port())
			if err != nil {
				t.Fatal(err)
			}
			var f secretForm
			for _, g := range secretForms(role, strings.TrimPrefix(u.Path, "/"), port) {
				if g.name == probe.name {
					f = g
				}
			}
			var written strings.Builder
			debug := []string{"--log-level", "debug"}
			refit := func(wantCode int, args ...string) result {
				t.Helper()
				res := runRefit(t, []string{"REFIT_DSN="}, append(append(args, "--dsn", f.dsn), debug...)...)
				fmt.Fprintf(&written, "$ refit %s\n%s%s", args[0], res.stdout, res.stderr)
				assertNoSecret(t, f, res.stdout+res.stderr)
				if res.code != wantCode {
					t.Fatalf("refit %s: exit %d, want %d\n%s\n%s", strings.Join(args, " "), res.code, wantCode, res.stdout, res.stderr)
				}
				return res
			}

			refit(0, "plan", examplePath(t))
			if res := refit(0, "run", examplePath(t), "--contract", "now"); !strings.Contains(res.stdout, "completed") {
				t.Fatalf("run did not complete:\n%s", res.stdout)
			}
			second := writeFile(t, "items.yaml", tableMigration("items_upper", "items"))
			id := strings.TrimSpace(refit(0, "submit", second, "--contract", "manual").stdout)
			refit(0, "set", id, "backfill.batch_size=500")
			refit(0, "status", "--json")
			refit(0, "status", "items_upper", "--json")

			// The worker (DSN from the environment this time) claims the
			// submitted job and keeps it in the window.
			addr := freeAddr(t)
			out := &syncBuffer{}
			cmd := exec.Command(refitBinary(t), append([]string{"worker", "--http-listen", addr}, debug...)...)
			cmd.Env = append(os.Environ(), "REFIT_DSN="+f.dsn)
			cmd.Dir = t.TempDir()
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			stopped := false
			t.Cleanup(func() {
				if !stopped {
					_ = cmd.Process.Kill()
					<-exited
				}
			})
			waitJobs(t, pool, 2*time.Minute, "EXISTS (SELECT FROM refit.jobs WHERE name = 'items_upper' AND phase = 'syncing')")
			d := &daemon{http: addr}
			metrics, jobs := d.get(t, "/metrics"), d.get(t, "/jobs")
			if !strings.Contains(metrics, "refit_jobs") || !strings.Contains(jobs, "items_upper") {
				t.Fatalf("/metrics or /jobs lacks the job:\n%s\n%s", metrics, jobs)
			}
			var apps, queries string
			var walsenders int
			if err := pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(application_name, ' '), ''), coalesce(string_agg(query, E'\n'), ''),
				count(*) FILTER (WHERE backend_type = 'walsender') FROM pg_stat_activity WHERE usename = $1`, role).Scan(&apps, &queries, &walsenders); err != nil {
				t.Fatal(err)
			}
			if walsenders != 1 || !strings.Contains(apps, "refit") {
				t.Fatalf("refit's sessions: %q with %d walsenders, want the worker's with one", apps, walsenders)
			}
			refit(0, "abort", "items_upper")
			waitJobs(t, pool, time.Minute, "(SELECT phase = 'aborted' FROM refit.jobs WHERE name = 'items_upper')")
			refit(0, "status", "--json")
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			stopped = true
			if err := <-exited; err != nil {
				t.Fatalf("worker after SIGTERM: %v\n%s", err, out.String())
			}

			for what, text := range map[string]string{
				"the commands' output":                 written.String(),
				"the worker's log":                     out.String(),
				"/metrics":                             metrics,
				"/jobs":                                jobs,
				"application_name of refit's sessions": apps,
				"the queries of refit's sessions":      queries,
				"the refit schema":                     refitRows(t, pool),
				"the server log":                       serverLog(),
			} {
				t.Run(what, func(t *testing.T) { assertNoSecret(t, f, text) })
			}
			if !strings.Contains(written.String(), "DEBUG\tconnected") || !strings.Contains(out.String(), "DEBUG") {
				t.Fatalf("no debug output was written:\n%s\n%s", written.String(), out.String())
			}
		})
	}
	if ran != 4 {
		t.Fatalf("%d password forms ran, want 4", ran)
	}
}

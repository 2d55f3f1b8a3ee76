package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/internal/workload"
)

// tlsCluster starts a cluster of its own (TLS is server-wide, and the
// shared cluster's other tests connect with sslmode=prefer), with TLS on and
// its certificate signed by a fresh CA, whose certificate file it returns.
func tlsCluster(t *testing.T) (*pgtest.Cluster, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgtest.Start(ctx, pgtest.Options{})
	if err != nil {
		if os.Getenv("REFIT_TEST_DSN") != "" && strings.Contains(err.Error(), "no PostgreSQL server binaries") {
			t.Skipf("REFIT_TEST_DSN is set and there are no local binaries: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	ca, err := pgtest.NewCA("refit test CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnableTLS(ctx, ca); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := ca.WriteFile(caFile); err != nil {
		t.Fatal(err)
	}
	return c, caFile
}

// requireTLSFor makes the server refuse every unencrypted connection of
// role (pg_hba.conf: hostnossl … reject first), so a refit session that
// did not use TLS — the replication connection included — fails instead of
// passing unnoticed.
func requireTLSFor(t *testing.T, c *pgtest.Cluster, admin *pgxpool.Pool, role string) {
	t.Helper()
	ctx := context.Background()
	var hbaFile string
	if err := admin.QueryRow(ctx, "SHOW hba_file").Scan(&hbaFile); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(hbaFile)
	if err != nil {
		t.Fatal(err)
	}
	rule := fmt.Sprintf("hostnossl all %s all reject\nlocal all %s reject\n", role, role)
	if err := os.WriteFile(hbaFile, append([]byte(rule), orig...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	plain := (&url.URL{Scheme: "postgres", User: url.User(role), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port())),
		Path: "/postgres", RawQuery: "sslmode=disable"}).String()
	for deadline := time.Now().Add(10 * time.Second); ; {
		conn, err := pgx.Connect(ctx, plain)
		if err != nil {
			return // refused: the rule is in force
		}
		conn.Close(ctx) //nolint:errcheck // probing
		if time.Now().After(deadline) {
			t.Fatalf("pg_hba.conf rule %q not in force after a reload", rule)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTLSVerifyFull: refit plan and a whole refit run (its pool and the
// replication connection of the sync) work over TLS with
// sslmode=verify-full against the test CA, as a role the server refuses
// without TLS; every session refit opened was encrypted. A wrong CA fails
// with a clear error and changes nothing.
func TestTLSVerifyFull(t *testing.T) {
	ctx := context.Background()
	c, caFile := tlsCluster(t)
	adminDSN, err := c.CreateDatabase(ctx, "tls")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgxpool.New(ctx, adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	const rows = 20_000
	if err := workload.CreateUsers(ctx, admin, rows); err != nil {
		t.Fatal(err)
	}
	const role = "refit_tls"
	if _, err := admin.Exec(ctx, "CREATE ROLE "+role+" LOGIN SUPERUSER"); err != nil {
		t.Fatal(err)
	}
	requireTLSFor(t, c, admin, role)
	tlsDSN := func(host, rootCert string) string {
		q := url.Values{"sslmode": {"verify-full"}, "sslrootcert": {rootCert}}
		return (&url.URL{Scheme: "postgres", User: url.User(role), Host: net.JoinHostPort(host, strconv.Itoa(c.Port())),
			Path: "/tls", RawQuery: q.Encode()}).String()
	}
	dsn := tlsDSN("127.0.0.1", caFile)
	file := examplePath(t)

	for _, host := range []string{"127.0.0.1", "localhost"} {
		res := runRefit(t, []string{"REFIT_DSN="}, "plan", file, "--dsn", tlsDSN(host, caFile))
		if res.code != 0 || !strings.Contains(res.stdout, "ADD COLUMN") {
			t.Fatalf("plan over TLS to %s: exit %d\n%s\n%s", host, res.code, res.stdout, res.stderr)
		}
	}

	// A wrong CA: the server's certificate does not verify.
	other, err := pgtest.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := other.WriteFile(otherFile); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"plan", file}, {"run", file, "--contract", "now"}} {
		res := runRefit(t, []string{"REFIT_DSN="}, append(cmd, "--dsn", tlsDSN("127.0.0.1", otherFile))...)
		if res.code != 1 || !strings.Contains(res.stderr, "connect to user="+role) ||
			!strings.Contains(res.stderr, "certificate signed by unknown authority") || !strings.Contains(res.stderr, "not signed by a CA in sslrootcert") {
			t.Fatalf("%s with a wrong CA: exit %d, want 1 and a certificate error:\n%s\n%s", cmd[0], res.code, res.stdout, res.stderr)
		}
		t.Logf("%s with a wrong CA: %s", cmd[0], strings.TrimSpace(res.stderr))
	}
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'refit')").Scan(&exists); err != nil || exists {
		t.Fatalf("a run with a wrong CA created the refit schema (%v)", err)
	}

	// The whole lifecycle over TLS: run waits in the window, syncing.
	cmd := exec.Command(refitBinary(t), "run", file, "--contract", "manual", "--dsn", dsn)
	cmd.Env = append(os.Environ(), "REFIT_DSN=", "REFIT_BACKFILL_BATCH_SIZE=2000")
	cmd.Dir = t.TempDir()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	waitJobs(t, admin, 2*time.Minute, "EXISTS (SELECT FROM refit.jobs WHERE phase = 'syncing')")
	// The application writes the old column in the window: the stream over
	// TLS keeps the new ones in sync.
	if _, err := admin.Exec(ctx, "UPDATE users SET full_name = 'Tls Written' WHERE id % 100 = 0"); err != nil {
		t.Fatal(err)
	}
	wrong := func() (n, bad int64) {
		t.Helper()
		if err := admin.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE first_name IS DISTINCT FROM split_part(full_name, ' ', 1)
			OR last_name IS DISTINCT FROM substring(full_name from position(' ' in full_name) + 1)) FROM users`).Scan(&n, &bad); err != nil {
			t.Fatal(err)
		}
		return n, bad
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		n, bad := wrong()
		if n == rows && bad == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d rows wrong in the window, 30s after the application's writes:\n%s", bad, n, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var sessions, plain, walsenders int
	if err := admin.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE NOT s.ssl), count(*) FILTER (WHERE a.backend_type = 'walsender')
		FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1`, role).Scan(&sessions, &plain, &walsenders); err != nil {
		t.Fatal(err)
	}
	if sessions == 0 || plain != 0 || walsenders != 1 {
		t.Fatalf("refit's sessions: %d, %d unencrypted, %d walsenders; want all encrypted, one walsender", sessions, plain, walsenders)
	}
	t.Logf("%d refit sessions, all TLS, one of them the walsender", sessions)
	if res := runRefit(t, []string{"REFIT_DSN="}, "complete", "split_full_name", "--dsn", dsn); res.code != 0 {
		t.Fatalf("complete over TLS: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil || !strings.Contains(out.String(), "completed") {
			t.Fatalf("run over TLS: %v\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("run over TLS did not complete:\n%s", out.String())
	}
	var nulls int64
	var dropped bool
	if err := admin.QueryRow(ctx, `SELECT count(*) FILTER (WHERE first_name IS NULL OR last_name IS NULL),
		NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'full_name' AND NOT attisdropped) FROM users`).Scan(&nulls, &dropped); err != nil {
		t.Fatal(err)
	}
	if nulls != 0 || !dropped {
		t.Fatalf("after contract over TLS: %d rows with NULLs, full_name dropped %v", nulls, dropped)
	}
}

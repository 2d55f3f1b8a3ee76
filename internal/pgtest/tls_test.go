package pgtest_test

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/refit-dev/refit/internal/pgtest"
)

// TestEnableTLS: after EnableTLS a client verifies the server with the CA
// (sslmode=verify-full, by address and by name), a client with another CA
// is refused, sslmode=disable still connects, and the key is as PostgreSQL
// requires it: 0600, owned by the user the server runs as.
func TestEnableTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgtest.Start(ctx, pgtest.Options{})
	if err != nil {
		if os.Getenv("REFIT_TEST_DSN") != "" && strings.Contains(err.Error(), "no PostgreSQL server binaries") {
			t.Skipf("REFIT_TEST_DSN is set and there are no local binaries: %v", err)
		}
		t.Fatal(err)
	}
	defer c.Stop() //nolint:errcheck // test cleanup
	ca, err := pgtest.NewCA("pgtest CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnableTLS(ctx, ca); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := ca.WriteFile(caFile); err != nil {
		t.Fatal(err)
	}
	plain := c.DSN("postgres")
	verify := func(host, root string) string {
		return strings.Replace(strings.Replace(plain, "sslmode=disable", "sslmode=verify-full&sslrootcert="+root, 1), "127.0.0.1", host, 1)
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		conn := connect(t, verify(host, caFile))
		var ssl bool
		if err := conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
			t.Fatalf("verify-full to %s: ssl %v (%v)", host, ssl, err)
		}
	}
	connect(t, plain)

	other, err := pgtest.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(dir, "other.pem")
	if err := other.WriteFile(otherFile); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, verify("127.0.0.1", otherFile))
	if err == nil {
		conn.Close(ctx) //nolint:errcheck // unexpected
		t.Fatal("connected with a CA that did not sign the server's certificate")
	}
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("wrong CA: %v, want an x509.UnknownAuthorityError", err)
	}

	fi, err := os.Stat(filepath.Join(c.DataDir(), "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("server.key mode %v, want 0600", fi.Mode().Perm())
	}
	data, err := os.Stat(c.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if dst := data.Sys().(*syscall.Stat_t); st.Uid != dst.Uid {
			t.Errorf("server.key is owned by uid %d, the data directory (the server's user) by %d", st.Uid, dst.Uid)
		}
	}
}

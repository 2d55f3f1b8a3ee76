package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/refit-dev/refit/internal/pgtest"
	"github.com/refit-dev/refit/sqlstate"
)

// marker is part of every password of these tests: it must never be
// printed.
const marker = "s3cretPW"

// The role's password, with a space, a quote and a backslash; and wrong
// ones.
const (
	rightPassword = `right s3cretPW!'\ two`
	wrongPassword = `wrong s3cretPW@%/?#' x`
)

// secretRole creates a superuser login role with password rightPassword
// (dropped at cleanup). On a cluster started by pgtest, whose pg_hba.conf
// trusts everyone, it also makes the server require that password from this
// role only (restored at cleanup); it reports whether it did.
func secretRole(t *testing.T) (role string, enforced bool) {
	t.Helper()
	c := pgtest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.WithoutCancel(ctx)) //nolint:errcheck // test cleanup
	role = fmt.Sprintf("refit_pw_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9)
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN SUPERUSER PASSWORD '%s'", role,
		strings.ReplaceAll(rightPassword, "'", "''"))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx) //nolint:errcheck // test cleanup
		if _, err := conn.Exec(ctx, "DROP ROLE "+role); err != nil {
			t.Error(err)
		}
	})
	if c.DataDir() == "" {
		return role, false // an existing server (REFIT_TEST_DSN): its pg_hba.conf is its own
	}
	var hbaFile string
	if err := admin.QueryRow(ctx, "SHOW hba_file").Scan(&hbaFile); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(hbaFile)
	if err != nil {
		t.Fatal(err)
	}
	rules := ""
	for _, r := range []string{"local all %s scram-sha-256", "host all %s 127.0.0.1/32 scram-sha-256", "host all %s ::1/128 scram-sha-256"} {
		rules += fmt.Sprintf(r, role) + "\n"
	}
	reload := func(content []byte) {
		if err := os.WriteFile(hbaFile, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			t.Fatal(err)
		}
	}
	reload(append([]byte(rules), orig...))
	t.Cleanup(func() {
		if err := os.WriteFile(hbaFile, orig, 0o600); err != nil {
			t.Error(err)
			return
		}
		conn, err := pgx.Connect(context.Background(), c.DSN("postgres"))
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(context.Background()) //nolint:errcheck // test cleanup
		if _, err := conn.Exec(context.Background(), "SELECT pg_reload_conf()"); err != nil {
			t.Error(err)
		}
	})
	// The postmaster reloads asynchronously: wait until a wrong password
	// is refused.
	probe := (&url.URL{Scheme: "postgres", User: url.UserPassword(role, "probe"),
		Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port())), Path: "/postgres", RawQuery: "sslmode=disable"}).String()
	for deadline := time.Now().Add(10 * time.Second); ; {
		conn, err := pgconn.Connect(ctx, probe)
		if sqlstate.Is(err, sqlstate.InvalidPassword) {
			return role, true
		}
		if err == nil {
			conn.Close(ctx) //nolint:errcheck // probing
		}
		if time.Now().After(deadline) {
			t.Fatalf("password authentication not enforced for %s after a reload: %v", role, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kvEscape writes v as an unquoted keyword/value value.
func kvEscape(v string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `\'`, " ", `\ `).Replace(v)
}

// kvQuote writes v as a quoted keyword/value value.
func kvQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// outcome is what a DSN form leads to.
type outcome int

const (
	connects    outcome = iota // the right password: the command works
	authFails                  // a wrong password: 28P01
	parseFails                 // the DSN does not parse
	ambiguous                  // an unencoded '@' may split the password
	unreachable                // nothing listens there
)

type secretForm struct {
	name string
	dsn  string
	want outcome
	// hide lists more texts that must not be printed (fragments of the
	// password that do not contain the marker).
	hide []string
}

// secretForms returns every DSN form, with the right password (which must
// connect) and with wrong ones.
func secretForms(role, dbname string, port int) []secretForm {
	hostPort := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	urlDSN := func(scheme, pw string) string {
		return (&url.URL{Scheme: scheme, User: url.UserPassword(role, pw), Host: hostPort, Path: "/" + dbname, RawQuery: "sslmode=disable"}).String()
	}
	kv := func(pwField string) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable %s", port, role, dbname, pwField)
	}
	var forms []secretForm
	for _, pw := range []struct {
		label string
		pw    string
		want  outcome
	}{{"right", rightPassword, connects}, {"wrong", wrongPassword, authFails}} {
		forms = append(forms,
			secretForm{"URL percent-encoded, " + pw.label, urlDSN("postgres", pw.pw), pw.want, nil},
			secretForm{"postgresql URL, " + pw.label, urlDSN("postgresql", pw.pw), pw.want, nil},
			secretForm{"URL query password, " + pw.label, fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable&password=%s",
				role, hostPort, dbname, strings.ReplaceAll(url.QueryEscape(pw.pw), "+", "%20")), pw.want, nil},
			secretForm{"keyword/value password=x, " + pw.label, kv("password=" + kvEscape(pw.pw)), pw.want, nil},
			secretForm{"keyword/value password = x, " + pw.label, kv("password = " + kvEscape(pw.pw)), pw.want, nil},
			secretForm{"keyword/value password= x, " + pw.label, kv("password= " + kvEscape(pw.pw)), pw.want, nil},
			secretForm{"keyword/value quoted, " + pw.label, kv("password=" + kvQuote(pw.pw)), pw.want, nil},
		)
	}
	return append(forms,
		secretForm{"URL unencoded password", fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", role, wrongPassword, hostPort, dbname), parseFails, nil},
		secretForm{"URL unencoded %", fmt.Sprintf("postgres://%s:s3cretPW%%zz@%s/%s", role, hostPort, dbname), parseFails, nil},
		secretForm{"URL unencoded @", fmt.Sprintf("postgres://%s:s3cretPW@t41l@%s/%s", role, hostPort, dbname), ambiguous, []string{"t41l"}},
		secretForm{"URL unencoded / and a numeric password", fmt.Sprintf("postgres://%s:2024/s3cretPW@%s/%s", role, hostPort, dbname), ambiguous, nil},
		secretForm{`keyword/value password=\'quoted\'`, kv(`password=\'quoted\'s3cretPW`), authFails, nil},
		secretForm{"keyword/value quoted, spaces", kv("password='my s3cretPW! two'"), authFails, nil},
		secretForm{"keyword/value unterminated quote", kv("password='my s3cretPW! two"), parseFails, nil},
		secretForm{"keyword/value bad port", fmt.Sprintf("host=127.0.0.1 port=s3cretPW user=%s password=s3cretPW", role), parseFails, nil},
		secretForm{"URL closed port", fmt.Sprintf("postgres://%s:s3cretPW@127.0.0.1:1/%s?sslmode=disable&connect_timeout=5", role, dbname), unreachable, nil},
		secretForm{"keyword/value nonexistent host", fmt.Sprintf("host=refit-nonexistent.invalid user=%s password=s3cretPW connect_timeout=5", role), unreachable, nil},
		secretForm{"garbage", "s3cretPW is not a connection string", parseFails, nil},
	)
}

// assertNoSecret fails the test if output shows any password of these
// tests, or any of f's fragments.
func assertNoSecret(t *testing.T, f secretForm, output string) {
	t.Helper()
	for _, s := range append([]string{marker, rightPassword, wrongPassword, url.QueryEscape(rightPassword), url.QueryEscape(wrongPassword)}, f.hide...) {
		if strings.Contains(output, s) {
			t.Fatalf("output shows %q:\n%s", s, output)
		}
	}
}

// checkCommand fails the test unless a command's exit code and output show
// that f took the expected path, and never a password.
func checkCommand(t *testing.T, f secretForm, enforced bool, code int, output string, debug bool) {
	t.Helper()
	assertNoSecret(t, f, output)
	want := ""
	switch f.want {
	case connects:
		if code != 0 {
			t.Fatalf("exit %d, want 0:\n%s", code, output)
		}
		if debug {
			want = "connected"
		}
	case authFails:
		if enforced {
			want = sqlstate.InvalidPassword
		}
	case parseFails:
		want = "cannot parse the connection string"
	case ambiguous:
		want = "percent-encode '@'"
	case unreachable:
		want = "connect to user="
	}
	if f.want != connects && code == 0 {
		t.Fatalf("exit 0, want a failure:\n%s", output)
	}
	if !strings.Contains(output, want) {
		t.Fatalf("output lacks %q:\n%s", want, output)
	}
}

// TestSecretsNeverPrinted runs plan, status and run with every DSN form,
// the right password and wrong ones, at the default and at debug level
// (console and JSON): no password, nor any part of one, is ever printed.
func TestSecretsNeverPrinted(t *testing.T) {
	role, enforced := secretRole(t)
	dsn, _ := newUsers(t, 10)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	file := examplePath(t)
	levels := []struct {
		name  string
		flags []string
	}{{"default", nil}, {"debug", []string{"--log-level", "debug"}}, {"debug-json", []string{"--log-level", "debug", "--log-format", "json"}}}
	for _, f := range secretForms(role, strings.TrimPrefix(u.Path, "/"), port) {
		t.Run(f.name, func(t *testing.T) {
			cmds := [][]string{{"plan", file, "--dsn", f.dsn}, {"status", "--dsn", f.dsn}}
			if f.want != connects {
				cmds = append(cmds, []string{"run", file, "--dsn", f.dsn})
			}
			for _, cmd := range cmds {
				for _, level := range levels {
					t.Run(cmd[0]+"-"+level.name, func(t *testing.T) {
						res := runRefit(t, []string{"REFIT_DSN="}, append(cmd[:len(cmd):len(cmd)], level.flags...)...)
						checkCommand(t, f, enforced, res.code, res.stdout+res.stderr, level.flags != nil)
					})
				}
			}
			// The same DSN from the environment.
			t.Run("status-env-debug", func(t *testing.T) {
				res := runRefit(t, []string{"REFIT_DSN=" + f.dsn}, "status", "--log-level", "debug")
				checkCommand(t, f, enforced, res.code, res.stdout+res.stderr, true)
			})
		})
	}
}

// TestSecretsNotInWorkerLog: the daemon logs its retries of a target it
// cannot connect to without the target's password.
func TestSecretsNotInWorkerLog(t *testing.T) {
	role, enforced := secretRole(t)
	dsn := pgtest.NewDB(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range secretForms(role, strings.TrimPrefix(u.Path, "/"), port) {
		if f.want == connects {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			for _, level := range []string{"info", "debug"} {
				out := &syncBuffer{}
				cmd := exec.Command(refitBinary(t), "worker", "--dsn", f.dsn, "--http-listen", freeAddr(t), "--log-level", level)
				cmd.Env = append(os.Environ(), "REFIT_DSN=")
				cmd.Dir = t.TempDir()
				cmd.Stdout, cmd.Stderr = out, out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				for deadline := time.Now().Add(15 * time.Second); !strings.Contains(out.String(), "target not reachable"); {
					if time.Now().After(deadline) {
						_ = cmd.Process.Kill()
						_ = cmd.Wait()
						t.Fatalf("no retry logged:\n%s", out.String())
					}
					time.Sleep(20 * time.Millisecond)
				}
				if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				if err := cmd.Wait(); err != nil {
					t.Fatalf("worker after SIGTERM: %v\n%s", err, out.String())
				}
				assertNoSecret(t, f, out.String())
				want := map[outcome]string{authFails: sqlstate.InvalidPassword, parseFails: "cannot parse the connection string",
					ambiguous: "percent-encode '@'", unreachable: "target not reachable"}[f.want]
				if f.want == authFails && !enforced {
					want = "target not reachable"
				}
				if !strings.Contains(out.String(), want) {
					t.Fatalf("worker log lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

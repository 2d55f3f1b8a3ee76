package config_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/config"
)

// cleanPGEnv keeps the environment (PGHOST, ~/.pgpass, …) out of the
// parsed DSNs.
func cleanPGEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE",
		"PGSSLMODE", "PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT", "PGSSLPASSWORD", "PGAPPNAME", "PGOPTIONS"} {
		t.Setenv(k, "")
	}
	t.Setenv("PGPASSFILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("PGSERVICEFILE", filepath.Join(t.TempDir(), "none"))
}

type dsnCase struct {
	name string
	dsn  string
	// secret lists the texts that must appear nowhere: the password as
	// written (first), as meant, and the fragments a malformed DSN splits
	// it into.
	secret []string
	// want is RedactDSN's result.
	want string
}

func dsnCases() []dsnCase {
	return []dsnCase{
		{"URL with password", "postgres://owner1:s3cretPW@db.example.com:5432/app?sslmode=disable",
			[]string{"s3cretPW"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"URL with percent-encoded password", "postgres://owner1:s3cret%40PW%2F%3F%25@db.example.com/app",
			[]string{"s3cret%40PW%2F%3F%25", "s3cret@PW/?%", "s3cret"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"URL with unencoded %", "postgres://owner1:s3cretPW%zz@db.example.com/app",
			[]string{"s3cretPW", "owner1", "db.example.com"}, config.UnparseableDSN},
		{"URL with @ in password", "postgres://owner1:s3cretPW@t41l@db.example.com/app",
			[]string{"s3cretPW", "t41l"}, config.HiddenDSN},
		{"URL with / in password", "postgres://owner1:1234/s3cretPW@db.example.com/app",
			[]string{"s3cretPW", "1234"}, config.HiddenDSN},
		{"URL with : in password", "postgres://owner1:s3c:retPW@db.example.com/app",
			[]string{"s3c:retPW", "retPW"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"URL with non-numeric port", "postgres://owner1@db.example.com:s3cretPW/app",
			[]string{"s3cretPW"}, config.UnparseableDSN},
		{"postgresql scheme", "postgresql://owner1:s3cretPW@db.example.com/app",
			[]string{"s3cretPW"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"URL multiple hosts", "postgres://owner1:s3cretPW@db1.example.com:5433,db2.example.com:5434/app",
			[]string{"s3cretPW"}, "user=owner1 host=db1.example.com,db2.example.com port=5433,5434 dbname=app"},
		{"URL query password", "postgres://owner1@db.example.com/app?password=s3cretPW%21&sslmode=disable",
			[]string{"s3cretPW%21", "s3cretPW!"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"URL query sslpassword", "postgres://owner1@db.example.com/app?sslpassword=s3cretPW",
			[]string{"s3cretPW"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"URL with user equal to password", "postgres://s3cretPW:s3cretPW@db.example.com/app",
			[]string{"s3cretPW"}, config.HiddenDSN},
		{"URL with invalid sslmode", "postgres://owner1:s3cretPW@db.example.com/app?sslmode=s3cret",
			[]string{"s3cretPW", "s3cret"}, config.UnparseableDSN},
		{"URL without password", "postgres://owner1@db.example.com/app",
			nil, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"keyword/value password=x", "host=db.example.com user=owner1 password=s3cretPW! dbname=app",
			[]string{"s3cretPW!"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"keyword/value password = x", "host=db.example.com user=owner1 password = s3cretPW! dbname=app",
			[]string{"s3cretPW!"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"keyword/value password= x", "host=db.example.com user=owner1 password= s3cretPW! dbname=app",
			[]string{"s3cretPW!"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"keyword/value password =x", "host=db.example.com user=owner1 password =s3cretPW! dbname=app",
			[]string{"s3cretPW!"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"keyword/value quoted password", "host=db.example.com user=owner1 password='my s3cretPW! two' dbname=app",
			[]string{"my s3cretPW! two", "s3cretPW!"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"keyword/value escaped quotes", `host=db.example.com user=owner1 password=\'quoted\'s3cretPW dbname=app`,
			[]string{`\'quoted\'s3cretPW`, "'quoted's3cretPW", "s3cretPW"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"keyword/value escapes inside quotes", `host=db.example.com user=owner1 password='it\'s s3cret\\PW' dbname=app`,
			[]string{`it\'s s3cret\\PW`, `it's s3cret\PW`, "s3cret"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"keyword/value sslpassword", "host=db.example.com user=owner1 sslpassword=s3cretPW dbname=app",
			[]string{"s3cretPW"}, "user=owner1 host=db.example.com port=5432 dbname=app"},
		{"keyword/value multiple hosts", "host=db1.example.com,db2.example.com port=5432 user=owner1 password=s3cretPW dbname=app",
			[]string{"s3cretPW"}, "user=owner1 host=db1.example.com,db2.example.com port=5432 dbname=app"},
		{"keyword/value quoted user", "host=db.example.com user='app owner' password=s3cretPW dbname=app",
			[]string{"s3cretPW"}, "user='app owner' host=db.example.com port=5432 dbname=app"},
		{"keyword/value unterminated quote", "host=db.example.com user=owner1 password='s3cretPW dbname=app",
			[]string{"s3cretPW", "owner1"}, config.UnparseableDSN},
		{"keyword/value missing =", "host=db.example.com user=owner1 password s3cretPW",
			[]string{"s3cretPW", "owner1"}, config.UnparseableDSN},
		{"keyword/value unknown target_session_attrs", "user=owner1 password=s3cretPW target_session_attrs=s3cret",
			[]string{"s3cretPW", "s3cret"}, config.UnparseableDSN},
		{"garbage", "not a dsn s3cretPW", []string{"s3cretPW"}, config.UnparseableDSN},
		{"URL with NUL", "postgres://owner1:s3cretPW@db.example.com/app\x00", []string{"s3cretPW"}, config.UnparseableDSN},
	}
}

func assertNoSecret(t *testing.T, what, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("%s shows %q: %s", what, s, text)
		}
	}
}

// TestRedactDSN: the description of every DSN form names its target and
// never its password; a DSN that does not parse, or parses ambiguously, is
// a placeholder.
func TestRedactDSN(t *testing.T) {
	cleanPGEnv(t)
	for _, tc := range dsnCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := config.RedactDSN(tc.dsn)
			if got != tc.want {
				t.Errorf("RedactDSN(%q) = %q, want %q", tc.dsn, got, tc.want)
			}
			assertNoSecret(t, "RedactDSN", got, tc.secret)
		})
	}
}

// TestRedactDSNEnvironment: the description is of the target pgx connects
// to, environment included, and the password from PGPASSWORD is hidden too.
func TestRedactDSNEnvironment(t *testing.T) {
	cleanPGEnv(t)
	t.Setenv("PGHOST", "env.example.com")
	t.Setenv("PGPORT", "6543")
	t.Setenv("PGPASSWORD", "envS3cret")
	if got, want := config.RedactDSN("user=owner1 dbname=app"), "user=owner1 host=env.example.com port=6543 dbname=app"; got != want {
		t.Errorf("RedactDSN = %q, want %q", got, want)
	}
	if got := config.RedactDSN("user=envS3cret dbname=app"); got != config.HiddenDSN {
		t.Errorf("RedactDSN with the PGPASSWORD as user = %q, want %q", got, config.HiddenDSN)
	}
	err := config.RedactError(fmt.Errorf("auth as envS3cret: %w", context.Canceled), "user=owner1 dbname=app")
	assertNoSecret(t, "RedactError", err.Error(), []string{"envS3cret"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("errors.Is(%v, context.Canceled) = false", err)
	}
}

// TestRedactErrorParse: pgx's parse error of every unparseable DSN form
// becomes ErrUnparseableDSN; any other error loses every form of the
// password and keeps errors.Is.
func TestRedactErrorParse(t *testing.T) {
	cleanPGEnv(t)
	for _, tc := range dsnCases() {
		t.Run(tc.name, func(t *testing.T) {
			pc, err := pgxpool.ParseConfig(tc.dsn)
			if tc.want == config.UnparseableDSN {
				if err == nil {
					t.Fatalf("pgxpool.ParseConfig(%q) succeeded", tc.dsn)
				}
				red := config.RedactError(err, tc.dsn)
				assertNoSecret(t, "RedactError", red.Error(), tc.secret)
				if red.Error() != config.ErrUnparseableDSN.Error() || !errors.Is(red, config.ErrUnparseableDSN) {
					t.Errorf("RedactError = %q, want ErrUnparseableDSN", red)
				}
				var pce *pgconn.ParseConfigError
				if errors.As(red, &pce) {
					t.Errorf("the redacted error unwraps to pgx's %v", pce)
				}
				return
			}
			if err != nil {
				t.Fatalf("pgxpool.ParseConfig(%q): %v", tc.dsn, err)
			}
			// The DSN, the parsed password and the password as written
			// (tc.secret[0]); the other secrets are parts of these.
			written := ""
			if len(tc.secret) > 0 {
				written = tc.secret[0]
			}
			raw := fmt.Errorf("dial %s as %s with %s (%s): %w", tc.dsn, pc.ConnConfig.User, pc.ConnConfig.Password,
				written, context.DeadlineExceeded)
			red := config.RedactError(raw, tc.dsn)
			assertNoSecret(t, "RedactError", red.Error(), tc.secret)
			if strings.Contains(red.Error(), tc.dsn) {
				t.Errorf("RedactError shows the DSN: %s", red)
			}
			if !errors.Is(red, context.DeadlineExceeded) {
				t.Errorf("errors.Is(%v, context.DeadlineExceeded) = false", red)
			}
			if errors.Is(red, config.ErrUnparseableDSN) {
				t.Errorf("a parseable DSN's error matches ErrUnparseableDSN: %v", red)
			}
		})
	}
}

// TestRedactErrorConnect: pgconn's real connect error (it quotes the user
// and database) passes unchanged when it holds no password, and loses it
// when it does.
func TestRedactErrorConnect(t *testing.T) {
	cleanPGEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	connect := func(dsn string) error {
		conn, err := pgconn.Connect(ctx, dsn)
		if err == nil {
			conn.Close(ctx) //nolint:errcheck // unexpected, failing anyway
			t.Fatalf("connected to %s", dsn)
		}
		return err
	}

	dsn := "postgres://owner1:s3cretPW@127.0.0.1:1/app?sslmode=disable&connect_timeout=5"
	err := connect(dsn)
	if red := config.RedactError(err, dsn); red != err { //nolint:errorlint // identity is the point
		t.Errorf("RedactError changed a safe error: %v → %v", err, red)
	}
	assertNoSecret(t, "connect error", err.Error(), []string{"s3cretPW"})

	dsn = "postgres://s3cretPW:s3cretPW@127.0.0.1:1/s3cretPW?sslmode=disable&connect_timeout=5"
	err = connect(dsn)
	if !strings.Contains(err.Error(), "s3cretPW") {
		t.Fatalf("pgconn's error does not quote the user: %v", err)
	}
	red := config.RedactError(err, dsn)
	assertNoSecret(t, "RedactError", red.Error(), []string{"s3cretPW"})
	if !strings.Contains(red.Error(), "user=xxxxx") {
		t.Errorf("RedactError = %v, want the user masked", red)
	}
	var ce *pgconn.ConnectError
	if errors.As(red, &ce) {
		t.Errorf("the redacted error unwraps to the ConnectError (with its Config.Password)")
	}
	if got := config.RedactError(red, dsn); got != red { //nolint:errorlint // identity is the point
		t.Errorf("RedactError of a redacted error = %v, want it unchanged", got)
	}
}

// TestRedactErrorPgError: errors.As still finds the server's error, with
// its text redacted.
func TestRedactErrorPgError(t *testing.T) {
	cleanPGEnv(t)
	dsn := "host=db.example.com user=owner1 password='my s3cretPW! two'"
	pgErr := &pgconn.PgError{Severity: "FATAL", Code: "28P01", Message: "no my s3cretPW! two here", Detail: "nor my s3cretPW! two"}
	red := config.RedactError(fmt.Errorf("connect: %w", pgErr), dsn)
	assertNoSecret(t, "RedactError", red.Error(), []string{"s3cretPW"})
	var got *pgconn.PgError
	if !errors.As(red, &got) {
		t.Fatalf("errors.As(%v, *PgError) = false", red)
	}
	if got.Code != "28P01" {
		t.Errorf("PgError code %q, want 28P01", got.Code)
	}
	assertNoSecret(t, "PgError", got.Message+" "+got.Detail, []string{"s3cretPW"})
	if pgErr.Message != "no my s3cretPW! two here" {
		t.Errorf("the original PgError was modified: %q", pgErr.Message)
	}
}

// TestRedactErrorAmbiguous: when an unencoded '@' may have split the
// password into other fields, no error text is shown.
func TestRedactErrorAmbiguous(t *testing.T) {
	cleanPGEnv(t)
	dsn := "postgres://owner1:s3cretPW@t41l@db.example.com/app"
	red := config.RedactError(errors.New("hostname resolving error: lookup t41l@db.example.com: no such host"), dsn)
	assertNoSecret(t, "RedactError", red.Error(), []string{"s3cretPW", "t41l"})
	if !strings.Contains(red.Error(), "%40") {
		t.Errorf("RedactError = %q, want the hint to percent-encode '@'", red)
	}
	if config.RedactError(nil, dsn) != nil {
		t.Error("RedactError(nil) != nil")
	}
}

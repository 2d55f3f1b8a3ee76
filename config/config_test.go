package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/refit-dev/refit/config"
)

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "refit.yaml")
	if err := os.WriteFile(file, []byte("ddl:\n  lock_timeout: 2s\nbackfill:\n  batch_size: 100\n  sleep: 5ms\nreplication:\n  max_decode_backlog: 1024\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REFIT_BACKFILL_BATCH_SIZE", "200")
	t.Setenv("REFIT_DSN", "postgres://env@h/db")
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.Duration("lock-timeout", 0, "")
	if err := fs.Parse([]string{"--lock-timeout=3s"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file, map[string]*pflag.Flag{"ddl.lock_timeout": fs.Lookup("lock-timeout")})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DDL.LockTimeout != 3*time.Second {
		t.Errorf("flag should win: lock_timeout %s", cfg.DDL.LockTimeout)
	}
	if cfg.Backfill.BatchSize != 200 {
		t.Errorf("env should beat file: batch_size %d", cfg.Backfill.BatchSize)
	}
	if cfg.Backfill.Sleep != 5*time.Millisecond || cfg.Replication.MaxDecodeBacklog != 1024 {
		t.Errorf("file values lost: %+v %+v", cfg.Backfill, cfg.Replication)
	}
	if cfg.DSN != "postgres://env@h/db" {
		t.Errorf("dsn %q", cfg.DSN)
	}
	if cfg.Replication.DrainTimeout != time.Minute {
		t.Errorf("default lost: %s", cfg.Replication.DrainTimeout)
	}
}

// TestLoadLockTimeoutInitial: ddl.lock_timeout_initial defaults to 50ms and
// is read from the file and the environment.
func TestLoadLockTimeoutInitial(t *testing.T) {
	file := filepath.Join(t.TempDir(), "refit.yaml")
	if err := os.WriteFile(file, []byte("ddl:\n  lock_timeout: 2s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DDL.LockTimeoutInitial != 50*time.Millisecond || cfg.DDL.LockTimeout != 2*time.Second {
		t.Errorf("lock_timeout_initial %s lock_timeout %s, want the default 50ms and the file's 2s", cfg.DDL.LockTimeoutInitial, cfg.DDL.LockTimeout)
	}
	if err := os.WriteFile(file, []byte("ddl:\n  lock_timeout: 2s\n  lock_timeout_initial: 2s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if cfg, err = config.Load(file, nil); err != nil || cfg.DDL.LockTimeoutInitial != 2*time.Second {
		t.Errorf("from the file: lock_timeout_initial %s, %v; want 2s", cfg.DDL.LockTimeoutInitial, err)
	}
	t.Setenv("REFIT_DDL_LOCK_TIMEOUT_INITIAL", "100ms")
	if cfg, err = config.Load(file, nil); err != nil || cfg.DDL.LockTimeoutInitial != 100*time.Millisecond {
		t.Errorf("from the environment: lock_timeout_initial %s, %v; want 100ms", cfg.DDL.LockTimeoutInitial, err)
	}
}

// TestLoadLockTimeoutBelowInitial: a lock_timeout below the default
// initial wait is valid and means a fixed wait (no escalation).
func TestLoadLockTimeoutBelowInitial(t *testing.T) {
	file := filepath.Join(t.TempDir(), "refit.yaml")
	if err := os.WriteFile(file, []byte("ddl:\n  lock_timeout: 20ms\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 3; n++ {
		if got := cfg.DDL.AttemptLockTimeout(n); got != 20*time.Millisecond {
			t.Fatalf("attempt after %d lock timeouts waits %s, want the fixed 20ms", n, got)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	cases := []struct{ name, body, want string }{
		{"unknown key", "backfill:\n  batchsize: 10\n", "batchsize"},
		{"invalid value", "backfill:\n  batch_size: 0\n", "backfill.batch_size"},
		{"bad duration", "ddl:\n  lock_timeout: soon\n", "lock_timeout"},
		{"zero initial lock timeout", "ddl:\n  lock_timeout_initial: 0s\n", "ddl.lock_timeout_initial (0s) must be > 0"},
		{"bad log level", "log:\n  level: loud\n", "log.level"},
		{"limits inverted", "replication:\n  max_retained_wal: 10\n  fail_retained_wal: 5\n", "max_retained_wal"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "refit.yaml")
			if err := os.WriteFile(file, []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := config.Load(file, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/refit-dev/refit/config"
)

// TestLoadMaxAppLockWait: throttle.max_app_lock_wait is off by default, read
// from the file and the environment, and refused when negative.
func TestLoadMaxAppLockWait(t *testing.T) {
	if d := config.Default().Throttle.MaxAppLockWait; d != 0 {
		t.Fatalf("default %s, want 0 (off)", d)
	}
	file := filepath.Join(t.TempDir(), "refit.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("backfill:\n  batch_size: 100\n")
	cfg, err := config.Load(file, nil)
	if err != nil || cfg.Throttle.MaxAppLockWait != 0 {
		t.Fatalf("absent from the file: %s, %v; want 0", cfg.Throttle.MaxAppLockWait, err)
	}
	write("throttle:\n  max_app_lock_wait: 20ms\n")
	if cfg, err = config.Load(file, nil); err != nil || cfg.Throttle.MaxAppLockWait != 20*time.Millisecond {
		t.Fatalf("from the file: %s, %v; want 20ms", cfg.Throttle.MaxAppLockWait, err)
	}
	t.Setenv("REFIT_THROTTLE_MAX_APP_LOCK_WAIT", "5ms")
	if cfg, err = config.Load(file, nil); err != nil || cfg.Throttle.MaxAppLockWait != 5*time.Millisecond {
		t.Fatalf("from the environment: %s, %v; want 5ms", cfg.Throttle.MaxAppLockWait, err)
	}
	t.Setenv("REFIT_THROTTLE_MAX_APP_LOCK_WAIT", "-1ms")
	if _, err = config.Load(file, nil); err == nil || !strings.Contains(err.Error(), "throttle.max_app_lock_wait must be >= 0") {
		t.Fatalf("negative: %v, want an error naming throttle.max_app_lock_wait", err)
	}
}

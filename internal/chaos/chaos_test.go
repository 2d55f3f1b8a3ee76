package chaos_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/refit-dev/refit/internal/chaos"
)

// TestChaos runs the chaos harness against the real refit binary: a short
// smoke by default (5 faults, 2,000 rows; part of `go test ./...`), or
// REFIT_CHAOS_FAULTS faults on 20,000 rows (`make chaos`: 50). The seed is
// REFIT_CHAOS_SEED, else random; it is printed first and with the tally, so
// a failing run can be replayed (the fault plan and every random choice
// repeat; timing does not).
func TestChaos(t *testing.T) {
	faults, rows := 5, 2000
	if s := os.Getenv("REFIT_CHAOS_FAULTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("REFIT_CHAOS_FAULTS=%q: want a number >= 1", s)
		}
		faults, rows = n, 20000
	}
	if s := os.Getenv("REFIT_CHAOS_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 100 {
			t.Fatalf("REFIT_CHAOS_ROWS=%q: want a number >= 100", s)
		}
		rows = n
	}
	var seed uint64
	if s := os.Getenv("REFIT_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("REFIT_CHAOS_SEED=%q: want an unsigned number", s)
		}
		seed = n
	} else {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			t.Fatal(err)
		}
		seed = binary.LittleEndian.Uint64(b[:]) >> 1
	}
	t.Logf("chaos: seed %d (replay: make chaos CHAOS_SEED=%d CHAOS_FAULTS=%d), %d faults, %d rows", seed, seed, faults, faults, rows)

	dir := t.TempDir()
	bin := filepath.Join(dir, "refit")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/refit-dev/refit/cmd/refit").CombinedOutput(); err != nil {
		t.Fatalf("build refit: %v\n%s", err, out)
	}
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-30*time.Second))
		defer cancel()
	}
	logDir := os.Getenv("REFIT_CHAOS_LOGS") // keeps every refit process's output
	if logDir != "" {
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// refit runs as the least-privilege role of docs/safety.md unless
	// REFIT_CHAOS_SUPERUSER=1.
	super := os.Getenv("REFIT_CHAOS_SUPERUSER") == "1"
	tally, err := chaos.Run(ctx, chaos.Config{Binary: bin, Faults: faults, Seed: seed, Rows: rows, Dir: dir, Logf: t.Logf, LogDir: logDir, Superuser: super})
	if tally != nil {
		t.Logf("\n%s", tally)
	}
	if err != nil {
		t.Fatal(err)
	}
	if tally.Fired < faults {
		t.Fatalf("%d faults fired, want %d", tally.Fired, faults)
	}
}

package backfill_test

import (
	"testing"
	"time"

	"github.com/refit-dev/refit/backfill"
)

func TestControllerSlowBatchShrinksAtOnce(t *testing.T) {
	c := backfill.NewController(5000, 100, 50000, 100*time.Millisecond)
	// 5000 rows took 1 s (a lock wait): the next batch is the size that
	// would have taken the target.
	if got := c.Observe(5000, time.Second); got != 500 {
		t.Fatalf("after a 10× slow batch: %d, want 500", got)
	}
	// Far slower than the minimum allows: clamp.
	if got := c.Observe(500, 10*time.Second); got != 100 {
		t.Fatalf("clamped at min: %d, want 100", got)
	}
}

func TestControllerFastBatchGrowsSlowly(t *testing.T) {
	c := backfill.NewController(1000, 100, 50000, 100*time.Millisecond)
	sizes := []int{}
	for i := 0; i < 30; i++ {
		n := c.Size()
		// The server does 100 rows/ms: the ideal size is 10000.
		d := time.Duration(n) * time.Millisecond / 100
		next := c.Observe(n, d)
		if next > n*5/4+1 {
			t.Fatalf("grew from %d to %d in one batch (> 25%%)", n, next)
		}
		sizes = append(sizes, next)
	}
	last := sizes[len(sizes)-1]
	if last < 6700 || last > 10000 {
		t.Fatalf("did not converge toward 10000 rows (target time): %v", sizes)
	}
}

func TestControllerStaysInBand(t *testing.T) {
	c := backfill.NewController(5000, 100, 50000, 100*time.Millisecond)
	// 90 ms and 140 ms are within [2/3, 3/2] of the target: no change.
	for _, d := range []time.Duration{90 * time.Millisecond, 140 * time.Millisecond, 70 * time.Millisecond} {
		if got := c.Observe(5000, d); got != 5000 {
			t.Fatalf("batch of %s changed the size to %d", d, got)
		}
	}
}

func TestControllerFixedWithoutTarget(t *testing.T) {
	c := backfill.NewController(5000, 100, 50000, 0)
	if got := c.Observe(5000, 10*time.Second); got != 5000 {
		t.Fatalf("target 0 must keep the size fixed, got %d", got)
	}
}

func TestControllerRetune(t *testing.T) {
	c := backfill.NewController(5000, 100, 50000, 100*time.Millisecond)
	c.Retune(100, 2000, 100*time.Millisecond)
	if c.Size() != 2000 {
		t.Fatalf("size above the new max: %d", c.Size())
	}
}

// TestControllerBackoff: an application lock wait halves the next batch
// (within bounds); with adaptation off the size stays.
func TestControllerBackoff(t *testing.T) {
	c := backfill.NewController(5000, 1000, 50000, 50*time.Millisecond)
	if got := c.Backoff(); got != 2500 {
		t.Fatalf("after a backoff: %d, want 2500", got)
	}
	if got := c.Backoff(); got != 1250 {
		t.Fatalf("after a second backoff: %d, want 1250", got)
	}
	if got := c.Backoff(); got != 1000 {
		t.Fatalf("clamped at min: %d, want 1000", got)
	}
	fixed := backfill.NewController(5000, 100, 50000, 0)
	if got := fixed.Backoff(); got != 5000 {
		t.Fatalf("fixed size after a backoff: %d, want 5000", got)
	}
}

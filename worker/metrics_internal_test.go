package worker

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestThrottledSecondsMetric: waits noted by a runner reach
// refit_backfill_throttled_seconds_total, by job and signal.
func TestThrottledSecondsMetric(t *testing.T) {
	m := NewMetrics()
	r := &Runner{}
	m.instrument(r, "main")
	r.noteHeld(7, "query", 1500*time.Millisecond)
	r.noteHeld(7, "query", 500*time.Millisecond)
	r.noteHeld(7, "sync_decode_backlog", 250*time.Millisecond)
	if got := testutil.ToFloat64(m.held.WithLabelValues("main", "7", "query")); got != 2 {
		t.Errorf("query: %v s, want 2", got)
	}
	if got := testutil.ToFloat64(m.held.WithLabelValues("main", "7", "sync_decode_backlog")); got != 0.25 {
		t.Errorf("sync_decode_backlog: %v s, want 0.25", got)
	}
	if held := r.Held(); held["query"] != 2*time.Second || held["sync_decode_backlog"] != 250*time.Millisecond {
		t.Errorf("Held() = %v", held)
	}
}

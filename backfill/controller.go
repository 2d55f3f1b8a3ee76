package backfill

import "time"

// Controller adapts the batch size toward a target batch duration.
//
// A batch that took much longer than the target (a lock wait, an I/O stall,
// a busy server) shrinks the next one at once, in proportion; a fast batch
// grows the next one only by a bounded step. So refit backs off in one
// batch when the database gets slow and creeps back up when it recovers,
// instead of oscillating, and one lucky fast batch never doubles the time
// rows stay locked.
type Controller struct {
	size     int
	min, max int
	target   time.Duration
}

// growthStep bounds the growth after a fast batch (25%).
const growthStep = 1.25

// NewController starts at size, bounded by [min, max]. A target of 0 turns
// adaptation off (the size stays fixed).
func NewController(size, min, max int, target time.Duration) *Controller {
	min = max2(1, min)
	if max < min {
		max = min
	}
	return &Controller{size: clamp(size, min, max), min: min, max: max, target: target}
}

// Size is the size of the next batch.
func (c *Controller) Size() int { return c.size }

// Observe records that a batch of n rows took d and returns the next size.
func (c *Controller) Observe(n int, d time.Duration) int {
	if c.target <= 0 || n <= 0 || d <= 0 {
		return c.size
	}
	ideal := float64(n) * float64(c.target) / float64(d)
	switch {
	case d > c.target*3/2:
		// Slow: go straight to the size that would have met the target.
		c.size = clamp(int(ideal), c.min, c.max)
	case d < c.target*2/3:
		// Fast: move a fifth of the way toward the ideal size, at most +25%.
		next := float64(c.size) + (ideal-float64(c.size))/5
		c.size = clamp(int(min(next, float64(c.size)*growthStep)), c.min, c.max)
	}
	return c.size
}

// Backoff records that the application suffered from the last batch (a
// session waited on its locks longer than throttle.max_app_lock_wait): the
// batch is treated as too slow, as if it had taken twice the target, so
// the next one is half as big (within bounds) and regrows as fast batches
// allow. With adaptation off (target 0) the size stays as it is.
func (c *Controller) Backoff() int { return c.Observe(c.size, 2*c.target) }

// SetSize sets the next batch size (an operator's explicit choice).
func (c *Controller) SetSize(n int) { c.size = clamp(n, c.min, c.max) }

// Retune changes the bounds and target (live tuning) and keeps the current
// size within them.
func (c *Controller) Retune(min, max int, target time.Duration) {
	c.min, c.max, c.target = max2(1, min), max, target
	if c.max < c.min {
		c.max = c.min
	}
	c.size = clamp(c.size, c.min, c.max)
}

func clamp(v, lo, hi int) int {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

func max2(a, b int) int {
	if a > b {
		return a
	}
	return b
}

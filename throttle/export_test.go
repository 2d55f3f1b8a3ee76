package throttle

// Seen reports whether the lock watcher saw a wait over the limit that no
// Check has held for yet (for tests of the watcher).
func (t *Throttler) Seen() bool {
	t.locks.mu.Lock()
	defer t.locks.mu.Unlock()
	return t.locks.seen
}

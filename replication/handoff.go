package replication

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// The drain inside a swap's lock.
//
// A swap (alter_column's rename of the shadow into place) must see every
// write the application committed before it, and none can come after: it
// runs in one transaction that takes ACCESS EXCLUSIVE on the table. Once it
// holds the lock, every transaction that wrote the table has committed (or
// rolled back) and released its lock, so its commit record precedes any WAL
// the swap writes. The swap emits a sentinel there and waits for the
// consumer to receive it: everything before it has then been received, and
// the keys still pending are exactly what the shadow lacks. The consumer
// cannot apply them itself (its apply session would wait on the swap's
// lock), so it hands them over (DrainLocked) and the swap applies them
// inside its own transaction, then renames. Until the swap ends the
// consumer is frozen: it applies nothing and confirms no position past
// what it handed over, so a swap that rolls back (it held the lock longer
// than its bound) gives the keys back (Resume) and loses nothing, and a
// refit process killed in between resumes from the slot's confirmed
// position, before those keys.
//
// The sentinel is not transactional (the swap's transaction has not
// committed when it must arrive), and the walsender sends only flushed WAL:
// on PostgreSQL 17+ pg_logical_emit_message(…, flush => true) flushes it;
// before 17 a transactional message committed on another session (one
// fsync, with synchronous_commit on) flushes the WAL up to and past it.
// Unassisted it arrived after ~20 s (p50; DESIGN.md). The swap's session
// must carry no replication origin: on PostgreSQL 16+ the walsender drops
// whatever is emitted under one (origin 'none', see OriginWalsender), the
// sentinel included.

// Handoff is the keys a frozen consumer handed to a DrainLocked caller.
type Handoff struct {
	pending map[*Target]map[string][]string
	n       int
}

// Keys is how many keys were handed over.
func (h *Handoff) Keys() int { return h.n }

// Apply recomputes the handed-over keys in tx (the swap's transaction) and
// returns how many rows changed.
func (h *Handoff) Apply(ctx context.Context, tx pgx.Tx) (int64, error) {
	return applyKeys(ctx, tx, h.pending)
}

// DrainLocked drains the stream from inside tx, a transaction that holds
// the lock stopping every write to the job's tables: it emits a sentinel in
// tx (flushed as described above, through flusher for servers before 17),
// waits until the consumer has received it, and returns the keys still
// pending then. The consumer stays frozen until Resume or the end of Run.
// The wait ends with ctx (a swap bounds it by the lock time it allows).
func (c *Consumer) DrainLocked(ctx context.Context, tx pgx.Tx, flusher Querier) (*Handoff, error) {
	nb := make([]byte, 8)
	if _, err := rand.Read(nb); err != nil {
		return nil, err
	}
	nonce := "h" + hex.EncodeToString(nb)
	ch := make(chan *Handoff, 1)
	c.mu.Lock()
	c.handoffs[nonce] = ch
	c.mu.Unlock()
	abandon := func() {
		c.mu.Lock()
		delete(c.handoffs, nonce)
		c.mu.Unlock()
		// Delivered just before: give the keys back, or they are lost.
		select {
		case h := <-ch:
			c.Resume(h)
		default:
		}
	}
	var version int
	if err := tx.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		abandon()
		return nil, fmt.Errorf("drain in the lock: %w", err)
	}
	start := time.Now()
	var lsn string
	if version >= 170000 {
		if err := tx.QueryRow(ctx, "SELECT pg_logical_emit_message(false, $1, $2, true)::text", c.sentinelPrefix(), nonce).Scan(&lsn); err != nil {
			abandon()
			return nil, fmt.Errorf("emit sentinel in the lock: %w", err)
		}
	} else {
		if err := tx.QueryRow(ctx, "SELECT pg_logical_emit_message(false, $1, $2)::text", c.sentinelPrefix(), nonce).Scan(&lsn); err != nil {
			abandon()
			return nil, fmt.Errorf("emit sentinel in the lock: %w", err)
		}
		// Another prefix: the consumer ignores it; its commit flushes.
		if _, err := flusher.Exec(ctx, "SELECT pg_logical_emit_message(true, $1, '')", c.sentinelPrefix()+"_flush"); err != nil {
			abandon()
			return nil, fmt.Errorf("flush the sentinel: %w", err)
		}
	}
	c.mu.Lock()
	if c.reader != nil {
		c.reader.wake()
	}
	c.mu.Unlock()
	select {
	case h := <-ch:
		c.log.Info("stream drained in the lock", zap.String("sentinel_lsn", lsn), zap.Int("keys", h.n), zap.Duration("took", time.Since(start)))
		return h, nil
	case <-ctx.Done():
		abandon()
		return nil, fmt.Errorf("drain in the lock: the sentinel at %s was not received in time: %w", lsn, context.Cause(ctx))
	}
}

// Resume gives handed-over keys back to the consumer (the swap that took
// them rolled back): it applies them and goes on as before. After a swap
// that committed it only re-applies them as no-ops (a consumer is normally
// stopped then: the swap ends the sync).
func (c *Consumer) Resume(h *Handoff) {
	c.mu.Lock()
	c.resumes = append(c.resumes, h)
	c.mu.Unlock()
}

// handOff, in the loop: hands the pending keys to a DrainLocked caller whose
// sentinel was reached, and takes back keys of a Resume.
func (c *Consumer) handOff(st *loopState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.resumes {
		// Late already: applied at once.
		st.firstAt = time.Now().Add(-c.cfg.FlushInterval)
		addPending(st, h.pending)
		st.frozen = false
	}
	c.resumes = nil
	if len(c.handoffs) == 0 || len(st.reached) == 0 {
		return
	}
	keep := st.reached[:0]
	for _, n := range st.reached {
		ch, ok := c.handoffs[n]
		if !ok {
			keep = append(keep, n) // a Drain's, or a late one nobody waits for
			continue
		}
		delete(c.handoffs, n)
		h := &Handoff{pending: st.pending, n: st.nPending}
		st.pending = map[*Target]map[string][]string{}
		st.nPending = 0
		st.pendCommits = st.pendCommits[:0]
		st.pendXids = st.pendXids[:0]
		st.frozen = true
		ch <- h
	}
	st.reached = keep
}

package replication

import (
	"context"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// streamReader receives the replication stream cheaply.
//
// While a backfill runs, the walsender streams one message per backfilled
// row (PostgreSQL 15 and older cannot filter refit's origin server-side), a
// million messages for a million rows, all of them skipped. Read the naive
// way — a context with a deadline per ReceiveMessage — each message costs a
// timer, a context watcher and a scheduler wake-up, and the consumer burnt
// more CPU than the walsender's decoding, on a machine where the backfill and
// the application need those cores. So:
//
//   - the deadline is set on the socket, and only when it changes; the
//     context's cancellation reaches a blocked read once, through
//     context.AfterFunc, instead of a watcher per message;
//   - on Linux the socket gets SO_RCVLOWAT: the kernel wakes the reader only
//     once lowat bytes are queued, so a busy stream is read in chunks of many
//     messages (and the walsender, whose sends then block now and then,
//     coalesces its writes too). A quiet stream — a trickle of application
//     writes — is picked up at the next tick: the read deadline is never more
//     than tick away, which bounds the latency this adds. While a drain waits
//     for its sentinel the reader reads message by message again.
type streamReader struct {
	conn     *pgconn.PgConn
	netConn  net.Conn
	tick     time.Duration
	deadline time.Time
	lowat    bool // SO_RCVLOWAT is set
	stop     func() bool
}

const (
	// streamLowat is the SO_RCVLOWAT of the replication socket.
	streamLowat = 32 << 10
	// streamTick bounds how long a message shorter than streamLowat may
	// wait in the socket: 100 idle wake-ups a second cost next to nothing.
	streamTick = 10 * time.Millisecond
)

func newStreamReader(ctx context.Context, conn *pgconn.PgConn, tick time.Duration) *streamReader {
	nc := conn.Conn()
	r := &streamReader{conn: conn, netConn: nc, tick: tick}
	r.stop = context.AfterFunc(ctx, r.wake)
	return r
}

// wake makes a blocked receive return (with a timeout) at once; safe from
// any goroutine.
func (r *streamReader) wake() {
	_ = r.netConn.SetReadDeadline(time.Unix(1, 0))
}

// close detaches the reader from the context and clears the socket settings.
func (r *streamReader) close() {
	r.stop()
	_ = r.netConn.SetReadDeadline(time.Time{})
	if r.lowat {
		setRcvLowat(r.netConn, 1)
	}
}

// receive returns the next message, or an error for which pgconn.Timeout is
// true once until (or the next tick) has passed without one. quick reads
// every message as soon as it arrives (someone waits for a sentinel).
func (r *streamReader) receive(ctx context.Context, until time.Time, quick bool) (pgproto3.BackendMessage, error) {
	if batched := r.tick > 0 && !quick; batched != r.lowat {
		if batched {
			setRcvLowat(r.netConn, streamLowat)
		} else {
			setRcvLowat(r.netConn, 1)
		}
		r.lowat = batched
	}
	if r.lowat {
		// Ticks are aligned so the deadline changes at most once a tick.
		next := time.Now().Truncate(r.tick).Add(r.tick)
		if next.Before(until) {
			until = next
		}
	}
	if !until.Equal(r.deadline) {
		if err := r.netConn.SetReadDeadline(until); err != nil {
			return nil, err
		}
		r.deadline = until
		// A cancellation between the loop's check and this deadline would
		// otherwise be overwritten and wait for it.
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	msg, err := r.conn.ReceiveMessage(context.Background())
	if err != nil {
		// The deadline may have been moved by wake or the context.
		r.deadline = time.Time{}
	}
	return msg, err
}

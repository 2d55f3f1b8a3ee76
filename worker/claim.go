package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrClaimLost means the session holding the job's advisory lock (the claim
// that this process runs the job) ended while the job ran: terminated by
// pg_terminate_backend, cut by the network or a restart of PostgreSQL.
// Another process may have claimed the job since, so the run stops at once
// and leaves the job as it is; the job's state is the other process's to
// change. Running it again resumes from its checkpoint.
var ErrClaimLost = errors.New("lost the claim on the job: the session holding its advisory lock ended")

// defaultClaimCheck is how often a run checks that its claim still holds.
const defaultClaimCheck = time.Second

// watchClaim pings the session holding the job's advisory lock every
// interval and calls lost with ErrClaimLost when it no longer answers. A
// live session still holds its session-level advisory lock (only an unlock
// or the end of the session releases it), so an answer is proof enough.
// stop ends the watch and waits for it, so the caller may use conn again.
//
// Why a watchdog and not a check per phase: a backfill or a window runs for
// hours in one phase, and every statement of it, run by a process that no
// longer owns the job, races with the process that does (the step
// checkpoints of state.SetStepTx stop a transactional step from running
// twice, but not a batch or an index build). Cancelling the run's context
// ends those statements within one interval.
func watchClaim(ctx context.Context, conn *pgxpool.Conn, jobID int64, interval time.Duration, lost func(error)) (stop func()) {
	if interval <= 0 {
		interval = defaultClaimCheck
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			pctx, pcancel := context.WithTimeout(wctx, max(interval, 5*time.Second))
			err := conn.Conn().PgConn().Ping(pctx)
			pcancel()
			if err != nil && wctx.Err() == nil {
				lost(fmt.Errorf("job %d: %w (%v)", jobID, ErrClaimLost, err))
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

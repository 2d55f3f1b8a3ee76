package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ConsumerSilence returns how long the consumer streaming the job's slot
// has not answered its walsender (the time since the walsender's last
// standby status reply, or since it started if none came). ok is false when
// no walsender streams the slot, or when its figures are not visible to
// this role (another role's walsender without pg_read_all_stats).
//
// A live consumer reports every replication.status_interval (1 s by
// default) even with nothing to apply; one whose process was stopped
// (SIGSTOP, a hung pod) keeps its connection, and so the slot, while it
// stays silent — until wal_sender_timeout ends the walsender, if it is set.
func ConsumerSilence(ctx context.Context, q Querier, jobID int64) (silence time.Duration, ok bool, err error) {
	var seconds *float64
	err = q.QueryRow(ctx, `SELECT extract(epoch FROM now() - coalesce(r.reply_time, a.backend_start))::float8
		FROM pg_catalog.pg_replication_slots s
		JOIN pg_catalog.pg_stat_activity a ON a.pid = s.active_pid
		LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid
		WHERE s.slot_name = $1 AND s.database = current_database()`, SlotName(jobID)).Scan(&seconds)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read the consumer of slot %s: %w", SlotName(jobID), err)
	}
	if seconds == nil {
		return 0, false, nil
	}
	return time.Duration(*seconds * float64(time.Second)), true, nil
}

package replication

import (
	"context"
	"errors"
	"fmt"
)

// Where refit's own writes are filtered out of the stream.
//
// refit tags its backfill and apply sessions with replication origins
// (refit_j<job>_<role>), and its own writes must not come back as dirty
// keys. PostgreSQL 14 and 15 send every transaction, so the consumer drops
// tagged ones itself (OriginClient): the walsender still decodes and sends
// every backfilled row, a million messages for a million rows. PostgreSQL
// 16 added the pgoutput option origin 'none': the walsender then drops, at
// decoding time, every change that carries any replication origin
// (OriginWalsender), which takes the backfill's rows off the stream and
// most of its decoding off the walsender.
//
// 'none' means any origin, not refit's: the writes of a logical
// subscription (or pglogical, BDR) into this database carry theirs and would
// be dropped too, and the sync would miss them. So the walsender filters
// only while no replication origin other than refit's exists on the server
// (origins are cluster-wide; one of another database is counted too, to be
// safe). A stream started that way re-checks before each position it
// confirms: an origin created after the check (a new subscription) makes it
// stop without confirming and start again filtering in the client, from the
// slot's confirmed position. That is enough because a transaction replayed
// under an origin commits after the origin does, and the position being
// confirmed was received before the check, so no such transaction lies at
// or before it: it is sent again by the new stream.
const (
	OriginWalsender = "walsender"
	OriginClient    = "client"
)

// errForeignOrigin stops a stream that filters in the walsender when a
// replication origin that is not refit's appears.
var errForeignOrigin = errors.New("a replication origin that is not refit's exists: refit's own writes are filtered in the client")

// foreignOriginsSQL counts the replication origins that are not refit's.
const foreignOriginsSQL = `SELECT count(*) FROM pg_replication_origin WHERE roname NOT LIKE 'refit\_%'`

// originFilter decides where the stream about to start filters refit's
// writes (OriginWalsender or OriginClient) and says why, for the log.
func originFilter(ctx context.Context, q Querier, disabled bool) (mode, why string, err error) {
	var version, foreign int
	if err := q.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, ("+foreignOriginsSQL+")").Scan(&version, &foreign); err != nil {
		return "", "", fmt.Errorf("choose the origin filter: %w", err)
	}
	switch {
	case disabled:
		return OriginClient, "replication.walsender_origin_filter is off", nil
	case version < 160000:
		return OriginClient, "the server is older than PostgreSQL 16 (no pgoutput origin option)", nil
	case foreign > 0:
		return OriginClient, fmt.Sprintf("%d replication origin(s) that are not refit's exist (a subscription's writes must be synced)", foreign), nil
	}
	return OriginWalsender, "PostgreSQL 16+ and no other replication origin", nil
}

// checkNoForeignOrigin is called before a stream that filters in the
// walsender confirms a position; see the comment above.
func checkNoForeignOrigin(ctx context.Context, q Querier) error {
	var foreign int
	if err := q.QueryRow(ctx, foreignOriginsSQL).Scan(&foreign); err != nil {
		return fmt.Errorf("check replication origins: %w", err)
	}
	if foreign > 0 {
		return errForeignOrigin
	}
	return nil
}

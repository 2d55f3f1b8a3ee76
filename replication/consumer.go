package replication

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/sqlstate"
)

// Target is one table kept in sync: its key and its derived columns.
type Target struct {
	Table migration.TableName // schema-qualified
	Key   []migration.KeyColumn
	Sets  []migration.ColumnSet
}

// Stats are the consumer's counters.
type Stats struct {
	ConfirmedLSN   pglogrepl.LSN
	KeysApplied    int64
	TxApplied      int64 // application transactions whose keys were applied
	TxSkipped      int64 // refit's own transactions, skipped by origin
	LastCommitTime time.Time
	LastAppliedAt  time.Time
	// LastChangedAt is the last time an apply changed a row, i.e. a write
	// that set only the old columns (an application version still on the
	// old shape); writes of the new version that set both are no-ops.
	LastChangedAt time.Time
	RowsChanged   int64
	// Lags are commit→applied delays of recent transactions (bounded ring).
	Lags []time.Duration
	// OriginFilter is where refit's own writes are dropped from the
	// running stream: OriginWalsender or OriginClient.
	OriginFilter string
}

// Consumer streams the job's slot and applies dirty keys.
type Consumer struct {
	pool    *pgxpool.Pool
	jobID   int64
	cfg     Config
	log     *zap.Logger
	targets map[string]*Target // by "schema.table"
	// OnStatus, if set, is called after each position report (about once a
	// StatusInterval) with the current stats.
	OnStatus func(Stats)

	mu      sync.Mutex
	stats   Stats
	lagRing []time.Duration
	lagNext int
	drains  map[string]chan error // nonce → done
	reader  *streamReader         // the running stream, for Drain to wake
	// handoffs are the DrainLocked calls waiting for their sentinel (nonce
	// → where to deliver the keys); resumes are keys given back after a
	// rolled-back swap, for the loop to apply.
	handoffs map[string]chan *Handoff
	resumes  []*Handoff
}

const lagRingSize = 100_000

// NewConsumer returns a consumer of the job's slot.
func NewConsumer(pool *pgxpool.Pool, jobID int64, targets []Target, cfg Config, log *zap.Logger) *Consumer {
	c := &Consumer{pool: pool, jobID: jobID, cfg: cfg, log: log.Named("sync").With(zap.Int64("job", jobID)),
		targets: map[string]*Target{}, drains: map[string]chan error{}, handoffs: map[string]chan *Handoff{}}
	for i := range targets {
		t := targets[i]
		c.targets[t.Table.String()] = &t
	}
	return c
}

// Stats returns a snapshot of the counters.
func (c *Consumer) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Lags = append([]time.Duration(nil), c.lagRing...)
	return s
}

func (c *Consumer) sentinelPrefix() string { return fmt.Sprintf("refit_sentinel_%d", c.jobID) }

// Drain waits until every change committed before the call is applied: it
// emits a transactional logical message (a sentinel) from an autocommit
// connection and waits for the consumer to reach it and apply everything
// pending. Run must be running.
func (c *Consumer) Drain(ctx context.Context) error {
	nb := make([]byte, 8)
	if _, err := rand.Read(nb); err != nil {
		return err
	}
	nonce := hex.EncodeToString(nb)
	done := make(chan error, 1)
	c.mu.Lock()
	c.drains[nonce] = done
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.drains, nonce)
		c.mu.Unlock()
	}()
	start := time.Now()
	// Transactional, in autocommit with synchronous_commit on: its commit
	// flushes WAL, so the walsender can send it at once.
	var lsn string
	if err := c.pool.QueryRow(ctx, "SELECT pg_logical_emit_message(true, $1, $2)::text", c.sentinelPrefix(), nonce).Scan(&lsn); err != nil {
		return fmt.Errorf("emit sentinel: %w", err)
	}
	// The reader may be waiting for a full chunk of stream: read now.
	c.mu.Lock()
	if c.reader != nil {
		c.reader.wake()
	}
	c.mu.Unlock()
	t := time.NewTimer(c.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		if err == nil {
			c.log.Info("stream drained", zap.String("sentinel_lsn", lsn), zap.Duration("took", time.Since(start)))
		}
		return err
	case <-t.C:
		return fmt.Errorf("drain: the sentinel at %s was not applied within %s (replication.drain_timeout)", lsn, c.cfg.DrainTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// relation is what the consumer knows of a relation id.
type relation struct {
	target *Target
	keyIdx []int // positions of the key columns in the tuple
}

// txn is the transaction being received.
type txn struct {
	active     bool
	ours       bool
	xid        uint32
	commitTime time.Time
	keys       map[*Target]map[string][]string
	nKeys      int      // distinct keys in keys
	spilled    bool     // some of its keys were applied before its commit message (see spill)
	sentinels  []string // nonces seen in this transaction
}

// loop state, owned by Run's goroutine.
type loopState struct {
	conn        *pgconn.PgConn
	relations   map[uint32]*relation
	cur         txn
	pending     map[*Target]map[string][]string
	nPending    int
	firstAt     time.Time
	pendCommits []time.Time
	pendXids    []uint32      // transactions whose keys are pending
	pendEnd     pglogrepl.LSN // end LSN of the last transaction whose keys are pending
	confirmed   pglogrepl.LSN
	lastStatus  time.Time
	reached     []string // sentinel nonces reached, waiting for the apply
	apply       *pgxpool.Conn
	// walsenderFilter: the stream runs with origin 'none', so every
	// confirmation is preceded by checkNoForeignOrigin.
	walsenderFilter bool
	// frozen: the pending keys were handed to a DrainLocked caller (see
	// handoff.go); nothing is applied, and no position confirmed, until
	// they are given back (Resume) or the consumer stops.
	frozen bool
}

// Run consumes the slot until ctx is done or an error occurs. It resumes
// from the slot's confirmed position (never from IDENTIFY_SYSTEM's). A
// stream that filters refit's writes in the walsender and sees another
// replication origin appear starts again filtering them in the client
// (see OriginWalsender).
func (c *Consumer) Run(ctx context.Context) error {
	mode, why, err := originFilter(ctx, c.pool, c.cfg.OriginFilter == OriginClient)
	if err != nil {
		return err
	}
	for {
		c.log.Info("sync origin filter", zap.String("filter", mode), zap.String("why", why))
		c.mu.Lock()
		c.stats.OriginFilter = mode
		c.mu.Unlock()
		err := c.run(ctx, mode == OriginWalsender)
		if !errors.Is(err, errForeignOrigin) {
			return err
		}
		mode, why = OriginClient, err.Error()
	}
}

// run is one stream of Run; walsenderFilter selects origin 'none'.
func (c *Consumer) run(ctx context.Context, walsenderFilter bool) (err error) {
	cfg := c.pool.Config().ConnConfig.Config.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = AppName(c.jobID, "sync")
	var conn *pgconn.PgConn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing
		}
	}()
	// A walsender of a killed refit process may still hold the slot for a moment.
	err = retryInUse(ctx, func() error {
		if conn != nil {
			conn.Close(ctx) //nolint:errcheck // replaced below
		}
		var cerr error
		if conn, cerr = pgconn.ConnectConfig(ctx, cfg); cerr != nil {
			return fmt.Errorf("open replication connection: %w", cerr)
		}
		// Resume from the slot's confirmed position: start LSN 0 means
		// "where the slot is", never IDENTIFY_SYSTEM's current position.
		// Protocol 1 without streaming: a transaction is sent once it has
		// committed, which spill relies on.
		args := []string{"proto_version '1'", fmt.Sprintf("publication_names '%s'", PublicationName(c.jobID)), "messages 'true'"}
		if walsenderFilter {
			args = append(args, "origin 'none'")
		}
		return pglogrepl.StartReplication(ctx, conn, SlotName(c.jobID), 0, pglogrepl.StartReplicationOptions{PluginArgs: args})
	})
	if err != nil {
		return fmt.Errorf("start replication on %s: %w", SlotName(c.jobID), err)
	}
	// The apply session is tagged only once the stream is open: a Run that
	// cannot start (its slot was dropped) must not recreate the job's
	// origin behind Drop.
	apply, err := c.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire apply connection: %w", err)
	}
	defer apply.Release()
	if _, err := apply.Exec(ctx, "SELECT set_config('application_name', $1, false)", AppName(c.jobID, "apply")); err != nil {
		return fmt.Errorf("name apply session: %w", err)
	}
	tagged, err := c.tagOrigin(ctx, apply, "apply")
	if err != nil {
		return err
	}
	defer func() {
		reset := "RESET application_name"
		if tagged {
			reset = "SELECT pg_replication_origin_session_reset(); " + reset
		}
		if _, rerr := apply.Exec(context.WithoutCancel(ctx), reset); rerr != nil {
			apply.Conn().Close(context.WithoutCancel(ctx)) //nolint:errcheck // discard the connection
		}
	}()
	c.log.Info("sync consumer started", zap.String("slot", SlotName(c.jobID)))
	st := &loopState{conn: conn, relations: map[uint32]*relation{}, pending: map[*Target]map[string][]string{}, apply: apply, lastStatus: time.Now(),
		walsenderFilter: walsenderFilter}
	rd := newStreamReader(ctx, conn, streamTick)
	c.mu.Lock()
	c.reader = rd
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.reader = nil
		c.mu.Unlock()
		rd.close()
	}()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		until := st.lastStatus.Add(c.cfg.StatusInterval)
		if st.nPending > 0 {
			until = minTime(until, st.firstAt.Add(c.cfg.FlushInterval))
		}
		draining := c.drainPending()
		if draining {
			// On PG16+ the walsender can miss its wake-up unless the client
			// reports often while it waits for something specific.
			until = minTime(until, st.lastStatus.Add(50*time.Millisecond))
		}
		if time.Now().Before(until) {
			msg, rerr := rd.receive(ctx, until, draining)
			if rerr != nil && !pgconn.Timeout(rerr) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("receive: %w", rerr)
			}
			if rerr == nil {
				if err := c.handle(ctx, st, msg); err != nil {
					return err
				}
			}
		}
		c.handOff(st)
		// Frozen: nothing applied, nothing confirmed (see handoff.go).
		if !st.frozen && st.cur.active && st.cur.nKeys > 0 && st.cur.nKeys+st.nPending >= c.cfg.MaxPendingKeys {
			if err := c.spill(ctx, st); err != nil {
				return err
			}
		}
		if !st.frozen && st.nPending > 0 && (st.nPending >= c.cfg.MaxPendingKeys || time.Since(st.firstAt) >= c.cfg.FlushInterval || len(st.reached) > 0) {
			if err := c.flush(ctx, st); err != nil {
				return err
			}
		}
		if !st.frozen && len(st.reached) > 0 && st.nPending == 0 {
			c.finishDrains(st)
		}
		if time.Since(st.lastStatus) >= c.cfg.StatusInterval || (c.drainPending() && time.Since(st.lastStatus) >= 50*time.Millisecond) {
			if err := c.sendStatus(ctx, st, false); err != nil {
				return err
			}
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func (c *Consumer) drainPending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.drains) > 0 || len(c.handoffs) > 0
}

func (c *Consumer) finishDrains(st *loopState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range st.reached {
		if ch, ok := c.drains[n]; ok {
			ch <- nil
		}
		// A nonce nobody waits for is a late sentinel of an abandoned drain.
	}
	st.reached = nil
}

// tagOrigin marks a session's writes with a refit replication origin so the
// consumer skips them, and reports whether it did (see tagSession).
func (c *Consumer) tagOrigin(ctx context.Context, conn *pgxpool.Conn, role string) (bool, error) {
	return tagSession(ctx, conn.Conn(), OriginName(c.jobID, role), c.log)
}

// TagSession sets up a replication origin on a session (see tagSession).
func TagSession(ctx context.Context, conn *pgx.Conn, origin string, log *zap.Logger) error {
	_, err := tagSession(ctx, conn, origin, log)
	return err
}

// tagSession sets up a replication origin on a session and reports whether
// it did. The origin functions are superuser-only unless EXECUTE on them is
// granted; a role that may not call all of OriginFunctions runs untagged and
// creates no origin (one it could not drop would fail the job at complete).
// Untagged, refit's own writes come back in the stream as dirty keys whose
// apply is a no-op thanks to the IS DISTINCT FROM guard: correct, at the
// cost of decoding, parsing and re-reading every row refit writes.
func tagSession(ctx context.Context, conn *pgx.Conn, origin string, log *zap.Logger) (bool, error) {
	missing, err := MissingOriginFunctions(ctx, conn)
	if err != nil {
		return false, err
	}
	if len(missing) > 0 {
		log.Warn("refit's writes are not tagged with a replication origin (no EXECUTE on the origin functions): "+
			"the sync re-reads them as no-op applies; GRANT EXECUTE ON FUNCTION on them to skip them",
			zap.String("origin", origin), zap.Strings("missing", missing))
		return false, nil
	}
	if err := EnsureOrigin(ctx, conn, origin); err != nil {
		if sqlstate.Is(err, sqlstate.InsufficientPrivilege) {
			log.Warn("cannot tag refit's writes with a replication origin (no privilege); they will be re-applied as no-ops", zap.Error(err))
			return false, nil
		}
		return false, fmt.Errorf("create replication origin %s: %w", origin, err)
	}
	err = retryInUse(ctx, func() error {
		_, err := conn.Exec(ctx, "SELECT pg_replication_origin_session_setup($1)", origin)
		return err
	})
	if err != nil {
		if sqlstate.Is(err, sqlstate.InsufficientPrivilege) {
			log.Warn("cannot tag refit's writes with a replication origin (no privilege); they will be re-applied as no-ops", zap.Error(err))
			return false, nil
		}
		return false, fmt.Errorf("set up replication origin %s: %w", origin, err)
	}
	return true, nil
}

func (c *Consumer) handle(ctx context.Context, st *loopState, msg pgproto3.BackendMessage) error {
	switch m := msg.(type) {
	case *pgproto3.ErrorResponse:
		return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))
	case *pgproto3.CopyData:
		if len(m.Data) == 0 {
			return nil
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return fmt.Errorf("parse keepalive: %w", err)
			}
			// Everything up to the server's sent position has been received;
			// with nothing open or pending it is all applied, so confirm it:
			// this is what keeps an idle slot from retaining WAL.
			if !st.cur.active && st.nPending == 0 && !st.frozen && ka.ServerWALEnd > st.confirmed {
				st.confirmed = ka.ServerWALEnd
			}
			if ka.ReplyRequested {
				return c.sendStatus(ctx, st, false)
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(m.Data[1:])
			if err != nil {
				return fmt.Errorf("parse xlogdata: %w", err)
			}
			return c.decode(st, xld)
		}
	}
	return nil
}

func (c *Consumer) decode(st *loopState, xld pglogrepl.XLogData) error {
	// Row changes of refit's own transactions (the backfill's thousands of
	// rows per batch) are dropped unparsed: only the message type is read.
	if st.cur.ours && len(xld.WALData) > 0 {
		switch pglogrepl.MessageType(xld.WALData[0]) {
		case pglogrepl.MessageTypeInsert, pglogrepl.MessageTypeUpdate, pglogrepl.MessageTypeDelete:
			return nil
		}
	}
	lm, err := pglogrepl.Parse(xld.WALData)
	if err != nil {
		return fmt.Errorf("parse logical message: %w", err)
	}
	switch m := lm.(type) {
	case *pglogrepl.RelationMessage:
		// Replaced on every new one: DDL in the window changes column lists.
		t := c.targets[migration.TableName{Schema: m.Namespace, Name: m.RelationName}.String()]
		rel := &relation{target: t}
		if t != nil {
			for _, k := range t.Key {
				idx := -1
				for i, col := range m.Columns {
					if col.Name == k.Name {
						idx = i
					}
				}
				if idx < 0 {
					return fmt.Errorf("relation %s.%s in the stream has no key column %q", m.Namespace, m.RelationName, k.Name)
				}
				rel.keyIdx = append(rel.keyIdx, idx)
			}
		}
		st.relations[m.RelationID] = rel
	case *pglogrepl.BeginMessage:
		st.cur = txn{active: true, xid: m.Xid, commitTime: m.CommitTime}
	case *pglogrepl.OriginMessage:
		if IsRefitOrigin(m.Name) {
			st.cur.ours = true
		}
	case *pglogrepl.InsertMessage:
		return c.dirty(st, m.RelationID, m.Tuple, nil)
	case *pglogrepl.UpdateMessage:
		return c.dirty(st, m.RelationID, m.NewTuple, m.OldTuple)
	case *pglogrepl.LogicalDecodingMessage:
		if m.Prefix == c.sentinelPrefix() {
			if m.Transactional && st.cur.active {
				st.cur.sentinels = append(st.cur.sentinels, string(m.Content))
			} else {
				st.reached = append(st.reached, string(m.Content))
			}
		}
	case *pglogrepl.CommitMessage:
		cur := st.cur
		st.cur = txn{}
		if cur.ours {
			c.mu.Lock()
			c.stats.TxSkipped++
			c.mu.Unlock()
		}
		if len(cur.keys) > 0 && !cur.ours {
			if st.nPending == 0 {
				st.firstAt = time.Now()
			}
			addPending(st, cur.keys)
			st.pendCommits = append(st.pendCommits, cur.commitTime)
			st.pendXids = append(st.pendXids, cur.xid)
			st.pendEnd = m.TransactionEndLSN
		} else if st.frozen {
			// Its keys may be among those handed off: confirm nothing.
			st.pendEnd = max(st.pendEnd, m.TransactionEndLSN)
		} else if cur.spilled && st.nPending == 0 {
			// Every key of it was applied before this message: it is done.
			c.mu.Lock()
			c.stats.TxApplied++
			c.recordLag(time.Since(cur.commitTime))
			if cur.commitTime.After(c.stats.LastCommitTime) {
				c.stats.LastCommitTime = cur.commitTime
			}
			c.mu.Unlock()
			st.confirmed = max(st.confirmed, m.TransactionEndLSN)
		} else if st.nPending == 0 {
			// Nothing of ours is waiting: this transaction needs no apply.
			st.confirmed = max(st.confirmed, m.TransactionEndLSN)
		} else {
			st.pendEnd = m.TransactionEndLSN
		}
		st.reached = append(st.reached, cur.sentinels...)
	}
	return nil
}

// dirty records the key of an inserted or updated row. Values are never
// taken from the message beyond the key.
func (c *Consumer) dirty(st *loopState, relID uint32, tuple, old *pglogrepl.TupleData) error {
	if st.cur.ours {
		return nil
	}
	rel := st.relations[relID]
	if rel == nil {
		return fmt.Errorf("change for unknown relation id %d (no relation message)", relID)
	}
	if rel.target == nil || tuple == nil {
		return nil
	}
	key := make([]string, len(rel.keyIdx))
	for i, idx := range rel.keyIdx {
		col := tuple.Columns[idx]
		if col.DataType != pglogrepl.TupleDataTypeText && old != nil && idx < len(old.Columns) {
			col = old.Columns[idx]
		}
		if col.DataType != pglogrepl.TupleDataTypeText {
			return fmt.Errorf("change in %s without a readable key column %q (type %q)", rel.target.Table, rel.target.Key[i].Name, col.DataType)
		}
		key[i] = string(col.Data)
	}
	if st.cur.keys == nil {
		st.cur.keys = map[*Target]map[string][]string{}
	}
	m := st.cur.keys[rel.target]
	if m == nil {
		m = map[string][]string{}
		st.cur.keys[rel.target] = m
	}
	id := strings.Join(key, "\x00")
	if _, dup := m[id]; !dup {
		m[id] = key
		st.cur.nKeys++
	}
	return nil
}

// addPending adds keys to the pending set, once each.
func addPending(st *loopState, keys map[*Target]map[string][]string) {
	for t, ks := range keys {
		p := st.pending[t]
		if p == nil {
			p = map[string][]string{}
			st.pending[t] = p
		}
		for id, k := range ks {
			if _, dup := p[id]; !dup {
				p[id] = k
				st.nPending++
			}
		}
	}
}

// spill applies the keys of the transaction being received before its
// commit message has arrived, once there are max_pending_keys of them, so
// that one application transaction that writes a million rows holds a
// bounded number of keys in memory instead of all of them until its commit.
//
// This is safe because the stream is pgoutput protocol version 1 without
// streaming: the walsender sends a transaction only once it has decoded its
// commit record, so every change between BEGIN and COMMIT belongs to a
// transaction that has committed (aborted ones are never sent). waitVisible
// still waits, as for any apply, until the commit is visible to new
// snapshots. The position is not confirmed past the transaction until its
// commit message has been received and its last keys applied: after a
// crash in the middle, the whole transaction is streamed again and its keys
// re-applied, which the IS DISTINCT FROM guard makes idempotent. A key the
// transaction writes again after a spill is simply applied again.
func (c *Consumer) spill(ctx context.Context, st *loopState) error {
	if st.nPending == 0 {
		st.firstAt = time.Now()
	}
	addPending(st, st.cur.keys)
	st.pendXids = append(st.pendXids, st.cur.xid)
	st.cur.keys, st.cur.nKeys, st.cur.spilled = nil, 0, true
	return c.flush(ctx, st)
}

// flush applies every pending key in one transaction, then confirms the end
// of the last transaction those keys came from.
func (c *Consumer) flush(ctx context.Context, st *loopState) error {
	for attempt := 0; ; attempt++ {
		err := c.applyPending(ctx, st)
		if err == nil {
			break
		}
		if sqlstate.Content(err) && ctx.Err() == nil {
			// A value the application wrote does not convert (an
			// alter_column's using, an up): name its row.
			if t, key := c.badKey(ctx, st); key != nil {
				return fmt.Errorf("apply dirty keys: the row of %s with key (%s) cannot be synced: %w", t.Table, strings.Join(key, ", "), err)
			}
		}
		if !sqlstate.Retryable(err) || attempt >= 20 || ctx.Err() != nil {
			return fmt.Errorf("apply dirty keys: %w", err)
		}
		c.log.Warn("sync apply retry", zap.Int("attempt", attempt+1), zap.Error(err))
		if err := sleep(ctx, time.Duration(20*(attempt+1))*time.Millisecond); err != nil {
			return err
		}
	}
	now := time.Now()
	c.mu.Lock()
	c.stats.KeysApplied += int64(st.nPending)
	c.stats.TxApplied += int64(len(st.pendCommits))
	for _, ct := range st.pendCommits {
		c.recordLag(now.Sub(ct))
		if ct.After(c.stats.LastCommitTime) {
			c.stats.LastCommitTime = ct
		}
	}
	c.stats.LastAppliedAt = now
	c.mu.Unlock()
	st.confirmed = max(st.confirmed, st.pendEnd)
	st.pending = map[*Target]map[string][]string{}
	st.nPending = 0
	st.pendCommits = st.pendCommits[:0]
	st.pendXids = st.pendXids[:0]
	return nil
}

func (c *Consumer) recordLag(d time.Duration) {
	if len(c.lagRing) < lagRingSize {
		c.lagRing = append(c.lagRing, d)
		return
	}
	c.lagRing[c.lagNext] = d
	c.lagNext = (c.lagNext + 1) % lagRingSize
}

func (c *Consumer) applyPending(ctx context.Context, st *loopState) error {
	var changed int64
	if err := waitVisible(ctx, st.apply, st.pendXids); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, st.apply, func(tx pgx.Tx) error {
		changed = 0
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", c.cfg.ApplyLockTimeout.Milliseconds())); err != nil {
			return err
		}
		var err error
		changed, err = applyKeys(ctx, tx, st.pending)
		return err
	})
	if err == nil && changed > 0 {
		c.mu.Lock()
		c.stats.RowsChanged += changed
		c.stats.LastChangedAt = time.Now()
		c.mu.Unlock()
	}
	return err
}

// badKey finds a pending key whose apply fails on its own, trying them one
// by one in a transaction that is rolled back.
func (c *Consumer) badKey(ctx context.Context, st *loopState) (*Target, []string) {
	tx, err := st.apply.Begin(ctx)
	if err != nil {
		return nil, nil
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // always rolled back
	for t, keys := range st.pending {
		for _, k := range keys {
			if _, err := tx.Exec(ctx, "SAVEPOINT refit_key"); err != nil {
				return nil, nil
			}
			_, err := applyKeys(ctx, tx, map[*Target]map[string][]string{t: {"": k}})
			if _, rerr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT refit_key"); rerr != nil {
				return nil, nil
			}
			if err != nil {
				return t, k
			}
		}
	}
	return nil, nil
}

// applyKeys recomputes the derived columns of the given keys in tx and
// returns how many rows changed.
func applyKeys(ctx context.Context, tx pgx.Tx, pending map[*Target]map[string][]string) (int64, error) {
	var changed int64
	for t, keys := range pending {
		ids := make([]string, 0, len(keys))
		for id := range keys {
			ids = append(ids, id)
		}
		sort.Strings(ids) // a stable lock order against the backfill
		cols := make([][]string, len(t.Key))
		for _, id := range ids {
			for i, v := range keys[id] {
				cols[i] = append(cols[i], v)
			}
		}
		args := make([]any, len(cols))
		for i := range cols {
			args[i] = cols[i]
		}
		tag, err := tx.Exec(ctx, ApplySQL(t), args...)
		if err != nil {
			return changed, fmt.Errorf("apply %d keys to %s: %w", len(ids), t.Table, err)
		}
		changed += tag.RowsAffected()
	}
	return changed, nil
}

// ApplySQL renders the apply statement of a target: recompute the derived
// columns of the given keys from the live rows, skipping rows already right
// (migration.RecomputeSQL). Fill-once columns are never recomputed.
func ApplySQL(t *Target) string {
	keyCols := make([]string, len(t.Key))
	casts := make([]string, len(t.Key))
	params := make([]string, len(t.Key))
	aliases := make([]string, len(t.Key))
	for i, k := range t.Key {
		keyCols[i] = migration.QuoteIdent(k.Name)
		aliases[i] = fmt.Sprintf("k%d", i)
		casts[i] = fmt.Sprintf("CAST(u.k%d AS %s)", i, k.Type)
		params[i] = fmt.Sprintf("$%d::text[]", i+1)
	}
	where := fmt.Sprintf("(%s) IN (SELECT %s FROM unnest(%s) AS u(%s))", strings.Join(keyCols, ", "), strings.Join(casts, ", "),
		strings.Join(params, ", "), strings.Join(aliases, ", "))
	return migration.RecomputeSQL(t.Table.Quoted(), migration.Derived(t.Sets), where)
}

func (c *Consumer) sendStatus(ctx context.Context, st *loopState, reply bool) error {
	if st.walsenderFilter {
		// st.confirmed was received before this check (see OriginWalsender).
		if err := checkNoForeignOrigin(ctx, st.apply); err != nil {
			return err
		}
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, st.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: st.confirmed, WALFlushPosition: st.confirmed, WALApplyPosition: st.confirmed,
		ClientTime: time.Now(), ReplyRequested: reply,
	})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	st.lastStatus = time.Now()
	c.mu.Lock()
	c.stats.ConfirmedLSN = st.confirmed
	s := c.stats
	c.mu.Unlock()
	if c.OnStatus != nil {
		c.OnStatus(s)
	}
	return nil
}

// waitVisible waits until every given transaction is visible to a new
// snapshot. A commit reaches the stream once its WAL record is flushed, a
// moment before the committing backend leaves the proc array; an apply in
// that moment would not see a row the transaction inserted (an UPDATE of an
// existing row waits for the row lock instead, so only inserts are at risk)
// and would count the key as done. So the apply first checks the xids
// against pg_current_snapshot(); the UPDATE's own snapshot, taken later, is
// at least as new.
func waitVisible(ctx context.Context, conn *pgxpool.Conn, xids []uint32) error {
	if len(xids) == 0 {
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var snap string
		if err := conn.QueryRow(ctx, "SELECT pg_current_snapshot()::text").Scan(&snap); err != nil {
			return fmt.Errorf("read snapshot: %w", err)
		}
		visible, err := allVisible(snap, xids)
		if err != nil {
			return err
		}
		if visible {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("transactions of the stream still not visible after 30s (snapshot %s)", snap)
		}
		if err := sleep(ctx, time.Millisecond); err != nil {
			return err
		}
	}
}

// allVisible reports whether 32-bit xids (from the stream) are visible in a
// snapshot given as pg_snapshot text "xmin:xmax:xip,…" (64-bit xids). The
// epoch of each xid is taken from xmax: a streamed transaction is recent.
func allVisible(snap string, xids []uint32) (bool, error) {
	parts := strings.SplitN(snap, ":", 3)
	if len(parts) != 3 {
		return false, fmt.Errorf("unexpected snapshot %q", snap)
	}
	xmin, err1 := strconv.ParseUint(parts[0], 10, 64)
	xmax, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return false, fmt.Errorf("unexpected snapshot %q", snap)
	}
	running := map[uint64]bool{}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return false, fmt.Errorf("unexpected snapshot %q", snap)
			}
			running[v] = true
		}
	}
	for _, x := range xids {
		full := xmax&^0xffffffff | uint64(x)
		if full > xmax+1<<31 && full >= 1<<32 {
			full -= 1 << 32 // the previous epoch
		}
		if full >= xmax || (full >= xmin && running[full]) {
			return false, nil
		}
	}
	return true, nil
}

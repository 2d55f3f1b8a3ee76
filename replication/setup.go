// Package replication owns the logical-replication side of a job: the
// publication and the permanent pgoutput slot created before the backfill,
// the consumer that keeps new columns in sync with writes to the old ones
// during the window, the sentinel drain before contract, and the cleanup of
// slots, publications and replication origins.
//
// Why no triggers: the application's writes pay nothing extra. Every
// INSERT/UPDATE in the stream only marks its key dirty; dirty keys are
// applied by recomputing the new columns from the live row,
//
//	UPDATE t SET new = <up> WHERE key = ANY(keys) AND new IS DISTINCT FROM <up>
//
// which is idempotent, order-insensitive and converges, and never needs a row
// image from the message (unchanged TOAST values arrive without data).
//
// Why there is no gap: the slot is created before the backfill starts. The
// backfill reads live rows, so everything committed before the slot's
// consistent point is covered by it; everything after arrives in the stream.
// refit's own writes (backfill and apply) carry a replication origin named
// refit_* when refit's role may use origins (superuser, or EXECUTE on
// OriginFunctions), and the consumer skips transactions with such an
// origin, so there is no feedback loop; the IS DISTINCT FROM guard makes
// any that slip through, and all of them for a role without origins,
// no-ops.
package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/sqlstate"
)

// Config tunes replication.
type Config struct {
	// SlotCreateTimeout bounds the wait for open transactions when creating
	// the slot (statement_timeout does not stop that wait).
	SlotCreateTimeout time.Duration `mapstructure:"slot_create_timeout" json:"slot_create_timeout"`
	// StatusInterval is how often the consumer reports its position.
	StatusInterval time.Duration `mapstructure:"status_interval" json:"status_interval"`
	// FlushInterval is the longest a dirty key waits before it is applied.
	FlushInterval time.Duration `mapstructure:"flush_interval" json:"flush_interval"`
	// MaxPendingKeys forces an apply when that many keys are dirty.
	MaxPendingKeys int `mapstructure:"max_pending_keys" json:"max_pending_keys"`
	// DrainTimeout bounds the wait for the sentinel before contract.
	DrainTimeout time.Duration `mapstructure:"drain_timeout" json:"drain_timeout"`
	// MaxRetainedWAL pauses the backfill while the job's slot retains more
	// WAL than this (bytes; 0 = off).
	MaxRetainedWAL int64 `mapstructure:"max_retained_wal" json:"max_retained_wal"`
	// FailRetainedWAL fails the job and drops its slot past this (bytes; 0 =
	// off), so an abandoned job can never fill the disk.
	FailRetainedWAL int64 `mapstructure:"fail_retained_wal" json:"fail_retained_wal"`
	// ApplyLockTimeout bounds the apply transaction's waits for row locks.
	ApplyLockTimeout time.Duration `mapstructure:"apply_lock_timeout" json:"apply_lock_timeout"`
	// MaxDecodeBacklog holds the next backfill batch while the job's
	// walsender has more than this many bytes of WAL still to decode
	// (bytes; 0 = off). The backfill writes WAL faster than one walsender
	// decodes it; without this bound the application's changes queue behind
	// the backfill's in the stream and the sync lag grows with the table.
	MaxDecodeBacklog int64 `mapstructure:"max_decode_backlog" json:"max_decode_backlog"`
	// FailoverSlot is whether a job's slot is a failover slot (PostgreSQL
	// 17+), kept in step on standbys with sync_replication_slots so that it
	// survives a failover: "auto" (when the primary sets
	// synchronized_standby_slots, i.e. runs slot synchronization), "on"
	// (refused before 17) or "off".
	FailoverSlot string `mapstructure:"failover_slot" json:"failover_slot"`
	// OriginFilter says where refit's own writes are dropped from the
	// stream: "auto" (the walsender on PostgreSQL 16+ while no other
	// replication origin exists, else the client; see OriginWalsender) or
	// "client" (always the client).
	OriginFilter string `mapstructure:"origin_filter" json:"origin_filter"`
}

// DefaultConfig returns the built-in defaults.
func DefaultConfig() Config {
	return Config{
		SlotCreateTimeout: 30 * time.Second,
		StatusInterval:    time.Second,
		FlushInterval:     20 * time.Millisecond,
		MaxPendingKeys:    5000,
		DrainTimeout:      time.Minute,
		MaxRetainedWAL:    1 << 30,  // 1 GiB
		FailRetainedWAL:   16 << 30, // 16 GiB
		ApplyLockTimeout:  time.Second,
		MaxDecodeBacklog:  4 << 20, // 4 MiB
		OriginFilter:      "auto",
		FailoverSlot:      "auto",
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.SlotCreateTimeout <= 0 || c.StatusInterval <= 0 || c.FlushInterval <= 0 || c.DrainTimeout <= 0 || c.ApplyLockTimeout <= 0 {
		errs = append(errs, errors.New("replication timeouts and intervals must be > 0"))
	}
	if c.MaxPendingKeys < 1 {
		errs = append(errs, errors.New("replication.max_pending_keys must be >= 1"))
	}
	if c.MaxRetainedWAL < 0 || c.FailRetainedWAL < 0 || c.MaxDecodeBacklog < 0 {
		errs = append(errs, errors.New("replication retained WAL limits must be >= 0"))
	}
	switch c.FailoverSlot {
	case "", "auto", "on", "off":
	default:
		errs = append(errs, fmt.Errorf("replication.failover_slot must be auto, on or off, not %q", c.FailoverSlot))
	}
	if c.OriginFilter != "" && c.OriginFilter != "auto" && c.OriginFilter != OriginClient {
		errs = append(errs, fmt.Errorf("replication.origin_filter must be auto or client, not %q", c.OriginFilter))
	}
	if c.FailRetainedWAL > 0 && c.MaxRetainedWAL > c.FailRetainedWAL {
		errs = append(errs, errors.New("replication.max_retained_wal must be <= replication.fail_retained_wal"))
	}
	return errors.Join(errs...)
}

// Names of a job's replication objects.
const (
	objectPrefix = "refit_job_"
	originPrefix = "refit_"
)

// SlotName is the job's slot (and publication) name.
func SlotName(jobID int64) string { return fmt.Sprintf("%s%d", objectPrefix, jobID) }

// PublicationName is the job's publication.
func PublicationName(jobID int64) string { return SlotName(jobID) }

// OriginName names the replication origin of one of the job's sessions.
func OriginName(jobID int64, role string) string {
	return fmt.Sprintf("%sj%d_%s", originPrefix, jobID, role)
}

// IsRefitOrigin reports whether a replication origin belongs to refit.
func IsRefitOrigin(name string) bool { return strings.HasPrefix(name, originPrefix) }

// Querier is what the setup functions need from a pool or connection.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// MinServerVersion is the oldest PostgreSQL refit runs on (as
// server_version_num): 14 brought the logical decoding messages of the
// contract drain to pgoutput.
const MinServerVersion = 140000

// CheckServerVersion refuses a server older than MinServerVersion. Every
// connection refit opens to a target is checked (see worker.Connect), so a
// refused server is refused before refit creates anything on it.
func CheckServerVersion(ctx context.Context, q Querier) error {
	var version int
	if err := q.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return fmt.Errorf("check the server version: %w", err)
	}
	if version < MinServerVersion {
		return errors.New(versionProblem(version))
	}
	return nil
}

func versionProblem(version int) string {
	return fmt.Sprintf("PostgreSQL %s: refit needs %d or newer (logical decoding messages for the contract drain)",
		versionString(version), MinServerVersion/10000)
}

// versionString renders a server_version_num: 90624 is 9.6.24, 130012 is
// 13.12.
func versionString(num int) string {
	if num >= 100000 {
		return fmt.Sprintf("%d.%d", num/10000, num%10000)
	}
	return fmt.Sprintf("%d.%d.%d", num/10000, num/100%100, num%100)
}

// JobOrigins is the number of replication origins a job holds at most when
// its backfill runs with the given parallelism: one per backfill range (a
// table is split into at most that many ranges, and the ranges of every
// table share their origins: refit_j<id>_b<range>) and one for the apply
// session (refit_j<id>_apply). Each keeps its replication state until the
// job drops its origins at the end.
func JobOrigins(parallelism int) int { return max(parallelism, 1) + 1 }

// CheckRequirements verifies, up front, what logical replication needs and
// says exactly what to change. The slots and replication origins of the
// given jobs (in this database) do not count as used: a job that already
// has its slot needs no new one, so a retried job is not refused because
// its own slot took the last free one. origins is the number of
// replication origins the job will use (JobOrigins); on PostgreSQL 18+,
// where max_active_replication_origins bounds them, it must fit next to
// every other origin of the cluster (each holds a replication state once it
// has been used, until it is dropped). A role that may not use origins
// (MissingOriginFunctions) needs none: its writes run untagged.
func CheckRequirements(ctx context.Context, q Querier, origins int, jobIDs ...int64) error {
	own := make([]string, len(jobIDs))
	ownOrigins := make([]string, len(jobIDs))
	for i, id := range jobIDs {
		own[i] = SlotName(id)
		ownOrigins[i] = fmt.Sprintf("%sj%d\\_%%", originPrefix, id)
	}
	var walLevel string
	var version, maxSlots, usedSlots, maxSenders, usedSenders int
	var canReplicate bool
	err := q.QueryRow(ctx, `SELECT current_setting('wal_level'), current_setting('server_version_num')::int,
		current_setting('max_replication_slots')::int,
		(SELECT count(*) FROM pg_replication_slots WHERE NOT (slot_name = ANY($1::text[]) AND database IS NOT DISTINCT FROM current_database()))::int,
		current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication)::int,
		`+canReplicateSQL, own).
		Scan(&walLevel, &version, &maxSlots, &usedSlots, &maxSenders, &usedSenders, &canReplicate)
	if err != nil {
		return fmt.Errorf("check replication settings: %w", err)
	}
	if version < MinServerVersion {
		return errors.New(versionProblem(version)) // nothing below is worth checking
	}
	var problems []string
	if walLevel != "logical" {
		problems = append(problems, fmt.Sprintf("wal_level is %q: set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL", walLevel))
	}
	if usedSlots >= maxSlots {
		problems = append(problems, fmt.Sprintf("all %d replication slots are in use: raise max_replication_slots (restart) or drop unused slots (SELECT slot_name, active FROM pg_replication_slots)", maxSlots))
	}
	if usedSenders >= maxSenders {
		problems = append(problems, fmt.Sprintf("all %d WAL senders are in use: raise max_wal_senders (restart)", maxSenders))
	}
	if !canReplicate {
		problems = append(problems, "the refit role has no REPLICATION privilege: ALTER ROLE <refit role> REPLICATION (Amazon RDS/Aurora: GRANT rds_replication TO <refit role>)")
	}
	if version >= 180000 && origins > 0 {
		problem, err := checkOriginCapacity(ctx, q, origins, ownOrigins)
		if err != nil {
			return err
		}
		if problem != "" {
			problems = append(problems, problem)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("logical replication is not available:\n  - %s", strings.Join(problems, "\n  - "))
	}
	return nil
}

// checkOriginCapacity reports a problem when the job's origins do not fit
// in max_active_replication_origins (PostgreSQL 18+) next to the cluster's
// other origins (those not matching ownOrigins, LIKE patterns of the job's
// own). Every origin is counted as holding a
// replication state, as it does once used: the exact view
// (pg_replication_origin_status) is for superusers only.
func checkOriginCapacity(ctx context.Context, q Querier, origins int, ownOrigins []string) (string, error) {
	missing, err := MissingOriginFunctions(ctx, q)
	if err != nil || len(missing) > 0 {
		return "", err // untagged: the job creates no origin
	}
	var maxOrigins, others int
	err = q.QueryRow(ctx, `SELECT current_setting('max_active_replication_origins')::int,
		(SELECT count(*) FROM pg_catalog.pg_replication_origin WHERE NOT roname LIKE ANY ($1::text[]))::int`, ownOrigins).
		Scan(&maxOrigins, &others)
	if err != nil {
		return "", fmt.Errorf("check replication origins: %w", err)
	}
	if others+origins <= maxOrigins {
		return "", nil
	}
	return fmt.Sprintf("max_active_replication_origins is %d: the job needs %d replication origins "+
		"(one per backfill range, see backfill.parallelism, and one for the sync's apply) and %d others exist: "+
		"raise max_active_replication_origins (restart), lower backfill.parallelism, or drop unused origins (SELECT roname FROM pg_replication_origin)",
		maxOrigins, origins, others), nil
}

// canReplicateSQL is true when the current role may create and stream
// logical slots: a superuser, a role with the REPLICATION attribute, or, on
// Amazon RDS and Aurora (where rolreplication stays false), a member of
// rds_replication.
const canReplicateSQL = `(SELECT r.rolsuper OR r.rolreplication OR EXISTS (SELECT FROM pg_catalog.pg_roles g
		WHERE g.rolname = 'rds_replication' AND pg_catalog.pg_has_role(r.oid, g.oid, 'MEMBER'))
	FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)`

// CanReplicate reports whether the current role may create, stream and drop
// logical replication slots (see canReplicateSQL).
func CanReplicate(ctx context.Context, q Querier) (bool, error) {
	var ok bool
	if err := q.QueryRow(ctx, "SELECT "+canReplicateSQL).Scan(&ok); err != nil {
		return false, fmt.Errorf("check the REPLICATION privilege: %w", err)
	}
	return ok, nil
}

// OriginFunctions are the replication origin functions refit calls. On
// PostgreSQL 14+ they are revoked from PUBLIC: only superusers and roles
// granted EXECUTE on them may call them.
var OriginFunctions = []string{
	"pg_catalog.pg_replication_origin_create(text)",
	"pg_catalog.pg_replication_origin_drop(text)",
	"pg_catalog.pg_replication_origin_session_setup(text)",
	"pg_catalog.pg_replication_origin_session_reset()",
}

// MissingOriginFunctions returns the OriginFunctions the current role may
// not execute (none for a superuser). refit tags its sessions with an
// origin only when it may call all of them, so that it never creates an
// origin it could not reset or drop.
func MissingOriginFunctions(ctx context.Context, q Querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT f FROM unnest($1::text[]) WITH ORDINALITY AS u(f, n)
		WHERE NOT pg_catalog.has_function_privilege(f, 'EXECUTE') ORDER BY n`, OriginFunctions)
	if err != nil {
		return nil, fmt.Errorf("check replication origin privileges: %w", err)
	}
	missing, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("check replication origin privileges: %w", err)
	}
	return missing, nil
}

// CheckReplicaIdentity refuses tables whose UPDATEs would fail once they
// join an update-publishing publication (no primary key and no replica
// identity index): the application's writes would break, not refit's.
func CheckReplicaIdentity(ctx context.Context, q Querier, tables []migration.TableName) error {
	for _, t := range tables {
		var ident string
		var hasPK, hasIdentIndex bool
		err := q.QueryRow(ctx, `SELECT c.relreplident::text, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
			EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
			FROM pg_class c WHERE c.oid = to_regclass($1)`, t.Quoted()).Scan(&ident, &hasPK, &hasIdentIndex)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("replica identity of %s: no such table", t)
		}
		if err != nil {
			return fmt.Errorf("replica identity of %s: %w", t, err)
		}
		switch {
		// USING INDEX whose index was dropped since behaves as NOTHING.
		case ident == "n", ident == "d" && !hasPK, ident == "i" && !hasIdentIndex:
			return fmt.Errorf("table %s has no replica identity: its UPDATEs would fail once it is published. "+
				"Run ALTER TABLE %s REPLICA IDENTITY USING INDEX <unique index on NOT NULL columns> first", t, t.Quoted())
		}
	}
	return nil
}

// PublicationExists reports whether the job's publication exists.
func PublicationExists(ctx context.Context, q Querier, jobID int64) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", PublicationName(jobID)).Scan(&ok)
	return ok, err
}

// PublicationSQL is the statement creating the job's publication. Only
// inserts and updates matter: a deleted row needs no new columns. columns,
// if it has an entry for a table (see PublishedColumns), becomes its column
// list.
func PublicationSQL(jobID int64, tables []migration.TableName, columns map[string][]string) string {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.Quoted()
		if cols := columns[t.String()]; len(cols) > 0 {
			quoted := make([]string, len(cols))
			for j, c := range cols {
				quoted[j] = migration.QuoteIdent(c)
			}
			names[i] += " (" + strings.Join(quoted, ", ") + ")"
		}
	}
	return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert, update')",
		pgx.Identifier{PublicationName(jobID)}.Sanitize(), strings.Join(names, ", "))
}

// PublishedColumns returns the column list of each target's table in the
// job's publication: its key columns and its replica identity columns.
//
// The consumer reads nothing but the key from a change, yet pgoutput
// renders every column of every changed row as text and the walsender sends
// it — including each row refit's own backfill writes, which PostgreSQL 15
// cannot filter out by origin. Publishing only the key (PostgreSQL 15+
// column lists) cuts the walsender's work and the stream's size several
// times over; an UPDATE touching only unlisted columns is still published.
// The list must cover the replica identity, or PostgreSQL refuses the
// application's UPDATEs on the table; a table with REPLICA IDENTITY FULL,
// or a server before 15, gets no list (every column).
func PublishedColumns(ctx context.Context, q Querier, targets []Target) (map[string][]string, error) {
	var version int
	if err := q.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return nil, fmt.Errorf("server version: %w", err)
	}
	out := map[string][]string{}
	if version < 150000 {
		return out, nil
	}
	for _, t := range targets {
		var ident string
		var identCols []string
		err := q.QueryRow(ctx, `SELECT c.relreplident::text,
			coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
				FROM pg_index i CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
				JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
				WHERE i.indrelid = c.oid AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))),
				'{}')
			FROM pg_class c WHERE c.oid = to_regclass($1)`, t.Table.Quoted()).Scan(&ident, &identCols)
		if err != nil {
			return nil, fmt.Errorf("replica identity of %s: %w", t.Table, err)
		}
		if ident == "f" {
			continue
		}
		cols := append([]string(nil), identCols...)
		for _, k := range t.Key {
			if !slices.Contains(cols, k.Name) {
				cols = append(cols, k.Name)
			}
		}
		out[t.Table.String()] = cols
	}
	return out, nil
}

// SlotInfo describes the job's slot.
type SlotInfo struct {
	Exists        bool
	Active        bool
	ConfirmedLSN  string
	RetainedBytes int64 // pg_current_wal_lsn() - restart_lsn
	LagBytes      int64 // pg_current_wal_lsn() - confirmed_flush_lsn
}

// Slot reads the job's slot.
func Slot(ctx context.Context, q Querier, jobID int64) (SlotInfo, error) {
	var s SlotInfo
	err := q.QueryRow(ctx, `SELECT active, coalesce(confirmed_flush_lsn::text, ''),
		coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint,
		coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint
		FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()`, SlotName(jobID)).Scan(&s.Active, &s.ConfirmedLSN, &s.RetainedBytes, &s.LagBytes)
	if errors.Is(err, pgx.ErrNoRows) {
		return SlotInfo{}, nil
	}
	if err != nil {
		return SlotInfo{}, fmt.Errorf("read slot %s: %w", SlotName(jobID), err)
	}
	s.Exists = true
	return s, nil
}

// Blocker is a transaction that holds an xid and so delays slot creation.
type Blocker struct {
	PID      int
	Age      string
	State    string
	Query    string
	Prepared string // GID for a prepared transaction
}

func (b Blocker) String() string {
	if b.Prepared != "" {
		return fmt.Sprintf("prepared transaction %q (age %s): COMMIT PREPARED or ROLLBACK PREPARED it", b.Prepared, b.Age)
	}
	return fmt.Sprintf("pid %d (%s, transaction age %s): %s", b.PID, b.State, b.Age, b.Query)
}

// SlotBlockers lists the transactions a new logical slot must wait for:
// every transaction holding an xid, including prepared ones.
func SlotBlockers(ctx context.Context, q Querier) ([]Blocker, error) {
	rows, err := q.Query(ctx, `
		SELECT pid, coalesce((now() - xact_start)::text, ''), coalesce(state, ''), left(coalesce(query, ''), 200), ''
		FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
		UNION ALL
		SELECT 0, (now() - prepared)::text, 'prepared', '', gid FROM pg_prepared_xacts`)
	if err != nil {
		return nil, fmt.Errorf("list open transactions: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Blocker, error) {
		var b Blocker
		err := r.Scan(&b.PID, &b.Age, &b.State, &b.Query, &b.Prepared)
		b.Query = strings.Join(strings.Fields(b.Query), " ")
		return b, err
	})
}

// EnsureSlot creates the job's permanent pgoutput slot unless it exists and
// reports whether it created it. Creating a logical slot waits for every
// transaction that holds an xid; statement_timeout does not end that wait,
// so it is bounded here: prepared transactions are refused at once (they
// may never end), and the wait for others is cancelled after timeout with
// the list of what was still open.
func EnsureSlot(ctx context.Context, pool *pgxpool.Pool, jobID int64, timeout time.Duration) (created bool, err error) {
	return EnsureSlotWith(ctx, pool, jobID, SlotOptions{CreateTimeout: timeout})
}

// SlotOptions are how EnsureSlotWith creates a slot.
type SlotOptions struct {
	// CreateTimeout bounds the wait for open transactions.
	CreateTimeout time.Duration
	// Failover creates a failover slot (PostgreSQL 17+), which standbys
	// with sync_replication_slots keep in step, so that the job's slot
	// survives a failover to one of them; see FailoverSlot.
	Failover bool
}

// EnsureSlotWith is EnsureSlot with options.
func EnsureSlotWith(ctx context.Context, pool *pgxpool.Pool, jobID int64, opts SlotOptions) (created bool, err error) {
	timeout := opts.CreateTimeout
	info, err := Slot(ctx, pool, jobID)
	if err != nil {
		return false, err
	}
	if info.Exists && info.ConfirmedLSN == "" {
		// Still being created (no consistent point yet), and not by this
		// process: the caller holds the job's lock, so it is the creation of
		// a refit process that died while it waited for open transactions.
		// Adopting it would be wrong twice over: when its session notices
		// the death it drops the slot, and if those transactions end first
		// it completes the slot with a consistent point later than this
		// run's backfill has got to, losing the writes in between.
		persisted, err := endStaleCreation(ctx, pool, jobID)
		if err != nil || persisted {
			return persisted, err
		}
		info = SlotInfo{}
	}
	if info.Exists {
		return false, nil
	}
	blockers, err := SlotBlockers(ctx, pool)
	if err != nil {
		return false, err
	}
	for _, b := range blockers {
		if b.Prepared != "" {
			return false, fmt.Errorf("cannot create replication slot: %s", b)
		}
	}
	// The creation runs on a connection of its own and is cancelled on the
	// server when the wait is over: merely abandoning the client side would
	// let the creation run on, and complete and persist the slot as soon as
	// the blockers end, behind the caller's back.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("create replication slot %s: %w", SlotName(jobID), err)
	}
	// ectx is cancelled only as a last resort (see cancelSlotCreation).
	ectx, ecancel := context.WithCancel(context.WithoutCancel(ctx))
	defer ecancel()
	res := make(chan error, 1)
	go func() {
		create := "SELECT pg_create_logical_replication_slot($1, 'pgoutput')"
		if opts.Failover {
			create = "SELECT pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
		}
		_, err := conn.Exec(ectx, create, SlotName(jobID))
		res <- err
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	abandoned := false
	select {
	case err = <-res:
	case <-timer.C:
		abandoned = true
	case <-ctx.Done():
		abandoned = true
	}
	if abandoned {
		err = cancelSlotCreation(ctx, conn, res, ecancel)
	}
	conn.Release()
	switch {
	case err == nil:
		return true, nil
	case abandoned && ctx.Err() != nil:
		return false, errors.Join(ctx.Err(), err)
	case abandoned && sqlstate.Is(err, sqlstate.QueryCanceled): // by us
		still, lerr := SlotBlockers(ctx, pool)
		msgs := make([]string, len(still))
		for i, b := range still {
			msgs[i] = b.String()
		}
		return false, errors.Join(fmt.Errorf("creating replication slot %s waited %s for open transactions to finish (replication.slot_create_timeout); still open:\n  %s",
			SlotName(jobID), timeout, strings.Join(msgs, "\n  ")), lerr)
	case sqlstate.Is(err, sqlstate.DuplicateObject): // the name is taken in another database
		var db string
		_ = pool.QueryRow(ctx, "SELECT coalesce(database::text, '?') FROM pg_replication_slots WHERE slot_name = $1", SlotName(jobID)).Scan(&db) //nolint:errcheck // message only
		return false, fmt.Errorf("create replication slot %s: a slot of that name already exists in another database (%s); slot names are cluster-wide: %w", SlotName(jobID), db, err)
	default:
		return false, fmt.Errorf("create replication slot %s: %w", SlotName(jobID), err)
	}
}

// endStaleCreation ends the session that is still creating the job's slot
// and waits until the slot is gone (a slot being created is dropped when its
// session ends). persisted reports that the creation completed first: the
// slot then exists, but came into being just now, as if EnsureSlot had
// created it (whatever the job backfilled before does not cover the gap).
// Only the session found creating it is ended: a creation by another session
// after it is a live process's, which runs the job too (one whose claim on
// the job was lost with its session), and is an error here.
func endStaleCreation(ctx context.Context, pool *pgxpool.Pool, jobID int64) (persisted bool, err error) {
	var stale int32
	for i := 0; ; i++ {
		var pid *int32
		var complete bool
		err := pool.QueryRow(ctx, `SELECT active_pid, confirmed_flush_lsn IS NOT NULL FROM pg_replication_slots
			WHERE slot_name = $1 AND database = current_database()`, SlotName(jobID)).Scan(&pid, &complete)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("read slot %s: %w", SlotName(jobID), err)
		case complete:
			return true, nil
		case pid == nil:
			// Neither active nor complete: nothing can finish it.
			if _, err := pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", SlotName(jobID)); err != nil && !sqlstate.Is(err, sqlstate.UndefinedObject, sqlstate.ObjectInUse) {
				return false, fmt.Errorf("drop half-created slot %s: %w", SlotName(jobID), err)
			}
		case stale != 0 && *pid != stale:
			return false, fmt.Errorf("replication slot %s is being created by pid %d, after pid %d was ended: another refit process runs job %d",
				SlotName(jobID), *pid, stale, jobID)
		case i == 100:
			return false, fmt.Errorf("replication slot %s is still being created by pid %d, which did not end", SlotName(jobID), *pid)
		default:
			stale = *pid
			if _, err := pool.Exec(ctx, "SELECT pg_terminate_backend($1)", *pid); err != nil {
				return false, fmt.Errorf("end the session (pid %d) still creating slot %s: %w", *pid, SlotName(jobID), err)
			}
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return false, err
		}
	}
}

// cancelSlotCreation cancels the slot creation running on conn and waits
// for its outcome (res), so that no creation is left running: cancelled, the
// backend drops its half-made slot before it answers. If it does not answer
// within a few seconds, ecancel (the Exec's context) closes the connection
// and the error says so. The connection is closed either way, so that a
// cancel request arriving late cannot hit its next query; the caller
// releases it.
func cancelSlotCreation(ctx context.Context, conn *pgxpool.Conn, res <-chan error, ecancel context.CancelFunc) error {
	bg := context.WithoutCancel(ctx)
	pgc := conn.Conn().PgConn()
	cctx, cancel := context.WithTimeout(bg, 5*time.Second)
	cerr := pgc.CancelRequest(cctx)
	cancel()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	var err error
	select {
	case err = <-res:
	case <-t.C:
		ecancel()
		<-res
		err = errors.Join(fmt.Errorf("slot creation (pid %d) did not answer a cancel request; its connection was closed", pgc.PID()), cerr)
	}
	conn.Conn().Close(bg) //nolint:errcheck // discarded
	return err
}

// EnsureOrigin creates a replication origin if it does not exist.
func EnsureOrigin(ctx context.Context, q Querier, name string) error {
	_, err := q.Exec(ctx, `SELECT pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)`, name)
	if sqlstate.Is(err, sqlstate.UniqueViolation) { // created concurrently
		return nil
	}
	return err
}

// Drop removes the job's slot, publication and replication origins. It is
// idempotent; an active slot's walsender is terminated first.
func Drop(ctx context.Context, q Querier, jobID int64) error {
	var errs []error
	// Slot names are cluster-wide but job ids are per database: only this
	// database's slot is the job's.
	if _, err := q.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
		WHERE slot_name = $1 AND database = current_database() AND active_pid IS NOT NULL`, SlotName(jobID)); err != nil {
		errs = append(errs, fmt.Errorf("stop walsender of %s: %w", SlotName(jobID), err))
	}
	// The terminated walsender releases the slot asynchronously.
	for i := 0; i < 50; i++ {
		_, err := q.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
			WHERE slot_name = $1 AND database = current_database()`, SlotName(jobID))
		if sqlstate.Is(err, sqlstate.ObjectInUse) {
			if serr := sleep(ctx, 100*time.Millisecond); serr != nil {
				return serr
			}
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("drop slot %s: %w", SlotName(jobID), err))
		}
		break
	}
	if err := dropPublication(ctx, q, jobID); err != nil {
		errs = append(errs, err)
	}
	// An origin is held until its session resets it: the apply session of a
	// consumer whose walsender was just terminated lets go of it a moment
	// later.
	if err := retryInUse(ctx, func() error { return dropOrigins(ctx, q, jobID) }); err != nil {
		errs = append(errs, fmt.Errorf("drop replication origins: %w", err))
	}
	return errors.Join(errs...)
}

// dropPublication drops the job's publication in two steps, so that no
// application write fails on it.
//
// A write to a published table looks the publication up by OID while it
// rebuilds the table's publication descriptor: it reads the table's
// pg_publication_rel entries and then each publication. A DROP PUBLICATION
// that commits between those two catalog reads makes the write fail with
// "cache lookup failed for publication" (XX000, seen by internal/chaos on a
// freshly connected application session). So the tables leave the
// publication first (ALTER PUBLICATION … DROP TABLE, which takes SHARE UPDATE
// EXCLUSIVE and so never waits for or blocks a write, under a short
// lock_timeout); a write that read the old entries then still finds the
// publication. Before the publication itself goes, dropPublication waits
// (bounded) for the statements that were running on those tables when the
// entries went, as they may still be between the two reads; a statement
// starting later reads the new entries.
func dropPublication(ctx context.Context, q Querier, jobID int64) error {
	name := pgx.Identifier{PublicationName(jobID)}.Sanitize()
	rows, err := q.Query(ctx, `SELECT n.nspname::text, c.relname::text, c.oid::int8
		FROM pg_publication p
		JOIN pg_publication_rel pr ON pr.prpubid = p.oid
		JOIN pg_class c ON c.oid = pr.prrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE p.pubname = $1 ORDER BY c.oid`, PublicationName(jobID))
	if err != nil {
		return fmt.Errorf("list tables of publication %s: %w", name, err)
	}
	var tables []string
	var oids []int64
	for rows.Next() {
		var schema, table string
		var oid int64
		if err := rows.Scan(&schema, &table, &oid); err != nil {
			rows.Close()
			return fmt.Errorf("list tables of publication %s: %w", name, err)
		}
		tables = append(tables, pgx.Identifier{schema, table}.Sanitize())
		oids = append(oids, oid)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list tables of publication %s: %w", name, err)
	}
	if len(tables) > 0 {
		// No arguments: one simple-protocol message, one implicit
		// transaction, so SET LOCAL holds for the ALTER.
		detach := "SET LOCAL lock_timeout = '1s'; ALTER PUBLICATION " + name + " DROP TABLE " + strings.Join(tables, ", ")
		for attempt := 1; ; attempt++ {
			_, err = q.Exec(ctx, detach)
			if err == nil || !sqlstate.Retryable(err) || attempt == 5 {
				break
			}
			if serr := sleep(ctx, 200*time.Millisecond); serr != nil {
				return serr
			}
		}
		switch {
		case err == nil:
			if werr := waitForRunningStatements(ctx, q, oids, 5*time.Second); werr != nil {
				return werr
			}
		case sqlstate.Is(err, sqlstate.UndefinedObject, sqlstate.UndefinedTable):
			// Dropped meanwhile (the publication or one of its tables).
		case sqlstate.Retryable(err):
			// Held off by a long lock (a manual VACUUM, an index build):
			// the publication still has to go; the race above is narrow.
		default:
			return fmt.Errorf("detach tables from publication %s: %w", name, err)
		}
	}
	if _, err := q.Exec(ctx, "DROP PUBLICATION IF EXISTS "+name); err != nil {
		return fmt.Errorf("drop publication %s: %w", name, err)
	}
	return nil
}

// waitForRunningStatements waits until no session that is running a
// statement on one of the tables (oids) now is still running that statement,
// or until limit has passed. A session is identified by its pid and the
// start of its statement; an idle session holding a lock in an open
// transaction is not running one. Where this role may not see another
// role's statement (no pg_read_all_stats), that session's lock is waited for
// instead, within the same limit.
func waitForRunningStatements(ctx context.Context, q Querier, oids []int64, limit time.Duration) error {
	const running = `SELECT DISTINCT l.pid, coalesce(a.query_start::text, '')
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'relation' AND l.relation = ANY($1::oid[]) AND l.granted
		  AND l.pid <> pg_backend_pid() AND coalesce(a.state, 'active') = 'active'`
	collect := func() (map[string]bool, error) {
		rows, err := q.Query(ctx, running, oids)
		if err != nil {
			return nil, fmt.Errorf("list statements running on the published tables: %w", err)
		}
		set := map[string]bool{}
		for rows.Next() {
			var pid int64
			var start string
			if err := rows.Scan(&pid, &start); err != nil {
				rows.Close()
				return nil, fmt.Errorf("list statements running on the published tables: %w", err)
			}
			set[fmt.Sprint(pid, "@", start)] = true
		}
		return set, rows.Err()
	}
	before, err := collect()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	for len(before) > 0 && time.Now().Before(deadline) {
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
		now, err := collect()
		if err != nil {
			return err
		}
		for k := range before {
			if !now[k] {
				delete(before, k)
			}
		}
	}
	return nil
}

// dropOrigins drops the job's replication origins. The origins are listed
// first and pg_replication_origin_drop is called only for those that exist:
// EXECUTE on it is checked when the statement starts, even for no row, so a
// role that may not call it (and so never created an origin, see
// TagSession) must not call it at all.
func dropOrigins(ctx context.Context, q Querier, jobID int64) error {
	rows, err := q.Query(ctx, `SELECT roname FROM pg_replication_origin WHERE roname LIKE $1 ORDER BY roname`,
		fmt.Sprintf("%sj%d\\_%%", originPrefix, jobID))
	if err != nil {
		return fmt.Errorf("list replication origins: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list replication origins: %w", err)
	}
	for _, name := range names {
		_, err := q.Exec(ctx, "SELECT pg_replication_origin_drop($1)", name)
		switch {
		case err == nil, sqlstate.Is(err, sqlstate.UndefinedObject): // dropped meanwhile
		case sqlstate.Is(err, sqlstate.InsufficientPrivilege):
			var role string
			if rerr := q.QueryRow(ctx, "SELECT current_user::text").Scan(&role); rerr != nil {
				return errors.Join(fmt.Errorf("drop replication origin %s: %w", name, err), rerr)
			}
			return fmt.Errorf("drop replication origin %s: role %s may not call pg_replication_origin_drop: "+
				"GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_drop(text) TO %s, or drop the origin as a superuser: %w",
				name, pgx.Identifier{role}.Sanitize(), pgx.Identifier{role}.Sanitize(), err)
		default:
			return fmt.Errorf("drop replication origin %s: %w", name, err)
		}
	}
	return nil
}

// Orphans lists job ids that own refit_* slots, publications or origins.
func Orphans(ctx context.Context, q Querier) ([]int64, error) {
	rows, err := q.Query(ctx, `
		SELECT DISTINCT substring(name from '^refit_job_([0-9]+)$')::bigint FROM (
			SELECT slot_name::text AS name FROM pg_replication_slots WHERE database = current_database()
			UNION ALL SELECT pubname::text FROM pg_publication
			UNION ALL SELECT 'refit_job_' || substring(roname from '^refit_j([0-9]+)_') FROM pg_replication_origin
			  -- origins are cluster-wide: only those in this database's job id
			  -- range (its OID × 10^6, see the refit schema) are ours to judge
			  WHERE substring(roname from '^refit_j([0-9]+)_')::bigint / 1000000 =
			        (SELECT oid::bigint FROM pg_database WHERE datname = current_database())
		) o WHERE name ~ '^refit_job_[0-9]+$'`)
	if err != nil {
		return nil, fmt.Errorf("list refit replication objects: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// AppName is the application_name of a job's session; stale sessions of a
// killed refit process are found by it.
func AppName(jobID int64, role string) string { return fmt.Sprintf("refit-j%d-%s", jobID, role) }

// TerminateStale ends the sessions a killed refit process left behind for
// this job (a walsender still holding the slot, a backend still holding an
// origin or waiting on a lock). Call it only while holding the job's lock:
// then no live refit process owns such a session.
func TerminateStale(ctx context.Context, q Querier, jobID int64) (int, error) {
	pattern := fmt.Sprintf("refit-j%d-%%", jobID)
	var n int
	// Job ids are per database: another database's job n is not ours.
	err := q.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name LIKE $1 AND datname = current_database() AND pid <> pg_backend_pid()`, pattern).Scan(&n)
	if err != nil || n == 0 {
		return n, err
	}
	for i := 0; i < 100; i++ {
		// Signalled again: a backend whose client stopped reading (a
		// stopped process) blocks writing the message of its termination
		// to the full socket, and only a second signal ends that write.
		var left int
		if err := q.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE $1
			AND datname = current_database() AND pid <> pg_backend_pid()`, pattern).Scan(&left); err != nil {
			return n, err
		}
		if left == 0 {
			return n, nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return n, err
		}
	}
	return n, fmt.Errorf("stale sessions of job %d did not end", jobID)
}

// retryInUse retries f while the object it needs (an origin, a slot) is
// still held by a session that is ending (sqlstate.ObjectInUse), for up to
// about ten seconds.
func retryInUse(ctx context.Context, f func() error) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = f(); !sqlstate.Is(err, sqlstate.ObjectInUse) {
			return err
		}
		if serr := sleep(ctx, 200*time.Millisecond); serr != nil {
			return serr
		}
	}
	return err
}

// DecodeBacklog returns how many bytes of WAL the job's walsender has not
// decoded yet (current WAL position − its sent position); ok is false when
// no walsender streams the job's slot, or when this role may not see its
// position (no pg_read_all_stats).
func DecodeBacklog(ctx context.Context, q Querier, jobID int64) (backlog int64, ok bool, err error) {
	// sent_lsn is NULL, even for the role's own walsender, unless the role
	// has the privileges of pg_read_all_stats: then the backlog is unknown,
	// not 0.
	var diff *int64
	err = q.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), r.sent_lsn)::bigint
		FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
		WHERE s.slot_name = $1 AND s.database = current_database()`, SlotName(jobID)).Scan(&diff)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	case diff == nil:
		return 0, false, nil
	}
	return *diff, true, nil
}

// FailoverSlot decides whether the job's slot is created as a failover slot
// (replication.failover_slot) on the server q is connected to, and says
// why. "on" before PostgreSQL 17 is an error naming the setting. "auto"
// follows the primary's synchronized_standby_slots: a primary that names
// standbys there runs slot synchronization (their sync_replication_slots
// is on), and makes logical walsenders wait for them, so a failover slot
// there is never ahead of its copy on a standby. A slot that exists already
// keeps what it was created with.
func FailoverSlot(ctx context.Context, q Querier, mode string) (failover bool, why string, err error) {
	var version int
	var standbys string
	if err := q.QueryRow(ctx, `SELECT current_setting('server_version_num')::int,
		coalesce(current_setting('synchronized_standby_slots', true), '')`).Scan(&version, &standbys); err != nil {
		return false, "", fmt.Errorf("replication.failover_slot: %w", err)
	}
	return failoverSlot(mode, version, standbys)
}

func failoverSlot(mode string, version int, standbys string) (bool, string, error) {
	switch {
	case mode == "off":
		return false, "replication.failover_slot is off", nil
	case mode == "on" && version < 170000:
		return false, "", fmt.Errorf("replication.failover_slot: on needs PostgreSQL 17 or later (failover slots), the server is %s; use auto or off", versionString(version))
	case mode == "on":
		return true, "replication.failover_slot is on", nil
	case version < 170000:
		return false, "the server is older than PostgreSQL 17 (no failover slots)", nil
	case strings.TrimSpace(standbys) == "":
		return false, "synchronized_standby_slots is not set (no standby synchronizes slots)", nil
	}
	return true, "synchronized_standby_slots = " + standbys, nil
}

package migration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/refit-dev/refit/sqlstate"
)

// Facts are what the database says about the tables a migration touches.
type Facts struct {
	ServerVersion int                    `json:"server_version"` // e.g. 150018
	Tables        map[string]*TableFacts `json:"tables"`
	// VolatileDefault marks add_column operations whose default is volatile
	// (clock_timestamp(), random(), gen_random_uuid(), nextval(), …): adding
	// them with the default would rewrite the table, so refit adds the column
	// bare, sets the default for new rows and backfills the existing ones.
	// A STABLE default such as now() is not volatile: PostgreSQL evaluates it
	// once and stores it as the column's missing value, without a rewrite.
	VolatileDefault map[int]bool `json:"volatile_default"`
	// Aliases maps a table as written in the file ("users") to the key of
	// its facts, the name the database resolved it to ("public.users"), so
	// two spellings of one table are one table.
	Aliases map[string]string `json:"aliases,omitempty"`
	// Recorded holds, per operation index, what a metadata operation found at
	// validation and its plan needs (see migration/metadata.go).
	Recorded map[int]string `json:"recorded,omitempty"`
}

// Table returns the facts of a table as written or as resolved (nil if the
// migration does not touch it, or f is nil).
func (f *Facts) Table(t TableName) *TableFacts {
	if f == nil {
		return nil
	}
	if tf := f.Tables[t.String()]; tf != nil {
		return tf
	}
	if key, ok := f.Aliases[t.String()]; ok {
		return f.Tables[key]
	}
	for _, tf := range f.Tables { // facts stored before aliases existed
		if tf.Name == t {
			return tf
		}
	}
	return nil
}

// TableFacts describes one existing table.
type TableFacts struct {
	Name    TableName         `json:"name"`    // schema-qualified as resolved by the server
	Key     []KeyColumn       `json:"key"`     // primary key, or a unique index over NOT NULL columns
	Columns map[string]string `json:"columns"` // column name → format_type
	// ReplicaIdentity is the table's REPLICA IDENTITY: "default", "index",
	// "full" or "nothing". A table with "default" and no primary key (its
	// Key is a unique index) has no identity: once it is in a publication
	// that publishes updates, the application's UPDATE and DELETE fail until
	// REPLICA IDENTITY USING INDEX is set.
	ReplicaIdentity string `json:"replica_identity,omitempty"`
}

// KeyColumn is one column of the key the backfill paginates on.
type KeyColumn struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Inspect validates a migration against a database and returns the facts
// the plan needs. It changes nothing: every probe runs inside a transaction
// that is rolled back, and expressions are checked against a temporary copy
// of each table's shape (CREATE TEMP TABLE … (LIKE t)), so the only lock it
// takes on an application table is ACCESS SHARE.
func Inspect(ctx context.Context, conn *pgx.Conn, m *Migration) (facts *Facts, err error) {
	facts = &Facts{Tables: map[string]*TableFacts{}, VolatileDefault: map[int]bool{}, Aliases: map[string]string{}}
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&facts.ServerVersion); err != nil {
		return nil, fmt.Errorf("read server version: %w", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin inspection: %w", err)
	}
	defer func() {
		if rbErr := tx.Rollback(context.WithoutCancel(ctx)); rbErr != nil && !errors.Is(rbErr, pgx.ErrTxClosed) {
			err = errors.Join(err, fmt.Errorf("roll back inspection: %w", rbErr))
		}
	}()
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '60s'"); err != nil {
		return nil, fmt.Errorf("set inspection timeouts: %w", err)
	}
	in := &inspector{tx: tx, m: m, facts: facts, shadows: map[string]string{}, attrs: map[string]map[string]attrInfo{}}
	for i, op := range m.Operations {
		if err := op.inspect(ctx, in, i); err != nil {
			return nil, err
		}
	}
	// Operations that run after all others (contract-phase sql) are
	// checked after all others.
	in.late = true
	for i, op := range m.Operations {
		if late, ok := op.(lateInspector); ok {
			if err := late.inspectLate(ctx, in, i); err != nil {
				return nil, err
			}
		}
	}
	// Every table that will be backfilled needs a key to paginate on.
	for _, b := range BuildPlan(m, facts).Backfills {
		if tf := facts.Table(b.Table); tf == nil || len(tf.Key) == 0 {
			return nil, m.OpError(b.Op, "table", "table %s has no primary key and no unique index over NOT NULL columns: refit cannot backfill it in batches (add a primary key first)", b.Table)
		}
	}
	return facts, nil
}

// lateInspector is implemented by operations checked after every other one.
type lateInspector interface {
	inspectLate(ctx context.Context, in *inspector, i int) error
}

type inspector struct {
	tx      pgx.Tx
	m       *Migration
	facts   *Facts
	shadows map[string]string // table → temp table with the same columns
	attrs   map[string]map[string]attrInfo
	nshadow int
	late    bool // checking the operations that run after all others
	// indexes maps the indexes the migration builds after its backfill
	// (they exist only on shadows during validation), "schema.name" as
	// the database resolves them, to the operation that builds each.
	indexes map[string]int
}

// attrInfo is what bulk_insert needs to know about an existing column.
type attrInfo struct {
	generated      bool // GENERATED ALWAYS AS (…) STORED: cannot be inserted
	identityAlways bool // GENERATED ALWAYS AS IDENTITY: needs OVERRIDING SYSTEM VALUE
	filled         bool // has a default, is an identity or generated: may be omitted
	notNull        bool
}

// errRollbackProbe makes savepoint undo a probe that succeeded.
var errRollbackProbe = errors.New("roll back the probe")

// sqlProbeLockTimeout and sqlProbeStatementTimeout bound what checking a
// sql operation may cost the application: a statement that would wait
// longer for its lock, or run longer (it rewrites or scans a big table), is
// left unchecked rather than run.
const (
	sqlProbeLockTimeout      = "50ms"
	sqlProbeStatementTimeout = "2s"
)

// checkSQL checks the statements of a sql operation's up or down inside the
// inspection transaction (rolled back at its end). Statements EXPLAIN can
// plan (SELECT, INSERT, UPDATE, DELETE, MERGE, WITH, VALUES) are planned,
// not run: names and types are checked and no row is touched. Others (DDL)
// are run under a 50 ms lock_timeout and a 2 s statement_timeout. A
// statement that cannot run in a transaction (CREATE INDEX CONCURRENTLY,
// VACUUM), or that meets a lock or the timeout, ends the check of this text
// without an error: ok is false and what follows it is not checked.
func (in *inspector) checkSQL(ctx context.Context, i int, field, text string) (ok bool, err error) {
	stmts := splitStatements(text)
	for n, st := range stmts {
		sql := st
		if explainable(st) {
			sql = "EXPLAIN (COSTS OFF) " + st
		}
		err := in.savepoint(ctx, func() error {
			if _, err := in.tx.Exec(ctx, "SET LOCAL lock_timeout = '"+sqlProbeLockTimeout+"'; SET LOCAL statement_timeout = '"+sqlProbeStatementTimeout+"'"); err != nil {
				return err
			}
			_, err := in.tx.Exec(ctx, sql)
			if _, rerr := in.tx.Exec(ctx, "SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '60s'"); err == nil && rerr != nil {
				return rerr
			}
			return err
		})
		var pgErr *pgconn.PgError
		errors.As(err, &pgErr)
		switch {
		case err == nil:
			continue
		case sqlstate.Is(err, sqlstate.ActiveSQLTransaction, sqlstate.LockNotAvailable, sqlstate.QueryCanceled):
			// cannot run inside a transaction block, lock not available,
			// statement timeout: not checkable here.
			return false, nil
		case in.shadowed(i, err):
			// The migration's own columns and indexes exist only on the
			// inspector's shadow copies, which raw SQL does not see: a
			// name it lacks may be one of them, so this is not checkable.
			return false, nil
		case sqlstate.Content(err):
			where := ""
			if len(stmts) > 1 {
				where = fmt.Sprintf("statement %d of %d (%s): ", n+1, len(stmts), oneLineSQL(st))
			}
			return false, in.m.OpError(i, field, "%s%s (SQLSTATE %s)", where, pgErr.Message, pgErr.Code)
		default:
			return false, in.dbErr(i, field, err)
		}
	}
	return true, nil
}

// shadowed reports whether err, from SQL run at operation i, may be about
// something an operation that runs before it creates on a shadow table
// rather than in the database: an unknown column (add_column), relation
// (an index) or object (a constraint, an index).
func (in *inspector) shadowed(i int, err error) bool {
	var kinds []string
	switch sqlstate.Code(err) {
	case sqlstate.UndefinedColumn:
		kinds = []string{"column"}
	case sqlstate.UndefinedTable:
		kinds = []string{"index"}
	case sqlstate.UndefinedObject:
		kinds = []string{"constraint", "index"}
	default:
		return false
	}
	last := i // expand phase: the operations before it
	if in.late {
		last = len(in.m.Operations) // contract phase: every operation
	}
	for j := 0; j < last; j++ {
		for _, obj := range in.m.Operations[j].creates() {
			if slices.Contains(kinds, obj.kind) {
				return true
			}
		}
	}
	return false
}

func oneLineSQL(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}

// table resolves a table, records its facts and creates its shadow copy.
// Facts, shadow and attributes are keyed by the resolved name: every
// spelling of one table shares them.
func (in *inspector) table(ctx context.Context, i int, t TableName) (*TableFacts, string, error) {
	if key, ok := in.facts.Aliases[t.String()]; ok {
		return in.facts.Tables[key], in.shadows[key], nil
	}
	var oid uint32
	var schema, name, replIdent, kind string
	var parent, child *string
	err := in.tx.QueryRow(ctx, `SELECT c.oid, n.nspname, c.relname,
			CASE c.relreplident WHEN 'd' THEN 'default' WHEN 'n' THEN 'nothing' WHEN 'f' THEN 'full' WHEN 'i' THEN 'index' END,
			c.relkind::text, (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid LIMIT 1),
			(SELECT i.inhrelid::regclass::text FROM pg_inherits i WHERE i.inhparent = c.oid LIMIT 1)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1) AND c.relkind IN ('r','p')`, t.Quoted()).Scan(&oid, &schema, &name, &replIdent, &kind, &parent, &child)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", in.m.OpError(i, "table", "table %s does not exist", t)
	}
	if err != nil {
		return nil, "", in.dbErr(i, "table", err)
	}
	// Partitioned tables and partitions are refused here, before anything
	// changes: the sync's publication, the per-table backfill and the DDL on
	// one partition do not apply to them (a partition cannot get a column of
	// its own; a partitioned table is published through its leaves).
	switch {
	case kind == "p":
		return nil, "", in.m.OpError(i, "table", "table %s is partitioned: refit does not change partitioned tables yet (their partitions are published and backfilled one by one)", t)
	case parent != nil:
		return nil, "", in.m.OpError(i, "table", "table %s inherits from %s (a partition or an inheritance child): refit does not change such tables yet; change the parent with a plain migration instead", t, *parent)
	case child != nil:
		return nil, "", in.m.OpError(i, "table", "table %s has inheritance children (e.g. %s): refit does not change such tables yet", t, *child)
	}
	key := TableName{Schema: schema, Name: name}.String()
	in.facts.Aliases[t.String()] = key
	if tf, ok := in.facts.Tables[key]; ok {
		return tf, in.shadows[key], nil
	}
	tf := &TableFacts{Name: TableName{Schema: schema, Name: name}, Columns: map[string]string{}, ReplicaIdentity: replIdent}
	attrs := map[string]attrInfo{}
	rows, err := in.tx.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod),
			attgenerated <> '', attidentity = 'a', atthasdef OR attidentity <> '' OR attgenerated <> '', attnotnull
		FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, oid)
	if err != nil {
		return nil, "", in.dbErr(i, "table", err)
	}
	var filledNotNull []string
	for rows.Next() {
		var c, typ string
		var a attrInfo
		if err := rows.Scan(&c, &typ, &a.generated, &a.identityAlways, &a.filled, &a.notNull); err != nil {
			return nil, "", in.dbErr(i, "table", err)
		}
		tf.Columns[c] = typ
		attrs[c] = a
		if a.filled && a.notNull {
			filledNotNull = append(filledNotNull, c)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, "", in.dbErr(i, "table", err)
	}
	tf.Key, err = tableKey(ctx, in.tx, oid)
	if err != nil {
		return nil, "", in.dbErr(i, "table", err)
	}
	// The shadow copies columns and CHECK constraints but not defaults:
	// evaluating a default such as nextval() would change the database (a
	// sequence does not roll back). Columns the database fills itself
	// (defaults, identities, generated) lose their NOT NULL instead, so a
	// bulk_insert row may leave them out.
	in.nshadow++
	shadow := fmt.Sprintf("pg_temp.refit_shadow_%d", in.nshadow)
	if err := in.exec(ctx, fmt.Sprintf("CREATE TEMP TABLE refit_shadow_%d (LIKE %s INCLUDING CONSTRAINTS) ON COMMIT DROP", in.nshadow, TableName{Schema: schema, Name: name}.Quoted())); err != nil {
		return nil, "", in.dbErr(i, "table", err)
	}
	if len(filledNotNull) > 0 {
		alters := make([]string, len(filledNotNull))
		for j, c := range filledNotNull {
			alters[j] = "ALTER COLUMN " + QuoteIdent(c) + " DROP NOT NULL"
		}
		if err := in.exec(ctx, fmt.Sprintf("ALTER TABLE %s %s", shadow, strings.Join(alters, ", "))); err != nil {
			return nil, "", in.dbErr(i, "table", err)
		}
	}
	in.facts.Tables[key] = tf
	in.shadows[key] = shadow
	in.attrs[key] = attrs
	return tf, shadow, nil
}

// columnAttrs returns what bulk_insert needs to know of a table's columns.
func (in *inspector) columnAttrs(tf *TableFacts) map[string]attrInfo {
	return in.attrs[tf.Name.String()]
}

// TableKey returns the columns to paginate a table on: its primary key, or
// else the unique, non-partial, column-only index with the fewest columns
// whose columns are all NOT NULL.
func TableKey(ctx context.Context, q Querier, table TableName) ([]KeyColumn, error) {
	var oid *uint32
	if err := q.QueryRow(ctx, "SELECT to_regclass($1)::oid", table.Quoted()).Scan(&oid); err != nil {
		return nil, fmt.Errorf("resolve table %s: %w", table, err)
	}
	if oid == nil {
		return nil, fmt.Errorf("resolve table %s: it does not exist", table)
	}
	return tableKey(ctx, q, *oid)
}

// Querier is the part of pgx.Conn/pgx.Tx/pgxpool.Pool inspection needs.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func tableKey(ctx context.Context, q Querier, oid uint32) ([]KeyColumn, error) {
	var indexOid uint32
	err := q.QueryRow(ctx, `
		SELECT i.indexrelid FROM pg_index i
		WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
		  AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
		                  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		                  WHERE k.ord <= i.indnkeyatts AND NOT a.attnotnull)
		ORDER BY i.indisprimary DESC, i.indnkeyatts, i.indexrelid
		LIMIT 1`, oid).Scan(&indexOid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find key: %w", err)
	}
	rows, err := q.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, a.atttypmod)
		FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_attribute a ON a.attnum = k.attnum
		WHERE i.indexrelid = $1 AND a.attrelid = i.indrelid AND k.ord <= i.indnkeyatts
		ORDER BY k.ord`, indexOid)
	if err != nil {
		return nil, fmt.Errorf("read key columns: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (KeyColumn, error) {
		var k KeyColumn
		err := r.Scan(&k.Name, &k.Type)
		return k, err
	})
}

// volatileDefault asks PostgreSQL itself: a non-volatile default added to a
// table is stored as the column's "missing" value (atthasmissing); a volatile
// one is not (it would rewrite the table). Probed on a temp table.
func (in *inspector) volatileDefault(ctx context.Context, typ, def string) (bool, error) {
	in.nshadow++
	probe := fmt.Sprintf("refit_probe_%d", in.nshadow)
	if err := in.exec(ctx, fmt.Sprintf("CREATE TEMP TABLE %s (x int) ON COMMIT DROP", probe)); err != nil {
		return false, err
	}
	if err := in.exec(ctx, fmt.Sprintf("ALTER TABLE pg_temp.%s ADD COLUMN c %s DEFAULT (%s)", probe, typ, def)); err != nil {
		return false, err
	}
	var hasMissing bool
	err := in.tx.QueryRow(ctx, "SELECT atthasmissing FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'c'", "pg_temp."+probe).Scan(&hasMissing)
	return !hasMissing, err
}

// exec runs one of refit's own probe statements (a CREATE TYPE, a temp
// table) inside a savepoint, so a failure leaves the transaction usable.
func (in *inspector) exec(ctx context.Context, sql string) error {
	return in.savepoint(ctx, func() error {
		_, err := in.tx.Exec(ctx, sql)
		return err
	})
}

// probe parses and plans a statement that embeds text from the migration
// (an expression, a type) without running it. It goes through the extended
// protocol, which refuses more than one statement, so "x; DROP TABLE t"
// is rejected by the server itself.
func (in *inspector) probe(ctx context.Context, sql string) error {
	return in.savepoint(ctx, func() error {
		_, err := in.tx.Conn().PgConn().Prepare(ctx, "", sql, nil)
		return err
	})
}

func (in *inspector) savepoint(ctx context.Context, f func() error) error {
	if _, err := in.tx.Exec(ctx, "SAVEPOINT refit_probe"); err != nil {
		return err
	}
	if err := f(); err != nil {
		if _, rbErr := in.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT refit_probe"); rbErr != nil {
			return errors.Join(err, rbErr)
		}
		return err
	}
	_, err := in.tx.Exec(ctx, "RELEASE SAVEPOINT refit_probe")
	return err
}

// dbErr reports a failed probe. An error the server raised because of what
// the migration says (a syntax error, an unknown column or type, a value that
// does not convert, a violated constraint) is a validation *Error naming the
// operation and field. Anything else (a lost connection, a lock or statement
// timeout, a shutdown) says nothing about the migration and is returned as a
// plain wrapped error, so callers do not reject a good migration for it.
func (in *inspector) dbErr(i int, field string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && sqlstate.Content(err) {
		return in.m.OpError(i, field, "%s (SQLSTATE %s)", pgErr.Message, pgErr.Code)
	}
	return fmt.Errorf("inspect %s: operations[%d] (%s) field %q: %w", in.m.File, i, in.m.Operations[i].Kind(), field, err)
}

// probeRows runs a statement against shadow tables and undoes it.
func (in *inspector) probeRows(ctx context.Context, sql string, args []any) error {
	if _, err := in.tx.Exec(ctx, "SAVEPOINT refit_rows"); err != nil {
		return err
	}
	_, err := in.tx.Exec(ctx, sql, args...)
	if _, rbErr := in.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT refit_rows; RELEASE SAVEPOINT refit_rows"); rbErr != nil {
		return errors.Join(err, rbErr)
	}
	return err
}

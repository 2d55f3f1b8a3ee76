package migration

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Facts are what the database says about the tables a migration touches.
type Facts struct {
	ServerVersion int                    `json:"server_version"` // e.g. 150018
	Tables        map[string]*TableFacts `json:"tables"`
	// VolatileDefault marks add_column operations whose default is volatile
	// (now(), random(), …): adding them with the default would rewrite the
	// table, so refit adds the column bare, sets the default for new rows and
	// backfills the existing ones.
	VolatileDefault map[int]bool `json:"volatile_default"`
}

// TableFacts describes one existing table.
type TableFacts struct {
	Name    TableName         `json:"name"`    // schema-qualified as resolved by the server
	Key     []KeyColumn       `json:"key"`     // primary key, or a unique index over NOT NULL columns
	Columns map[string]string `json:"columns"` // column name → format_type
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
	facts = &Facts{Tables: map[string]*TableFacts{}, VolatileDefault: map[int]bool{}}
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
	in := &inspector{tx: tx, m: m, facts: facts, shadows: map[string]string{}}
	for i, op := range m.Operations {
		if err := in.check(ctx, i, op); err != nil {
			return nil, err
		}
	}
	// Every table that will be backfilled needs a key to paginate on.
	for i, op := range m.Operations {
		ac, ok := op.(*AddColumn)
		if !ok || (ac.Up == "" && !facts.VolatileDefault[i]) {
			continue
		}
		tf := facts.Tables[ac.Table.String()]
		if len(tf.Key) == 0 {
			return nil, m.OpError(i, "table", "table %s has no primary key and no unique index over NOT NULL columns: refit cannot backfill it in batches (add a primary key first)", ac.Table)
		}
	}
	return facts, nil
}

type inspector struct {
	tx      pgx.Tx
	m       *Migration
	facts   *Facts
	shadows map[string]string // table → temp table with the same columns
	nshadow int
}

func (in *inspector) check(ctx context.Context, i int, op Operation) error {
	switch o := op.(type) {
	case *CreateEnum:
		var exists bool
		if err := in.tx.QueryRow(ctx, "SELECT to_regtype($1) IS NOT NULL", quoteQualified(o.Name)).Scan(&exists); err != nil {
			return in.dbErr(i, "name", err)
		}
		if exists {
			return in.m.OpError(i, "name", "type %s already exists", o.Name)
		}
		vals := make([]string, len(o.Values))
		for j, v := range o.Values {
			vals[j] = QuoteLiteral(v)
		}
		// Created inside the rolled-back transaction so later operations can use it.
		if err := in.exec(ctx, fmt.Sprintf("CREATE TYPE %s AS ENUM (%s)", quoteQualified(o.Name), strings.Join(vals, ", "))); err != nil {
			return in.dbErr(i, "name", err)
		}

	case *AddColumn:
		tf, shadow, err := in.table(ctx, i, o.Table)
		if err != nil {
			return err
		}
		if _, exists := tf.Columns[o.Column.Name]; exists {
			return in.m.OpError(i, "column.name", "column %q already exists in %s", o.Column.Name, o.Table)
		}
		if err := in.probe(ctx, fmt.Sprintf("SELECT CAST(NULL AS %s)", o.Column.Type)); err != nil {
			return in.dbErr(i, "column.type", err)
		}
		if o.Up != "" {
			if err := in.probe(ctx, fmt.Sprintf("SELECT CAST((\n%s\n) AS %s) FROM %s AS %s LIMIT 0", o.Up, o.Column.Type, shadow, QuoteIdent(o.Table.Name))); err != nil {
				return in.dbErr(i, "up", err)
			}
		}
		if o.Column.Default != "" {
			if err := in.probe(ctx, fmt.Sprintf("SELECT CAST((\n%s\n) AS %s)", o.Column.Default, o.Column.Type)); err != nil {
				return in.dbErr(i, "column.default", err)
			}
			volatile, err := in.volatileDefault(ctx, o)
			if err != nil {
				return in.dbErr(i, "column.default", err)
			}
			in.facts.VolatileDefault[i] = volatile
		}
		// Later operations (indexes, other expressions) may use the new column.
		if err := in.exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", shadow, QuoteIdent(o.Column.Name), o.Column.Type)); err != nil {
			return in.dbErr(i, "column.type", err)
		}
		tf.Columns[o.Column.Name] = o.Column.Type

	case *DropColumn:
		tf, _, err := in.table(ctx, i, o.Table)
		if err != nil {
			return err
		}
		if _, exists := tf.Columns[o.Column]; !exists {
			return in.m.OpError(i, "column", "column %q does not exist in %s", o.Column, o.Table)
		}
		for _, k := range tf.Key {
			if k.Name == o.Column {
				return in.m.OpError(i, "column", "column %q is part of the key of %s", o.Column, o.Table)
			}
		}

	case *CreateIndex:
		tf, shadow, err := in.table(ctx, i, o.Table)
		if err != nil {
			return err
		}
		for j, c := range o.Columns {
			if _, ok := tf.Columns[c]; !ok {
				return in.m.OpError(i, fmt.Sprintf("columns[%d]", j), "column %q does not exist in %s", c, o.Table)
			}
		}
		idx := QuoteIdent(o.Name)
		if tf.Name.Schema != "" {
			idx = QuoteIdent(tf.Name.Schema) + "." + idx
		}
		var exists bool
		if err := in.tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", idx).Scan(&exists); err != nil {
			return in.dbErr(i, "name", err)
		}
		if exists {
			return in.m.OpError(i, "name", "a relation named %s already exists", o.Name)
		}
		if o.Method != "" {
			var ok bool
			if err := in.tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_am WHERE amname = $1 AND amtype = 'i')", o.Method).Scan(&ok); err != nil {
				return in.dbErr(i, "method", err)
			}
			if !ok {
				return in.m.OpError(i, "method", "unknown index method %q", o.Method)
			}
		}
		if o.Where != "" {
			if err := in.probe(ctx, fmt.Sprintf("SELECT 1 FROM %s AS %s WHERE (\n%s\n) LIMIT 0", shadow, QuoteIdent(o.Table.Name), o.Where)); err != nil {
				return in.dbErr(i, "where", err)
			}
		}

	case *BulkInsert:
		tf, shadow, err := in.table(ctx, i, o.Table)
		if err != nil {
			return err
		}
		for _, c := range o.ColumnNames() {
			if _, ok := tf.Columns[c]; !ok {
				return in.m.OpError(i, "rows", "column %q does not exist in %s", c, o.Table)
			}
		}
		// The real statement against the shadow table: checks every value converts.
		for start := 0; start < len(o.Rows); start += bulkChunk {
			end := min(start+bulkChunk, len(o.Rows))
			sql, args := bulkInsertSQL(shadow, o.ColumnNames(), o.Rows[start:end], tf)
			if _, err := in.tx.Exec(ctx, "SAVEPOINT refit_probe"); err != nil {
				return in.dbErr(i, "rows", err)
			}
			if _, err := in.tx.Exec(ctx, sql, args...); err != nil {
				return in.dbErr(i, fmt.Sprintf("rows[%d..%d]", start, end-1), err)
			}
			if _, err := in.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT refit_probe"); err != nil {
				return in.dbErr(i, "rows", err)
			}
		}
	case *SQL:
		// The escape hatch is the author's responsibility; nothing to probe.
	}
	return nil
}

// table resolves a table, records its facts and creates its shadow copy.
func (in *inspector) table(ctx context.Context, i int, t TableName) (*TableFacts, string, error) {
	key := t.String()
	if tf, ok := in.facts.Tables[key]; ok {
		return tf, in.shadows[key], nil
	}
	var oid uint32
	var schema, name string
	err := in.tx.QueryRow(ctx, `SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1) AND c.relkind IN ('r','p')`, t.Quoted()).Scan(&oid, &schema, &name)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", in.m.OpError(i, "table", "table %s does not exist", t)
	}
	if err != nil {
		return nil, "", in.dbErr(i, "table", err)
	}
	tf := &TableFacts{Name: TableName{Schema: schema, Name: name}, Columns: map[string]string{}}
	rows, err := in.tx.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, oid)
	if err != nil {
		return nil, "", in.dbErr(i, "table", err)
	}
	for rows.Next() {
		var c, typ string
		if err := rows.Scan(&c, &typ); err != nil {
			return nil, "", in.dbErr(i, "table", err)
		}
		tf.Columns[c] = typ
	}
	if err := rows.Err(); err != nil {
		return nil, "", in.dbErr(i, "table", err)
	}
	tf.Key, err = tableKey(ctx, in.tx, oid)
	if err != nil {
		return nil, "", in.dbErr(i, "table", err)
	}
	in.nshadow++
	shadow := fmt.Sprintf("pg_temp.refit_shadow_%d", in.nshadow)
	if err := in.exec(ctx, fmt.Sprintf("CREATE TEMP TABLE refit_shadow_%d (LIKE %s INCLUDING DEFAULTS) ON COMMIT DROP", in.nshadow, t.Quoted())); err != nil {
		return nil, "", in.dbErr(i, "table", err)
	}
	in.facts.Tables[key] = tf
	in.shadows[key] = shadow
	return tf, shadow, nil
}

// TableKey returns the columns to paginate a table on: its primary key, or
// else the unique, non-partial, column-only index with the fewest columns
// whose columns are all NOT NULL.
func TableKey(ctx context.Context, q Querier, table TableName) ([]KeyColumn, error) {
	var oid uint32
	if err := q.QueryRow(ctx, "SELECT to_regclass($1)::oid", table.Quoted()).Scan(&oid); err != nil {
		return nil, fmt.Errorf("resolve table %s: %w", table, err)
	}
	return tableKey(ctx, q, oid)
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
		  AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey) k JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k
		                  WHERE NOT a.attnotnull)
		ORDER BY i.indisprimary DESC, i.indnatts, i.indexrelid
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
func (in *inspector) volatileDefault(ctx context.Context, o *AddColumn) (bool, error) {
	in.nshadow++
	probe := fmt.Sprintf("refit_probe_%d", in.nshadow)
	if err := in.exec(ctx, fmt.Sprintf("CREATE TEMP TABLE %s (x int) ON COMMIT DROP", probe)); err != nil {
		return false, err
	}
	if err := in.exec(ctx, fmt.Sprintf("ALTER TABLE pg_temp.%s ADD COLUMN c %s DEFAULT %s", probe, o.Column.Type, o.Column.Default)); err != nil {
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

func (in *inspector) dbErr(i int, field string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return in.m.OpError(i, field, "%s (SQLSTATE %s)", pgErr.Message, pgErr.Code)
	}
	return in.m.OpError(i, field, "%v", err)
}

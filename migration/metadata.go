package migration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// What the metadata operations (set_not_null, drop_not_null, set_default,
// drop_default, drop_constraint, drop_index, rename_constraint,
// set_comment) share: what they read of the catalog at validation, and
// Facts.Recorded, where each keeps what its plan needs once the inspection
// is over. Recorded[i] is, for operation i:
//
//   - set_default, drop_default: the column's default before it, as
//     pg_get_expr prints it with only pg_catalog on the search_path (every
//     other name schema-qualified), which its undo puts back; no entry: the
//     column had none;
//   - set_comment: the comment before it, which its undo puts back; no
//     entry: there was none;
//   - drop_index: the index, schema-qualified and quoted, as validation
//     resolved it.

// lockAccessShareScan is the lock of a plain read: a guard that counts rows.
const lockAccessShareScan = "ACCESS SHARE (reads and writes continue)"

// recordFound keeps v (if not nil) as what operation i found.
func (in *inspector) recordFound(i int, v *string) {
	if v == nil {
		return
	}
	if in.facts.Recorded == nil {
		in.facts.Recorded = map[int]string{}
	}
	in.facts.Recorded[i] = *v
}

// foundAtValidation returns what validation recorded for the operation
// being planned. known is false without facts (a plan printed without a
// database): then nothing is known of what the operation replaces.
func (b *planBuilder) foundAtValidation() (v string, ok, known bool) {
	if b.facts == nil {
		return "", false, false
	}
	v, ok = b.facts.Recorded[b.op]
	return v, ok, true
}

// catalogColumn is what the catalog says of a column of a table.
type catalogColumn struct {
	existing          bool // in the table already (false: added by an earlier operation of the migration)
	notNull           bool
	identity          bool
	generated         bool
	def               *string // the default, every name outside pg_catalog qualified
	comment           *string
	inPrimaryKey      bool
	inReplicaIdentity bool // a column of the index that is the table's REPLICA IDENTITY
}

// readColumn reads a column of tf from the catalog; one that is not in tf
// at all is an error of field.
func (in *inspector) readColumn(ctx context.Context, i int, field string, tf *TableFacts, name string) (catalogColumn, error) {
	if _, ok := tf.Columns[name]; !ok {
		return catalogColumn{}, in.m.OpError(i, field, "column %q does not exist in %s", name, tf.Name)
	}
	var cs catalogColumn
	err := in.catalogOnlyPath(ctx, func() error {
		return in.tx.QueryRow(ctx, `SELECT a.attnotnull, a.attidentity <> '', a.attgenerated <> '',
				pg_get_expr(d.adbin, d.adrelid), col_description(a.attrelid, a.attnum),
				EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary AND a.attnum = ANY (i.indkey)),
				EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisreplident AND a.attnum = ANY (i.indkey))
			FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
			WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped`,
			tf.Name.Quoted(), name).Scan(&cs.notNull, &cs.identity, &cs.generated, &cs.def, &cs.comment, &cs.inPrimaryKey, &cs.inReplicaIdentity)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return catalogColumn{}, nil // added by an earlier operation (on the shadow only)
	}
	if err != nil {
		return catalogColumn{}, in.dbErr(i, field, err)
	}
	cs.existing = true
	return cs, nil
}

// catalogOnlyPath runs f with only pg_catalog (and pg_temp) on the
// search_path, so pg_get_expr qualifies every other name and the text it
// prints means the same in any session; the setting is undone afterwards.
func (in *inspector) catalogOnlyPath(ctx context.Context, f func() error) error {
	err := in.savepoint(ctx, func() error {
		if _, err := in.tx.Exec(ctx, "SET LOCAL search_path = pg_catalog, pg_temp"); err != nil {
			return err
		}
		if err := f(); err != nil {
			return err
		}
		return errRollbackProbe
	})
	if errors.Is(err, errRollbackProbe) {
		return nil
	}
	return err
}

// tryOneStatement runs one statement that embeds text from the migration
// against a shadow table and undoes it: through the extended protocol,
// which refuses a second statement, inside a savepoint that is rolled back.
func (in *inspector) tryOneStatement(ctx context.Context, sql string) error {
	err := in.savepoint(ctx, func() error {
		if _, err := in.tx.Conn().PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Close(); err != nil {
			return err
		}
		return errRollbackProbe
	})
	if errors.Is(err, errRollbackProbe) {
		return nil
	}
	return err
}

// setShadowNullability changes what later operations see of a column:
// whether it may be NULL, whether the database fills it when an INSERT
// leaves it out. The shadow table follows (it has no defaults: a column the
// database fills loses its NOT NULL there instead, as in inspector.table).
func (in *inspector) setShadowNullability(ctx context.Context, tf *TableFacts, shadow, column string, notNull, filled bool) error {
	attrs := in.columnAttrs(tf)
	a := attrs[column]
	a.notNull, a.filled = notNull, filled
	attrs[column] = a
	op := "DROP NOT NULL"
	if notNull && !filled {
		op = "SET NOT NULL"
	}
	return in.exec(ctx, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s %s", shadow, QuoteIdent(column), op))
}

// catalogConstraint is what the catalog says of a constraint of a table.
type catalogConstraint struct {
	oid      uint32
	typ      string // contype: c check, f foreign key, p primary key, u unique, x exclusion, t trigger
	index    uint32 // the index a primary key, unique or exclusion constraint owns (0: none)
	columns  []string
	refTable *string // a foreign key's referenced table
	// replIdent: its index is the table's REPLICA IDENTITY.
	replIdent bool
}

// constraintTypeNames names constraint types for messages.
var constraintTypeNames = map[string]string{"c": "check", "f": "foreign key", "p": "primary key", "u": "unique",
	"x": "exclusion", "t": "constraint trigger", "n": "not-null"}

// ownsIndex reports whether dropping or renaming the constraint drops or
// renames an index of its table.
func (c *catalogConstraint) ownsIndex() bool {
	return c.index != 0 && (c.typ == "p" || c.typ == "u" || c.typ == "x")
}

// readConstraint reads constraint name of table t from the catalog (nil:
// no such constraint).
func (in *inspector) readConstraint(ctx context.Context, t TableName, name string) (*catalogConstraint, error) {
	var c catalogConstraint
	err := in.tx.QueryRow(ctx, `SELECT c.oid, c.contype::text, c.conindid,
			coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
			          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum), '{}'),
			CASE WHEN c.confrelid <> 0 THEN c.confrelid::regclass::text END,
			c.contype IN ('p', 'u', 'x') AND coalesce((SELECT i.indisreplident FROM pg_index i WHERE i.indexrelid = c.conindid), false)
		FROM pg_constraint c WHERE c.conrelid = to_regclass($1) AND c.conname = $2`, t.Quoted(), name).
		Scan(&c.oid, &c.typ, &c.index, &c.columns, &c.refTable, &c.replIdent)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !c.ownsIndex() {
		c.index = 0
	}
	return &c, nil
}

// constraintDropper is implemented by operations that drop a constraint at
// contract: a later drop of what it depends on is not stopped by it.
type constraintDropper interface {
	droppedConstraint() (TableName, string)
}

// blockingDependents describes the objects that depend on a constraint
// (conOID) or an index (indexOID) so that a plain DROP fails ("other
// objects depend on it"): a foreign key referencing it, a view grouping by
// a primary key. Constraints dropped by operations before i are left out:
// they are gone by then (contract runs in file order).
func (in *inspector) blockingDependents(ctx context.Context, i int, conOID, indexOID uint32) ([]string, error) {
	var dropped []uint32
	for j, op := range in.m.Operations[:i] {
		d, ok := op.(constraintDropper)
		if !ok {
			continue
		}
		t, name := d.droppedConstraint()
		tf := in.facts.Table(t)
		if tf == nil {
			continue
		}
		c, err := in.readConstraint(ctx, tf.Name, name)
		if err != nil {
			return nil, in.dbErr(j, "name", err)
		}
		if c != nil {
			dropped = append(dropped, c.oid)
		}
	}
	rows, err := in.tx.Query(ctx, `SELECT DISTINCT d.objid, d.classid = 'pg_constraint'::regclass, pg_describe_object(d.classid, d.objid, 0)
		FROM pg_depend d
		WHERE d.deptype = 'n' AND ((d.refclassid = 'pg_constraint'::regclass AND d.refobjid = $1 AND $1 <> 0)
		                        OR (d.refclassid = 'pg_class'::regclass AND d.refobjid = $2 AND $2 <> 0))
		ORDER BY 3`, conOID, indexOID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var oid uint32
		var isConstraint bool
		var what string
		if err := rows.Scan(&oid, &isConstraint, &what); err != nil {
			return nil, err
		}
		if isConstraint && slices.Contains(dropped, oid) {
			continue
		}
		out = append(out, what)
	}
	return out, rows.Err()
}

// isBackfillKey reports, for a table this migration backfills, whether
// columns (an index's) are the key refit paginates and syncs it on.
func (in *inspector) isBackfillKey(t TableName, columns []string) bool {
	for _, b := range BuildPlan(in.m, in.facts).Backfills {
		if b.Table != t {
			continue
		}
		tf := in.facts.Table(b.Table)
		if tf == nil || len(tf.Key) != len(columns) {
			return false
		}
		for k, kc := range tf.Key {
			if kc.Name != columns[k] {
				return false
			}
		}
		return true
	}
	return false
}

// backfillsTable reports whether this migration backfills table t (resolved).
func (in *inspector) backfillsTable(t TableName) bool {
	for _, b := range BuildPlan(in.m, in.facts).Backfills {
		if b.Table == t {
			return true
		}
	}
	return false
}

// quoteInSchema quotes name in schema ("" = as the search_path finds it).
func quoteInSchema(schema, name string) string {
	if schema == "" {
		return QuoteIdent(name)
	}
	return QuoteIdent(schema) + "." + QuoteIdent(name)
}

// guardedDollarQuote returns a dollar-quote tag that does not occur in body.
func guardedDollarQuote(body string) string {
	tag := "$refit$"
	for n := 0; strings.Contains(body, tag); n++ {
		tag = fmt.Sprintf("$refit%d$", n)
	}
	return tag
}

// changeableDefault checks that column of tf exists, existed before this
// migration and has a default that ALTER COLUMN … SET/DROP DEFAULT changes.
func (in *inspector) changeableDefault(ctx context.Context, i int, tf *TableFacts, column string) (catalogColumn, error) {
	cs, err := in.readColumn(ctx, i, "column", tf, column)
	if err != nil {
		return cs, err
	}
	switch {
	case !cs.existing:
		return cs, in.m.OpError(i, "column", "column %q is added by this migration: give its add_column the default (column.default) instead", column)
	case cs.identity:
		return cs, in.m.OpError(i, "column", "column %q of %s is an identity column: its values come from its sequence, not a default", column, tf.Name)
	case cs.generated:
		return cs, in.m.OpError(i, "column", "column %q of %s is a generated column: it has an expression, not a default", column, tf.Name)
	}
	return cs, nil
}

// restoreDefault is the undo of a change to the default of t.column: the
// default validation recorded, or none. known is false without facts.
func restoreDefault(b *planBuilder, t TableName, column string) (Step, bool) {
	prev, had, known := b.foundAtValidation()
	s := Step{Transactional: true, Table: t, Lock: lockAccessExclusive, Cost: "metadata only"}
	if had {
		// From the database (pg_get_expr), not from the file.
		s.Description = fmt.Sprintf("put back the previous default of %s.%s: %s", t, column, prev)
		s.SQL = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT (%s)", t.Quoted(), QuoteIdent(column), prev)
	} else {
		s.Description = fmt.Sprintf("drop the default of %s.%s (it had none)", t, column)
		s.SQL = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP DEFAULT", t.Quoted(), QuoteIdent(column))
	}
	return s, known
}

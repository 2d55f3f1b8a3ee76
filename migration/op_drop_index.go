package migration

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
)

func init() { register("drop_index", func() Operation { return &DropIndex{} }) }

// DropIndex drops an index at contract (the old application's queries may
// still use it in the window) with DROP INDEX CONCURRENTLY, outside any
// transaction: reads and writes continue, and a repeat after an
// interruption is harmless (IF EXISTS). An index that backs a constraint is
// dropped with drop_constraint instead.
//
// Table is optional: when given, the index must be on it, the job is
// scheduled with the table's other jobs (one job per table) and its
// ownership is checked up front. Without it refit finds the table at
// validation, but scheduling and the privilege check do not see it.
type DropIndex struct {
	Name     string `yaml:"name" json:"name"`
	TableRaw string `yaml:"table" json:"table,omitempty"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*DropIndex) Kind() string { return "drop_index" }

// Tables implements Operation: the table, if the file names it.
func (o *DropIndex) Tables() []TableName {
	if o.TableRaw == "" {
		return nil
	}
	return []TableName{o.Table}
}

func (o *DropIndex) creates() []object {
	n := ParseTableName(o.Name)
	if n.Schema == "" {
		n.Schema = o.Table.Schema
	}
	return []object{{kind: "dropped index", key: n.String(), name: o.Name, field: "name"}}
}

// Needs implements Operation: ownership of the table, if the file names it.
func (o *DropIndex) Needs() []Need {
	if o.TableRaw == "" {
		return nil
	}
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "drop index " + quoteQualified(o.Name)}}
}

func (o *DropIndex) validate() error {
	if err := validNameField("name", o.Name); err != nil {
		return err
	}
	if o.TableRaw != "" {
		return tableField("table", o.TableRaw, &o.Table)
	}
	o.Table = TableName{}
	return nil
}

// catalogIndex is what the catalog says of an index drop_index drops.
type catalogIndex struct {
	kind              string    // relkind
	name              TableName // the index, resolved
	table             TableName // its table
	columns           []string  // its key columns (expressions are not columns)
	partition         bool      // attached to a partitioned index
	replIdent         bool
	constraint, ctype *string // the constraint it backs
	oid               uint32
}

// lookup resolves the index: in the table's schema when the file names the
// table and not the index's schema, else as the search_path finds it.
func (o *DropIndex) lookup(ctx context.Context, in *inspector) (*catalogIndex, error) {
	name := quoteQualified(o.Name)
	if n := ParseTableName(o.Name); n.Schema == "" && o.TableRaw != "" {
		if tf := in.facts.Table(o.Table); tf != nil {
			name = quoteInSchema(tf.Name.Schema, n.Name)
		}
	}
	var s catalogIndex
	var tSchema, tName *string
	err := in.tx.QueryRow(ctx, `SELECT c.oid, c.relkind::text, n.nspname, c.relname, tn.nspname, t.relname,
			coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
			          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE k.ord <= i.indnkeyatts), '{}'),
			EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid), coalesce(i.indisreplident, false),
			con.conname, con.contype::text
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_index i ON i.indexrelid = c.oid
		LEFT JOIN pg_class t ON t.oid = i.indrelid LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
		LEFT JOIN LATERAL (SELECT conname::text, contype FROM pg_constraint
		                   WHERE conindid = c.oid AND conrelid = i.indrelid AND contype IN ('p', 'u', 'x') LIMIT 1) con ON true
		WHERE c.oid = to_regclass($1)`, name).
		Scan(&s.oid, &s.kind, &s.name.Schema, &s.name.Name, &tSchema, &tName, &s.columns, &s.partition, &s.replIdent, &s.constraint, &s.ctype)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if tSchema != nil && tName != nil {
		s.table = TableName{Schema: *tSchema, Name: *tName}
	}
	return &s, nil
}

func (o *DropIndex) inspect(ctx context.Context, in *inspector, i int) error {
	var tf *TableFacts
	if o.TableRaw != "" {
		var err error
		if tf, _, err = in.table(ctx, i, o.Table); err != nil {
			return err
		}
	}
	s, err := o.lookup(ctx, in)
	if err != nil {
		return in.dbErr(i, "name", err)
	}
	switch {
	case s == nil:
		return in.m.OpError(i, "name", "index %s does not exist", o.Name)
	case s.kind == "I":
		return in.m.OpError(i, "name", "%s is the index of a partitioned table: DROP INDEX CONCURRENTLY cannot drop it (refit does not change partitioned tables yet)", s.name)
	case s.kind != "i":
		return in.m.OpError(i, "name", "%s is not an index", s.name)
	case tf != nil && s.table != tf.Name:
		return in.m.OpError(i, "name", "index %s is on table %s, not on %s", s.name, s.table, tf.Name)
	case s.partition:
		return in.m.OpError(i, "name", "index %s is a partition of a partitioned index: drop that one instead", s.name)
	case s.constraint != nil:
		return in.m.OpError(i, "name", "index %s backs the %s constraint %q of %s: drop the constraint instead (drop_constraint: {table: %s, name: %s})",
			s.name, constraintTypeNames[*s.ctype], *s.constraint, s.table, s.table, *s.constraint)
	case s.replIdent:
		return in.m.OpError(i, "name", "index %s is the REPLICA IDENTITY of %s: change the replica identity first (a logical replica would stop receiving its updates and deletes)", s.name, s.table)
	}
	deps, err := in.blockingDependents(ctx, i, 0, s.oid)
	if err != nil {
		return in.dbErr(i, "name", err)
	}
	if len(deps) > 0 {
		return in.m.OpError(i, "name", "index %s cannot be dropped while other objects depend on it: %s (drop them first)", s.name, strings.Join(deps, ", "))
	}
	q := quoteInSchema(s.name.Schema, s.name.Name)
	in.recordFound(i, &q)
	return nil
}

// inspectLate refuses the index a backfill of this migration paginates on
// (a unique index over NOT NULL columns, when the table has no primary key).
func (o *DropIndex) inspectLate(ctx context.Context, in *inspector, i int) error {
	s, err := o.lookup(ctx, in)
	if err != nil {
		return in.dbErr(i, "name", err)
	}
	if s != nil && in.isBackfillKey(s.table, s.columns) {
		return in.m.OpError(i, "name", "index %s is the key this migration backfills and syncs %s on: drop it in a later migration", s.name, s.table)
	}
	return nil
}

func (o *DropIndex) plan(b *planBuilder) {
	var t TableName
	idx := quoteQualified(o.Name)
	if o.TableRaw != "" {
		t = b.table(o.Table)
		if n := ParseTableName(o.Name); n.Schema == "" {
			idx = quoteInSchema(t.Schema, n.Name)
		}
	}
	if v, ok, _ := b.foundAtValidation(); ok {
		idx = v // as validation resolved it
	}
	b.contract(Step{Table: t,
		Description: "drop index " + o.Name + " concurrently",
		SQL:         "DROP INDEX CONCURRENTLY IF EXISTS " + idx,
		Lock:        lockShareUpdateExcl, Cost: "catalog only (outside any transaction; waits for transactions that use the index)"})
}

package migration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

func init() { register("alter_column", func() Operation { return &AlterColumn{} }) }

// AlterColumn changes a column's type (and nullability, default) on a live
// table through a shadow column (swap.go): expand adds refit_new_<column>
// of the new type; the backfill and the stream set it to Using over the
// live row; the indexes on the column are built again on the shadow,
// CONCURRENTLY; at contract a verify step compares every row, and a swap
// renames the column aside (refit_old_<column>) and the shadow into its
// place, moves the default and the indexes (under their names), inside one
// lock-bounded transaction with the final drain; NOT NULL is then enforced
// without a scan under lock, and the old column dropped.
//
// Not yet: a column of the primary key or the replica identity, one that a
// foreign key, check, exclusion constraint, view, trigger, policy,
// statistics object or generated column uses, an identity column, a
// column owning a sequence, and expression indexes over it. Each is refused
// at validation, naming what is in the way.
type AlterColumn struct {
	TableRaw string `yaml:"table" json:"table"`
	Column   string `yaml:"column" json:"column"`
	// Type is the new type.
	Type string `yaml:"type" json:"type,omitempty"`
	// Using derives the new value from the row (default: "<column>::<type>").
	Using string `yaml:"using" json:"using,omitempty"`
	// Nullable, if set, is the column's nullability after the change
	// (default: as it is).
	Nullable *bool `yaml:"nullable" json:"nullable,omitempty"`
	// Default, if set, is the column's default after the change (default:
	// the column's own, carried over).
	Default string `yaml:"default" json:"default,omitempty"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*AlterColumn) Kind() string { return "alter_column" }

// Tables implements Operation.
func (o *AlterColumn) Tables() []TableName { return []TableName{o.Table} }

func (o *AlterColumn) creates() []object {
	return []object{{kind: "change of column", key: o.Table.String() + "." + o.Column, name: o.Column, field: "column"},
		columnObject(o.Table, refitName("refit_new", o.Column), "column"),
		nullabilityObject(o.Table, o.Column)}
}

// Needs implements Operation.
func (o *AlterColumn) Needs() []Need {
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "alter column " + QuoteIdent(o.Column)},
		{Kind: NeedSchemaCreate, Table: o.Table, Index: true, For: "rebuild the indexes of column " + QuoteIdent(o.Column)}}
}

func (o *AlterColumn) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	if err := validIdentField("column", o.Column); err != nil {
		return err
	}
	if strings.TrimSpace(o.Type) == "" {
		return fieldErr("type", "is required (only nullable or default: use set_not_null, drop_not_null, set_default or drop_default, which need no shadow column)")
	}
	if err := singleExpression("type", o.Type); err != nil {
		return err
	}
	if o.Using != "" {
		if err := singleExpression("using", o.Using); err != nil {
			return err
		}
	}
	if o.Default != "" {
		if err := singleExpression("default", o.Default); err != nil {
			return err
		}
	}
	return nil
}

// alteredColumn is what validation records of the column (Facts.Recorded).
type alteredColumn struct {
	Type    string         `json:"type"`     // the new type, as format_type prints it
	Using   string         `json:"using"`    // the expression, defaulted
	NotNull bool           `json:"not_null"` // the old column is NOT NULL
	Final   bool           `json:"final"`    // the new column is NOT NULL
	OldDef  string         `json:"old_def"`  // the old column's default ("" none), qualified
	Default string         `json:"default"`  // the new column's default ("" none)
	Indexes []alteredIndex `json:"indexes,omitempty"`
}

// alteredIndex is an index over the column, built again on the shadow.
type alteredIndex struct {
	Name       string   `json:"name"`                 // unqualified
	Schema     string   `json:"schema"`               // of the index
	Unique     bool     `json:"unique,omitempty"`     //
	Constraint string   `json:"constraint,omitempty"` // the UNIQUE constraint owning it
	Method     string   `json:"method"`               // btree, hash, …
	Columns    []string `json:"columns"`              // key columns, each with its options (quoted), the column as {col}
	Include    []string `json:"include,omitempty"`    // quoted
	Where      string   `json:"where,omitempty"`      // the predicate, qualified
	With       []string `json:"with,omitempty"`       // storage parameters
}

func (o *AlterColumn) inspect(ctx context.Context, in *inspector, i int) error {
	tf, shadow, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	cs, err := in.readColumn(ctx, i, "column", tf, o.Column)
	if err != nil {
		return err
	}
	switch {
	case !cs.existing:
		return in.m.OpError(i, "column", "column %q is added by this migration: give its add_column the new type instead", o.Column)
	case cs.inPrimaryKey:
		return in.m.OpError(i, "column", "column %q is in the primary key of %s: alter_column does not change a key column yet", o.Column, tf.Name)
	case cs.inReplicaIdentity:
		return in.m.OpError(i, "column", "column %q is in the REPLICA IDENTITY index of %s: alter_column does not change it yet", o.Column, tf.Name)
	case cs.identity:
		return in.m.OpError(i, "column", "column %q of %s is an identity column: alter_column does not change it yet", o.Column, tf.Name)
	case cs.generated:
		return in.m.OpError(i, "column", "column %q of %s is a generated column: change its expression with a plain migration", o.Column, tf.Name)
	}
	for _, name := range []string{refitName("refit_new", o.Column), refitName("refit_old", o.Column)} {
		if _, taken := tf.Columns[name]; taken {
			return in.m.OpError(i, "column", "%s already has a column %q, refit's name for this change: an earlier alter_column was left half done; drop it first", tf.Name, name)
		}
	}
	rec := alteredColumn{Type: o.Type, Using: o.Using, NotNull: cs.notNull, Final: cs.notNull}
	if o.Nullable != nil {
		rec.Final = !*o.Nullable
	}
	if err := in.probe(ctx, fmt.Sprintf("SELECT CAST(NULL AS %s)", rec.Type)); err != nil {
		return in.dbErr(i, "type", err)
	}
	if rec.Using == "" {
		rec.Using = QuoteIdent(o.Column) + "::" + rec.Type
	}
	alias := QuoteIdent(o.Table.Name)
	if err := in.probe(ctx, fmt.Sprintf("SELECT CAST((\n%s\n) AS %s) FROM %s AS %s", rec.Using, rec.Type, shadow, alias)); err != nil {
		return in.dbErr(i, "using", err)
	}
	if cs.def != nil {
		rec.OldDef = *cs.def
	}
	rec.Default = rec.OldDef
	field := "column"
	if o.Default != "" {
		rec.Default, field = o.Default, "default"
	}
	if rec.Default != "" {
		if err := in.probe(ctx, fmt.Sprintf("SELECT CAST((\n%s\n) AS %s)", rec.Default, rec.Type)); err != nil {
			return in.dbErr(i, field, fmt.Errorf("the default %s does not fit the new type: %w", rec.Default, err))
		}
	}
	if err := in.refuseDependents(ctx, i, tf, o.Column); err != nil {
		return err
	}
	if rec.Indexes, err = in.columnIndexes(ctx, i, tf, o.Column); err != nil {
		return err
	}
	// The shadow column, as the backfill will write it: the guarded
	// recompute must plan (an equality operator for IS DISTINCT FROM).
	sc := refitName("refit_new", o.Column)
	if err := in.exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", shadow, QuoteIdent(sc), rec.Type)); err != nil {
		return in.dbErr(i, "type", err)
	}
	if err := in.probe(ctx, RecomputeSQL(shadow+" AS "+alias, []ColumnSet{{Column: sc, Expr: rec.Using}}, "true")); err != nil {
		return in.dbErr(i, "using", err)
	}
	// Later operations see the column with its new type.
	if err := in.exec(ctx, fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s", shadow, QuoteIdent(sc))); err != nil {
		return in.dbErr(i, "type", err)
	}
	if err := in.exec(ctx, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE %s USING (%s)", shadow, QuoteIdent(o.Column), rec.Type, rec.Using)); err != nil {
		return in.dbErr(i, "using", err)
	}
	if err := in.savepoint(ctx, func() error {
		return in.tx.QueryRow(ctx, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2",
			shadow, o.Column).Scan(&rec.Type)
	}); err != nil {
		return in.dbErr(i, "type", err)
	}
	tf.Columns[o.Column] = rec.Type
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	v := string(b)
	in.recordFound(i, &v)
	return nil
}

// refuseDependents refuses a column that other objects use in a way the
// swap does not carry over yet: they would keep pointing at the column set
// aside (a view, a check), or break when it is dropped.
func (in *inspector) refuseDependents(ctx context.Context, i int, tf *TableFacts, column string) error {
	rows, err := in.tx.Query(ctx, `
		SELECT CASE
		         WHEN d.classid = 'pg_constraint'::regclass THEN
		           (SELECT CASE c.contype WHEN 'u' THEN 'ok' WHEN 'n' THEN 'ok' WHEN 'c' THEN 'check constraint ' WHEN 'f' THEN 'foreign key '
		                   WHEN 'x' THEN 'exclusion constraint ' WHEN 'p' THEN 'ok' ELSE 'constraint ' END || CASE WHEN c.contype IN ('u', 'p', 'n') THEN '' ELSE quote_ident(c.conname) END
		            FROM pg_constraint c WHERE c.oid = d.objid)
		         WHEN d.classid = 'pg_rewrite'::regclass THEN
		           (SELECT 'view ' || r.ev_class::regclass::text FROM pg_rewrite r WHERE r.oid = d.objid)
		         WHEN d.classid = 'pg_trigger'::regclass THEN
		           (SELECT 'trigger ' || quote_ident(t.tgname) FROM pg_trigger t WHERE t.oid = d.objid)
		         WHEN d.classid = 'pg_policy'::regclass THEN
		           (SELECT 'policy ' || quote_ident(p.polname) FROM pg_policy p WHERE p.oid = d.objid)
		         WHEN d.classid = 'pg_statistic_ext'::regclass THEN
		           (SELECT 'statistics object ' || quote_ident(s.stxname) FROM pg_statistic_ext s WHERE s.oid = d.objid)
		         WHEN d.classid = 'pg_attrdef'::regclass THEN
		           (SELECT CASE WHEN a.adnum = $2 THEN 'ok' ELSE 'the generated column ' || quote_ident(att.attname) END
		            FROM pg_attrdef a JOIN pg_attribute att ON att.attrelid = a.adrelid AND att.attnum = a.adnum WHERE a.oid = d.objid)
		         WHEN d.classid = 'pg_class'::regclass THEN
		           (SELECT CASE c.relkind WHEN 'i' THEN 'ok' WHEN 'I' THEN 'ok' WHEN 'S' THEN 'the sequence ' || c.oid::regclass::text || ' it owns'
		                   ELSE 'relation ' || c.oid::regclass::text END FROM pg_class c WHERE c.oid = d.objid)
		         ELSE pg_describe_object(d.classid, d.objid, d.objsubid)
		       END
		FROM pg_depend d
		WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = to_regclass($1) AND d.refobjsubid = $2
		  AND d.deptype IN ('n', 'a', 'i')
		  AND NOT (d.classid = 'pg_class'::regclass AND d.objid = to_regclass($1))`, tf.Name.Quoted(), in.attnum(ctx, tf, column))
	if err != nil {
		return in.dbErr(i, "column", err)
	}
	var blockers []string
	for rows.Next() {
		var what *string
		if err := rows.Scan(&what); err != nil {
			rows.Close()
			return in.dbErr(i, "column", err)
		}
		if what != nil && *what != "ok" && !slices.Contains(blockers, *what) {
			blockers = append(blockers, *what)
		}
	}
	if err := rows.Err(); err != nil {
		return in.dbErr(i, "column", err)
	}
	if len(blockers) > 0 {
		return in.m.OpError(i, "column", "column %q of %s is used by %s: alter_column does not carry these over yet (drop them first and re-create them after, or change the column with a plain migration)",
			column, tf.Name, strings.Join(blockers, ", "))
	}
	return nil
}

// attnum is the column's number (0 if it cannot be read: the query above
// then finds nothing, and the column's own checks have run already).
func (in *inspector) attnum(ctx context.Context, tf *TableFacts, column string) int {
	var n int
	_ = in.savepoint(ctx, func() error { //nolint:errcheck // 0 on failure
		return in.tx.QueryRow(ctx, "SELECT attnum FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2", tf.Name.Quoted(), column).Scan(&n)
	})
	return n
}

// columnIndexes reads the indexes over the column, to build them again on
// the shadow. Expression indexes over it, and predicates that read it, are
// refused: their text would have to be rewritten.
func (in *inspector) columnIndexes(ctx context.Context, i int, tf *TableFacts, column string) ([]alteredIndex, error) {
	var out []alteredIndex
	err := in.catalogOnlyPath(ctx, func() error {
		rows, err := in.tx.Query(ctx, `
			SELECT ic.relname::text, n.nspname::text, x.indisunique, coalesce(con.conname::text, ''), am.amname::text,
			       x.indexprs IS NOT NULL, coalesce(pg_get_expr(x.indpred, x.indrelid), ''),
			       x.indnkeyatts, coalesce(ic.reloptions, '{}'),
			       (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
			          JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum),
			       (SELECT array_agg(o.opcdefault ORDER BY k.ord) FROM unnest(x.indclass) WITH ORDINALITY AS k(opc, ord) JOIN pg_opclass o ON o.oid = k.opc),
			       (SELECT array_agg(coalesce(k.coll = 0 OR k.coll = (SELECT attcollation FROM pg_attribute WHERE attrelid = x.indrelid AND attnum = x.indkey[k.ord - 1]), true) ORDER BY k.ord)
			          FROM unnest(x.indcollation) WITH ORDINALITY AS k(coll, ord)),
			       (SELECT array_agg(k.opt::int ORDER BY k.ord) FROM unnest(x.indoption) WITH ORDINALITY AS k(opt, ord)),
			       EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = x.indexrelid
			                 AND d.refobjid = x.indrelid AND d.refobjsubid = (SELECT attnum FROM pg_attribute WHERE attrelid = x.indrelid AND attname = $2)
			                 AND NOT ((SELECT attnum FROM pg_attribute WHERE attrelid = x.indrelid AND attname = $2) = ANY (x.indkey::int2[])))
			FROM pg_index x
			JOIN pg_class ic ON ic.oid = x.indexrelid
			JOIN pg_namespace n ON n.oid = ic.relnamespace
			JOIN pg_am am ON am.oid = ic.relam
			LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.contype = 'u' AND con.conrelid = x.indrelid
			WHERE x.indrelid = to_regclass($1)
			  -- A key or INCLUDE column; a constraint's index depends on the
			  -- constraint, not on the column, so indkey is read, not pg_depend.
			  AND ((SELECT attnum FROM pg_attribute WHERE attrelid = x.indrelid AND attname = $2) = ANY (x.indkey::int2[])
			       OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = x.indexrelid
			                AND d.refobjid = x.indrelid AND d.refobjsubid = (SELECT attnum FROM pg_attribute WHERE attrelid = x.indrelid AND attname = $2)))
			ORDER BY ic.relname`, tf.Name.Quoted(), column)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var ix alteredIndex
			var exprs bool
			var nkey int
			var cols []string
			var defaultOpc, defaultColl []bool
			var opts []int
			var readsElsewhere bool
			if err := rows.Scan(&ix.Name, &ix.Schema, &ix.Unique, &ix.Constraint, &ix.Method, &exprs, &ix.Where, &nkey, &ix.With,
				&cols, &defaultOpc, &defaultColl, &opts, &readsElsewhere); err != nil {
				return err
			}
			switch {
			case exprs:
				return in.m.OpError(i, "column", "index %s on %s is an expression index over column %q: alter_column does not rebuild it yet (drop it first and create it again after)", ix.Name, tf.Name, column)
			case readsElsewhere:
				return in.m.OpError(i, "column", "the predicate of index %s on %s reads column %q: alter_column does not rebuild it yet (drop it first and create it again after)", ix.Name, tf.Name, column)
			}
			for k := 0; k < nkey; k++ {
				if !defaultOpc[k] || !defaultColl[k] {
					return in.m.OpError(i, "column", "index %s on %s gives column %q an operator class or collation of its own: alter_column does not rebuild it yet (drop it first and create it again after)", ix.Name, tf.Name, cols[k])
				}
				c := QuoteIdent(cols[k])
				if cols[k] == column {
					c = "{col}"
				}
				if opts[k]&1 != 0 { // INDOPTION_DESC
					c += " DESC"
					if opts[k]&2 == 0 {
						c += " NULLS LAST"
					}
				} else if opts[k]&2 != 0 { // INDOPTION_NULLS_FIRST
					c += " NULLS FIRST"
				}
				ix.Columns = append(ix.Columns, c)
			}
			for _, c := range cols[nkey:] {
				if c == column {
					ix.Include = append(ix.Include, "{col}")
				} else {
					ix.Include = append(ix.Include, QuoteIdent(c))
				}
			}
			out = append(out, ix)
		}
		return rows.Err()
	})
	if err != nil {
		if _, ok := err.(*Error); ok {
			return nil, err
		}
		return nil, in.dbErr(i, "column", err)
	}
	return out, nil
}

func (o *AlterColumn) plan(b *planBuilder) {
	t := b.table(o.Table)
	rec := alteredColumn{Type: o.Type, Using: o.Using, Final: o.Nullable != nil && !*o.Nullable, Default: o.Default}
	if v, ok, _ := b.foundAtValidation(); ok {
		_ = json.Unmarshal([]byte(v), &rec) //nolint:errcheck // written by inspect
	}
	if rec.Using == "" {
		rec.Using = QuoteIdent(o.Column) + "::" + rec.Type
	}
	col := QuoteIdent(o.Column)
	shadowName := refitName("refit_new", o.Column)
	aside := QuoteIdent(refitName("refit_old", o.Column))
	shadow := QuoteIdent(shadowName)
	b.expand(Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("add shadow column %s.%s %s (nullable, no default: no rewrite)", t, shadowName, rec.Type),
		SQL:         fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", t.Quoted(), shadow, rec.Type),
		Lock:        lockAccessExclusive, Cost: "metadata only (no rewrite)"},
		Step{Transactional: true, Table: t,
			Description: fmt.Sprintf("drop shadow column %s.%s", t, shadowName),
			SQL:         fmt.Sprintf("ALTER TABLE %s DROP COLUMN IF EXISTS %s", t.Quoted(), shadow),
			Lock:        lockAccessExclusive, Cost: "metadata only"})
	b.backfill(t, ColumnSet{Column: shadowName, Expr: rec.Using})

	// The indexes, built again on the shadow under temporary names; the
	// swap gives them the old names.
	var swapIdx []string
	for _, ix := range rec.Indexes {
		tmp := refitName("refit_new", ix.Name)
		qtmp := TableName{Schema: ix.Schema, Name: tmp}.Quoted()
		cols := strings.ReplaceAll(strings.Join(ix.Columns, ", "), "{col}", shadow)
		sql := "CREATE "
		if ix.Unique {
			sql += "UNIQUE "
		}
		sql += fmt.Sprintf("INDEX CONCURRENTLY %s ON %s USING %s (%s)", QuoteIdent(tmp), t.Quoted(), QuoteIdent(ix.Method), cols)
		if len(ix.Include) > 0 {
			sql += " INCLUDE (" + strings.ReplaceAll(strings.Join(ix.Include, ", "), "{col}", shadow) + ")"
		}
		if len(ix.With) > 0 {
			sql += " WITH (" + strings.Join(ix.With, ", ") + ")"
		}
		if ix.Where != "" {
			sql += " WHERE " + ix.Where
		}
		b.postBackfill(Step{Table: t, LongRunning: true, Index: qtmp,
			Description: fmt.Sprintf("build index %s on the shadow column (for %s)", tmp, ix.Name),
			SQL:         sql, Lock: lockShareUpdateExcl, Cost: "scans the table (writes continue)"},
			Step{Table: t, Description: "drop index " + tmp,
				SQL:  "DROP INDEX CONCURRENTLY IF EXISTS " + qtmp,
				Lock: lockShareUpdateExcl, Cost: "metadata only"})
		old := TableName{Schema: ix.Schema, Name: ix.Name}.Quoted()
		if ix.Constraint != "" {
			swapIdx = append(swapIdx,
				fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT %s", t.Quoted(), QuoteIdent(ix.Constraint)),
				fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s UNIQUE USING INDEX %s", t.Quoted(), QuoteIdent(ix.Constraint), QuoteIdent(tmp)))
			if ix.Constraint != ix.Name {
				swapIdx = append(swapIdx, fmt.Sprintf("ALTER INDEX %s RENAME TO %s", TableName{Schema: ix.Schema, Name: ix.Constraint}.Quoted(), QuoteIdent(ix.Name)))
			}
			continue
		}
		swapIdx = append(swapIdx, "DROP INDEX "+old, fmt.Sprintf("ALTER INDEX %s RENAME TO %s", qtmp, QuoteIdent(ix.Name)))
	}

	var key []KeyColumn
	if tf := b.tableFacts(o.Table); tf != nil {
		key = tf.Key
	}
	b.contract(Step{Table: t, LongRunning: true,
		Description: fmt.Sprintf("verify %s.%s = %s in every row (reads only; rows that differ are re-checked after a drain)", t, shadowName, rec.Using),
		SQL:         fmt.Sprintf("SELECT count(*) FROM %s WHERE %s IS DISTINCT FROM (%s)", t.Quoted(), shadow, rec.Using),
		Lock:        lockAccessShare, Cost: "reads the table in key order",
		Verify: &Verify{Table: t, Key: key, Column: shadowName, Expr: rec.Using}})

	stmts := []string{}
	if rec.OldDef != "" {
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP DEFAULT", t.Quoted(), col))
	}
	if rec.NotNull {
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL", t.Quoted(), col))
	}
	stmts = append(stmts,
		fmt.Sprintf("ALTER TABLE %s RENAME COLUMN %s TO %s", t.Quoted(), col, aside),
		fmt.Sprintf("ALTER TABLE %s RENAME COLUMN %s TO %s", t.Quoted(), shadow, col))
	if rec.Default != "" {
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT (%s)", t.Quoted(), col, rec.Default))
	}
	stmts = append(stmts, swapIdx...)
	nn := ConstraintName("refit_nn", t.Name, o.Column)
	if rec.Final {
		// NOT VALID: checked on every write from now on, no scan (swap.go).
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s IS NOT NULL) NOT VALID", t.Quoted(), QuoteIdent(nn), col))
	}
	b.contract(Step{Transactional: true, Table: t, BreaksSync: true,
		Description: fmt.Sprintf("swap %s.%s into place: lock, drain the stream inside the lock, rename %s aside and the shadow to %s, move the default and indexes (bounded by ddl.swap_max_lock, retried)", t, o.Column, o.Column, o.Column),
		SQL:         strings.Join(stmts, ";\n"),
		Lock:        "ACCESS EXCLUSIVE (held at most ddl.swap_max_lock, default 1s; retried)", Cost: "metadata only (renames; the drained keys are applied)",
		Swap: &Swap{Table: t, Statements: stmts}})
	if rec.Final {
		qc := QuoteIdent(nn)
		b.contract(
			Step{Transactional: true, Table: t, LongRunning: true,
				Description: "validate the NOT NULL check of the new column",
				SQL:         fmt.Sprintf("ALTER TABLE %s VALIDATE CONSTRAINT %s", t.Quoted(), qc),
				Lock:        lockShareUpdateExcl, Cost: "scans the table",
				Violations: NewViolations(fmt.Sprintf("NOT NULL on column %q", o.Column), t, key, "r."+col+" IS NULL")},
			Step{Transactional: true, Table: t,
				Description: fmt.Sprintf("set %s NOT NULL (proven by the validated check)", o.Column),
				SQL:         fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL", t.Quoted(), col),
				Lock:        lockAccessExclusive, Cost: "metadata only (no scan, PG12+)"},
			Step{Transactional: true, Table: t,
				Description: "drop the helper check",
				SQL:         fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", t.Quoted(), qc),
				Lock:        lockAccessExclusive, Cost: "metadata only"})
	}
	b.contract(Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("drop the old column %s.%s (set aside by the swap)", t, refitName("refit_old", o.Column)),
		SQL:         fmt.Sprintf("ALTER TABLE %s DROP COLUMN IF EXISTS %s", t.Quoted(), aside),
		Lock:        lockAccessExclusive, Cost: "metadata only (no rewrite)"})
}

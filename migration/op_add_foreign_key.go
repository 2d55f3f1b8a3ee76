package migration

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

func init() { register("add_foreign_key", func() Operation { return &AddForeignKey{} }) }

// ForeignKeyTarget is what a foreign key references.
type ForeignKeyTarget struct {
	TableRaw string   `yaml:"table" json:"table"`
	Columns  []string `yaml:"columns" json:"columns"`

	Table TableName `yaml:"-" json:"-"`
}

// AddForeignKey adds a foreign key without holding a long lock: NOT VALID
// at expand (a brief SHARE ROW EXCLUSIVE on both tables, no scan; every row
// written from then on is checked, and the referenced rows are protected),
// VALIDATE at contract (a scan under SHARE UPDATE EXCLUSIVE on the table
// and ROW SHARE on the referenced one: reads and writes continue). Existing
// rows without a parent are found at validation, before anything changes.
type AddForeignKey struct {
	TableRaw   string           `yaml:"table" json:"table"`
	Name       string           `yaml:"name" json:"name"`
	Columns    []string         `yaml:"columns" json:"columns"`
	References ForeignKeyTarget `yaml:"references" json:"references"`
	OnDelete   string           `yaml:"on_delete" json:"on_delete,omitempty"`
	OnUpdate   string           `yaml:"on_update" json:"on_update,omitempty"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*AddForeignKey) Kind() string { return "add_foreign_key" }

// Tables implements Operation: the referenced table gets the foreign key's
// triggers too, so a job on it waits for this one.
func (o *AddForeignKey) Tables() []TableName {
	return []TableName{o.Table, o.References.Table}
}

func (o *AddForeignKey) creates() []object {
	return []object{constraintObject(o.Table, o.Name, "name")}
}

// Needs implements Operation.
func (o *AddForeignKey) Needs() []Need {
	what := "add foreign key " + QuoteIdent(o.Name)
	return []Need{{Kind: NeedOwner, Table: o.Table, For: what},
		{Kind: NeedReferences, Table: o.References.Table, For: what + " referencing it"}}
}

// fkActions are the referential actions, as written in SQL.
var fkActions = []string{"NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT"}

// fkAction normalizes a referential action ("set null", "SET_NULL") or
// returns "" for one that is not.
func fkAction(s string) string {
	a := strings.ToUpper(strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '_' || r == '\t' }), " "))
	for _, v := range fkActions {
		if a == v {
			return v
		}
	}
	return ""
}

func (o *AddForeignKey) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	if err := validIdentField("name", o.Name); err != nil {
		return err
	}
	if err := validColumnsField("columns", o.Columns); err != nil {
		return err
	}
	if err := tableField("references.table", o.References.TableRaw, &o.References.Table); err != nil {
		return err
	}
	if err := validColumnsField("references.columns", o.References.Columns); err != nil {
		return err
	}
	if len(o.References.Columns) != len(o.Columns) {
		return fieldErr("references.columns", "lists %d columns for the %d of columns: they pair up one to one", len(o.References.Columns), len(o.Columns))
	}
	for _, f := range []struct{ field, v string }{{"on_delete", o.OnDelete}, {"on_update", o.OnUpdate}} {
		if f.v != "" && fkAction(f.v) == "" {
			return fieldErr(f.field, "%q: want one of no action, restrict, cascade, set null, set default", f.v)
		}
	}
	return nil
}

func (o *AddForeignKey) inspect(ctx context.Context, in *inspector, i int) error {
	tf, shadow, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	if err := in.refuseConstraintName(ctx, i, "name", tf, shadow, o.Name); err != nil {
		return err
	}
	childReal, err := in.columnsField(i, "columns", tf, o.Columns)
	if err != nil {
		return err
	}
	ptf, pshadow, err := in.table(ctx, i, o.References.Table)
	if err != nil {
		return retarget(err, "references.table")
	}
	if _, err := in.columnsField(i, "references.columns", ptf, o.References.Columns); err != nil {
		return err
	}
	// PostgreSQL needs a unique index over exactly the referenced columns
	// (any order): valid, not deferrable, without a predicate or
	// expressions. One this migration builds exists only after expand,
	// too late for the NOT VALID foreign key.
	opclasses, err := o.referencedIndex(ctx, in, ptf)
	if errors.Is(err, pgx.ErrNoRows) {
		return in.m.OpError(i, "references.columns", "table %s has no primary key or unique constraint over exactly (%s): PostgreSQL requires one for a foreign key (a unique key this migration adds is built after the foreign key: add the foreign key in a later migration)",
			ptf.Name, strings.Join(o.References.Columns, ", "))
	}
	if err != nil {
		return in.dbErr(i, "references.columns", err)
	}
	// SET NULL on a NOT NULL column would make every delete (update) of a
	// referenced row fail.
	attrs := in.columnAttrs(tf)
	for _, a := range []struct{ field, action string }{{"on_delete", o.OnDelete}, {"on_update", o.OnUpdate}} {
		if fkAction(a.action) != "SET NULL" {
			continue
		}
		for j, c := range o.Columns {
			if attrs[c].notNull {
				return in.m.OpError(i, a.field, "set null on column %q (columns[%d]), which is NOT NULL: the change of a referenced row would fail", c, j)
			}
		}
	}
	// The same foreign key between the shadows (a temporary table may
	// reference only temporary tables, and the real referenced table would
	// be locked SHARE ROW EXCLUSIVE): the column types must be comparable
	// with the referenced key's operator classes. The referenced shadow
	// gets a copy of that key; the constraint stays for later operations.
	cols := make([]string, len(opclasses))
	for j, c := range opclasses {
		cols[j] = QuoteIdent(c.column) + " " + c.opclass
	}
	if err := in.exec(ctx, fmt.Sprintf("CREATE UNIQUE INDEX ON %s (%s)", pshadow, strings.Join(cols, ", "))); err != nil {
		return in.dbErr(i, "references.columns", err)
	}
	if err := in.exec(ctx, o.addSQL(shadow, pshadow, "")); err != nil {
		return in.dbErr(i, "columns", err)
	}
	if !childReal {
		// A column an earlier operation adds has no rows yet: every value
		// the backfill writes is checked by the NOT VALID constraint.
		return nil
	}
	return in.refuseExisting(ctx, i, "columns", orphanViolations(o.Name, tf.Name, tf.Key, o.Columns, ptf.Name, o.References.Columns))
}

type keyOpclass struct{ column, opclass string }

// referencedIndex finds the unique index of the referenced table that a
// foreign key over its columns would use, and the operator class of each
// of its columns (quoted, qualified), in index order.
func (o *AddForeignKey) referencedIndex(ctx context.Context, in *inspector, ptf *TableFacts) ([]keyOpclass, error) {
	var columns, opclasses []string
	err := in.tx.QueryRow(ctx, `
		SELECT array_agg(a.attname::text ORDER BY k.ord), array_agg(quote_ident(n.nspname) || '.' || quote_ident(oc.opcname) ORDER BY k.ord)
		FROM pg_index i
		CROSS JOIN LATERAL unnest(i.indkey::int2[], i.indclass::oid[]) WITH ORDINALITY AS k(attnum, opc, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		JOIN pg_opclass oc ON oc.oid = k.opc
		JOIN pg_namespace n ON n.oid = oc.opcnamespace
		WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indimmediate AND i.indisvalid
		  AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = $3 AND k.ord <= i.indnkeyatts
		GROUP BY i.indexrelid, i.indisprimary
		HAVING array_agg(a.attname::text) @> $2::text[] AND array_agg(a.attname::text) <@ $2::text[]
		ORDER BY i.indisprimary DESC, i.indexrelid
		LIMIT 1`, ptf.Name.Quoted(), o.References.Columns, len(o.References.Columns)).Scan(&columns, &opclasses)
	if err != nil {
		return nil, err
	}
	out := make([]keyOpclass, len(columns))
	for j := range columns {
		out[j] = keyOpclass{column: columns[j], opclass: opclasses[j]}
	}
	return out, nil
}

// addSQL renders ALTER TABLE child ADD CONSTRAINT … FOREIGN KEY … REFERENCES
// parent …, with suffix (" NOT VALID") appended.
func (o *AddForeignKey) addSQL(child, parent, suffix string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ALTER TABLE %s ADD CONSTRAINT %s FOREIGN KEY (%s) REFERENCES %s (%s)",
		child, QuoteIdent(o.Name), quoteColumns("", o.Columns), parent, quoteColumns("", o.References.Columns))
	if a := fkAction(o.OnDelete); a != "" {
		b.WriteString(" ON DELETE " + a)
	}
	if a := fkAction(o.OnUpdate); a != "" {
		b.WriteString(" ON UPDATE " + a)
	}
	b.WriteString(suffix)
	return b.String()
}

func (o *AddForeignKey) plan(b *planBuilder) {
	t := b.table(o.Table)
	p := b.table(o.References.Table)
	name := QuoteIdent(o.Name)
	var key []KeyColumn
	if tf := b.tableFacts(t); tf != nil {
		key = tf.Key
	}
	b.expand(Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("add foreign key %s on %s referencing %s NOT VALID (rows written from now on are checked)", o.Name, t, p),
		SQL:         o.addSQL(t.Quoted(), p.Quoted(), " NOT VALID"),
		Lock:        fmt.Sprintf("%s, on %s and on the referenced %s", lockShareRowExcl, t, p),
		Cost:        "metadata only (no scan)"},
		Step{Transactional: true, Table: t,
			Description: fmt.Sprintf("drop foreign key %s on %s", o.Name, t),
			SQL:         fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", t.Quoted(), name),
			Lock:        fmt.Sprintf("%s, on %s and on the referenced %s", lockAccessExclusive, t, p),
			Cost:        "metadata only"})
	b.enforce(Step{Transactional: true, Table: t, LongRunning: true,
		Description: fmt.Sprintf("validate foreign key %s on %s", o.Name, t),
		SQL:         fmt.Sprintf("ALTER TABLE %s VALIDATE CONSTRAINT %s", t.Quoted(), name),
		Lock:        fmt.Sprintf("%s; ROW SHARE on the referenced %s", lockShareUpdateExcl, p),
		Cost:        "scans the table, looking each row up in the referenced table",
		Violations:  orphanViolations(o.Name, t, key, o.Columns, p, o.References.Columns)})
}

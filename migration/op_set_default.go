package migration

import (
	"context"
	"fmt"
	"strings"
)

func init() { register("set_default", func() Operation { return &SetDefault{} }) }

// SetDefault sets a column's default at expand: metadata only, it applies to
// rows inserted from then on (so a volatile default is fine). Abort puts the
// previous default back exactly, or drops the new one if there was none.
type SetDefault struct {
	TableRaw string `yaml:"table" json:"table"`
	Column   string `yaml:"column" json:"column"`
	Default  string `yaml:"default" json:"default"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*SetDefault) Kind() string { return "set_default" }

// Tables implements Operation.
func (o *SetDefault) Tables() []TableName { return []TableName{o.Table} }

func (o *SetDefault) creates() []object { return []object{defaultObject(o.Table, o.Column)} }

// Needs implements Operation.
func (o *SetDefault) Needs() []Need {
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "set the default of column " + QuoteIdent(o.Column)}}
}

// defaultObject is what set_default and drop_default change: one of them
// per column in a file.
func defaultObject(t TableName, column string) object {
	return object{kind: "default change of column", key: t.String() + "." + column, name: column, field: "column"}
}

func (o *SetDefault) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	if err := validIdentField("column", o.Column); err != nil {
		return err
	}
	if strings.TrimSpace(o.Default) == "" {
		return fieldErr("default", "is required (drop_default removes a default)")
	}
	return singleExpression("default", o.Default)
}

func (o *SetDefault) inspect(ctx context.Context, in *inspector, i int) error {
	tf, shadow, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	cs, err := in.changeableDefault(ctx, i, tf, o.Column)
	if err != nil {
		return err
	}
	typ := tf.Columns[o.Column]
	// Prepared first: one expression, or the server refuses it.
	if err := in.probe(ctx, fmt.Sprintf("SELECT CAST((\n%s\n) AS %s)", o.Default, typ)); err != nil {
		return in.dbErr(i, "default", err)
	}
	// The statement itself on the shadow, undone at once (the shadow keeps no
	// defaults: evaluating nextval() there would move a sequence): assignment
	// to the column's type, no column references, no subqueries.
	if err := in.tryOneStatement(ctx, o.setSQL(shadow)); err != nil {
		return in.dbErr(i, "default", err)
	}
	in.recordFound(i, cs.def)
	// A later bulk_insert may leave the column out.
	if err := in.setShadowNullability(ctx, tf, shadow, o.Column, in.columnAttrs(tf)[o.Column].notNull, true); err != nil {
		return in.dbErr(i, "default", err)
	}
	return nil
}

func (o *SetDefault) setSQL(target string) string {
	// Parenthesized: the default stays one expression.
	return fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT (%s)", target, QuoteIdent(o.Column), o.Default)
}

func (o *SetDefault) plan(b *planBuilder) {
	t := b.table(o.Table)
	set := Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("set the default of %s.%s for new rows", t, o.Column),
		SQL:         o.setSQL(t.Quoted()),
		Lock:        lockAccessExclusive, Cost: "metadata only"}
	undo, known := restoreDefault(b, t, o.Column)
	if !known {
		set.Description += " (its undo, the previous default, is planned once validated against the database)"
		b.expand(set)
		return
	}
	b.expand(set, undo)
}

package migration

import (
	"context"
	"fmt"
)

func init() { register("drop_default", func() Operation { return &DropDefault{} }) }

// DropDefault drops a column's default at expand: metadata only, rows
// inserted from then on get NULL (or must name the column). Abort puts the
// default back exactly.
type DropDefault struct {
	TableRaw string `yaml:"table" json:"table"`
	Column   string `yaml:"column" json:"column"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*DropDefault) Kind() string { return "drop_default" }

// Tables implements Operation.
func (o *DropDefault) Tables() []TableName { return []TableName{o.Table} }

func (o *DropDefault) creates() []object { return []object{defaultObject(o.Table, o.Column)} }

// Needs implements Operation.
func (o *DropDefault) Needs() []Need {
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "drop the default of column " + QuoteIdent(o.Column)}}
}

func (o *DropDefault) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	return validIdentField("column", o.Column)
}

func (o *DropDefault) inspect(ctx context.Context, in *inspector, i int) error {
	tf, shadow, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	cs, err := in.changeableDefault(ctx, i, tf, o.Column)
	if err != nil {
		return err
	}
	if cs.def == nil {
		return in.m.OpError(i, "column", "column %q of %s has no default: nothing to do (remove this operation)", o.Column, tf.Name)
	}
	in.recordFound(i, cs.def)
	// A later bulk_insert must now give a NOT NULL column a value.
	if err := in.setShadowNullability(ctx, tf, shadow, o.Column, in.columnAttrs(tf)[o.Column].notNull, false); err != nil {
		return in.dbErr(i, "column", err)
	}
	return nil
}

func (o *DropDefault) plan(b *planBuilder) {
	t := b.table(o.Table)
	drop := Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("drop the default of %s.%s", t, o.Column),
		SQL:         fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP DEFAULT", t.Quoted(), QuoteIdent(o.Column)),
		Lock:        lockAccessExclusive, Cost: "metadata only"}
	undo, known := restoreDefault(b, t, o.Column)
	if !known {
		drop.Description += " (its undo, the previous default, is planned once validated against the database)"
		b.expand(drop)
		return
	}
	b.expand(drop, undo)
}

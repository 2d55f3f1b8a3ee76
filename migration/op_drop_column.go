package migration

import (
	"context"
	"fmt"
)

func init() { register("drop_column", func() Operation { return &DropColumn{} }) }

// DropColumn drops a column at contract. A NOT NULL column without a
// default loses its NOT NULL at expand (metadata only; restored on abort,
// as drop_not_null does), so the new application version, which no longer
// writes it, can insert in the window.
type DropColumn struct {
	TableRaw string `yaml:"table" json:"table"`
	Column   string `yaml:"column" json:"column"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*DropColumn) Kind() string { return "drop_column" }

// Tables implements Operation.
func (o *DropColumn) Tables() []TableName { return []TableName{o.Table} }

func (o *DropColumn) creates() []object { return nil }

func (o *DropColumn) Needs() []Need {
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "drop column " + QuoteIdent(o.Column)}}
}

func (o *DropColumn) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	return validIdentField("column", o.Column)
}

func (o *DropColumn) inspect(ctx context.Context, in *inspector, i int) error {
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
	cs, err := in.readColumn(ctx, i, "column", tf, o.Column)
	if err != nil {
		return err
	}
	// The new application no longer writes the column: a NOT NULL one with
	// nothing to fill it would fail its inserts in the window. Relaxed at
	// expand (restored on abort), unless a drop_not_null of the file does it.
	if cs.existing && cs.notNull && cs.def == nil && !cs.identity && !cs.generated && !o.relaxedBefore(in.m, i) {
		v := "relax"
		in.recordFound(i, &v)
	}
	return nil
}

// relaxedBefore reports whether an earlier drop_not_null of m drops the
// column's NOT NULL already.
func (o *DropColumn) relaxedBefore(m *Migration, i int) bool {
	for _, op := range m.Operations[:i] {
		if d, ok := op.(*DropNotNull); ok && d.Column == o.Column && d.Table == o.Table {
			return true
		}
	}
	return false
}

func (o *DropColumn) plan(b *planBuilder) {
	t := b.table(o.Table)
	if v, ok, _ := b.foundAtValidation(); ok && v == "relax" {
		// As drop_not_null: DROP NOT NULL at expand, restored on abort.
		(&DropNotNull{TableRaw: o.TableRaw, Column: o.Column, Table: o.Table}).plan(b)
	}
	// The up expressions of the window may read the column: the sync stops
	// before it.
	b.contract(Step{Transactional: true, Table: t, BreaksSync: true,
		Description: fmt.Sprintf("drop column %s.%s", t, o.Column),
		SQL:         fmt.Sprintf("ALTER TABLE %s DROP COLUMN IF EXISTS %s", t.Quoted(), QuoteIdent(o.Column)),
		Lock:        lockAccessExclusive, Cost: "metadata only (space reclaimed by later rewrites)"})
}

package migration

import (
	"context"
	"fmt"
)

func init() { register("set_not_null", func() Operation { return &SetNotNull{} }) }

// SetNotNull makes an existing column NOT NULL at contract, without a long
// lock: a NOT VALID check, VALIDATE (writes continue), SET NOT NULL (proven
// by the check, no scan), drop the check — the route of a NOT NULL
// add_column. Existing NULLs are refused at validation, with their count
// and sample keys.
type SetNotNull struct {
	TableRaw string `yaml:"table" json:"table"`
	Column   string `yaml:"column" json:"column"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*SetNotNull) Kind() string { return "set_not_null" }

// Tables implements Operation.
func (o *SetNotNull) Tables() []TableName { return []TableName{o.Table} }

func (o *SetNotNull) creates() []object { return []object{nullabilityObject(o.Table, o.Column)} }

// Needs implements Operation.
func (o *SetNotNull) Needs() []Need {
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "set column " + QuoteIdent(o.Column) + " NOT NULL"}}
}

// nullabilityObject is what set_not_null and drop_not_null change: one of
// them per column in a file.
func nullabilityObject(t TableName, column string) object {
	return object{kind: "nullability change of column", key: t.String() + "." + column, name: column, field: "column"}
}

func (o *SetNotNull) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	return validIdentField("column", o.Column)
}

func (o *SetNotNull) inspect(ctx context.Context, in *inspector, i int) error {
	tf, _, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	cs, err := in.readColumn(ctx, i, "column", tf, o.Column)
	if err != nil {
		return err
	}
	switch {
	case !cs.existing:
		return in.m.OpError(i, "column", "column %q is added by this migration: give its add_column nullable: false instead", o.Column)
	case cs.notNull:
		return in.m.OpError(i, "column", "column %q of %s is already NOT NULL: nothing to do (remove this operation)", o.Column, tf.Name)
	}
	// Nothing changes while rows hold NULL: the contract would fail on them.
	return in.refuseViolations(ctx, i, "column", o.violations(tf.Name, tf.Key))
}

func (o *SetNotNull) violations(t TableName, key []KeyColumn) *Violations {
	return NewViolations(fmt.Sprintf("NOT NULL on column %q", o.Column), t, key, "r."+QuoteIdent(o.Column)+" IS NULL")
}

func (o *SetNotNull) plan(b *planBuilder) {
	t := b.table(o.Table)
	var key []KeyColumn
	if tf := b.tableFacts(o.Table); tf != nil {
		key = tf.Key
	}
	b.enforce(withViolations(notNullSteps(t, o.Column), o.violations(t, key))...)
}

// withViolations sets v on the VALIDATE step of notNullSteps (its only
// long-running step), so a row written NULL after validation is named
// when the contract fails on it.
func withViolations(steps []Step, v *Violations) []Step {
	for j := range steps {
		if steps[j].LongRunning {
			steps[j].Violations = v
		}
	}
	return steps
}

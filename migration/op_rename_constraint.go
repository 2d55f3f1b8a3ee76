package migration

import (
	"context"
	"fmt"
)

func init() { register("rename_constraint", func() Operation { return &RenameConstraint{} }) }

// RenameConstraint renames a constraint of a table at contract: the old
// application may name the constraint (ON CONFLICT ON CONSTRAINT, error
// handling that matches the name in a unique_violation), so the name
// changes once it is gone. Metadata only; a primary key, unique or
// exclusion constraint's index is renamed with it.
type RenameConstraint struct {
	TableRaw string `yaml:"table" json:"table"`
	From     string `yaml:"from" json:"from"`
	To       string `yaml:"to" json:"to"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*RenameConstraint) Kind() string { return "rename_constraint" }

// Tables implements Operation.
func (o *RenameConstraint) Tables() []TableName { return []TableName{o.Table} }

func (o *RenameConstraint) creates() []object {
	// The new name is a constraint of the table like any other operation's
	// (constraint names are unique per table); the old one is changed once.
	return []object{constraintChangeObject(o.Table, o.From, "from"),
		{kind: "constraint", key: o.Table.String() + "." + o.To, name: o.To, field: "to"}}
}

// Needs implements Operation.
func (o *RenameConstraint) Needs() []Need {
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "rename constraint " + QuoteIdent(o.From)}}
}

func (o *RenameConstraint) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	if err := validIdentField("from", o.From); err != nil {
		return err
	}
	if err := validIdentField("to", o.To); err != nil {
		return err
	}
	if o.From == o.To {
		return fieldErr("to", "is the same name as from (%q)", o.From)
	}
	return nil
}

func (o *RenameConstraint) inspect(ctx context.Context, in *inspector, i int) error {
	tf, shadow, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	from, err := in.readConstraint(ctx, tf.Name, o.From)
	if err != nil {
		return in.dbErr(i, "from", err)
	}
	if from == nil {
		return in.m.OpError(i, "from", "constraint %q does not exist on %s", o.From, tf.Name)
	}
	var onTable, onShadow, relation bool
	err = in.tx.QueryRow(ctx, `SELECT
			EXISTS (SELECT FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $3),
			EXISTS (SELECT FROM pg_constraint WHERE conrelid = to_regclass($2) AND conname = $3),
			to_regclass($4) IS NOT NULL`,
		tf.Name.Quoted(), shadow, o.To, quoteInSchema(tf.Name.Schema, o.To)).Scan(&onTable, &onShadow, &relation)
	switch {
	case err != nil:
		return in.dbErr(i, "to", err)
	case onTable:
		return in.m.OpError(i, "to", "table %s already has a constraint named %q", tf.Name, o.To)
	case onShadow:
		return in.m.OpError(i, "to", "a constraint named %q on table %s is created by an earlier operation", o.To, tf.Name)
	case relation && from.ownsIndex():
		return in.m.OpError(i, "to", "a relation named %q already exists in schema %s (renaming %s constraint %q renames its index too)",
			o.To, tf.Name.Schema, constraintTypeNames[from.typ], o.From)
	}
	return nil
}

func (o *RenameConstraint) plan(b *planBuilder) {
	t := b.table(o.Table)
	b.contract(Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("rename constraint %s of %s to %s", o.From, t, o.To),
		SQL:         fmt.Sprintf("ALTER TABLE %s RENAME CONSTRAINT %s TO %s", t.Quoted(), QuoteIdent(o.From), QuoteIdent(o.To)),
		Lock:        lockAccessExclusive, Cost: "metadata only"})
}

package migration

import (
	"context"
	"fmt"
	"strings"
)

func init() { register("drop_constraint", func() Operation { return &DropConstraint{} }) }

// DropConstraint drops a constraint of a table at contract, once the old
// application (which may rely on it) is gone. Metadata only; a primary key,
// unique or exclusion constraint takes its index with it.
type DropConstraint struct {
	TableRaw string `yaml:"table" json:"table"`
	Name     string `yaml:"name" json:"name"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*DropConstraint) Kind() string { return "drop_constraint" }

// Tables implements Operation. A foreign key's referenced table is locked
// too (briefly) but is not listed: the file does not name it.
func (o *DropConstraint) Tables() []TableName { return []TableName{o.Table} }

func (o *DropConstraint) creates() []object {
	return []object{constraintChangeObject(o.Table, o.Name, "name")}
}

// constraintChangeObject is an existing constraint that drop_constraint or
// rename_constraint changes: one of them per constraint in a file.
func constraintChangeObject(t TableName, name, field string) object {
	return object{kind: "change of constraint", key: t.String() + "." + name, name: name, field: field}
}

// Needs implements Operation.
func (o *DropConstraint) Needs() []Need {
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "drop constraint " + QuoteIdent(o.Name)}}
}

func (o *DropConstraint) droppedConstraint() (TableName, string) { return o.Table, o.Name }

func (o *DropConstraint) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	return validIdentField("name", o.Name)
}

func (o *DropConstraint) inspect(ctx context.Context, in *inspector, i int) error {
	tf, _, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	c, err := in.readConstraint(ctx, tf.Name, o.Name)
	if err != nil {
		return in.dbErr(i, "name", err)
	}
	if c == nil {
		return in.m.OpError(i, "name", "constraint %q does not exist on %s", o.Name, tf.Name)
	}
	if c.replIdent {
		return in.m.OpError(i, "name", "the index of %s constraint %q is the REPLICA IDENTITY of %s: change the replica identity first (a logical replica would stop receiving its updates and deletes)", constraintTypeNames[c.typ], o.Name, tf.Name)
	}
	deps, err := in.blockingDependents(ctx, i, c.oid, c.index)
	if err != nil {
		return in.dbErr(i, "name", err)
	}
	if len(deps) > 0 {
		return in.m.OpError(i, "name", "constraint %q of %s cannot be dropped while other objects depend on it: %s (drop them first, e.g. a drop_constraint before this one)", o.Name, tf.Name, strings.Join(deps, ", "))
	}
	return nil
}

// inspectLate refuses the key of a table this migration backfills: the
// backfill and the sync locate rows by it, and without a primary key the
// application's UPDATE and DELETE fail while the table is in the sync's
// publication (which lasts until the end of contract).
func (o *DropConstraint) inspectLate(ctx context.Context, in *inspector, i int) error {
	tf := in.facts.Table(o.Table)
	if tf == nil {
		return nil
	}
	c, err := in.readConstraint(ctx, tf.Name, o.Name)
	if err != nil {
		return in.dbErr(i, "name", err)
	}
	if c == nil {
		return nil // refused by inspect
	}
	if (c.typ == "p" && in.backfillsTable(tf.Name)) || (c.ownsIndex() && in.isBackfillKey(tf.Name, c.columns)) {
		return in.m.OpError(i, "name", "%s constraint %q is the key this migration backfills and syncs %s on (the sync's publication needs it until the end of contract): drop it in a later migration", constraintTypeNames[c.typ], o.Name, tf.Name)
	}
	return nil
}

func (o *DropConstraint) plan(b *planBuilder) {
	t := b.table(o.Table)
	b.contract(Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("drop constraint %s of %s", o.Name, t),
		SQL:         fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", t.Quoted(), QuoteIdent(o.Name)),
		Lock:        lockAccessExclusive + "; a foreign key's referenced table too",
		Cost:        "metadata only (a primary key or unique constraint drops its index)"})
}

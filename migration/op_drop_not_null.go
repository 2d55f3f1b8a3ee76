package migration

import (
	"context"
	"fmt"
	"slices"
)

func init() { register("drop_not_null", func() Operation { return &DropNotNull{} }) }

// DropNotNull makes a column nullable at expand, so the new application
// version may write NULL in the window (the old one never does: it knew the
// column as NOT NULL). Metadata only. Abort puts NOT NULL back the way
// contract enforces it: a guard that refuses, naming them, when rows written
// in the window hold NULL (nothing is changed then), a NOT VALID check,
// VALIDATE, SET NOT NULL proven by the check, drop the check.
type DropNotNull struct {
	TableRaw string `yaml:"table" json:"table"`
	Column   string `yaml:"column" json:"column"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*DropNotNull) Kind() string { return "drop_not_null" }

// Tables implements Operation.
func (o *DropNotNull) Tables() []TableName { return []TableName{o.Table} }

func (o *DropNotNull) creates() []object { return []object{nullabilityObject(o.Table, o.Column)} }

// Needs implements Operation.
func (o *DropNotNull) Needs() []Need {
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "drop NOT NULL of column " + QuoteIdent(o.Column)}}
}

func (o *DropNotNull) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	return validIdentField("column", o.Column)
}

func (o *DropNotNull) inspect(ctx context.Context, in *inspector, i int) error {
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
		return in.m.OpError(i, "column", "column %q is added by this migration, nullable until contract: leave nullable: false out of its add_column instead", o.Column)
	case !cs.notNull:
		return in.m.OpError(i, "column", "column %q of %s is already nullable: nothing to do (remove this operation)", o.Column, tf.Name)
	case cs.inPrimaryKey:
		return in.m.OpError(i, "column", "column %q is part of the primary key of %s: a primary key column stays NOT NULL", o.Column, tf.Name)
	case cs.identity:
		return in.m.OpError(i, "column", "column %q of %s is an identity column: an identity column stays NOT NULL", o.Column, tf.Name)
	case cs.inReplicaIdentity:
		return in.m.OpError(i, "column", "column %q is part of the index that is the REPLICA IDENTITY of %s: change the replica identity first", o.Column, tf.Name)
	}
	// Later operations (a bulk_insert) may write NULL into it.
	a := in.columnAttrs(tf)[o.Column]
	if err := in.setShadowNullability(ctx, tf, shadow, o.Column, false, a.filled); err != nil {
		return in.dbErr(i, "column", err)
	}
	return nil
}

// inspectLate refuses a column of the key a backfill of this migration
// paginates on (a unique index over NOT NULL columns): once expand lets it
// hold NULL it is no longer a key.
func (o *DropNotNull) inspectLate(_ context.Context, in *inspector, i int) error {
	tf := in.facts.Table(o.Table)
	if tf == nil || !in.backfillsTable(tf.Name) {
		return nil
	}
	if slices.ContainsFunc(tf.Key, func(k KeyColumn) bool { return k.Name == o.Column }) {
		return in.m.OpError(i, "column", "column %q is part of the key this migration backfills %s on: a key column stays NOT NULL until the backfill is over (drop it in a later migration)", o.Column, tf.Name)
	}
	return nil
}

func (o *DropNotNull) plan(b *planBuilder) {
	t := b.table(o.Table)
	var key []KeyColumn
	if tf := b.tableFacts(o.Table); tf != nil {
		key = tf.Key
	}
	v := NewViolations(fmt.Sprintf("NOT NULL on column %q", o.Column), t, key, "r."+QuoteIdent(o.Column)+" IS NULL")
	undo := []Step{{Transactional: true, Table: t, LongRunning: true,
		Description: fmt.Sprintf("restore NOT NULL of %s.%s: refuse, changing nothing, if rows written since expand hold NULL", t, o.Column),
		SQL:         restoreNotNullGuard(t, o.Column, v),
		Lock:        lockAccessShareScan, Cost: "scans the table"}}
	for _, s := range withViolations(notNullSteps(t, o.Column), v) {
		s.Description = fmt.Sprintf("restore NOT NULL of %s.%s: %s", t, o.Column, s.Description)
		undo = append(undo, s)
	}
	b.expand(Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("drop NOT NULL of %s.%s", t, o.Column),
		SQL:         fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL", t.Quoted(), QuoteIdent(o.Column)),
		Lock:        lockAccessExclusive, Cost: "metadata only"}, undo...)
}

// restoreNotNullGuard is a statement that fails, with the count and sample
// keys of the rows v finds, when there are any: the first undo step of
// drop_not_null, so an abort that cannot put NOT NULL back says why before
// it has changed anything.
func restoreNotNullGuard(t TableName, column string, v *Violations) string {
	body := "\nDECLARE n bigint; sample text;\nBEGIN\n" +
		"  n := (" + v.Count + ");\n" +
		"  IF n > 0 THEN\n" +
		"    sample := (SELECT string_agg(k, ' ') FROM (" + v.Sample + ") AS s(k));\n" +
		"    RAISE EXCEPTION 'cannot restore NOT NULL on column % of %: % rows hold NULL (written since expand), e.g. keys %', " +
		QuoteLiteral(column) + ", " + QuoteLiteral(t.String()) + ", n, sample\n" +
		"      USING ERRCODE = 'not_null_violation', HINT = 'give those rows a value and abort again, or abort --force to leave the column nullable';\n" +
		"  END IF;\nEND\n"
	tag := guardedDollarQuote(body)
	return "DO " + tag + body + tag
}

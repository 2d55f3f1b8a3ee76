package migration

import (
	"context"
	"fmt"
	"strings"

	"github.com/refit-dev/refit/sqlstate"
)

func init() { register("add_check", func() Operation { return &AddCheck{} }) }

// AddCheck adds a CHECK constraint without holding a long lock: NOT VALID
// at expand (a brief ACCESS EXCLUSIVE, no scan; every row written from then
// on is checked), VALIDATE at contract (a scan under SHARE UPDATE
// EXCLUSIVE: reads and writes continue). Existing rows that fail the check
// are found at validation, before anything changes.
type AddCheck struct {
	TableRaw   string `yaml:"table" json:"table"`
	Name       string `yaml:"name" json:"name"`
	Expression string `yaml:"expression" json:"expression"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*AddCheck) Kind() string { return "add_check" }

// Tables implements Operation.
func (o *AddCheck) Tables() []TableName { return []TableName{o.Table} }

func (o *AddCheck) creates() []object {
	return []object{constraintObject(o.Table, o.Name, "name")}
}

// Needs implements Operation.
func (o *AddCheck) Needs() []Need {
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "add check " + QuoteIdent(o.Name)}}
}

func (o *AddCheck) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	if err := validIdentField("name", o.Name); err != nil {
		return err
	}
	if strings.TrimSpace(o.Expression) == "" {
		return fieldErr("expression", "is required")
	}
	return singleExpression("expression", o.Expression)
}

func (o *AddCheck) inspect(ctx context.Context, in *inspector, i int) error {
	tf, shadow, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	if err := in.refuseConstraintName(ctx, i, "name", tf, shadow, o.Name); err != nil {
		return err
	}
	// Prepared first: the extended protocol takes one statement, so the
	// expression is known to be one before it is spliced below.
	alias := QuoteIdent(tf.Name.Name)
	if err := in.probe(ctx, fmt.Sprintf("SELECT 1 FROM %s AS %s WHERE (\n%s\n) LIMIT 0", shadow, alias, o.Expression)); err != nil {
		return in.dbErr(i, "expression", err)
	}
	// The constraint itself on the (empty) shadow: a boolean expression
	// over this table alone, no subquery, aggregate or set-returning
	// function. It stays there for the operations that follow.
	if err := in.exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s)", shadow, QuoteIdent(o.Name), o.Expression)); err != nil {
		if sqlstate.Is(err, sqlstate.UndefinedTable) {
			// The probe above read it with the table's name as alias: the
			// expression qualifies a column with it (books.price), which
			// the shadow, under another name, cannot check.
			return in.m.OpError(i, "expression", "name the columns of %s without the table's name (price, not %s.price): %v", tf.Name, tf.Name.Name, err)
		}
		return in.dbErr(i, "expression", err)
	}
	// Existing rows can be checked when the expression reads only columns
	// the table has now (not ones an earlier operation adds): it plans
	// against the table itself.
	if err := in.probe(ctx, fmt.Sprintf("SELECT 1 FROM %s AS %s WHERE (\n%s\n) LIMIT 0", tf.Name.Quoted(), alias, o.Expression)); err != nil {
		if sqlstate.Content(err) {
			return nil // checked by VALIDATE, and every write from expand on
		}
		return in.dbErr(i, "expression", err)
	}
	return in.refuseExisting(ctx, i, "expression", checkViolations(o.Name, tf.Name, tf.Key, o.Expression))
}

func (o *AddCheck) plan(b *planBuilder) {
	t := b.table(o.Table)
	name := QuoteIdent(o.Name)
	var key []KeyColumn
	if tf := b.tableFacts(t); tf != nil {
		key = tf.Key
	}
	b.expand(Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("add check %s on %s NOT VALID (rows written from now on are checked)", o.Name, t),
		SQL:         fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s) NOT VALID", t.Quoted(), name, o.Expression),
		Lock:        lockAccessExclusive, Cost: "metadata only (no scan)"},
		Step{Transactional: true, Table: t,
			Description: fmt.Sprintf("drop check %s on %s", o.Name, t),
			SQL:         fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", t.Quoted(), name),
			Lock:        lockAccessExclusive, Cost: "metadata only"})
	b.enforce(Step{Transactional: true, Table: t, LongRunning: true,
		Description: fmt.Sprintf("validate check %s on %s", o.Name, t),
		SQL:         fmt.Sprintf("ALTER TABLE %s VALIDATE CONSTRAINT %s", t.Quoted(), name),
		Lock:        lockShareUpdateExcl, Cost: "scans the table",
		Violations: checkViolations(o.Name, t, key, o.Expression)})
}

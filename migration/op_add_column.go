package migration

import (
	"context"
	"fmt"
	"strings"
)

func init() { register("add_column", func() Operation { return &AddColumn{} }) }

// Column describes a column added by add_column.
type Column struct {
	Name     string `yaml:"name" json:"name"`
	Type     string `yaml:"type" json:"type"`
	Nullable *bool  `yaml:"nullable" json:"nullable,omitempty"`
	Default  string `yaml:"default" json:"default,omitempty"`
}

// IsNullable reports the column's final nullability (default true).
func (c Column) IsNullable() bool { return c.Nullable == nil || *c.Nullable }

// AddColumn adds a column, nullable during the window. Up is an SQL expression
// over the row that derives the new column from the old shape; the backfill
// and the sync both evaluate it against the live row.
type AddColumn struct {
	TableRaw string `yaml:"table" json:"table"`
	Column   Column `yaml:"column" json:"column"`
	Up       string `yaml:"up" json:"up,omitempty"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*AddColumn) Kind() string { return "add_column" }

// Tables implements Operation.
func (o *AddColumn) Tables() []TableName { return []TableName{o.Table} }

func (o *AddColumn) creates() []object {
	return []object{columnObject(o.Table, o.Column.Name, "column.name")}
}

func (o *AddColumn) Needs() []Need {
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "add column " + QuoteIdent(o.Column.Name)}}
}

func (o *AddColumn) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	if err := validIdentField("column.name", o.Column.Name); err != nil {
		return err
	}
	if strings.TrimSpace(o.Column.Type) == "" {
		return fieldErr("column.type", "is required")
	}
	if err := singleExpression("column.type", o.Column.Type); err != nil {
		return err
	}
	if o.Up != "" {
		if err := singleExpression("up", o.Up); err != nil {
			return err
		}
	}
	if o.Column.Default != "" {
		if err := singleExpression("column.default", o.Column.Default); err != nil {
			return err
		}
	}
	if !o.Column.IsNullable() && o.Up == "" && o.Column.Default == "" {
		return fieldErr("column.nullable", "a NOT NULL column needs an up expression or a default to fill existing rows")
	}
	return nil
}

func (o *AddColumn) inspect(ctx context.Context, in *inspector, i int) error {
	tf, shadow, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	if _, exists := tf.Columns[o.Column.Name]; exists {
		return in.m.OpError(i, "column.name", "column %q already exists in %s", o.Column.Name, tf.Name)
	}
	// Prepared first: the extended protocol refuses more than one
	// statement, so the text is known to be one type name before it is
	// spliced into the statements run below.
	if err := in.probe(ctx, fmt.Sprintf("SELECT CAST(NULL AS %s)", o.Column.Type)); err != nil {
		return in.dbErr(i, "column.type", err)
	}
	// Later operations (indexes, other expressions) may use the new column.
	col := QuoteIdent(o.Column.Name)
	if err := in.exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", shadow, col, o.Column.Type)); err != nil {
		return in.dbErr(i, "column.type", err)
	}
	tf.Columns[o.Column.Name] = o.Column.Type
	if o.Column.Default != "" {
		if err := in.probe(ctx, fmt.Sprintf("SELECT CAST((\n%s\n) AS %s)", o.Column.Default, o.Column.Type)); err != nil {
			return in.dbErr(i, "column.default", err)
		}
		volatile, err := in.volatileDefault(ctx, o.Column.Type, o.Column.Default)
		if err != nil {
			return in.dbErr(i, "column.default", err)
		}
		in.facts.VolatileDefault[i] = volatile
	}
	// The backfill's own statement: assignment rules, not an explicit CAST,
	// decide whether the expression fits the column, and the IS DISTINCT
	// FROM guard needs an equality operator.
	field, set := "up", ColumnSet{Column: o.Column.Name, Expr: o.Up}
	if o.Up == "" && in.facts.VolatileDefault[i] {
		field, set = "column.default", ColumnSet{Column: o.Column.Name, Expr: o.Column.Default, Fill: true}
	}
	if set.Expr != "" {
		if err := in.probe(ctx, RecomputeSQL(shadow+" AS "+QuoteIdent(o.Table.Name), []ColumnSet{set}, "true")); err != nil {
			return in.dbErr(i, field, err)
		}
	}
	return nil
}

func (o *AddColumn) plan(b *planBuilder) {
	t := b.table(o.Table)
	col := QuoteIdent(o.Column.Name)
	volatile := b.volatileDefault()
	def := ""
	if o.Column.Default != "" && !volatile {
		// Parenthesized: the default stays one expression even if it reads
		// like a column constraint ("1 NOT NULL").
		def = " DEFAULT (" + o.Column.Default + ")"
	}
	drop := Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("drop column %s.%s", t, o.Column.Name),
		SQL:         fmt.Sprintf("ALTER TABLE %s DROP COLUMN IF EXISTS %s", t.Quoted(), col),
		Lock:        lockAccessExclusive, Cost: "metadata only (no rewrite)"}
	b.expand(Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("add column %s.%s (nullable during the window)", t, o.Column.Name),
		SQL:         fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s%s", t.Quoted(), col, o.Column.Type, def),
		Lock:        lockAccessExclusive, Cost: "metadata only (no rewrite)"}, drop)
	if volatile {
		b.expand(Step{Transactional: true, Table: t,
			Description: fmt.Sprintf("set volatile default of %s.%s for new rows (existing rows are backfilled)", t, o.Column.Name),
			SQL:         fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT (%s)", t.Quoted(), col, o.Column.Default),
			Lock:        lockAccessExclusive, Cost: "metadata only"})
	}
	switch {
	case o.Up != "":
		b.backfill(t, ColumnSet{Column: o.Column.Name, Expr: o.Up})
	case volatile:
		// Not a function of the row: fill the existing rows once, leave
		// every row the application writes alone.
		b.backfill(t, ColumnSet{Column: o.Column.Name, Expr: o.Column.Default, Fill: true})
	}
	if !o.Column.IsNullable() {
		b.enforce(notNullSteps(t, o.Column.Name)...)
	}
}

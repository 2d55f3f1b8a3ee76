package migration

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/refit-dev/refit/sqlstate"
)

func init() { register("create_index", func() Operation { return &CreateIndex{} }) }

// CreateIndex builds an index CONCURRENTLY, outside any transaction, after the
// backfill (so the backfill does not pay for index maintenance).
type CreateIndex struct {
	Name     string   `yaml:"name" json:"name"`
	TableRaw string   `yaml:"table" json:"table"`
	Columns  []string `yaml:"columns" json:"columns"`
	Unique   bool     `yaml:"unique" json:"unique,omitempty"`
	Where    string   `yaml:"where" json:"where,omitempty"`
	Method   string   `yaml:"method" json:"method,omitempty"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*CreateIndex) Kind() string { return "create_index" }

// Tables implements Operation.
func (o *CreateIndex) Tables() []TableName { return []TableName{o.Table} }

func (o *CreateIndex) creates() []object {
	// Index names are unique per schema.
	return []object{{kind: "index", key: TableName{Schema: o.Table.Schema, Name: o.Name}.String(), name: o.Name, field: "name"}}
}

func (o *CreateIndex) Needs() []Need {
	what := "build index " + QuoteIdent(o.Name)
	return []Need{{Kind: NeedOwner, Table: o.Table, For: what},
		{Kind: NeedSchemaCreate, Table: o.Table, Index: true, For: what + " (CREATE INDEX checks CREATE on the schema, CONCURRENTLY too)"}}
}

var methodRe = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func (o *CreateIndex) validate() error {
	if err := validIdentField("name", o.Name); err != nil {
		return err
	}
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	if len(o.Columns) == 0 {
		return fieldErr("columns", "at least one column is required")
	}
	for i, c := range o.Columns {
		if err := validIdentField(fmt.Sprintf("columns[%d]", i), c); err != nil {
			return err
		}
	}
	if o.Where != "" {
		if err := singleExpression("where", o.Where); err != nil {
			return err
		}
	}
	if o.Method != "" && !methodRe.MatchString(o.Method) {
		return fieldErr("method", "%q is not an index method name (btree, hash, gin, gist, brin, …)", o.Method)
	}
	return nil
}

func (o *CreateIndex) inspect(ctx context.Context, in *inspector, i int) error {
	tf, shadow, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	for j, c := range o.Columns {
		if _, ok := tf.Columns[c]; !ok {
			return in.m.OpError(i, fmt.Sprintf("columns[%d]", j), "column %q does not exist in %s", c, o.Table)
		}
	}
	idx := QuoteIdent(tf.Name.Schema) + "." + QuoteIdent(o.Name)
	var exists bool
	if err := in.tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", idx).Scan(&exists); err != nil {
		return in.dbErr(i, "name", err)
	}
	if exists {
		return in.m.OpError(i, "name", "a relation named %s already exists", o.Name)
	}
	if o.Method != "" {
		var ok bool
		if err := in.tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_am WHERE amname = $1 AND amtype = 'i')", o.Method).Scan(&ok); err != nil {
			return in.dbErr(i, "method", err)
		}
		if !ok {
			return in.m.OpError(i, "method", "unknown index method %q", o.Method)
		}
	}
	if o.Where != "" {
		if err := in.probe(ctx, fmt.Sprintf("SELECT 1 FROM %s AS %s WHERE (\n%s\n) LIMIT 0", shadow, QuoteIdent(o.Table.Name), o.Where)); err != nil {
			return in.dbErr(i, "where", err)
		}
	}
	// The same index on the (empty) shadow: the method, the operator
	// classes of the columns' types, and a predicate's immutability are
	// checked now rather than after the backfill. The predicate was
	// prepared above, so it is known to be one expression.
	if err := in.exec(ctx, o.createSQL("", shadow)); err != nil {
		field := "columns"
		switch {
		case o.Where != "" && sqlstate.Is(err, sqlstate.InvalidObjectDefinition):
			field = "where"
		case o.Method != "":
			field = "method"
		}
		return in.dbErr(i, field, err)
	}
	return nil
}

func (o *CreateIndex) plan(b *planBuilder) {
	t := b.table(o.Table)
	idx := QuoteIdent(o.Name)
	if t.Schema != "" {
		idx = QuoteIdent(t.Schema) + "." + idx
	}
	b.postBackfill(Step{Table: t, LongRunning: true,
		Description: fmt.Sprintf("build index %s on %s concurrently", o.Name, t),
		SQL:         o.createSQL("CONCURRENTLY "+QuoteIdent(o.Name), t.Quoted()), Index: idx,
		Lock: lockShareUpdateExcl, Cost: "scans the table (outside any transaction)"},
		Step{Table: t,
			Description: "drop index " + o.Name,
			SQL:         "DROP INDEX CONCURRENTLY IF EXISTS " + idx,
			Lock:        lockShareUpdateExcl, Cost: "catalog only (outside any transaction)"})
}

// createSQL renders CREATE [UNIQUE] INDEX <name> ON <target> …; name may
// be empty (the server picks one) or carry CONCURRENTLY.
func (o *CreateIndex) createSQL(name, target string) string {
	cols := make([]string, len(o.Columns))
	for j, c := range o.Columns {
		cols[j] = QuoteIdent(c)
	}
	var b strings.Builder
	b.WriteString("CREATE ")
	if o.Unique {
		b.WriteString("UNIQUE ")
	}
	b.WriteString("INDEX ")
	if name != "" {
		b.WriteString(name + " ")
	}
	b.WriteString("ON " + target)
	if o.Method != "" {
		b.WriteString(" USING " + o.Method)
	}
	b.WriteString(" (" + strings.Join(cols, ", ") + ")")
	if o.Where != "" {
		b.WriteString(" WHERE (" + o.Where + ")")
	}
	return b.String()
}

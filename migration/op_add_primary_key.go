package migration

import "context"

func init() { register("add_primary_key", func() Operation { return &AddPrimaryKey{} }) }

// AddPrimaryKey adds a primary key without holding a long lock: its index
// is built CONCURRENTLY after the backfill (reads and writes continue) and
// attached at contract (ADD CONSTRAINT … PRIMARY KEY USING INDEX, a brief
// ACCESS EXCLUSIVE without a scan). The columns must be NOT NULL already:
// setting NOT NULL here would scan the table under ACCESS EXCLUSIVE, so a
// nullable column is refused at validation. A table that has a primary key
// is refused; existing duplicates are found at validation.
type AddPrimaryKey struct {
	TableRaw string   `yaml:"table" json:"table"`
	Columns  []string `yaml:"columns" json:"columns"`
	// Name defaults to <table>_pkey, PostgreSQL's own choice.
	Name string `yaml:"name" json:"name,omitempty"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*AddPrimaryKey) Kind() string { return "add_primary_key" }

// Tables implements Operation.
func (o *AddPrimaryKey) Tables() []TableName { return []TableName{o.Table} }

// ConstraintName is the primary key's name: Name, or <table>_pkey.
func (o *AddPrimaryKey) ConstraintName() string {
	if o.Name != "" {
		return o.Name
	}
	return truncateName(o.Table.Name, maxIdentLen-len("_pkey")) + "_pkey"
}

func (o *AddPrimaryKey) key() uniqueKey {
	k := uniqueKey{table: o.Table, name: o.ConstraintName(), columns: o.Columns, primary: true}
	if o.Name != "" {
		k.nameField = "name"
	}
	return k
}

func (o *AddPrimaryKey) creates() []object { return o.key().creates() }

// Needs implements Operation.
func (o *AddPrimaryKey) Needs() []Need { return o.key().needs() }

func (o *AddPrimaryKey) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	if o.Name != "" {
		if err := validIdentField("name", o.Name); err != nil {
			return err
		}
	}
	return validColumnsField("columns", o.Columns)
}

func (o *AddPrimaryKey) inspect(ctx context.Context, in *inspector, i int) error {
	return o.key().inspect(ctx, in, i)
}

func (o *AddPrimaryKey) plan(b *planBuilder) { o.key().plan(b) }

package migration

import "context"

func init() { register("add_unique", func() Operation { return &AddUnique{} }) }

// AddUnique adds a unique constraint without holding a long lock: its
// index is built CONCURRENTLY after the backfill (reads and writes
// continue) and attached at contract (ADD CONSTRAINT … UNIQUE USING INDEX,
// a brief ACCESS EXCLUSIVE without a scan). Existing duplicates are found at
// validation, before anything changes.
type AddUnique struct {
	TableRaw string   `yaml:"table" json:"table"`
	Name     string   `yaml:"name" json:"name"`
	Columns  []string `yaml:"columns" json:"columns"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*AddUnique) Kind() string { return "add_unique" }

// Tables implements Operation.
func (o *AddUnique) Tables() []TableName { return []TableName{o.Table} }

func (o *AddUnique) key() uniqueKey {
	return uniqueKey{table: o.Table, name: o.Name, nameField: "name", columns: o.Columns}
}

func (o *AddUnique) creates() []object { return o.key().creates() }

// Needs implements Operation.
func (o *AddUnique) Needs() []Need { return o.key().needs() }

func (o *AddUnique) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	if err := validIdentField("name", o.Name); err != nil {
		return err
	}
	return validColumnsField("columns", o.Columns)
}

func (o *AddUnique) inspect(ctx context.Context, in *inspector, i int) error {
	return o.key().inspect(ctx, in, i)
}

func (o *AddUnique) plan(b *planBuilder) { o.key().plan(b) }

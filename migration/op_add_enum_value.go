package migration

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

func init() { register("add_enum_value", func() Operation { return &AddEnumValue{} }) }

// AddEnumValue adds a value to an existing ENUM type during expand:
// ALTER TYPE … ADD VALUE IF NOT EXISTS, outside any transaction.
//
// PostgreSQL cannot drop an enum value, so an abort leaves it in place. That
// is harmless: no row uses it until an application writes it, and a run
// after the abort finds it there (IF NOT EXISTS) and goes on.
type AddEnumValue struct {
	Enum   string `yaml:"enum" json:"enum"`
	Value  string `yaml:"value" json:"value"`
	Before string `yaml:"before" json:"before,omitempty"`
	After  string `yaml:"after" json:"after,omitempty"`
}

// Kind implements Operation.
func (*AddEnumValue) Kind() string { return "add_enum_value" }

// Tables implements Operation: a type belongs to no table.
func (o *AddEnumValue) Tables() []TableName { return nil }

func (o *AddEnumValue) creates() []object {
	return []object{{kind: "enum value", key: ParseTableName(o.Enum).String() + "\x00" + o.Value, name: o.Value, field: "value"}}
}

// Needs implements Operation. ALTER TYPE needs the type's owner (or a
// member of it); there is no privilege kind for a type, so inspect checks it
// and names the operation.
func (o *AddEnumValue) Needs() []Need { return nil }

func validEnumLabel(field, v string) error {
	if v == "" {
		return fieldErr(field, "is required")
	}
	if strings.ContainsRune(v, 0) {
		return fieldErr(field, "contains a NUL byte")
	}
	if len(v) > maxIdentLen {
		return fieldErr(field, "%q is longer than %d bytes (PostgreSQL's limit for enum labels)", v, maxIdentLen)
	}
	return nil
}

func (o *AddEnumValue) validate() error {
	if err := validNameField("enum", o.Enum); err != nil {
		return err
	}
	if err := validEnumLabel("value", o.Value); err != nil {
		return err
	}
	if o.Before != "" && o.After != "" {
		return fieldErr("after", "give before or after, not both")
	}
	for _, p := range []struct{ field, v string }{{"before", o.Before}, {"after", o.After}} {
		if p.v == "" {
			continue
		}
		if err := validEnumLabel(p.field, p.v); err != nil {
			return err
		}
		if p.v == o.Value {
			return fieldErr(p.field, "%q is the value being added", p.v)
		}
	}
	return nil
}

// addSQL is the statement expand runs (and inspection, rolled back).
func (o *AddEnumValue) addSQL() string {
	s := fmt.Sprintf("ALTER TYPE %s ADD VALUE IF NOT EXISTS %s", quoteQualified(o.Enum), QuoteLiteral(o.Value))
	switch {
	case o.Before != "":
		s += " BEFORE " + QuoteLiteral(o.Before)
	case o.After != "":
		s += " AFTER " + QuoteLiteral(o.After)
	}
	return s
}

// minAddValueInTx is the first server version that runs ALTER TYPE … ADD
// VALUE inside a transaction block.
const minAddValueInTx = 120000

func (o *AddEnumValue) inspect(ctx context.Context, in *inspector, i int) error {
	var oid uint32
	var typtype, name string
	var owned bool
	err := in.tx.QueryRow(ctx, `SELECT t.oid, t.typtype::text, format_type(t.oid, NULL), pg_has_role(t.typowner, 'USAGE')
		FROM pg_type t WHERE t.oid = to_regtype($1)`, quoteQualified(o.Enum)).Scan(&oid, &typtype, &name, &owned)
	if errors.Is(err, pgx.ErrNoRows) {
		return in.m.OpError(i, "enum", "type %s does not exist", o.Enum)
	}
	if err != nil {
		return in.dbErr(i, "enum", err)
	}
	if typtype != "e" {
		return in.m.OpError(i, "enum", "type %s is not an enum", name)
	}
	if !owned {
		return in.m.OpError(i, "enum", "refit's role does not own type %s (ALTER TYPE … ADD VALUE needs its owner): ALTER TYPE %s OWNER TO the role refit connects as, or GRANT the owner's role to it", name, quoteQualified(o.Enum))
	}
	// The labels as this transaction sees them: earlier operations of the
	// migration may have added some.
	rows, err := in.tx.Query(ctx, "SELECT enumlabel::text FROM pg_enum WHERE enumtypid = $1 ORDER BY enumsortorder", oid)
	if err != nil {
		return in.dbErr(i, "enum", err)
	}
	labels, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return in.dbErr(i, "enum", err)
	}
	pos := map[string]int{}
	for n, l := range labels {
		pos[l] = n
	}
	for _, p := range []struct{ field, v string }{{"before", o.Before}, {"after", o.After}} {
		if _, ok := pos[p.v]; p.v != "" && !ok {
			return in.m.OpError(i, p.field, "enum %s has no value %q (its values: %s)", name, p.v, strings.Join(labels, ", "))
		}
	}
	if n, exists := pos[o.Value]; exists {
		// Nothing to do (a run after an abort finds it there): IF NOT
		// EXISTS makes the step a no-op, as long as the value sorts on the
		// side of before/after the file says (values added since, such as
		// a later operation's, may sit in between).
		switch {
		case o.Before != "" && n > pos[o.Before]:
			return in.m.OpError(i, "before", "enum %s already has the value %q, and it sorts after %q (its values: %s): ADD VALUE IF NOT EXISTS would leave it there", name, o.Value, o.Before, strings.Join(labels, ", "))
		case o.After != "" && n < pos[o.After]:
			return in.m.OpError(i, "after", "enum %s already has the value %q, and it sorts before %q (its values: %s): ADD VALUE IF NOT EXISTS would leave it there", name, o.Value, o.After, strings.Join(labels, ", "))
		}
		return nil
	}
	if in.facts.ServerVersion < minAddValueInTx {
		// Before PostgreSQL 12 ADD VALUE cannot run in a transaction block:
		// the checks above are all inspection can do.
		return nil
	}
	// Added in the rolled-back inspection transaction, so later operations
	// of the migration see the label (another add_enum_value placed before
	// or after it). A later operation cannot *use* the value in the same
	// migration: PostgreSQL refuses an enum value added in the current
	// transaction ("unsafe use of new value"), so such a migration is
	// refused here rather than passed on a guess.
	if err := in.exec(ctx, o.addSQL()); err != nil {
		return in.dbErr(i, "value", err)
	}
	return nil
}

func (o *AddEnumValue) plan(b *planBuilder) {
	// Not transactional: before PostgreSQL 12 ADD VALUE cannot run in a
	// transaction block, and from 12 on a value added in a transaction
	// cannot be used until it commits. IF NOT EXISTS makes a repeat (a run
	// interrupted before its checkpoint, a run after an abort) a no-op. No
	// undo step: PostgreSQL cannot drop an enum value; abort leaves it.
	b.expand(Step{
		Description: fmt.Sprintf("add value %s to enum %s (a no-op if it is already there; abort leaves it)", QuoteLiteral(o.Value), o.Enum),
		SQL:         o.addSQL(),
		Lock:        lockNone, Cost: "catalog only (locks the type, not its tables)"})
}

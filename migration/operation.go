package migration

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// Operation is one typed change in a migration. Each kind lives in its own
// file (op_<kind>.go) and registers itself; nothing outside the registry
// switches over kinds. An operation contributes, in order:
//
//   - validate: the checks that need no database, as field errors;
//   - Tables and creates: what it touches (the one-job-per-table rule, the
//     privilege check) and what it creates (duplicate checks in the file);
//   - Needs: the privileges it needs, for the up-front privilege check;
//   - inspect: its checks against the database, inside the inspector's
//     rolled-back transaction, leaving in place what later operations see;
//   - plan: its steps, as plain data, to each stage of the plan builder.
type Operation interface {
	// Kind is the operation's key in the file, e.g. "add_column".
	Kind() string
	// Tables lists the tables the operation changes, as written.
	Tables() []TableName
	validate() error
	creates() []object
	// Needs lists the privileges the operation needs.
	Needs() []Need
	inspect(ctx context.Context, in *inspector, i int) error
	plan(b *planBuilder)
}

// object is something an operation creates: two operations of a file may
// not create the same one.
type object struct {
	kind  string // "column", "index", "type", "constraint", "table"
	key   string // unique within its kind, e.g. "public.users.c"
	name  string // as shown
	field string // the field that names it
}

// NeedKind is a kind of privilege an operation needs.
type NeedKind int

// Privileges operations need.
const (
	NeedOwner        NeedKind = iota // ALTER TABLE on Table: its owner (or a member)
	NeedSchemaCreate                 // CREATE on a schema: Table's (an index) or Schema (a type)
	NeedRows                         // SELECT, INSERT, DELETE on Table (seed rows and their undo)
	NeedReferences                   // REFERENCES on Table: the table a foreign key references
)

// Need is one privilege an operation needs.
type Need struct {
	Kind   NeedKind
	Table  TableName // the table it is about (NeedOwner, NeedRows; NeedSchemaCreate of an index)
	Schema string    // NeedSchemaCreate of a type: its schema ("" = the creation schema)
	Index  bool      // NeedSchemaCreate for an index on Table
	For    string    // what it is for, e.g. `add column "c"`
}

// registry maps an operation key to a constructor of its typed value.
var registry = map[string]func() Operation{}

// register is called by each op_<kind>.go from init.
func register(kind string, mk func() Operation) {
	if _, dup := registry[kind]; dup {
		panic("migration: operation kind registered twice: " + kind)
	}
	registry[kind] = mk
}

// Kinds lists the operation kinds refit understands, sorted.
func Kinds() []string {
	out := make([]string, 0, len(registry))
	for k := range registry {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// newOperation returns an empty operation of a kind.
func newOperation(kind string) (Operation, bool) {
	mk, ok := registry[kind]
	if !ok {
		return nil, false
	}
	return mk(), true
}

// validIdentField, validNameField: shared static checks of names.

// maxIdentLen is NAMEDATALEN-1: PostgreSQL silently truncates longer names,
// so a longer name in a migration would not be the name refit checks.
const maxIdentLen = 63

func validIdentField(field, v string) error {
	if strings.TrimSpace(v) == "" {
		return fieldErr(field, "is required")
	}
	if strings.ContainsRune(v, 0) {
		return fieldErr(field, "contains a NUL byte")
	}
	if len(v) > maxIdentLen {
		return fieldErr(field, "%q is longer than %d bytes: PostgreSQL would truncate it", v, maxIdentLen)
	}
	return nil
}

// validNameField checks a possibly schema-qualified name ("schema.name").
func validNameField(field, v string) error {
	if strings.TrimSpace(v) == "" {
		return fieldErr(field, "is required")
	}
	t := ParseTableName(v)
	if t.Schema != "" {
		if err := validIdentField(field, t.Schema); err != nil {
			return err
		}
		if t.Name == "" {
			return fieldErr(field, "%q has an empty name after the schema", v)
		}
	}
	return validIdentField(field, t.Name)
}

// tableField validates and parses the table field of an operation.
func tableField(field, raw string, dst *TableName) error {
	*dst = ParseTableName(raw)
	return validNameField(field, raw)
}

// columnObject is the object of a column added to table t.
func columnObject(t TableName, column, field string) object {
	return object{kind: "column", key: t.String() + "." + column, name: column, field: field}
}

func describe(kind string, i int) string { return fmt.Sprintf("operations[%d] (%s)", i, kind) }

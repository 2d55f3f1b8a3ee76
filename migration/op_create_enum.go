package migration

import (
	"context"
	"fmt"
	"strings"
)

func init() { register("create_enum", func() Operation { return &CreateEnum{} }) }

// CreateEnum creates an ENUM type during expand.
type CreateEnum struct {
	Name   string   `yaml:"name" json:"name"`
	Values []string `yaml:"values" json:"values"`
}

// Kind implements Operation.
func (*CreateEnum) Kind() string { return "create_enum" }

// Tables implements Operation: a type belongs to no table.
func (o *CreateEnum) Tables() []TableName { return nil }

func (o *CreateEnum) creates() []object {
	return []object{{kind: "type", key: ParseTableName(o.Name).String(), name: o.Name, field: "name"}}
}

func (o *CreateEnum) Needs() []Need {
	t := ParseTableName(o.Name)
	return []Need{{Kind: NeedSchemaCreate, Schema: t.Schema, For: "CREATE TYPE " + t.Quoted()}}
}

func (o *CreateEnum) validate() error {
	if err := validNameField("name", o.Name); err != nil {
		return err
	}
	if len(o.Values) == 0 {
		return fieldErr("values", "at least one value is required")
	}
	seen := map[string]bool{}
	for i, v := range o.Values {
		if v == "" {
			return fieldErr(fmt.Sprintf("values[%d]", i), "must not be empty")
		}
		if len(v) > maxIdentLen {
			return fieldErr(fmt.Sprintf("values[%d]", i), "%q is longer than %d bytes (PostgreSQL's limit for enum labels)", v, maxIdentLen)
		}
		if seen[v] {
			return fieldErr(fmt.Sprintf("values[%d]", i), "duplicate value %q", v)
		}
		seen[v] = true
	}
	return nil
}

func (o *CreateEnum) createSQL() string {
	vals := make([]string, len(o.Values))
	for j, v := range o.Values {
		vals[j] = QuoteLiteral(v)
	}
	return fmt.Sprintf("CREATE TYPE %s AS ENUM (%s)", quoteQualified(o.Name), strings.Join(vals, ", "))
}

func (o *CreateEnum) inspect(ctx context.Context, in *inspector, i int) error {
	var exists bool
	if err := in.tx.QueryRow(ctx, "SELECT to_regtype($1) IS NOT NULL", quoteQualified(o.Name)).Scan(&exists); err != nil {
		return in.dbErr(i, "name", err)
	}
	if exists {
		return in.m.OpError(i, "name", "type %s already exists", o.Name)
	}
	// Created inside the rolled-back transaction so later operations can use it.
	if err := in.exec(ctx, o.createSQL()); err != nil {
		return in.dbErr(i, "name", err)
	}
	return nil
}

func (o *CreateEnum) plan(b *planBuilder) {
	b.expand(Step{Transactional: true,
		Description: "create enum type " + o.Name, SQL: o.createSQL(),
		Lock: lockNone, Cost: "catalog only"},
		Step{Transactional: true,
			Description: "drop enum type " + o.Name,
			SQL:         fmt.Sprintf("DROP TYPE IF EXISTS %s", quoteQualified(o.Name)),
			Lock:        lockNone, Cost: "catalog only"})
}

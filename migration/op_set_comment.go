package migration

import (
	"context"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

func init() { register("set_comment", func() Operation { return &SetComment{} }) }

// SetComment sets (or, with comment: null, clears) the comment of a table
// or of one of its columns at expand. Catalog only; abort puts the previous
// comment back.
type SetComment struct {
	TableRaw string  `yaml:"table" json:"table"`
	Column   string  `yaml:"column" json:"column,omitempty"`
	Comment  *string `yaml:"comment" json:"comment"`

	Table TableName `yaml:"-" json:"-"`
	// given: the file has a comment key (null included).
	given bool
}

// Kind implements Operation.
func (*SetComment) Kind() string { return "set_comment" }

// Tables implements Operation.
func (o *SetComment) Tables() []TableName { return []TableName{o.Table} }

func (o *SetComment) creates() []object {
	if o.Column == "" {
		return []object{{kind: "comment on table", key: o.Table.String(), name: o.Table.String(), field: "table"}}
	}
	return []object{{kind: "comment on column", key: o.Table.String() + "." + o.Column, name: o.Column, field: "column"}}
}

// Needs implements Operation.
func (o *SetComment) Needs() []Need {
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "COMMENT ON " + o.target(o.Table)}}
}

// afterDecode implements postDecoder: a comment key holding null clears
// the comment, a missing one is an error.
func (o *SetComment) afterDecode(body *yaml.Node) {
	for j := 0; j+1 < len(body.Content); j += 2 {
		if body.Content[j].Value == "comment" {
			o.given = true
		}
	}
}

func (o *SetComment) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	if o.Column != "" {
		if err := validIdentField("column", o.Column); err != nil {
			return err
		}
	}
	if !o.given && o.Comment == nil {
		return fieldErr("comment", "is required: the text, or null to clear the comment")
	}
	if o.Comment != nil && strings.ContainsRune(*o.Comment, 0) {
		return fieldErr("comment", "contains a NUL byte")
	}
	return nil
}

// target renders what the comment is on: TABLE t or COLUMN t.c.
func (o *SetComment) target(t TableName) string {
	if o.Column == "" {
		return "TABLE " + t.Quoted()
	}
	return "COLUMN " + t.Quoted() + "." + QuoteIdent(o.Column)
}

func (o *SetComment) inspect(ctx context.Context, in *inspector, i int) error {
	tf, _, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	var prev *string
	if o.Column == "" {
		err = in.tx.QueryRow(ctx, "SELECT obj_description(to_regclass($1), 'pg_class')", tf.Name.Quoted()).Scan(&prev)
		if err != nil {
			return in.dbErr(i, "table", err)
		}
	} else {
		cs, err := in.readColumn(ctx, i, "column", tf, o.Column)
		if err != nil {
			return err
		}
		prev = cs.comment // none for a column this migration adds
	}
	in.recordFound(i, prev)
	return nil
}

// commentSQL renders COMMENT ON … IS 'text' (or IS NULL).
func commentSQL(target string, text *string) string {
	if text == nil {
		return "COMMENT ON " + target + " IS NULL"
	}
	return "COMMENT ON " + target + " IS " + QuoteLiteral(*text)
}

func (o *SetComment) plan(b *planBuilder) {
	t := b.table(o.Table)
	what := "table " + t.String()
	if o.Column != "" {
		what = "column " + t.String() + "." + o.Column
	}
	set := Step{Transactional: true, Table: t,
		Description: "set the comment of " + what,
		SQL:         commentSQL(o.target(t), o.Comment),
		Lock:        lockShareUpdateExcl, Cost: "catalog only"}
	if o.Comment == nil {
		set.Description = "clear the comment of " + what
	}
	prev, had, known := b.foundAtValidation()
	if !known {
		set.Description += " (its undo, the previous comment, is planned once validated against the database)"
		b.expand(set)
		return
	}
	undo := Step{Transactional: true, Table: t,
		Description: "put back the previous comment of " + what,
		Lock:        lockShareUpdateExcl, Cost: "catalog only"}
	if had {
		undo.SQL = commentSQL(o.target(t), &prev)
	} else {
		undo.Description = fmt.Sprintf("clear the comment of %s (it had none)", what)
		undo.SQL = commentSQL(o.target(t), nil)
	}
	b.expand(set, undo)
}

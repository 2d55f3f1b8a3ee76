package migration

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Operation is one typed change in a migration.
type Operation interface {
	// Kind is the operation's key in the file, e.g. "add_column".
	Kind() string
	validate() error
}

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

func (o *AddColumn) validate() error {
	o.Table = ParseTableName(o.TableRaw)
	if err := validIdentField("table", o.TableRaw); err != nil {
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

// DropColumn drops a column at contract.
type DropColumn struct {
	TableRaw string `yaml:"table" json:"table"`
	Column   string `yaml:"column" json:"column"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*DropColumn) Kind() string { return "drop_column" }

func (o *DropColumn) validate() error {
	o.Table = ParseTableName(o.TableRaw)
	if err := validIdentField("table", o.TableRaw); err != nil {
		return err
	}
	return validIdentField("column", o.Column)
}

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

var methodRe = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func (o *CreateIndex) validate() error {
	o.Table = ParseTableName(o.TableRaw)
	if err := validIdentField("name", o.Name); err != nil {
		return err
	}
	if err := validIdentField("table", o.TableRaw); err != nil {
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

// CreateEnum creates an ENUM type during expand.
type CreateEnum struct {
	Name   string   `yaml:"name" json:"name"`
	Values []string `yaml:"values" json:"values"`
}

// Kind implements Operation.
func (*CreateEnum) Kind() string { return "create_enum" }

func (o *CreateEnum) validate() error {
	if err := validIdentField("name", o.Name); err != nil {
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
		if seen[v] {
			return fieldErr(fmt.Sprintf("values[%d]", i), "duplicate value %q", v)
		}
		seen[v] = true
	}
	return nil
}

// SQL is the escape hatch: raw statements run at expand or contract.
type SQL struct {
	Up            string `yaml:"up" json:"up"`
	Down          string `yaml:"down" json:"down,omitempty"`
	Phase         string `yaml:"phase" json:"phase,omitempty"`
	Transactional *bool  `yaml:"transactional" json:"transactional,omitempty"`
}

// Kind implements Operation.
func (*SQL) Kind() string { return "sql" }

// InTransaction reports whether up/down run inside a transaction (default true).
func (o *SQL) InTransaction() bool { return o.Transactional == nil || *o.Transactional }

func (o *SQL) validate() error {
	if strings.TrimSpace(o.Up) == "" {
		return fieldErr("up", "is required")
	}
	switch o.Phase {
	case "":
		o.Phase = "expand"
	case "expand", "contract":
	default:
		return fieldErr("phase", "%q: want expand or contract", o.Phase)
	}
	if o.Phase == "contract" && o.Down != "" {
		return fieldErr("down", "a contract-phase sql operation cannot be rolled back (contract is fix-forward); remove down")
	}
	return nil
}

// BulkInsert seeds rows during expand (the article's op.bulk_insert). Values
// are always sent as parameters, never spliced into SQL.
type BulkInsert struct {
	TableRaw string           `yaml:"table" json:"table"`
	Rows     []map[string]any `yaml:"rows" json:"rows"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*BulkInsert) Kind() string { return "bulk_insert" }

// ColumnNames returns the union of the rows' keys in first-seen order.
func (o *BulkInsert) ColumnNames() []string {
	var cols []string
	seen := map[string]bool{}
	for _, r := range o.Rows {
		// map order is random; sort each row's new keys for a stable plan
		var fresh []string
		for k := range r {
			if !seen[k] {
				seen[k] = true
				fresh = append(fresh, k)
			}
		}
		sort.Strings(fresh)
		cols = append(cols, fresh...)
	}
	return cols
}

func (o *BulkInsert) validate() error {
	o.Table = ParseTableName(o.TableRaw)
	if err := validIdentField("table", o.TableRaw); err != nil {
		return err
	}
	if len(o.Rows) == 0 {
		return fieldErr("rows", "at least one row is required")
	}
	for i, r := range o.Rows {
		if len(r) == 0 {
			return fieldErr(fmt.Sprintf("rows[%d]", i), "a row needs at least one column")
		}
		for k, v := range r {
			if err := validIdentField(fmt.Sprintf("rows[%d].%s", i, k), k); err != nil {
				return err
			}
			switch v.(type) {
			case nil, string, int, int64, uint64, float64, bool:
			default:
				return fieldErr(fmt.Sprintf("rows[%d].%s", i, k), "values must be scalars (string, number, bool or null), got %T", v)
			}
		}
	}
	return nil
}

func validIdentField(field, v string) error {
	if strings.TrimSpace(v) == "" {
		return fieldErr(field, "is required")
	}
	if len(v) > 63*2+1 {
		return fieldErr(field, "%q is too long for a PostgreSQL identifier", v)
	}
	if strings.ContainsRune(v, 0) {
		return fieldErr(field, "contains a NUL byte")
	}
	return nil
}

// singleExpression rejects text that is clearly not one SQL expression: a
// statement separator or an unbalanced quote/parenthesis outside literals.
// The database-side check (a prepared SELECT of the expression) catches the
// rest; this pass gives the clearer message for the common mistakes.
func singleExpression(field, s string) error {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'', '"':
			j := strings.IndexByte(s[i+1:], c)
			for j >= 0 && i+1+j+1 < len(s) && s[i+1+j+1] == c { // doubled quote
				k := strings.IndexByte(s[i+1+j+2:], c)
				if k < 0 {
					j = -1
					break
				}
				j += 2 + k
			}
			if j < 0 {
				return fieldErr(field, "unterminated quote in %q", s)
			}
			i += j + 1
		case '$':
			// dollar quoting: $tag$ … $tag$
			if m := dollarTag.FindString(s[i:]); m != "" {
				end := strings.Index(s[i+len(m):], m)
				if end < 0 {
					return fieldErr(field, "unterminated dollar quote in %q", s)
				}
				i += len(m) + end + len(m) - 1
			}
		case '-':
			if i+1 < len(s) && s[i+1] == '-' {
				return fieldErr(field, "comments are not allowed in an expression: %q", s)
			}
		case '/':
			if i+1 < len(s) && s[i+1] == '*' {
				return fieldErr(field, "comments are not allowed in an expression: %q", s)
			}
		case '(':
			depth++
		case ')':
			depth--
			if depth < 0 {
				return fieldErr(field, "unbalanced parentheses in %q", s)
			}
		case ';':
			return fieldErr(field, "must be one SQL expression, found ';' in %q", s)
		}
	}
	if depth != 0 {
		return fieldErr(field, "unbalanced parentheses in %q", s)
	}
	return nil
}

var dollarTag = regexp.MustCompile(`^\$[A-Za-z_]*\$`)

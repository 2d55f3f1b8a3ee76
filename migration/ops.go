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
	if err := validNameField("table", o.TableRaw); err != nil {
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
	if err := validNameField("table", o.TableRaw); err != nil {
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
	if err := validNameField("table", o.TableRaw); err != nil {
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
	if err := validNameField("table", o.TableRaw); err != nil {
		return err
	}
	if len(o.Rows) == 0 {
		return fieldErr("rows", "at least one row is required")
	}
	for i, r := range o.Rows {
		if len(r) == 0 {
			return fieldErr(fmt.Sprintf("rows[%d]", i), "a row needs at least one column")
		}
		for _, k := range sortedKeys(r) { // the same error every time
			v := r[k]
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

// maxIdentLen is NAMEDATALEN-1: PostgreSQL silently truncates longer names,
// so a longer name in a migration would not be the name refit checks.
const maxIdentLen = 63

// sortedKeys returns a row's column names in a stable order.
func sortedKeys(r map[string]any) []string {
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

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

// singleExpression rejects text that is clearly not one SQL expression: a
// statement separator, a comment or an unbalanced parenthesis outside
// literals, or an unterminated literal. The database-side check (a prepared
// statement embedding the expression) catches the rest; this pass gives the
// clearer message for the common mistakes.
//
// The text is split into tokens the way PostgreSQL's lexer does (with
// standard_conforming_strings on, the default since 9.1) wherever the split
// decides what is inside a literal: identifiers may contain '$' (x$y$ is one
// name, not a dollar quote), E'…' strings take backslash escapes, dollar-quote
// tags may contain digits ($a1$…$a1$). A scanner that disagreed with the
// server there could be led to treat a ';' as quoted while the server runs it
// as a statement separator. Where the server's own reading depends on its
// version (a number directly followed by a quote or '$'), the text is rejected.
func singleExpression(field, s string) error {
	depth := 0
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentCont(s[j]) {
				j++
			}
			if j == i+1 && (c == 'e' || c == 'E') && j < len(s) && s[j] == '\'' {
				end, ok := skipQuoted(s, j, true)
				if !ok {
					return fieldErr(field, "unterminated quote in %q", s)
				}
				// E'a'<newline>'b' is one E-string to the server, backslash
				// escapes included; the exact whitespace that makes a
				// continuation differs across versions, so refuse it.
				k := end
				for k < len(s) && strings.IndexByte(" \t\n\r\f\v", s[k]) >= 0 {
					k++
				}
				if k > end && k < len(s) && s[k] == '\'' {
					return fieldErr(field, "an E'…' string continued by another literal is ambiguous in %q: write one literal", s)
				}
				i = end
				continue
			}
			i = j
		case c >= '0' && c <= '9':
			j := i + 1
			for j < len(s) && (s[j] == '.' || s[j] != '$' && isIdentCont(s[j])) {
				j++
			}
			if j < len(s) && (s[j] == '\'' || s[j] == '$') {
				return fieldErr(field, "a number directly followed by %q is ambiguous in %q: add a space", s[j], s)
			}
			i = j
		case c == '\'' || c == '"':
			end, ok := skipQuoted(s, i, false)
			if !ok {
				return fieldErr(field, "unterminated quote in %q", s)
			}
			i = end
		case c == '$':
			if i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' { // parameter $n
				i += 2
				for i < len(s) && s[i] >= '0' && s[i] <= '9' {
					i++
				}
				continue
			}
			if tag, ok := dollarTag(s[i:]); ok {
				end := strings.Index(s[i+len(tag):], tag)
				if end < 0 {
					return fieldErr(field, "unterminated dollar quote in %q", s)
				}
				i += len(tag) + end + len(tag)
				continue
			}
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-',
			c == '/' && i+1 < len(s) && s[i+1] == '*':
			return fieldErr(field, "comments are not allowed in an expression: %q", s)
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return fieldErr(field, "unbalanced parentheses in %q", s)
			}
			i++
		case c == ';':
			return fieldErr(field, "must be one SQL expression, found ';' in %q", s)
		case c == 0:
			return fieldErr(field, "contains a NUL byte")
		default:
			i++
		}
	}
	if depth != 0 {
		return fieldErr(field, "unbalanced parentheses in %q", s)
	}
	return nil
}

// skipQuoted returns the index just past the literal or quoted identifier
// that opens at s[i] (a ' or a "). A doubled quote is part of the text; in an
// E'…' string (backslash) a backslash escapes the next byte.
func skipQuoted(s string, i int, backslash bool) (int, bool) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if backslash {
				j++
			}
		case q:
			if j+1 < len(s) && s[j+1] == q {
				j++
				continue
			}
			return j + 1, true
		}
	}
	return 0, false
}

// dollarTag returns the opening tag ($$ or $name$) at the start of s.
func dollarTag(s string) (string, bool) {
	if len(s) < 2 || s[0] != '$' {
		return "", false
	}
	if s[1] == '$' {
		return "$$", true
	}
	if !isIdentStart(s[1]) {
		return "", false
	}
	for j := 2; j < len(s); j++ {
		switch {
		case s[j] == '$':
			return s[:j+1], true
		case isIdentStart(s[j]) || s[j] >= '0' && s[j] <= '9':
		default:
			return "", false
		}
	}
	return "", false
}

// isIdentStart and isIdentCont are PostgreSQL's ident_start and ident_cont
// (bytes ≥ 0x80 are letters to the lexer).
func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentCont(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}

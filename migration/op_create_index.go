package migration

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/refit-dev/refit/sqlstate"
)

func init() { register("create_index", func() Operation { return &CreateIndex{} }) }

// CreateIndex builds an index CONCURRENTLY, outside any transaction, after the
// backfill (so the backfill does not pay for index maintenance).
type CreateIndex struct {
	Name     string `yaml:"name" json:"name"`
	TableRaw string `yaml:"table" json:"table"`
	// Keys are the key columns as written: a name, or a mapping with an
	// operator class, an order and a NULLS placement.
	Keys []IndexColumn `yaml:"columns" json:"columns"`
	// Include lists covering columns (INCLUDE (…)): stored in the index,
	// not part of its key.
	Include []string `yaml:"include" json:"include,omitempty"`
	Unique  bool     `yaml:"unique" json:"unique,omitempty"`
	// NullsNotDistinct makes a unique index treat NULLs as equal
	// (PostgreSQL 15+).
	NullsNotDistinct bool   `yaml:"nulls_not_distinct" json:"nulls_not_distinct,omitempty"`
	Where            string `yaml:"where" json:"where,omitempty"`
	Method           string `yaml:"method" json:"method,omitempty"`
	// With holds storage parameters (WITH (fillfactor = 90)): names are
	// identifiers, values numbers, booleans or identifiers.
	With map[string]any `yaml:"with" json:"with,omitempty"`

	Table TableName `yaml:"-" json:"-"`
	// Columns are the names of the key columns, in order (set by validation).
	Columns []string `yaml:"-" json:"-"`
}

// IndexColumn is one key column of create_index: in the file either a
// plain name or a mapping {name, opclass, order, nulls}.
type IndexColumn struct {
	Name    string `yaml:"name" json:"name"`
	Opclass string `yaml:"opclass" json:"opclass,omitempty"` // operator class, optionally schema-qualified
	Order   string `yaml:"order" json:"order,omitempty"`     // asc | desc
	Nulls   string `yaml:"nulls" json:"nulls,omitempty"`     // first | last

	// mapping is set when the column was written as a mapping, so errors
	// name columns[i].name rather than columns[i].
	mapping bool
	// problem is what decoding found wrong (an unknown key, a value that is
	// not a string), reported by validation with the field it names.
	problem *fieldError
}

// indexColumnFields are the keys a column mapping may have, in the order
// errors list them.
var indexColumnFields = []string{"name", "opclass", "order", "nulls"}

// UnmarshalYAML implements yaml.Unmarshaler: a scalar is the column's
// name; a mapping may hold name, opclass, order and nulls, and any other
// key is an error (kept for validation, which names the field).
func (c *IndexColumn) UnmarshalYAML(n *yaml.Node) error {
	*c = IndexColumn{}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.ScalarNode:
		c.Name = n.Value
		return nil
	case yaml.MappingNode:
	default:
		c.problem = &fieldError{msg: "a column is a name or a mapping {" + strings.Join(indexColumnFields, ", ") + "}", line: n.Line}
		return nil
	}
	c.mapping = true
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		for v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		var dst *string
		switch k.Value {
		case "name":
			dst = &c.Name
		case "opclass":
			dst = &c.Opclass
		case "order":
			dst = &c.Order
		case "nulls":
			dst = &c.Nulls
		default:
			c.problem = &fieldError{field: "." + k.Value, msg: "unknown field (known fields: " + strings.Join(indexColumnFields, ", ") + ")", line: k.Line}
			return nil
		}
		if seen[k.Value] {
			c.problem = &fieldError{field: "." + k.Value, msg: "given twice", line: k.Line}
			return nil
		}
		seen[k.Value] = true
		if v.Kind != yaml.ScalarNode {
			c.problem = &fieldError{field: "." + k.Value, msg: "must be a string", line: v.Line}
			return nil
		}
		if v.ShortTag() != "!!null" {
			*dst = v.Value
		}
	}
	return nil
}

// field names the column j, or one of its keys (sub: "name", "opclass", …).
func (c *IndexColumn) field(j int, sub string) string {
	f := fmt.Sprintf("columns[%d]", j)
	if sub == "name" && !c.mapping {
		return f
	}
	return f + "." + sub
}

func (c *IndexColumn) validate(j int) error {
	if c.problem != nil {
		return &fieldError{field: fmt.Sprintf("columns[%d]", j) + c.problem.field, msg: c.problem.msg, line: c.problem.line}
	}
	if err := validIdentField(c.field(j, "name"), c.Name); err != nil {
		return err
	}
	if c.Opclass != "" {
		if err := validNameField(c.field(j, "opclass"), c.Opclass); err != nil {
			return err
		}
	}
	switch strings.ToLower(c.Order) {
	case "", "asc", "desc":
	default:
		return fieldErr(c.field(j, "order"), "%q: want asc or desc", c.Order)
	}
	switch strings.ToLower(c.Nulls) {
	case "", "first", "last":
	default:
		return fieldErr(c.field(j, "nulls"), "%q: want first or last", c.Nulls)
	}
	return nil
}

// hasOptions reports whether the column says more than its name.
func (c *IndexColumn) hasOptions() bool { return c.Opclass != "" || c.Order != "" || c.Nulls != "" }

// sql renders the column: "name" [opclass] [ASC|DESC] [NULLS FIRST|LAST].
func (c *IndexColumn) sql() string {
	s := QuoteIdent(c.Name)
	if c.Opclass != "" {
		s += " " + quoteQualified(c.Opclass)
	}
	if c.Order != "" {
		s += " " + strings.ToUpper(c.Order)
	}
	if c.Nulls != "" {
		s += " NULLS " + strings.ToUpper(c.Nulls)
	}
	return s
}

// Kind implements Operation.
func (*CreateIndex) Kind() string { return "create_index" }

// Tables implements Operation.
func (o *CreateIndex) Tables() []TableName { return []TableName{o.Table} }

func (o *CreateIndex) creates() []object {
	// Index names are unique per schema.
	return []object{{kind: "index", key: TableName{Schema: o.Table.Schema, Name: o.Name}.String(), name: o.Name, field: "name"}}
}

// Needs implements Operation.
func (o *CreateIndex) Needs() []Need {
	what := "build index " + QuoteIdent(o.Name)
	return []Need{{Kind: NeedOwner, Table: o.Table, For: what},
		{Kind: NeedSchemaCreate, Table: o.Table, Index: true, For: what + " (CREATE INDEX checks CREATE on the schema, CONCURRENTLY too)"}}
}

var (
	methodRe = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
	// storageParamRe is a storage parameter's name (fillfactor,
	// deduplicate_items, fastupdate, pages_per_range, …).
	storageParamRe = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
	// storageWordRe is a value given as a word (buffering: auto,
	// fastupdate: off); it is sent as a string literal.
	storageWordRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// storageNumberRe is a number written as a string ("90").
	storageNumberRe = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)
)

func (o *CreateIndex) validate() error {
	if err := validIdentField("name", o.Name); err != nil {
		return err
	}
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	if len(o.Keys) == 0 {
		return fieldErr("columns", "at least one column is required")
	}
	o.Columns = make([]string, len(o.Keys))
	for j := range o.Keys {
		if err := o.Keys[j].validate(j); err != nil {
			return err
		}
		o.Columns[j] = o.Keys[j].Name
	}
	seen := map[string]bool{}
	for j, c := range o.Include {
		field := fmt.Sprintf("include[%d]", j)
		if err := validIdentField(field, c); err != nil {
			return err
		}
		if seen[c] {
			return fieldErr(field, "column %q is given twice", c)
		}
		seen[c] = true
	}
	if o.NullsNotDistinct && !o.Unique {
		return fieldErr("nulls_not_distinct", "applies to unique indexes only: set unique: true")
	}
	if o.Where != "" {
		if err := singleExpression("where", o.Where); err != nil {
			return err
		}
	}
	if o.Method != "" && !methodRe.MatchString(o.Method) {
		return fieldErr("method", "%q is not an index method name (btree, hash, gin, gist, brin, …)", o.Method)
	}
	if _, err := o.withSQL(); err != nil {
		return err
	}
	return nil
}

// withSQL renders the storage parameters, sorted by name: "" when there are
// none. A name must be an identifier; a value a number, a boolean or a word
// (sent as a string literal); anything else is refused.
func (o *CreateIndex) withSQL() (string, error) {
	if len(o.With) == 0 {
		return "", nil
	}
	names := make([]string, 0, len(o.With))
	for k := range o.With {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for j, k := range names {
		if !storageParamRe.MatchString(k) || len(k) > maxIdentLen {
			return "", fieldErr("with", "%q is not a storage parameter name (lowercase letters, digits and _, such as fillfactor)", k)
		}
		v, err := storageValue(o.With[k])
		if err != nil {
			return "", fieldErr("with."+k, "%s", err.Error())
		}
		parts[j] = QuoteIdent(k) + " = " + v
	}
	return "WITH (" + strings.Join(parts, ", ") + ")", nil
}

// storageValue renders one storage parameter's value.
func storageValue(v any) (string, error) {
	const want = "must be a number, a boolean or a word such as auto (no quotes, spaces or expressions)"
	switch x := v.(type) {
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", fmt.Errorf("%v: %s", x, want)
		}
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case bool:
		return strconv.FormatBool(x), nil
	case string:
		if storageNumberRe.MatchString(x) && len(x) <= maxIdentLen {
			return x, nil
		}
		if !storageWordRe.MatchString(x) || len(x) > maxIdentLen {
			return "", fmt.Errorf("%q: %s", x, want)
		}
		return QuoteLiteral(x), nil
	case nil:
		return "", fmt.Errorf("is empty: %s", want)
	}
	return "", fmt.Errorf("%v: %s", v, want)
}

// minNullsNotDistinct is the first server version with NULLS NOT DISTINCT.
const minNullsNotDistinct = 150000

func (o *CreateIndex) inspect(ctx context.Context, in *inspector, i int) error {
	if o.NullsNotDistinct && in.facts.ServerVersion < minNullsNotDistinct {
		return in.m.OpError(i, "nulls_not_distinct", "NULLS NOT DISTINCT needs PostgreSQL 15 or newer; the server is %d.%d", in.facts.ServerVersion/10000, in.facts.ServerVersion%10000)
	}
	tf, shadow, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	for j := range o.Keys {
		c := &o.Keys[j]
		if _, ok := tf.Columns[c.Name]; !ok {
			return in.m.OpError(i, c.field(j, "name"), "column %q does not exist in %s", c.Name, o.Table)
		}
	}
	for j, c := range o.Include {
		if _, ok := tf.Columns[c]; !ok {
			return in.m.OpError(i, fmt.Sprintf("include[%d]", j), "column %q does not exist in %s", c, o.Table)
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
	// Another operation may build one of that name after the backfill
	// too, on the same table spelled another way or on another table of
	// the schema: the later build would find it and be skipped.
	key := TableName{Schema: tf.Name.Schema, Name: o.Name}.String()
	if j, dup := in.indexes[key]; dup {
		return in.m.OpError(i, "name", "index %s is also created by operations[%d] (index names are unique per schema)", o.Name, j)
	}
	if in.indexes == nil {
		in.indexes = map[string]int{}
	}
	in.indexes[key] = i
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
	// classes, orders, covering columns, storage parameters and a
	// predicate's immutability are checked now rather than after the
	// backfill. The predicate was prepared above, so it is known to be one
	// expression.
	if err := in.exec(ctx, o.createSQL("", shadow)); err != nil {
		if !sqlstate.Content(err) {
			return in.dbErr(i, "columns", err)
		}
		field, ferr := o.diagnose(ctx, in, shadow, err)
		return in.dbErr(i, field, ferr)
	}
	return nil
}

// diagnose finds which field makes the shadow index fail: it builds the
// index piece by piece on the shadow (each probe in its own savepoint) and
// returns the field of the first piece that fails, with that failure.
func (o *CreateIndex) diagnose(ctx context.Context, in *inspector, shadow string, full error) (string, error) {
	// Each key column with options on its own: the operator class first,
	// then the order, then the NULLS placement.
	for j := range o.Keys {
		c := o.Keys[j]
		if !c.hasOptions() {
			continue
		}
		steps := []struct {
			sub string
			col IndexColumn
		}{
			{"opclass", IndexColumn{Name: c.Name, Opclass: c.Opclass}},
			{"order", IndexColumn{Name: c.Name, Opclass: c.Opclass, Order: c.Order}},
			{"nulls", c},
		}
		for n, s := range steps {
			if n > 0 && s.col == steps[n-1].col {
				continue
			}
			err := in.exec(ctx, o.render("", shadow, false, []IndexColumn{s.col}, 0))
			if err == nil {
				continue
			}
			if s.sub == "opclass" && c.Opclass == "" {
				break // the plain column fails: the key check below names it
			}
			return c.field(j, s.sub), err
		}
	}
	// The key with its options, UNIQUE and the method.
	if err := in.exec(ctx, o.render("", shadow, o.Unique, o.Keys, 0)); err != nil {
		if o.Method != "" {
			return "method", err
		}
		return "columns", err
	}
	// Then each clause on top of the key.
	for _, p := range []struct {
		part  indexPart
		field string
		set   bool
	}{
		{partInclude, "include", len(o.Include) > 0},
		{partNullsNotDistinct, "nulls_not_distinct", o.NullsNotDistinct},
		{partWith, "with", len(o.With) > 0},
		{partWhere, "where", o.Where != ""},
	} {
		if !p.set {
			continue
		}
		if err := in.exec(ctx, o.render("", shadow, o.Unique, o.Keys, p.part)); err != nil {
			return p.field, err
		}
	}
	// Only the whole fails.
	if o.Where != "" && sqlstate.Is(full, sqlstate.InvalidObjectDefinition) {
		return "where", full
	}
	if o.Method != "" {
		return "method", full
	}
	return "columns", full
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

// indexPart selects the clauses after the key that render includes.
type indexPart uint

const (
	partInclude indexPart = 1 << iota
	partNullsNotDistinct
	partWith
	partWhere
	partAll = partInclude | partNullsNotDistinct | partWith | partWhere
)

// createSQL renders CREATE [UNIQUE] INDEX <name> ON <target> …; name may
// be empty (the server picks one) or carry CONCURRENTLY.
func (o *CreateIndex) createSQL(name, target string) string {
	return o.render(name, target, o.Unique, o.Keys, partAll)
}

// render renders the statement with the given key, uniqueness and clauses:
// CREATE [UNIQUE] INDEX [name] ON target [USING method] (key) [INCLUDE (…)]
// [NULLS NOT DISTINCT] [WITH (…)] [WHERE (…)].
func (o *CreateIndex) render(name, target string, unique bool, keys []IndexColumn, parts indexPart) string {
	cols := make([]string, len(keys))
	for j := range keys {
		cols[j] = keys[j].sql()
	}
	var b strings.Builder
	b.WriteString("CREATE ")
	if unique {
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
	if parts&partInclude != 0 && len(o.Include) > 0 {
		inc := make([]string, len(o.Include))
		for j, c := range o.Include {
			inc[j] = QuoteIdent(c)
		}
		b.WriteString(" INCLUDE (" + strings.Join(inc, ", ") + ")")
	}
	if parts&partNullsNotDistinct != 0 && o.NullsNotDistinct {
		b.WriteString(" NULLS NOT DISTINCT")
	}
	if parts&partWith != 0 {
		// Validated: an invalid parameter never gets here.
		if with, err := o.withSQL(); err == nil && with != "" {
			b.WriteString(" " + with)
		}
	}
	if parts&partWhere != 0 && o.Where != "" {
		b.WriteString(" WHERE (" + o.Where + ")")
	}
	return b.String()
}

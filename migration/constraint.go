package migration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/refit-dev/refit/sqlstate"
)

// What the constraint operations (add_check, add_foreign_key, add_unique,
// add_primary_key) share: the objects they create, the checks of a name
// against the table and the shadow, and the queries that find the rows
// breaking the constraint.

// constraintObject is a constraint named name on table t: constraint
// names are unique per table.
func constraintObject(t TableName, name, field string) object {
	return object{kind: "constraint", key: t.String() + "." + name, name: name, field: field}
}

// indexObject is an index named name in the schema of table t: index
// names share one namespace per schema (with create_index).
func indexObject(t TableName, name, field string) object {
	return object{kind: "index", key: TableName{Schema: t.Schema, Name: name}.String(), name: name, field: field}
}

// refuseConstraintName refuses a constraint name the table already has, or
// that an earlier operation of the file gave it (on the shadow, which also
// carries the table's own CHECK constraints).
func (in *inspector) refuseConstraintName(ctx context.Context, i int, field string, tf *TableFacts, shadow, name string) error {
	var onTable, onShadow bool
	err := in.tx.QueryRow(ctx, `SELECT
			EXISTS (SELECT FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $3),
			EXISTS (SELECT FROM pg_constraint WHERE conrelid = to_regclass($2) AND conname = $3)`,
		tf.Name.Quoted(), shadow, name).Scan(&onTable, &onShadow)
	switch {
	case err != nil:
		return in.dbErr(i, field, err)
	case onTable:
		return in.m.OpError(i, field, "table %s already has a constraint named %q", tf.Name, name)
	case onShadow:
		return in.m.OpError(i, field, "a constraint named %q on table %s is also created by an earlier operation", name, tf.Name)
	}
	return nil
}

// refuseExisting refuses the rows that already break the constraint v
// describes (refuseViolations). A table too big to scan within the
// inspection's statement_timeout is left to the constraint's VALIDATE or
// index build, which reports its rows the same way.
func (in *inspector) refuseExisting(ctx context.Context, i int, field string, v *Violations) error {
	err := in.refuseViolations(ctx, i, field, v)
	if err != nil && ctx.Err() == nil && !IsInvalid(err) && sqlstate.Is(err, sqlstate.QueryCanceled) {
		return nil
	}
	return err
}

// columnsField checks that each column exists in the table (or is added
// by an earlier operation) and reports whether all of them exist in the
// database already, so existing rows can be checked against the
// constraint now.
func (in *inspector) columnsField(i int, field string, tf *TableFacts, columns []string) (existing bool, err error) {
	attrs := in.columnAttrs(tf)
	existing = true
	for j, c := range columns {
		if _, ok := tf.Columns[c]; !ok {
			return false, in.m.OpError(i, fmt.Sprintf("%s[%d]", field, j), "column %q does not exist in %s", c, tf.Name)
		}
		if _, ok := attrs[c]; !ok {
			existing = false
		}
	}
	return existing, nil
}

// retarget gives a validation error of in.table (which names the field
// "table") the field of the table it was asked about.
func retarget(err error, field string) error {
	var e *Error
	if errors.As(err, &e) && e.Field == "table" {
		c := *e
		c.Field = field
		return &c
	}
	return err
}

// validColumnsField checks a non-empty list of distinct column names.
func validColumnsField(field string, columns []string) error {
	if len(columns) == 0 {
		return fieldErr(field, "at least one column is required")
	}
	seen := map[string]bool{}
	for j, c := range columns {
		f := fmt.Sprintf("%s[%d]", field, j)
		if err := validIdentField(f, c); err != nil {
			return err
		}
		if seen[c] {
			return fieldErr(f, "column %q is listed twice", c)
		}
		seen[c] = true
	}
	return nil
}

// quoteColumns renders "a", "b" (optionally each prefixed by alias.).
func quoteColumns(alias string, columns []string) string {
	parts := make([]string, len(columns))
	for j, c := range columns {
		parts[j] = QuoteIdent(c)
		if alias != "" {
			parts[j] = alias + "." + parts[j]
		}
	}
	return strings.Join(parts, ", ")
}

// checkViolations finds the rows of t for which a CHECK expression is
// false (NULL passes a CHECK).
func checkViolations(name string, t TableName, key []KeyColumn, expr string) *Violations {
	return NewViolations(fmt.Sprintf("check %q", name), t, key, "("+expr+") IS FALSE")
}

// duplicateViolations finds the rows of t whose columns equal those of
// another row (rows with a NULL in them are not duplicates of anything).
// The sample is ordered by the duplicated values, so rows that share a
// value are shown next to each other; the values themselves are not shown
// (they may be personal data: an e-mail address), only the rows' keys.
func duplicateViolations(what string, t TableName, key []KeyColumn, columns []string) *Violations {
	from := fmt.Sprintf("%s AS r WHERE (%s) IN (SELECT %s FROM %s GROUP BY %s HAVING count(*) > 1)",
		t.Quoted(), quoteColumns("r", columns), quoteColumns("", columns), t.Quoted(), quoteColumns("", columns))
	return &Violations{What: what,
		Count:  "SELECT count(*) FROM " + from,
		Sample: fmt.Sprintf("SELECT %s FROM %s ORDER BY %s, %s LIMIT %d", keyText(key), from, quoteColumns("r", columns), keyList(key), violationSample)}
}

// orphanViolations finds the rows of child whose columns are all non-NULL
// (MATCH SIMPLE: a row with a NULL in them references nothing) and match no
// row of parent.
func orphanViolations(name string, child TableName, key []KeyColumn, columns []string, parent TableName, refColumns []string) *Violations {
	notNull := make([]string, len(columns))
	eq := make([]string, len(columns))
	for j, c := range columns {
		notNull[j] = "r." + QuoteIdent(c) + " IS NOT NULL"
		eq[j] = "p." + QuoteIdent(refColumns[j]) + " = r." + QuoteIdent(c)
	}
	cond := fmt.Sprintf("%s AND NOT EXISTS (SELECT FROM %s AS p WHERE %s)",
		strings.Join(notNull, " AND "), parent.Quoted(), strings.Join(eq, " AND "))
	return NewViolations(fmt.Sprintf("foreign key %q", name), child, key, cond)
}

// truncateName cuts s to at most n bytes on a character boundary.
func truncateName(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// uniqueKey is what add_unique and add_primary_key share: a unique index
// built CONCURRENTLY after the backfill (reads and writes continue; from
// then on it refuses duplicates), attached at contract as the constraint
// (ADD CONSTRAINT … USING INDEX: a brief ACCESS EXCLUSIVE, no scan).
type uniqueKey struct {
	table     TableName
	name      string
	nameField string // "name"; "" when the name is the default one
	columns   []string
	primary   bool
}

// what names the constraint in messages and violation reports.
func (u uniqueKey) what() string {
	if u.primary {
		return fmt.Sprintf("primary key %q", u.name)
	}
	return fmt.Sprintf("unique %q", u.name)
}

func (u uniqueKey) creates() []object {
	field := u.nameField
	if field == "" {
		field = "table" // the default name follows the table's
	}
	return []object{indexObject(u.table, u.name, field), constraintObject(u.table, u.name, field)}
}

func (u uniqueKey) needs() []Need {
	what := "add " + u.what()
	return []Need{{Kind: NeedOwner, Table: u.table, For: what},
		{Kind: NeedSchemaCreate, Table: u.table, Index: true, For: what + " (its index: CREATE INDEX checks CREATE on the schema, CONCURRENTLY too)"}}
}

// nameFieldOrTable is the field a problem with the name is reported on.
func (u uniqueKey) nameFieldOrTable() string {
	if u.nameField == "" {
		return "table"
	}
	return u.nameField
}

func (u uniqueKey) inspect(ctx context.Context, in *inspector, i int) error {
	tf, shadow, err := in.table(ctx, i, u.table)
	if err != nil {
		return err
	}
	existing, err := in.columnsField(i, "columns", tf, u.columns)
	if err != nil {
		return err
	}
	if u.primary {
		var pk, shadowPK *string
		if err := in.tx.QueryRow(ctx, `SELECT
				(SELECT conname::text FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'p'),
				(SELECT conname::text FROM pg_constraint WHERE conrelid = to_regclass($2) AND contype = 'p')`,
			tf.Name.Quoted(), shadow).Scan(&pk, &shadowPK); err != nil {
			return in.dbErr(i, "table", err)
		}
		switch {
		case pk != nil:
			return in.m.OpError(i, "table", "table %s already has a primary key (%s)", tf.Name, *pk)
		case shadowPK != nil:
			return in.m.OpError(i, "table", "a primary key of table %s is also added by an earlier operation", tf.Name)
		}
	}
	nameField := u.nameFieldOrTable()
	hint := ""
	if u.nameField == "" {
		hint = " (the default name of the primary key: give it another with name)"
	}
	var relation, tempRelation bool
	if err := in.tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
		QuoteIdent(tf.Name.Schema)+"."+QuoteIdent(u.name), "pg_temp."+QuoteIdent(u.name)).Scan(&relation, &tempRelation); err != nil {
		return in.dbErr(i, nameField, err)
	}
	switch {
	case relation:
		return in.m.OpError(i, nameField, "a relation named %s already exists in schema %s%s", u.name, tf.Name.Schema, hint)
	case tempRelation:
		return in.m.OpError(i, nameField, "an index named %s is also created by an earlier operation%s", u.name, hint)
	}
	if err := in.refuseConstraintName(ctx, i, nameField, tf, shadow, u.name); err != nil {
		return err
	}
	if u.primary {
		// PRIMARY KEY USING INDEX would set NOT NULL on a nullable column
		// itself, scanning the table under ACCESS EXCLUSIVE.
		attrs := in.columnAttrs(tf)
		for j, c := range u.columns {
			a, ok := attrs[c]
			switch {
			case !ok:
				return in.m.OpError(i, fmt.Sprintf("columns[%d]", j), "column %q is added by this migration and is NOT NULL only after its contract: add the primary key in a later migration", c)
			case !a.notNull:
				return in.m.OpError(i, fmt.Sprintf("columns[%d]", j), "column %q of %s is nullable: a primary key needs NOT NULL, and adding the key would set it while scanning the table under ACCESS EXCLUSIVE; make the column NOT NULL first (set_not_null, in an earlier migration), then add the primary key", c, tf.Name)
			}
		}
	}
	// The same constraint on the (empty) shadow: the columns' types need a
	// btree equality. It stays there for the operations that follow.
	kind := "UNIQUE"
	if u.primary {
		kind = "PRIMARY KEY"
	}
	if err := in.exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s (%s)", shadow, QuoteIdent(u.name), kind, quoteColumns("", u.columns))); err != nil {
		return in.dbErr(i, "columns", err)
	}
	if !existing {
		// A column an earlier operation adds: the index build, after the
		// backfill, reports its duplicates.
		return nil
	}
	return in.refuseExisting(ctx, i, "columns", u.violations(tf.Name, tf.Key))
}

// violations finds the duplicates. The rows of a primary key are shown by
// the key they would have: a table without one may have no other.
func (u uniqueKey) violations(t TableName, key []KeyColumn) *Violations {
	if u.primary {
		key = make([]KeyColumn, len(u.columns))
		for j, c := range u.columns {
			key[j] = KeyColumn{Name: c}
		}
	}
	return duplicateViolations(u.what(), t, key, u.columns)
}

func (u uniqueKey) plan(b *planBuilder) {
	t := b.table(u.table)
	name := QuoteIdent(u.name)
	idx := name
	if t.Schema != "" {
		idx = QuoteIdent(t.Schema) + "." + name
	}
	var key []KeyColumn
	if tf := b.tableFacts(t); tf != nil {
		key = tf.Key
	}
	b.postBackfill(Step{Table: t, LongRunning: true, Index: idx,
		Description: fmt.Sprintf("build unique index %s on %s concurrently (for %s)", u.name, t, u.what()),
		SQL:         fmt.Sprintf("CREATE UNIQUE INDEX CONCURRENTLY %s ON %s (%s)", name, t.Quoted(), quoteColumns("", u.columns)),
		Lock:        lockShareUpdateExcl, Cost: "scans the table (outside any transaction)",
		Violations: u.violations(t, key)},
		Step{Table: t,
			Description: "drop index " + u.name,
			SQL:         "DROP INDEX CONCURRENTLY IF EXISTS " + idx,
			Lock:        lockShareUpdateExcl, Cost: "catalog only (outside any transaction)"})
	kind, cost := "UNIQUE", "metadata only (the index is built)"
	if u.primary {
		kind, cost = "PRIMARY KEY", "metadata only (the index is built, the columns are NOT NULL)"
	}
	b.enforce(Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("add %s on %s using its index", u.what(), t),
		SQL:         fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s USING INDEX %s", t.Quoted(), name, kind, name),
		Lock:        lockAccessExclusive, Cost: cost})
}

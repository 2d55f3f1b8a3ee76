package migration

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/refit-dev/refit/sqlstate"
)

func init() { register("bulk_insert", func() Operation { return &BulkInsert{} }) }

// BulkInsert seeds rows during expand (the article's op.bulk_insert). Values
// are always sent as parameters, never spliced into SQL.
type BulkInsert struct {
	TableRaw string           `yaml:"table" json:"table"`
	Rows     []map[string]any `yaml:"rows" json:"rows"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*BulkInsert) Kind() string { return "bulk_insert" }

// Tables implements Operation.
func (o *BulkInsert) Tables() []TableName { return []TableName{o.Table} }

func (o *BulkInsert) creates() []object { return nil }

func (o *BulkInsert) Needs() []Need {
	return []Need{{Kind: NeedRows, Table: o.Table, For: "insert seed rows (and delete them on abort)"}}
}

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
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
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

// afterDecode implements postDecoder: see keepTimestampText.
func (o *BulkInsert) afterDecode(body *yaml.Node) { keepTimestampText(body, o) }

func (o *BulkInsert) inspect(ctx context.Context, in *inspector, i int) error {
	tf, shadow, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	attrs := in.columnAttrs(tf)
	for _, c := range o.ColumnNames() {
		if _, ok := tf.Columns[c]; !ok {
			return in.m.OpError(i, "rows", "column %q does not exist in %s", c, o.Table)
		}
	}
	for n, r := range o.Rows {
		for _, c := range sortedKeys(r) {
			switch a := attrs[c]; {
			case a.generated:
				return in.m.OpError(i, fmt.Sprintf("rows[%d].%s", n, c), "column %q is a generated column: it cannot be given a value", c)
			case a.identityAlways:
				return in.m.OpError(i, fmt.Sprintf("rows[%d].%s", n, c), "column %q is GENERATED ALWAYS AS IDENTITY: leave it out and let the database number the rows", c)
			}
		}
	}
	// The real statement against the shadow table: checks every value
	// converts and every NOT NULL / CHECK constraint holds.
	for start := 0; start < len(o.Rows); start += bulkChunk {
		end := min(start+bulkChunk, len(o.Rows))
		sql, args := bulkInsertSQL(shadow, o.ColumnNames(), o.Rows[start:end], tf)
		err := in.probeRows(ctx, sql, args)
		if err == nil {
			continue
		}
		if !sqlstate.Content(err) {
			return in.dbErr(i, fmt.Sprintf("rows[%d..%d]", start, end-1), err)
		}
		return in.badRow(ctx, i, o, shadow, tf, start, end, err)
	}
	return nil
}

func (o *BulkInsert) plan(b *planBuilder) {
	t := b.table(o.Table)
	cols := o.ColumnNames()
	tf := b.tableFacts(o.Table)
	for start := 0; start < len(o.Rows); start += bulkChunk {
		end := min(start+bulkChunk, len(o.Rows))
		sql, args := bulkInsertSQL(t.Quoted(), cols, o.Rows[start:end], tf)
		var undo []Step
		if del, dargs, ok := bulkDeleteSQL(t, o.Rows[start:end], tf); ok {
			undo = append(undo, Step{Transactional: true, Table: t,
				Description: fmt.Sprintf("delete seeded rows %d..%d from %s by key", start, end-1, t),
				SQL:         del, Args: dargs,
				Lock: lockRowExclusive, Cost: fmt.Sprintf("deletes up to %d rows", end-start)})
		}
		b.expand(Step{Transactional: true, Table: t,
			Description: fmt.Sprintf("insert rows %d..%d into %s", start, end-1, t),
			SQL:         sql, Args: args,
			Lock: lockRowExclusive, Cost: fmt.Sprintf("inserts %d rows", end-start)}, undo...)
	}
}

// sortedKeys returns a row's column names in a stable order.
func sortedKeys(r map[string]any) []string {
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// badRow narrows a failed bulk_insert chunk down to its first bad row and,
// where a value does not convert to its column's type, to that value.
func (in *inspector) badRow(ctx context.Context, i int, o *BulkInsert, shadow string, tf *TableFacts, start, end int, chunkErr error) error {
	cols := o.ColumnNames()
	for n := start; n < end; n++ {
		r := o.Rows[n]
		sql, args := bulkInsertSQL(shadow, cols, o.Rows[n:n+1], tf)
		rowErr := in.probeRows(ctx, sql, args)
		if rowErr == nil {
			continue
		}
		if !sqlstate.Content(rowErr) {
			return in.dbErr(i, fmt.Sprintf("rows[%d]", n), rowErr)
		}
		for _, c := range sortedKeys(r) {
			if r[c] == nil {
				continue
			}
			err := in.probeRows(ctx, fmt.Sprintf("SELECT CAST($1::text AS %s)", tf.Columns[c]), []any{scalarText(r[c])})
			if err != nil && sqlstate.Content(err) {
				return in.dbErr(i, fmt.Sprintf("rows[%d].%s", n, c), err)
			}
		}
		return in.dbErr(i, fmt.Sprintf("rows[%d]", n), rowErr)
	}
	// Each row is fine alone: the rows conflict with each other.
	return in.dbErr(i, fmt.Sprintf("rows[%d..%d]", start, end-1), chunkErr)
}

// keepTimestampText puts back, as written, the bulk_insert values that YAML
// resolved to timestamps (an unquoted 2024-01-02 decodes to a time.Time):
// the database parses the text for the column's type, as it does for any
// other value, so a date stays a date and a timestamptz without an offset
// is read in the session's time zone rather than as UTC.
func keepTimestampText(body *yaml.Node, bi *BulkInsert) {
	for i := 0; i < len(body.Content); i += 2 {
		if body.Content[i].Value != "rows" || body.Content[i+1].Kind != yaml.SequenceNode {
			continue
		}
		for r, row := range body.Content[i+1].Content {
			for row.Kind == yaml.AliasNode && row.Alias != nil {
				row = row.Alias
			}
			if r >= len(bi.Rows) || row.Kind != yaml.MappingNode {
				continue
			}
			for j := 0; j+1 < len(row.Content); j += 2 {
				k, v := row.Content[j], row.Content[j+1]
				for v.Kind == yaml.AliasNode && v.Alias != nil {
					v = v.Alias
				}
				if _, isTime := bi.Rows[r][k.Value].(time.Time); isTime && v.Kind == yaml.ScalarNode {
					bi.Rows[r][k.Value] = v.Value
				}
			}
		}
	}
}

const bulkChunk = 500

func bulkInsertSQL(target string, cols []string, rows []map[string]any, tf *TableFacts) (string, []any) {
	var b strings.Builder
	qcols := make([]string, len(cols))
	for i, c := range cols {
		qcols[i] = QuoteIdent(c)
	}
	fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES ", target, strings.Join(qcols, ", "))
	var args []any
	for ri, r := range rows {
		if ri > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(")
		for ci, c := range cols {
			if ci > 0 {
				b.WriteString(", ")
			}
			v, ok := r[c]
			if !ok {
				b.WriteString("DEFAULT")
				continue
			}
			args = append(args, scalarText(v))
			b.WriteString(paramWithCast(len(args), c, tf))
		}
		b.WriteString(")")
	}
	return b.String(), args
}

func bulkDeleteSQL(t TableName, rows []map[string]any, tf *TableFacts) (string, []any, bool) {
	if tf == nil || len(tf.Key) == 0 {
		return "", nil, false
	}
	for _, r := range rows {
		for _, k := range tf.Key {
			if v, ok := r[k.Name]; !ok || v == nil {
				return "", nil, false
			}
		}
	}
	keyCols := make([]string, len(tf.Key))
	for i, k := range tf.Key {
		keyCols[i] = QuoteIdent(k.Name)
	}
	var b strings.Builder
	var args []any
	fmt.Fprintf(&b, "DELETE FROM %s WHERE (%s) IN (", t.Quoted(), strings.Join(keyCols, ", "))
	for ri, r := range rows {
		if ri > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(")
		for ki, k := range tf.Key {
			if ki > 0 {
				b.WriteString(", ")
			}
			args = append(args, scalarText(r[k.Name]))
			b.WriteString(paramWithCast(len(args), k.Name, tf))
		}
		b.WriteString(")")
	}
	b.WriteString(")")
	return b.String(), args, true
}

// paramWithCast renders $n, cast through text to the column's type when it is
// known so every scalar (numbers, booleans, enums, json) converts the way a
// literal would.
func paramWithCast(n int, col string, tf *TableFacts) string {
	if tf != nil {
		if typ, ok := tf.Columns[col]; ok {
			return fmt.Sprintf("CAST($%d::text AS %s)", n, typ)
		}
	}
	return fmt.Sprintf("$%d", n)
}

// scalarText renders a YAML scalar as the text PostgreSQL would parse.
func scalarText(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

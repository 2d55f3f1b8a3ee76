package migration

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"
)

func init() { register("backfill", func() Operation { return &DataBackfill{} }) }

// DataBackfill is a data fix of existing columns (the article's Phase 2 on
// its own): `set` gives each column its new value as an SQL expression over
// the row, `where` optionally limits the fix to the rows it holds for. It
// runs in the backfilling phase, in the batched, throttled, checkpointed
// pass of its table (shared with the table's other backfills), and nothing
// else: no catalog change, no undo, no sync.
//
// Each row is fixed once, when its batch reaches it. A row the application
// writes after its batch passed keeps the application's value; one it writes
// before its batch is reached gets the fix on top if it still matches where.
// A fix cannot be undone: abort before the backfill leaves the table as it
// was, abort after it leaves the fixed rows (fix forward).
type DataBackfill struct {
	TableRaw string            `yaml:"table" json:"table"`
	Set      map[string]string `yaml:"set" json:"set"`
	Where    string            `yaml:"where" json:"where,omitempty"`

	Table TableName `yaml:"-" json:"-"`
	// order is Set's columns as the file lists them (sorted when the
	// operation was not decoded from a file).
	order []string
}

// Kind implements Operation.
func (*DataBackfill) Kind() string { return "backfill" }

// Tables implements Operation.
func (o *DataBackfill) Tables() []TableName { return []TableName{o.Table} }

func (o *DataBackfill) creates() []object { return nil }

// Needs implements Operation: the batches UPDATE the table. The owner is
// what refit asks of every table whose rows it backfills.
func (o *DataBackfill) Needs() []Need {
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "update rows of " + o.Table.Quoted() + " in batches (backfill)"}}
}

// Columns lists the columns the operation sets, in the file's order.
func (o *DataBackfill) Columns() []string {
	if len(o.order) == len(o.Set) {
		return o.order
	}
	cols := make([]string, 0, len(o.Set))
	for c := range o.Set {
		cols = append(cols, c)
	}
	sort.Strings(cols)
	return cols
}

// afterDecode implements postDecoder: it keeps the file's order of set (a
// map loses it) and reads an explicit YAML null (`c: null`) as SQL NULL.
// An empty value stays empty, which validate refuses.
func (o *DataBackfill) afterDecode(body *yaml.Node) {
	for i := 0; i+1 < len(body.Content); i += 2 {
		k, v := body.Content[i], body.Content[i+1]
		for v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if k.Value != "set" || v.Kind != yaml.MappingNode {
			continue
		}
		o.order = nil
		if o.Set == nil {
			o.Set = map[string]string{}
		}
		for j := 0; j+1 < len(v.Content); j += 2 {
			ck, cv := v.Content[j], v.Content[j+1]
			for cv.Kind == yaml.AliasNode && cv.Alias != nil {
				cv = cv.Alias
			}
			o.order = append(o.order, ck.Value)
			if cv.Kind == yaml.ScalarNode && cv.ShortTag() == "!!null" && cv.Value != "" {
				o.Set[ck.Value] = "NULL"
			}
		}
	}
}

func (o *DataBackfill) validate() error {
	if err := tableField("table", o.TableRaw, &o.Table); err != nil {
		return err
	}
	if len(o.Set) == 0 {
		return fieldErr("set", "at least one column is required: set: {column: expression}")
	}
	for _, c := range o.Columns() {
		field := "set." + c
		if err := validIdentField(field, c); err != nil {
			return err
		}
		if strings.TrimSpace(o.Set[c]) == "" {
			return fieldErr(field, "an expression is required (write null to set NULL)")
		}
		if err := singleExpression(field, o.Set[c]); err != nil {
			return err
		}
	}
	if o.Where != "" {
		if err := singleExpression("where", o.Where); err != nil {
			return err
		}
	}
	return nil
}

// sets are the operation's column sets, in the file's order.
func (o *DataBackfill) sets() []ColumnSet {
	cols := o.Columns()
	out := make([]ColumnSet, len(cols))
	for i, c := range cols {
		out[i] = ColumnSet{Column: c, Expr: o.Set[c], Where: o.Where, Data: true}
	}
	return out
}

func (o *DataBackfill) inspect(ctx context.Context, in *inspector, i int) error {
	tf, shadow, err := in.table(ctx, i, o.Table)
	if err != nil {
		return err
	}
	attrs := in.columnAttrs(tf)
	for _, c := range o.Columns() {
		field := "set." + c
		if _, ok := tf.Columns[c]; !ok {
			return in.m.OpError(i, field, "column %q does not exist in %s (a column another operation of this file adds must be added before this backfill)", c, tf.Name)
		}
		switch a := attrs[c]; {
		case a.generated:
			return in.m.OpError(i, field, "column %q is a generated column: the database computes it", c)
		case a.identityAlways:
			return in.m.OpError(i, field, "column %q is GENERATED ALWAYS AS IDENTITY: it cannot be updated", c)
		}
		for _, k := range tf.Key {
			if k.Name == c {
				return in.m.OpError(i, field, "column %q is part of the key the backfill of %s paginates on: refit cannot change it in batches", c, tf.Name)
			}
		}
	}
	alias := shadow + " AS " + QuoteIdent(o.Table.Name)
	if o.Where != "" {
		// Prepared: one boolean expression over the row.
		if err := in.probe(ctx, fmt.Sprintf("SELECT 1 FROM %s WHERE (\n%s\n) LIMIT 0", alias, o.Where)); err != nil {
			return in.dbErr(i, "where", err)
		}
	}
	// The batches' own statement, one set at a time (the error names the
	// column), then all of them together.
	sets := o.sets()
	for _, s := range sets {
		if err := in.probe(ctx, RecomputeSQL(alias, []ColumnSet{s}, "true")); err != nil {
			return in.dbErr(i, "set."+s.Column, err)
		}
	}
	if err := in.probe(ctx, RecomputeSQL(alias, sets, "true")); err != nil {
		return in.dbErr(i, "set", err)
	}
	return nil
}

// inspectLate checks the fix against the other operations whose sets share
// its table's backfill pass, once all of them are known. One UPDATE cannot
// set a column twice, and every set of it reads the row as it was before
// it: a set of another operation that reads a column this fix sets (an
// add_column up over the fixed column) would be computed from the old value,
// as would this fix if it read a column another operation sets. Within the
// operation, sets read the old row like the sets of one SQL UPDATE.
func (o *DataBackfill) inspectLate(ctx context.Context, in *inspector, i int) error {
	tf := in.facts.Table(o.Table)
	if tf == nil {
		return nil
	}
	shared := false
	for j, op := range in.m.Operations {
		for _, t := range op.Tables() {
			if other := in.facts.Table(t); j != i && other != nil && other.Name == tf.Name {
				shared = true
			}
		}
	}
	if !shared {
		return nil // the pass is this operation's alone
	}
	shadow := in.shadows[tf.Name.String()]
	mine := map[string]bool{}
	for _, c := range o.Columns() {
		mine[c] = true
	}
	others := passSetsByOp(in.m, in.facts, tf.Name)
	type written struct {
		op  int
		set ColumnSet
	}
	byColumn := map[string]written{}
	for j, sets := range others {
		if j == i {
			continue
		}
		for _, s := range sets {
			if mine[s.Column] {
				return in.m.OpError(i, "set."+s.Column, "column %q is also written in the same backfill pass by %s (%s): one UPDATE cannot set a column twice; set it in one operation",
					s.Column, describe(in.m.Operations[j].Kind(), j), setKind(s))
			}
			if _, seen := byColumn[s.Column]; !seen {
				byColumn[s.Column] = written{op: j, set: s}
			}
		}
	}
	if len(byColumn) == 0 {
		return nil
	}
	alias := QuoteIdent(tf.Name.Name)
	// This fix reading what another operation writes.
	check := func(field, expr string) error {
		cols, err := in.columnsRead(ctx, shadow, alias, expr)
		if err != nil {
			return in.dbErr(i, field, err)
		}
		for _, c := range cols {
			if w, ok := byColumn[c]; ok && !mine[c] {
				return in.m.OpError(i, field, "reads column %q, which %s writes in the same backfill pass (%s): every set of one pass reads the row as it was before it, so this fix would see the old value; run one of them in a later migration",
					c, describe(in.m.Operations[w.op].Kind(), w.op), setKind(w.set))
			}
		}
		return nil
	}
	for _, s := range o.sets() {
		if err := check("set."+s.Column, s.Expr); err != nil {
			return err
		}
	}
	if o.Where != "" {
		if err := check("where", o.Where); err != nil {
			return err
		}
	}
	// Another operation reading what this fix writes.
	for j, sets := range others {
		if j == i {
			continue
		}
		for _, s := range sets {
			for _, expr := range []string{s.Expr, s.Where} {
				if expr == "" {
					continue
				}
				cols, err := in.columnsRead(ctx, shadow, alias, expr)
				if err != nil {
					return in.dbErr(i, "set", err)
				}
				for _, c := range cols {
					if mine[c] {
						return in.m.OpError(i, "set."+c, "%s computes column %q (%s) from column %q, which this backfill sets in the same pass: every set of one pass reads the row as it was before it, so %q would be computed from the value before the fix (and the sync recomputes only the rows the application writes); run the fix in an earlier migration, or fold it into that expression",
							describe(in.m.Operations[j].Kind(), j), s.Column, setKind(s), c, s.Column)
					}
				}
			}
		}
	}
	return nil
}

// setKind says what kind of set writes a column, for messages.
func setKind(s ColumnSet) string {
	switch {
	case s.Fill:
		return "a volatile default, filled once"
	case s.Data:
		return "a data fix"
	}
	return "an expression kept in sync"
}

// passSetsByOp returns, for each operation of m, the sets it adds to the
// backfill pass of table t (resolved). Each operation's share is what its
// plan adds to the plan of the operations before it.
func passSetsByOp(m *Migration, facts *Facts, t TableName) [][]ColumnSet {
	out := make([][]ColumnSet, len(m.Operations))
	prev := 0
	for j := range m.Operations {
		p := BuildPlan(&Migration{Operations: m.Operations[:j+1]}, facts)
		for _, b := range p.Backfills {
			if b.Table == t {
				out[j] = b.Sets[prev:]
				prev = len(b.Sets)
			}
		}
	}
	return out
}

// columnsRead returns the columns of a shadow table an expression reads,
// as PostgreSQL records them: the dependencies of a temporary view over the
// shadow that evaluates it. The expression was already prepared by the
// operation that owns it, so it is known to be one expression. A whole-row
// reference (the row as a composite) is not a column reference and is not
// reported.
func (in *inspector) columnsRead(ctx context.Context, shadow, alias, expr string) ([]string, error) {
	in.nshadow++
	view := fmt.Sprintf("refit_reads_%d", in.nshadow)
	var cols []string
	err := in.savepoint(ctx, func() error {
		if _, err := in.tx.Exec(ctx, fmt.Sprintf("CREATE TEMP VIEW %s AS SELECT 1 AS x FROM %s AS %s WHERE (\n%s\n) IS NOT NULL", view, shadow, alias, expr)); err != nil {
			return err
		}
		rows, err := in.tx.Query(ctx, `SELECT DISTINCT a.attname::text
			FROM pg_rewrite r
			JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
			JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
			WHERE r.ev_class = $1::regclass AND d.refobjid = $2::regclass AND d.refobjsubid > 0
			ORDER BY 1`, "pg_temp."+view, shadow)
		if err != nil {
			return err
		}
		cols, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return cols, err
}

func (o *DataBackfill) plan(b *planBuilder) {
	// No step of its own: the fix is its table's backfill pass. Nothing to
	// undo at abort (a fix cannot be undone) and nothing synced (Data).
	for _, s := range o.sets() {
		b.backfill(o.Table, s)
	}
}

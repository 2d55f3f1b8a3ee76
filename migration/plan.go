package migration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Stage is the part of a job's life in which a step runs.
type Stage int

// Stages, in the order a job runs them (rollback only on abort).
const (
	StageExpand       Stage = iota // before the backfill: new columns, types, seed rows
	StagePostBackfill              // after the backfill: concurrent index builds
	StageContract                  // after the contract gate: NOT NULL, drops
	StageRollback                  // abort before contract: undo expand in reverse
)

func (s Stage) String() string {
	switch s {
	case StageExpand:
		return "expand"
	case StagePostBackfill:
		return "post-backfill"
	case StageContract:
		return "contract"
	case StageRollback:
		return "rollback"
	}
	return "stage(" + strconv.Itoa(int(s)) + ")"
}

// Step is one statement refit runs, with what it costs the application.
type Step struct {
	Op          int    // index of the operation that produced it
	Kind        string // operation kind
	Description string
	SQL         string
	Args        []any
	// Transactional steps run in their own short transaction together with
	// refit's checkpoint, so they happen exactly once. The others (CONCURRENTLY)
	// run in autocommit and must be safe to repeat.
	Transactional bool
	Lock          string // the strongest lock the statement takes on the table
	Cost          string // "metadata only", "scans the table", "rewrites the table", …
	Table         TableName
	// LongRunning statements (VALIDATE, index builds) get the long statement
	// timeout; lock_timeout still bounds how long they wait for their lock.
	LongRunning bool
	// Index names (schema-qualified, quoted) an index built by this step: if
	// it already exists and is valid the step is skipped; if it is INVALID
	// (an interrupted concurrent build) it is dropped first.
	Index string
	// Requires is, for rollback steps, the forward step index (expand steps,
	// then post-backfill steps) whose effect this step undoes.
	Requires int
}

// ColumnSet is one "column = expression" of a backfill.
type ColumnSet struct {
	Column string
	Expr   string
	// Fill marks a volatile default given once to the rows that existed
	// before the column (where it is NULL) and never recomputed by the sync:
	// see recompute.go.
	Fill bool `json:",omitempty"`
}

// Backfill fills new columns of one table from expressions over the row.
type Backfill struct {
	Table TableName
	Sets  []ColumnSet
}

// Plan is everything a migration will run, per stage.
type Plan struct {
	Expand       []Step
	PostBackfill []Step
	Contract     []Step
	Rollback     []Step // in the order to run them (already reversed)
	Backfills    []Backfill
}

// Forward returns expand then post-backfill steps (the indices Requires uses).
func (p *Plan) Forward() []Step {
	return append(append([]Step(nil), p.Expand...), p.PostBackfill...)
}

// Tables lists the tables the plan writes rows of (backfill tables).
func (p *Plan) Tables() []TableName {
	var out []TableName
	for _, b := range p.Backfills {
		out = append(out, b.Table)
	}
	return out
}

const (
	lockAccessExclusive = "ACCESS EXCLUSIVE (brief)"
	lockShareUpdateExcl = "SHARE UPDATE EXCLUSIVE (reads and writes continue)"
	lockRowExclusive    = "ROW EXCLUSIVE (reads and writes continue)"
	lockNone            = "none on tables"
)

// BuildPlan turns a validated migration into steps. facts may be nil (a plan
// printed without a database); then defaults are assumed non-volatile and
// bulk inserts cannot be rolled back by key.
func BuildPlan(m *Migration, facts *Facts) *Plan {
	p := &Plan{}
	backfills := map[string]*Backfill{}
	var order []string
	// Constraint enforcement runs first at contract, before any drop or
	// contract-phase sql, so that the sync can keep running (and re-drain
	// after a late write) until everything it reads is still there.
	var enforce []Step
	var rollback []Step
	addBackfill := func(t TableName, set ColumnSet) {
		key := t.String()
		b := backfills[key]
		if b == nil {
			b = &Backfill{Table: t}
			backfills[key] = b
			order = append(order, key)
		}
		b.Sets = append(b.Sets, set)
	}
	type postStep struct {
		post int
		step Step
	}
	var postRollback []postStep

	for i, op := range m.Operations {
		switch o := op.(type) {
		case *CreateEnum:
			vals := make([]string, len(o.Values))
			for j, v := range o.Values {
				vals[j] = QuoteLiteral(v)
			}
			p.Expand = append(p.Expand, Step{Op: i, Kind: o.Kind(), Transactional: true,
				Description: "create enum type " + o.Name,
				SQL:         fmt.Sprintf("CREATE TYPE %s AS ENUM (%s)", quoteQualified(o.Name), strings.Join(vals, ", ")),
				Lock:        lockNone, Cost: "catalog only"})
			rollback = append(rollback, Step{Op: i, Kind: o.Kind(), Transactional: true, Requires: len(p.Expand) - 1,
				Description: "drop enum type " + o.Name,
				SQL:         fmt.Sprintf("DROP TYPE IF EXISTS %s", quoteQualified(o.Name)),
				Lock:        lockNone, Cost: "catalog only"})

		case *AddColumn:
			t := o.Table
			col := QuoteIdent(o.Column.Name)
			volatile := facts != nil && facts.VolatileDefault[i]
			def := ""
			if o.Column.Default != "" && !volatile {
				// Parenthesized: the default stays one expression even if it
				// reads like a column constraint ("1 NOT NULL").
				def = " DEFAULT (" + o.Column.Default + ")"
			}
			cost := "metadata only (no rewrite)"
			p.Expand = append(p.Expand, Step{Op: i, Kind: o.Kind(), Transactional: true, Table: t,
				Description: fmt.Sprintf("add column %s.%s (nullable during the window)", t, o.Column.Name),
				SQL:         fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s%s", t.Quoted(), col, o.Column.Type, def),
				Lock:        lockAccessExclusive, Cost: cost})
			added := len(p.Expand) - 1
			if volatile {
				p.Expand = append(p.Expand, Step{Op: i, Kind: o.Kind(), Transactional: true, Table: t,
					Description: fmt.Sprintf("set volatile default of %s.%s for new rows (existing rows are backfilled)", t, o.Column.Name),
					SQL:         fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT (%s)", t.Quoted(), col, o.Column.Default),
					Lock:        lockAccessExclusive, Cost: "metadata only"})
			}
			rollback = append(rollback, Step{Op: i, Kind: o.Kind(), Transactional: true, Table: t, Requires: added,
				Description: fmt.Sprintf("drop column %s.%s", t, o.Column.Name),
				SQL:         fmt.Sprintf("ALTER TABLE %s DROP COLUMN IF EXISTS %s", t.Quoted(), col),
				Lock:        lockAccessExclusive, Cost: "metadata only (no rewrite)"})
			switch {
			case o.Up != "":
				addBackfill(t, ColumnSet{Column: o.Column.Name, Expr: o.Up})
			case volatile:
				// Not a function of the row: fill the existing rows once,
				// leave every row the application writes alone.
				addBackfill(t, ColumnSet{Column: o.Column.Name, Expr: o.Column.Default, Fill: true})
			}
			if !o.Column.IsNullable() {
				enforce = append(enforce, notNullSteps(i, o.Kind(), t, o.Column.Name)...)
			}

		case *DropColumn:
			p.Contract = append(p.Contract, Step{Op: i, Kind: o.Kind(), Transactional: true, Table: o.Table,
				Description: fmt.Sprintf("drop column %s.%s", o.Table, o.Column),
				SQL:         fmt.Sprintf("ALTER TABLE %s DROP COLUMN IF EXISTS %s", o.Table.Quoted(), QuoteIdent(o.Column)),
				Lock:        lockAccessExclusive, Cost: "metadata only (space reclaimed by later rewrites)"})

		case *CreateIndex:
			idx := QuoteIdent(o.Name)
			if o.Table.Schema != "" {
				idx = QuoteIdent(o.Table.Schema) + "." + idx
			}
			p.PostBackfill = append(p.PostBackfill, Step{Op: i, Kind: o.Kind(), Table: o.Table, LongRunning: true,
				Description: fmt.Sprintf("build index %s on %s concurrently", o.Name, o.Table),
				SQL:         o.createSQL("CONCURRENTLY "+QuoteIdent(o.Name), o.Table.Quoted()), Index: idx,
				Lock: lockShareUpdateExcl, Cost: "scans the table (outside any transaction)"})
			postRollback = append(postRollback, postStep{post: len(p.PostBackfill) - 1, step: Step{Op: i, Kind: o.Kind(), Table: o.Table,
				Description: "drop index " + o.Name,
				SQL:         "DROP INDEX CONCURRENTLY IF EXISTS " + idx,
				Lock:        lockShareUpdateExcl, Cost: "catalog only (outside any transaction)"}})

		case *SQL:
			s := Step{Op: i, Kind: o.Kind(), Transactional: o.InTransaction(),
				Description: "run sql (" + o.Phase + ")", SQL: o.Up,
				Lock: "whatever the statement takes", Cost: "unknown (escape hatch)", LongRunning: true}
			if o.Phase == "contract" {
				p.Contract = append(p.Contract, s)
				continue
			}
			p.Expand = append(p.Expand, s)
			if o.Down != "" {
				rollback = append(rollback, Step{Op: i, Kind: o.Kind(), Transactional: o.InTransaction(), Requires: len(p.Expand) - 1,
					Description: "run sql down", SQL: o.Down,
					Lock: "whatever the statement takes", Cost: "unknown (escape hatch)", LongRunning: true})
			}

		case *BulkInsert:
			cols := o.ColumnNames()
			var tf *TableFacts
			if facts != nil {
				tf = facts.Tables[o.Table.String()]
			}
			for start := 0; start < len(o.Rows); start += bulkChunk {
				end := min(start+bulkChunk, len(o.Rows))
				sql, args := bulkInsertSQL(o.Table.Quoted(), cols, o.Rows[start:end], tf)
				p.Expand = append(p.Expand, Step{Op: i, Kind: o.Kind(), Transactional: true, Table: o.Table,
					Description: fmt.Sprintf("insert rows %d..%d into %s", start, end-1, o.Table),
					SQL:         sql, Args: args,
					Lock: lockRowExclusive, Cost: fmt.Sprintf("inserts %d rows", end-start)})
				if del, dargs, ok := bulkDeleteSQL(o.Table, o.Rows[start:end], tf); ok {
					rollback = append(rollback, Step{Op: i, Kind: o.Kind(), Transactional: true, Table: o.Table, Requires: len(p.Expand) - 1,
						Description: fmt.Sprintf("delete seeded rows %d..%d from %s by key", start, end-1, o.Table),
						SQL:         del, Args: dargs,
						Lock: lockRowExclusive, Cost: fmt.Sprintf("deletes up to %d rows", end-start)})
				}
			}
		}
	}
	for _, key := range order {
		p.Backfills = append(p.Backfills, *backfills[key])
	}
	p.Contract = append(enforce, p.Contract...)
	// Post-backfill steps follow the expand steps in forward order.
	for _, ps := range postRollback {
		ps.step.Requires = len(p.Expand) + ps.post
		rollback = append(rollback, ps.step)
	}
	// Undo in reverse forward order: the last thing built goes first.
	sort.SliceStable(rollback, func(i, j int) bool { return rollback[i].Requires > rollback[j].Requires })
	p.Rollback = rollback
	return p
}

// createSQL renders CREATE [UNIQUE] INDEX <name> ON <target> …; name may
// be empty (the server picks one) or carry CONCURRENTLY.
func (o *CreateIndex) createSQL(name, target string) string {
	cols := make([]string, len(o.Columns))
	for j, c := range o.Columns {
		cols[j] = QuoteIdent(c)
	}
	var b strings.Builder
	b.WriteString("CREATE ")
	if o.Unique {
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
	if o.Where != "" {
		b.WriteString(" WHERE (" + o.Where + ")")
	}
	return b.String()
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

func notNullSteps(op int, kind string, t TableName, column string) []Step {
	cname := ConstraintName("refit_nn", t.Name, column)
	col := QuoteIdent(column)
	qc := QuoteIdent(cname)
	return []Step{
		{Op: op, Kind: kind, Transactional: true, Table: t,
			Description: fmt.Sprintf("add CHECK (%s IS NOT NULL) NOT VALID", column),
			SQL:         fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s IS NOT NULL) NOT VALID", t.Quoted(), qc, col),
			Lock:        lockAccessExclusive, Cost: "metadata only (no scan)"},
		{Op: op, Kind: kind, Transactional: true, Table: t, LongRunning: true,
			Description: "validate the check",
			SQL:         fmt.Sprintf("ALTER TABLE %s VALIDATE CONSTRAINT %s", t.Quoted(), qc),
			Lock:        lockShareUpdateExcl, Cost: "scans the table"},
		{Op: op, Kind: kind, Transactional: true, Table: t,
			Description: fmt.Sprintf("set %s NOT NULL (proven by the validated check)", column),
			SQL:         fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL", t.Quoted(), col),
			Lock:        lockAccessExclusive, Cost: "metadata only (no scan, PG12+)"},
		{Op: op, Kind: kind, Transactional: true, Table: t,
			Description: "drop the helper check",
			SQL:         fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", t.Quoted(), qc),
			Lock:        lockAccessExclusive, Cost: "metadata only"},
	}
}

// ConstraintName builds a ≤63-byte constraint name, hashing when too long.
func ConstraintName(prefix, table, column string) string {
	n := prefix + "_" + table + "_" + column
	if len(n) <= 63 {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	// Cut on a character boundary: half a UTF-8 sequence is not a valid name.
	cut := 63 - 9
	for cut > 0 && !utf8.RuneStart(n[cut]) {
		cut--
	}
	return n[:cut] + "_" + hex.EncodeToString(sum[:4])
}

// quoteQualified quotes a possibly schema-qualified name such as a type name.
func quoteQualified(s string) string {
	return ParseTableName(s).Quoted()
}

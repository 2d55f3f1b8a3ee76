package chaos

import (
	"fmt"
	"strings"
)

// table is the application table every migration changes.
const table = "items"

// derived is a column a migration derives from the old ones (its `up`), as
// the new application version writes it too: app is the same expression
// over the writer's parameters ($2 name, $3 qty).
type derived struct {
	column  string
	up      string // SQL over the row
	app     string // SQL over $2 (name) and $3 (qty)
	notNull bool
}

// volatileCol is a column with a volatile default and no `up`: filled once
// for the rows that existed, the application's own values everywhere else.
type volatileCol struct {
	column string
}

// template is one kind of migration of the sequence. Each is instantiated
// once per cycle with column and object names suffixed by the cycle.
type template int

const (
	tplUpper    template = iota // add_column NOT NULL with up + create_index
	tplCheck                    // add_check + add_column with up (nullable)
	tplVolatile                 // add_column NOT NULL with a volatile default + add_column NOT NULL with up
	tplPlain                    // create_index + drop_column: no backfill, no sync
	tplAlter                    // alter_column of name (text ↔ varchar(200)): shadow, index rebuilt, swap
	numTemplates
)

func (t template) String() string {
	return [...]string{"upper", "check", "volatile", "plain", "alter"}[t]
}

// nameIndex is an index over the column tplAlter changes: rebuilt on the
// shadow and swapped into place under its name each time.
const nameIndex = "items_name_idx"

// altered is a column a migration changes the type of.
type altered struct {
	column string
	typ    string // as format_type prints it
}

// migration is one migration of the sequence.
type migration struct {
	seq   int // 1-based position in the sequence
	cycle int
	tpl   template
	name  string
	yaml  string
	entry entry

	derived  []derived
	volatile []volatileCol
	indexes  []string // created, must be valid
	checks   []string // added, must be validated
	dropped  []string // columns dropped at contract
	altered  []altered
	audits   []string // rows its sql steps insert into the audit table: each exactly once

	// abortFirst: an attempt of this migration is aborted on purpose in its
	// window (faults may hit its rollback) before it runs to completion.
	abortFirst bool

	// Where faults can be injected (see faults.go).
	expandDDL   bool // expand has a step that waits on ACCESS SHARE
	rows        bool // the backfill updates rows
	sync        bool // the job has a slot (derived columns)
	indexBuild  bool // post-backfill CREATE INDEX CONCURRENTLY
	contractDDL bool // contract has a step that waits on ACCESS SHARE
}

// newMigration instantiates template tpl for cycle c. Every other migration
// with a backfill splits it into ranges backfilled concurrently (the
// file's settings key), each with its own checkpoint and origin.
func newMigration(seq, c int, tpl template, e entry) *migration {
	m := &migration{seq: seq, cycle: c, tpl: tpl, entry: e, name: fmt.Sprintf("chaos_%02d_%s_%d", seq, tpl, c)}
	var ops []string
	switch tpl {
	case tplUpper:
		col, idx := fmt.Sprintf("name_upper_%d", c), fmt.Sprintf("items_name_upper_%d_idx", c)
		ops = append(ops, auditOp(m, "expand"),
			fmt.Sprintf("  - add_column:\n      table: %s\n      column: {name: %s, type: text, nullable: false}\n      up: upper(name)", table, col),
			fmt.Sprintf("  - create_index: {name: %s, table: %s, columns: [%s]}", idx, table, col))
		m.derived = []derived{{column: col, up: "upper(name)", app: "upper($2::text)", notNull: true}}
		m.indexes = []string{idx}
		m.expandDDL, m.rows, m.sync, m.indexBuild, m.contractDDL = true, true, true, true, true
	case tplCheck:
		chk, col := fmt.Sprintf("items_qty_nonneg_%d", c), fmt.Sprintf("qty_band_%d", c)
		ops = append(ops,
			fmt.Sprintf("  - add_check: {table: %s, name: %s, expression: \"qty >= 0\"}", table, chk),
			fmt.Sprintf("  - add_column:\n      table: %s\n      column: {name: %s, type: int}\n      up: qty / 100", table, col))
		m.derived = []derived{{column: col, up: "qty / 100", app: "$3::int / 100"}}
		m.checks = []string{chk}
		m.expandDDL, m.rows, m.sync = true, true, true
	case tplVolatile:
		tok, col := fmt.Sprintf("token_%d", c), fmt.Sprintf("qty_x2_%d", c)
		ops = append(ops,
			fmt.Sprintf("  - add_column:\n      table: %s\n      column: {name: %s, type: uuid, nullable: false, default: \"gen_random_uuid()\"}", table, tok),
			fmt.Sprintf("  - add_column:\n      table: %s\n      column: {name: %s, type: bigint, nullable: false}\n      up: qty::bigint * 2", table, col))
		m.volatile = []volatileCol{{column: tok}}
		m.derived = []derived{{column: col, up: "qty::bigint * 2", app: "$3::bigint * 2", notNull: true}}
		m.expandDDL, m.rows, m.sync, m.contractDDL = true, true, true, true
	case tplPlain:
		idx, drop := fmt.Sprintf("items_qty_%d_idx", c), legacyColumn(c)
		ops = append(ops,
			fmt.Sprintf("  - create_index: {name: %s, table: %s, columns: [qty, id]}", idx, table),
			fmt.Sprintf("  - drop_column: {table: %s, column: %s}", table, drop),
			auditOp(m, "contract"))
		m.indexes = []string{idx}
		m.dropped = []string{drop}
		m.indexBuild, m.contractDDL = true, true
	case tplAlter:
		typ, shown := "varchar(200)", "character varying(200)"
		if c%2 == 0 {
			typ, shown = "text", "text"
		}
		ops = append(ops, fmt.Sprintf("  - alter_column: {table: %s, column: name, type: %q}", table, typ))
		m.altered = []altered{{column: "name", typ: shown}}
		m.indexes = []string{nameIndex}
		m.expandDDL, m.rows, m.sync, m.indexBuild, m.contractDDL = true, true, true, true, true
	}
	settings := ""
	if m.rows && seq%2 == 0 {
		settings = "settings:\n  backfill.parallelism: 3\n"
	}
	m.yaml = fmt.Sprintf("name: %s\n%soperations:\n%s\n", m.name, settings, strings.Join(ops, "\n"))
	return m
}

// auditTable records each run of a migration's sql steps: a transactional
// step commits with its checkpoint, so it must run exactly once whatever
// the faults.
const auditTable = "chaos_audit"

// auditOp is a sql operation of the given phase that takes ACCESS EXCLUSIVE
// on the application table (so it can be held back like any DDL) and
// records that it ran.
func auditOp(m *migration, phase string) string {
	tag := m.name + "/" + phase
	m.audits = append(m.audits, tag)
	op := fmt.Sprintf("  - sql:\n      phase: %s\n      up: \"LOCK TABLE %s IN ACCESS EXCLUSIVE MODE; INSERT INTO %s (tag) VALUES ('%s')\"", phase, table, auditTable, tag)
	if phase == "expand" {
		op += fmt.Sprintf("\n      down: \"DELETE FROM %s WHERE tag = '%s'\"", auditTable, tag)
	}
	return op
}

// legacyColumn is the column of the initial table that cycle c drops. The
// application never writes it, so dropping it breaks no write.
func legacyColumn(c int) string { return fmt.Sprintf("legacy_%d", c) }

package migration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
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
	// Violations, if set, finds the rows that make this step fail (a
	// VALIDATE, a unique index build): the runner adds its report to the
	// step's error.
	Violations *Violations
	// Index names (schema-qualified, quoted) an index built by this step: if
	// it already exists and is valid the step is skipped; if it is INVALID
	// (an interrupted concurrent build) it is dropped first.
	Index string
	// Requires is, for rollback steps, the forward step index (expand steps,
	// then post-backfill steps) whose effect this step undoes.
	Requires int
	// BreaksSync marks a contract step after which the sync cannot run (it
	// drops what the up expressions read, or is arbitrary SQL): the stream is
	// drained and stopped before it and never restarted after it. A Swap
	// step drains inside its own lock instead, and stops the stream once it
	// has committed.
	BreaksSync bool
	// Swap, if set, makes this contract step a swap (see swap.go): SQL is
	// its statements, for plan and the fingerprint.
	Swap *Swap `json:",omitempty"`
	// Verify, if set, makes this contract step a verification that changes
	// nothing (see swap.go): SQL is its query, for plan.
	Verify *Verify `json:",omitempty"`
}

// ColumnSet is one "column = expression" of a backfill.
type ColumnSet struct {
	Column string
	Expr   string
	// Fill marks a volatile default given once to the rows that existed
	// before the column (where it is NULL) and never recomputed by the sync:
	// see recompute.go.
	Fill bool `json:",omitempty"`
	// Data marks a data fix of an existing column (the backfill operation):
	// applied by the backfill's batches only, never by the sync, so a table
	// with only data sets is not published (see Derived).
	Data bool `json:",omitempty"`
	// Where, if set, limits the set to the rows it holds for: an SQL
	// condition over the row as it was before the UPDATE.
	Where string `json:",omitempty"`
}

// Backfill fills new columns of one table from expressions over the row.
type Backfill struct {
	Table TableName // as the database resolved it, when planned with facts
	Sets  []ColumnSet
	Op    int // the first operation that backfills the table
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
	// lockShareRowExcl is what ADD FOREIGN KEY takes on both tables, and
	// CREATE TRIGGER: writes wait (bounded by lock_timeout), reads continue.
	lockShareRowExcl = "SHARE ROW EXCLUSIVE (brief; writes wait, reads continue)"
	// lockAccessShare is what CREATE VIEW takes on the tables it reads.
	lockAccessShare = "ACCESS SHARE (reads and writes continue)"
)

// BuildPlan turns a validated migration into steps. facts may be nil (a plan
// printed without a database); then defaults are assumed non-volatile and
// bulk inserts cannot be rolled back by key.
func BuildPlan(m *Migration, facts *Facts) *Plan {
	b := &planBuilder{p: &Plan{}, facts: facts, backfills: map[string]*Backfill{}}
	for i, op := range m.Operations {
		b.op, b.kind = i, op.Kind()
		op.plan(b)
	}
	return b.finish()
}

// planBuilder collects the steps operations contribute, stage by stage.
// Each operation adds its steps in file order; the builder numbers them,
// ties every undo step to the forward step it undoes, and orders the stages.
type planBuilder struct {
	p     *Plan
	facts *Facts
	op    int    // the operation being planned
	kind  string // its kind

	backfills map[string]*Backfill
	order     []string
	// Constraint enforcement runs first at contract, before any drop or
	// contract-phase sql, so that the sync can keep running (and re-drain
	// after a late write) until everything it reads is still there.
	enforceSteps []Step
	rollback     []Step
	postRollback []postStep
}

type postStep struct {
	post int
	step Step
}

func (b *planBuilder) stamp(s Step) Step {
	s.Op, s.Kind = b.op, b.kind
	return s
}

// expand adds an expand step and the steps that undo it on abort.
func (b *planBuilder) expand(s Step, undo ...Step) {
	b.p.Expand = append(b.p.Expand, b.stamp(s))
	for _, u := range undo {
		u = b.stamp(u)
		u.Requires = len(b.p.Expand) - 1
		b.rollback = append(b.rollback, u)
	}
}

// postBackfill adds a step that runs after the backfill (index builds) and
// the steps that undo it on abort.
func (b *planBuilder) postBackfill(s Step, undo ...Step) {
	b.p.PostBackfill = append(b.p.PostBackfill, b.stamp(s))
	for _, u := range undo {
		b.postRollback = append(b.postRollback, postStep{post: len(b.p.PostBackfill) - 1, step: b.stamp(u)})
	}
}

// enforce adds contract steps that enforce constraints; they run before
// every other contract step.
func (b *planBuilder) enforce(steps ...Step) {
	for _, s := range steps {
		b.enforceSteps = append(b.enforceSteps, b.stamp(s))
	}
}

// contract adds contract steps (drops, contract-phase sql), in file order.
func (b *planBuilder) contract(steps ...Step) {
	for _, s := range steps {
		b.p.Contract = append(b.p.Contract, b.stamp(s))
	}
}

// backfill adds a column set to the backfill of a table. Several
// operations on one table share one pass.
func (b *planBuilder) backfill(t TableName, set ColumnSet) {
	t = b.table(t)
	key := t.String()
	bf := b.backfills[key]
	if bf == nil {
		bf = &Backfill{Table: t, Op: b.op}
		b.backfills[key] = bf
		b.order = append(b.order, key)
	}
	bf.Sets = append(bf.Sets, set)
}

// table resolves a table as written to the name the database gave it, so
// `users` and `public.users` are one table; without facts it is as written.
func (b *planBuilder) table(t TableName) TableName {
	if tf := b.facts.Table(t); tf != nil && tf.Name.Name != "" {
		return tf.Name
	}
	return t
}

// tableFacts returns what the database said of a table (nil without facts).
func (b *planBuilder) tableFacts(t TableName) *TableFacts { return b.facts.Table(t) }

// volatileDefault reports whether the current operation's default is
// volatile (false without facts).
func (b *planBuilder) volatileDefault() bool {
	return b.facts != nil && b.facts.VolatileDefault[b.op]
}

func (b *planBuilder) finish() *Plan {
	p := b.p
	for _, key := range b.order {
		p.Backfills = append(p.Backfills, *b.backfills[key])
	}
	p.Contract = append(b.enforceSteps, p.Contract...)
	// Post-backfill steps follow the expand steps in forward order.
	rollback := b.rollback
	for _, ps := range b.postRollback {
		ps.step.Requires = len(p.Expand) + ps.post
		rollback = append(rollback, ps.step)
	}
	// Undo in reverse forward order: the last thing built goes first.
	sort.SliceStable(rollback, func(i, j int) bool { return rollback[i].Requires > rollback[j].Requires })
	p.Rollback = rollback
	return p
}

// notNullSteps enforce NOT NULL without a long lock: a NOT VALID check,
// VALIDATE (no write lock), SET NOT NULL (proven by the check, no scan),
// drop the check.
func notNullSteps(t TableName, column string) []Step {
	cname := ConstraintName("refit_nn", t.Name, column)
	col := QuoteIdent(column)
	qc := QuoteIdent(cname)
	return []Step{
		{Transactional: true, Table: t,
			Description: fmt.Sprintf("add CHECK (%s IS NOT NULL) NOT VALID", column),
			SQL:         fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s IS NOT NULL) NOT VALID", t.Quoted(), qc, col),
			Lock:        lockAccessExclusive, Cost: "metadata only (no scan)"},
		{Transactional: true, Table: t, LongRunning: true,
			Description: "validate the check",
			SQL:         fmt.Sprintf("ALTER TABLE %s VALIDATE CONSTRAINT %s", t.Quoted(), qc),
			Lock:        lockShareUpdateExcl, Cost: "scans the table"},
		{Transactional: true, Table: t,
			Description: fmt.Sprintf("set %s NOT NULL (proven by the validated check)", column),
			SQL:         fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL", t.Quoted(), col),
			Lock:        lockAccessExclusive, Cost: "metadata only (no scan, PG12+)"},
		{Transactional: true, Table: t,
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

// Fingerprint identifies what the plan does: every statement with its
// arguments, stage, transactionality, undo link and flags, and every
// backfill. Descriptions, locks and costs (text for people) are left out,
// so rewording them in a later refit does not change it. A job records the
// fingerprint it started expanding with; a resume whose plan renders
// differently is refused (it would run step N of another plan).
func (p *Plan) Fingerprint() string {
	h := sha256.New()
	stage := func(name string, steps []Step) {
		fmt.Fprintf(h, "[%s %d]\n", name, len(steps))
		for _, s := range steps {
			fmt.Fprintf(h, "%q %#v %v %q %d %v\n", s.SQL, s.Args, s.Transactional, s.Index, s.Requires, s.BreaksSync)
		}
	}
	stage("expand", p.Expand)
	stage("post-backfill", p.PostBackfill)
	stage("contract", p.Contract)
	stage("rollback", p.Rollback)
	for _, b := range p.Backfills {
		fmt.Fprintf(h, "[backfill %q]\n", b.Table.String())
		for _, s := range b.Sets {
			// What the batches and the apply write. A field added to
			// ColumnSet that changes that belongs here too; a zero value
			// renders as before, so adding one does not change old plans.
			fmt.Fprintf(h, "%q %q", s.Column, s.Expr)
			if s.Fill {
				fmt.Fprint(h, " fill")
			}
			if s.Data {
				fmt.Fprint(h, " data")
			}
			if s.Where != "" {
				fmt.Fprintf(h, " where %q", s.Where)
			}
			fmt.Fprintln(h)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

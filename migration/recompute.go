package migration

import (
	"fmt"
	"strings"
)

// The guarded recompute is the one statement shape that writes derived
// values: the backfill's batches, the stream's apply and the inspector's
// probe all render it from here, so the three can never disagree on what a
// column is set to or when a row is left alone.
//
// A derived set (neither Fill nor Data) is a function of the old shape: it is
// recomputed from the live row whenever the row changes, and the guard
// `c IS DISTINCT FROM (expr)` makes a recompute of a row that is already
// right a read, not a write.
//
// A fill set (ColumnSet.Fill true) is a volatile default (gen_random_uuid(),
// clock_timestamp(), nextval(…)) given to the rows that existed before the
// column did. Its value is not a function of the row, so it must be written
// once and never again: the guard is `c IS NULL` (existing rows read NULL
// from the bare ADD COLUMN; every row inserted after expand got the default
// from the database, or the value the application chose) and the stream never
// recomputes it.
//
// A data set (ColumnSet.Data true, the backfill operation) is a one-time fix
// of an existing column, optionally limited to the rows matching
// ColumnSet.Where. It is applied by the backfill's batches only, never by the
// stream: a row the application writes after its batch passed keeps the
// application's value. Its guard is `((where) AND c IS DISTINCT FROM (expr))`.
// When the sets of one UPDATE do not all share that where, the assignment is
// `c = CASE WHEN (where) THEN (expr) ELSE c END`, so a row updated for another
// set keeps c unless the where holds for it; when they all share it, every
// row the guard lets through matches the where, and `c = (expr)` is enough.
//
// Every set of one UPDATE reads the row as it was before the UPDATE.

// SetList renders "c1 = (e1), c2 = COALESCE(c2, (e2)), c3 = CASE WHEN (w)
// THEN (e3) ELSE c3 END" for an UPDATE.
func SetList(sets []ColumnSet) string {
	out := make([]string, len(sets))
	for i, s := range sets {
		c := QuoteIdent(s.Column)
		switch {
		case s.Fill:
			out[i] = fmt.Sprintf("%s = COALESCE(%s, (%s))", c, c, s.Expr)
		case s.Where != "" && !sharedWhere(sets, s.Where):
			out[i] = fmt.Sprintf("%s = CASE WHEN (%s) THEN (%s) ELSE %s END", c, s.Where, s.Expr, c)
		default:
			out[i] = fmt.Sprintf("%s = (%s)", c, s.Expr)
		}
	}
	return strings.Join(out, ", ")
}

// sharedWhere reports whether every set is limited by the same where.
func sharedWhere(sets []ColumnSet, where string) bool {
	for _, s := range sets {
		if s.Fill || s.Where != where {
			return false
		}
	}
	return true
}

// Guard renders the condition under which a row needs the UPDATE at all:
// some derived column differs from its expression, some fill column is
// still NULL, or some data column differs from its fix on a row its where
// holds for.
func Guard(sets []ColumnSet) string {
	out := make([]string, len(sets))
	for i, s := range sets {
		c := QuoteIdent(s.Column)
		switch {
		case s.Fill:
			out[i] = c + " IS NULL"
		case s.Where != "":
			out[i] = fmt.Sprintf("((%s) AND %s IS DISTINCT FROM (%s))", s.Where, c, s.Expr)
		default:
			out[i] = fmt.Sprintf("%s IS DISTINCT FROM (%s)", c, s.Expr)
		}
	}
	return "(" + strings.Join(out, " OR ") + ")"
}

// RecomputeSQL renders the guarded UPDATE of target (a quoted table name,
// possibly with an alias) restricted by where (rendered by the caller).
func RecomputeSQL(target string, sets []ColumnSet, where string) string {
	return fmt.Sprintf("UPDATE %s SET %s WHERE %s AND %s", target, SetList(sets), where, Guard(sets))
}

// Derived returns the sets the sync keeps recomputing: not the fill-once
// ones, not the data fixes. A table whose sets are all of those needs no
// publication, slot or stream.
func Derived(sets []ColumnSet) []ColumnSet {
	var out []ColumnSet
	for _, s := range sets {
		if !s.Fill && !s.Data {
			out = append(out, s)
		}
	}
	return out
}

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
// A derived set (ColumnSet.Fill false) is a function of the old shape: it is
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

// SetList renders "c1 = (e1), c2 = COALESCE(c2, (e2))" for an UPDATE.
func SetList(sets []ColumnSet) string {
	out := make([]string, len(sets))
	for i, s := range sets {
		c := QuoteIdent(s.Column)
		if s.Fill {
			out[i] = fmt.Sprintf("%s = COALESCE(%s, (%s))", c, c, s.Expr)
		} else {
			out[i] = fmt.Sprintf("%s = (%s)", c, s.Expr)
		}
	}
	return strings.Join(out, ", ")
}

// Guard renders the condition under which a row needs the UPDATE at all:
// some derived column differs from its expression, or some fill column is
// still NULL.
func Guard(sets []ColumnSet) string {
	out := make([]string, len(sets))
	for i, s := range sets {
		c := QuoteIdent(s.Column)
		if s.Fill {
			out[i] = c + " IS NULL"
		} else {
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

// Derived returns the sets the sync keeps recomputing (not the fill-once ones).
func Derived(sets []ColumnSet) []ColumnSet {
	var out []ColumnSet
	for _, s := range sets {
		if !s.Fill {
			out = append(out, s)
		}
	}
	return out
}

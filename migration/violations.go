package migration

import (
	"context"
	"fmt"
	"strings"
)

// Violations finds the rows of a table that break a constraint refit is
// about to add or validate: a CHECK that fails, a foreign key without a
// parent, a duplicate of a unique key. Validation runs it before anything
// changes (the run stops with the count and sample keys, the catalog
// untouched); the runner runs it again when the constraint's VALIDATE or
// index build fails on a row written after expand, so the error names the
// rows there too.
type Violations struct {
	What   string // e.g. `check "price_positive"`
	Count  string // SELECT count(*) … of the violating rows
	Sample string // SELECT <key as text> … LIMIT n: sample keys
}

// violationSample is how many sample keys a report shows.
const violationSample = 5

// NewViolations builds the queries for rows of table t (keyed by key) that
// satisfy cond, an SQL condition over the row (alias "r" is the row).
func NewViolations(what string, t TableName, key []KeyColumn, cond string) *Violations {
	return &Violations{What: what,
		Count:  fmt.Sprintf("SELECT count(*) FROM %s AS r WHERE %s", t.Quoted(), cond),
		Sample: fmt.Sprintf("SELECT %s FROM %s AS r WHERE %s ORDER BY %s LIMIT %d", keyText(key), t.Quoted(), cond, keyList(key), violationSample)}
}

// keyText renders the key of row r as one text value: "(1)" or "(a, 2)".
func keyText(key []KeyColumn) string {
	if len(key) == 0 {
		return "r.ctid::text"
	}
	parts := make([]string, len(key))
	for i, k := range key {
		parts[i] = "r." + QuoteIdent(k.Name) + "::text"
	}
	return "'(' || concat_ws(', ', " + strings.Join(parts, ", ") + ") || ')'"
}

func keyList(key []KeyColumn) string {
	if len(key) == 0 {
		return "r.ctid"
	}
	parts := make([]string, len(key))
	for i, k := range key {
		parts[i] = "r." + QuoteIdent(k.Name)
	}
	return strings.Join(parts, ", ")
}

// Report runs the queries and describes what it found ("" when nothing).
func (v *Violations) Report(ctx context.Context, q Querier) (string, error) {
	var n int64
	if err := q.QueryRow(ctx, v.Count).Scan(&n); err != nil {
		return "", fmt.Errorf("count rows violating %s: %w", v.What, err)
	}
	if n == 0 {
		return "", nil
	}
	rows, err := q.Query(ctx, v.Sample)
	if err != nil {
		return "", fmt.Errorf("sample rows violating %s: %w", v.What, err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return "", err
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d rows violate %s, e.g. keys %s", n, v.What, strings.Join(keys, " ")), nil
}

// refuseViolations reports existing rows that break a constraint as a
// validation error of operation i, field field (nothing has changed yet).
func (in *inspector) refuseViolations(ctx context.Context, i int, field string, v *Violations) error {
	report, err := in.savepointReport(ctx, v)
	if err != nil {
		return in.dbErr(i, field, err)
	}
	if report != "" {
		return in.m.OpError(i, field, "%s: fix the data first (nothing was changed)", report)
	}
	return nil
}

func (in *inspector) savepointReport(ctx context.Context, v *Violations) (report string, err error) {
	err = in.savepoint(ctx, func() error {
		var rerr error
		report, rerr = v.Report(ctx, in.tx)
		return rerr
	})
	return report, err
}

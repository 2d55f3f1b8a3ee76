package backfill

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/migration"
)

// Mismatch is what Verify found: how many rows differ, and the keys of the
// first ones (each key as its columns' text).
type Mismatch struct {
	Rows int64
	Keys [][]string
}

// maxMismatchKeys is how many differing keys Verify keeps.
const maxMismatchKeys = 1000

// Verify compares, row by row, a derived column with its expression over
// the row (column IS DISTINCT FROM (expr)), reading the table in keyset
// chunks of chunk rows, each in its own short read-only transaction, so it
// holds no snapshot for long and runs beside the application and the sync.
// It changes nothing. A row that differs may just not have been synced yet:
// the caller drains the stream and re-checks the keys (Recheck).
func Verify(ctx context.Context, pool *pgxpool.Pool, t migration.TableName, key []migration.KeyColumn, column, expr string, chunk int) (Mismatch, error) {
	if len(key) == 0 {
		return Mismatch{}, errors.New("verify: the table has no key")
	}
	if chunk < 1 {
		chunk = 10000
	}
	q := &queries{table: t.Quoted(), key: key}
	texts := make([]string, len(key))
	order := make([]string, len(key))
	for i, k := range key {
		texts[i] = fmt.Sprintf("%s::text", migration.QuoteIdent(k.Name))
		order[i] = migration.QuoteIdent(k.Name)
	}
	differs := fmt.Sprintf("%s IS DISTINCT FROM (%s)", migration.QuoteIdent(column), expr)
	var m Mismatch
	var after []string
	for {
		var upper []string
		var done bool
		err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			args := q.keyArgs(after)
			upper = make([]string, len(key))
			dest := make([]any, len(upper))
			for i := range upper {
				dest[i] = &upper[i]
			}
			err := tx.QueryRow(ctx, q.findUpper(after != nil, false, chunk), args...).Scan(dest...)
			if errors.Is(err, pgx.ErrNoRows) {
				done, upper = true, nil
			} else if err != nil {
				return fmt.Errorf("verify: find chunk end: %w", err)
			}
			args = append(q.keyArgs(after), q.keyArgs(upper)...)
			rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE %s AND %s ORDER BY %s",
				strings.Join(texts, ", "), q.table, q.bounds(after != nil, upper != nil), differs, strings.Join(order, ", ")), args...)
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			defer rows.Close()
			for rows.Next() {
				k := make([]string, len(key))
				kd := make([]any, len(k))
				for i := range k {
					kd[i] = &k[i]
				}
				if err := rows.Scan(kd...); err != nil {
					return fmt.Errorf("verify: %w", err)
				}
				m.Rows++
				if len(m.Keys) < maxMismatchKeys {
					m.Keys = append(m.Keys, k)
				}
			}
			return rows.Err()
		})
		if err != nil {
			return m, err
		}
		if done {
			return m, nil
		}
		after = upper
	}
}

// SampleKeys renders the first n keys as "(a, b) (c, d)", for messages.
func SampleKeys(keys [][]string, n int) string {
	out := make([]string, 0, n)
	for _, k := range keys[:min(n, len(keys))] {
		out = append(out, "("+strings.Join(k, ", ")+")")
	}
	return strings.Join(out, " ")
}

// Recheck returns the keys among keys whose column still differs from its
// expression.
func Recheck(ctx context.Context, pool *pgxpool.Pool, t migration.TableName, key []migration.KeyColumn, column, expr string, keys [][]string) ([][]string, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	q := &queries{table: t.Quoted(), key: key}
	cols := make([][]string, len(key))
	for _, k := range keys {
		for i, v := range k {
			cols[i] = append(cols[i], v)
		}
	}
	args := make([]any, len(cols))
	unnest := make([]string, len(key))
	casts := make([]string, len(key))
	aliases := make([]string, len(key))
	texts := make([]string, len(key))
	for i, k := range key {
		args[i] = cols[i]
		unnest[i] = fmt.Sprintf("$%d::text[]", i+1)
		aliases[i] = fmt.Sprintf("k%d", i)
		casts[i] = fmt.Sprintf("CAST(u.k%d AS %s)", i, k.Type)
		texts[i] = fmt.Sprintf("%s::text", migration.QuoteIdent(k.Name))
	}
	rows, err := pool.Query(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE %s IN (SELECT %s FROM unnest(%s) AS u(%s)) AND %s IS DISTINCT FROM (%s)",
		strings.Join(texts, ", "), q.table, q.keyTuple(), strings.Join(casts, ", "), strings.Join(unnest, ", "), strings.Join(aliases, ", "),
		migration.QuoteIdent(column), expr), args...)
	if err != nil {
		return nil, fmt.Errorf("verify: recheck: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]string, error) {
		k := make([]string, len(key))
		kd := make([]any, len(k))
		for i := range k {
			kd[i] = &k[i]
		}
		err := r.Scan(kd...)
		return k, err
	})
}

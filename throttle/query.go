package throttle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/refit-dev/refit/sqlstate"
)

// QueryTimeout bounds one run of throttle.query: its validation and every
// evaluation before a batch.
const QueryTimeout = 5 * time.Second

// DB is what runs throttle.query: a *pgxpool.Pool, a *pgxpool.Conn or a
// *pgx.Conn. Every run is its own read-only transaction.
type DB interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// QueryError says why throttle.query was refused or failed. Err is the
// cause; a *pgconn.PgError (with its SQLSTATE) when the server refused it.
type QueryError struct {
	Query string
	// Problem says what is wrong, e.g. "must be exactly one statement".
	Problem string
	Err     error
}

func (e *QueryError) Error() string {
	q := strings.Join(strings.Fields(e.Query), " ")
	if r := []rune(q); len(r) > 80 {
		q = string(r[:80]) + "…"
	}
	msg := "throttle.query"
	if q != "" {
		msg += fmt.Sprintf(" %q", q)
	}
	msg += " " + e.Problem
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *QueryError) Unwrap() error { return e.Err }

// ValidateQuery checks that query can serve as throttle.query, changing
// nothing: it must be exactly one statement (the extended protocol, through
// which it is prepared, refuses more), take no parameters, return exactly
// one column of type boolean, and, run once in a READ ONLY transaction under
// a statement_timeout of QueryTimeout that is then rolled back, succeed and
// return exactly one non-NULL row. A query that writes is refused by the
// server (SQLSTATE 25006), one that fails, such as SELECT 1/0 = 1, reports
// the server's error. A refused query is a *QueryError; any other error
// means the database could not be asked.
func ValidateQuery(ctx context.Context, db DB, query string) (err error) {
	if strings.TrimSpace(query) == "" {
		return &QueryError{Query: query, Problem: "is empty (want one query returning one boolean)"}
	}
	tx, err := db.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("throttle.query: begin a read-only transaction: %w", err)
	}
	defer func() {
		if rerr := tx.Rollback(context.WithoutCancel(ctx)); rerr != nil && !errors.Is(rerr, pgx.ErrTxClosed) && err == nil {
			err = fmt.Errorf("throttle.query: roll back: %w", rerr)
		}
	}()
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL statement_timeout = %d", QueryTimeout.Milliseconds())); err != nil {
		return fmt.Errorf("throttle.query: set statement_timeout: %w", err)
	}
	sd, err := tx.Conn().PgConn().Prepare(ctx, "", query, nil)
	if err != nil {
		return queryError(query, "could not be prepared", err)
	}
	if len(sd.ParamOIDs) > 0 {
		return &QueryError{Query: query, Problem: fmt.Sprintf("must take no parameters (it has %d)", len(sd.ParamOIDs))}
	}
	switch {
	case len(sd.Fields) == 0:
		return &QueryError{Query: query, Problem: "must be a query returning one boolean column (it returns no columns)"}
	case len(sd.Fields) > 1:
		return &QueryError{Query: query, Problem: fmt.Sprintf("must return one boolean column (it returns %d columns)", len(sd.Fields))}
	case sd.Fields[0].DataTypeOID != pgtype.BoolOID:
		typ := fmt.Sprintf("OID %d", sd.Fields[0].DataTypeOID)
		if pt, ok := tx.Conn().TypeMap().TypeForOID(sd.Fields[0].DataTypeOID); ok {
			typ = pt.Name
		}
		return &QueryError{Query: query, Problem: fmt.Sprintf("must return one boolean column (column %q is of type %s)", sd.Fields[0].Name, typ)}
	}
	rows, err := tx.Query(ctx, query, pgx.QueryExecModeDescribeExec)
	if err != nil {
		return queryError(query, "failed when run", err)
	}
	n, null := 0, false
	for rows.Next() {
		var v *bool
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return queryError(query, "failed when run", err)
		}
		n++
		null = null || v == nil
	}
	if err := rows.Err(); err != nil {
		return queryError(query, "failed when run", err)
	}
	switch {
	case n != 1:
		return &QueryError{Query: query, Problem: fmt.Sprintf("must return exactly one row (it returned %d)", n)}
	case null:
		return &QueryError{Query: query, Problem: "must return true or false (it returned NULL)"}
	}
	return nil
}

// queryError builds the QueryError of a statement the server refused,
// saying what the SQLSTATE means for a throttle query.
func queryError(query, problem string, err error) error {
	switch sqlstate.Code(err) {
	case sqlstate.SyntaxError: // also what the server answers to more than one statement
		problem = "must be exactly one valid SQL statement"
	case sqlstate.ReadOnlySQLTransaction:
		problem = "must not write (it ran in a read-only transaction)"
	case sqlstate.QueryCanceled:
		problem = fmt.Sprintf("must finish within %s (statement_timeout)", QueryTimeout)
	}
	return &QueryError{Query: query, Problem: problem, Err: err}
}

// evaluate runs the query once in a read-only transaction, rolled back, so
// it can never write whatever it became after validation.
func evaluate(ctx context.Context, db DB, query string) (hold bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, QueryTimeout)
	defer cancel()
	tx, err := db.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return false, fmt.Errorf("throttle.query: begin a read-only transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only: nothing to keep, a failed rollback ends the session
	if err := tx.QueryRow(ctx, query, pgx.QueryExecModeDescribeExec).Scan(&hold); err != nil {
		return false, queryError(query, "failed", err)
	}
	return hold, nil
}

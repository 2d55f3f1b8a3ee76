// Package sqlstate owns the SQLSTATE codes refit acts on and how it
// classifies them.
//
// Every decision refit takes on a server error (retry it, skip it, explain
// it, report it as a fault of the migration) comes from the error's
// SQLSTATE, found with errors.As in the wrapped chain, and never from its
// message text. The codes are named here, once, after PostgreSQL's
// condition names (Appendix A, "PostgreSQL Error Codes"); other packages use
// these names instead of spelling codes out.
//
// Two classifications are shared by every package:
//
//   - Retryable: a transient conflict with another session (lock not
//     available, deadlock, serialization failure). The server rolled the
//     statement's transaction back, and running the same transaction again
//     can succeed. DDL steps, backfill batches and the replication apply
//     all retry exactly these.
//   - Content: an error caused by the text or values of the statement (by
//     SQLSTATE class), not by the state of the server or the connection, so
//     it says something about the migration that produced the statement.
package sqlstate

import (
	"errors"
	"slices"

	"github.com/jackc/pgx/v5/pgconn"
)

// The SQLSTATE codes refit acts on, by class.
const (
	// Class 22: data exception.

	// NullValueNotAllowed is null_value_not_allowed: refit.submit was
	// given a NULL name or source.
	NullValueNotAllowed = "22004"
	// DivisionByZero is division_by_zero.
	DivisionByZero = "22012"
	// InvalidParameterValue is invalid_parameter_value: refit.submit was
	// given a contract mode or a name it refuses.
	InvalidParameterValue = "22023"

	// Class 23: integrity constraint violation.

	// NotNullViolation is not_null_violation: a NULL where NOT NULL holds.
	NotNullViolation = "23502"
	// ForeignKeyViolation is foreign_key_violation: a row without its parent.
	ForeignKeyViolation = "23503"
	// UniqueViolation is unique_violation: a duplicate key.
	UniqueViolation = "23505"
	// CheckViolation is check_violation: a row fails a CHECK constraint.
	CheckViolation = "23514"

	// Class 25: invalid transaction state.

	// ActiveSQLTransaction is active_sql_transaction: the statement cannot
	// run inside a transaction block (CREATE INDEX CONCURRENTLY, …).
	ActiveSQLTransaction = "25001"
	// ReadOnlySQLTransaction is read_only_sql_transaction: a write in a
	// read-only transaction.
	ReadOnlySQLTransaction = "25006"

	// Class 28: invalid authorization specification.

	// InvalidPassword is invalid_password: authentication failed.
	InvalidPassword = "28P01"

	// Class 40: transaction rollback.

	// SerializationFailure is serialization_failure: the transaction
	// conflicted with a concurrent one and was rolled back.
	SerializationFailure = "40001"
	// DeadlockDetected is deadlock_detected: the transaction was chosen as
	// a deadlock victim and rolled back.
	DeadlockDetected = "40P01"

	// Class 42: syntax error or access rule violation.

	// InsufficientPrivilege is insufficient_privilege: permission denied.
	InsufficientPrivilege = "42501"
	// SyntaxError is syntax_error; also the answer to more than one
	// statement where one is expected.
	SyntaxError = "42601"
	// UndefinedObject is undefined_object: an unknown setting, a replication
	// slot or origin that does not exist, ….
	UndefinedObject = "42704"
	// DuplicateObject is duplicate_object: the name is taken.
	DuplicateObject = "42710"
	// UndefinedColumn is undefined_column: no such column.
	UndefinedColumn = "42703"
	// UndefinedTable is undefined_table: no such table or view.
	UndefinedTable = "42P01"
	// InvalidObjectDefinition is invalid_object_definition.
	InvalidObjectDefinition = "42P17"

	// Class 53: insufficient resources.

	// ConfigurationLimitExceeded is configuration_limit_exceeded: all
	// replication slots or WAL senders are in use, too many connections, ….
	ConfigurationLimitExceeded = "53400"

	// Class 55: object not in prerequisite state.

	// ObjectInUse is object_in_use: a replication slot, origin or database
	// still held by another session.
	ObjectInUse = "55006"
	// UnsafeNewEnumValueUsage is unsafe_new_enum_value_usage: an enum value
	// used in the transaction that added it.
	UnsafeNewEnumValueUsage = "55P04"
	// LockNotAvailable is lock_not_available: lock_timeout expired (or
	// NOWAIT found the lock taken).
	LockNotAvailable = "55P03"

	// Class 57: operator intervention.

	// QueryCanceled is query_canceled: statement_timeout expired, or the
	// statement was cancelled (pg_cancel_backend, a client cancel request).
	QueryCanceled = "57014"
	// AdminShutdown is admin_shutdown: the session was terminated
	// (pg_terminate_backend, a server shutdown).
	AdminShutdown = "57P01"
)

// Code returns the SQLSTATE of the first *pgconn.PgError in err's chain, or
// "" if there is none (nil, a network error, a context error, …).
func Code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// Is reports whether err carries a server error with one of codes.
func Is(err error, codes ...string) bool {
	code := Code(err)
	return code != "" && slices.Contains(codes, code)
}

// Retryable reports whether err is a transient conflict with another
// session that running the same statement again, in a new transaction, can
// succeed: LockNotAvailable (lock_timeout), DeadlockDetected or
// SerializationFailure. For each the server has rolled the transaction back,
// so a retry must run the whole transaction again, which every caller does.
//
// The same set applies to DDL: a DDL step runs in its own transaction
// together with its checkpoint, and a deadlock or serialization failure of
// that transaction (a checkpoint update racing another session under
// default_transaction_isolation = serializable, say) is as transient as a
// lock timeout. QueryCanceled is not retryable: statement_timeout would
// expire again, and a cancel by an operator is meant to stop the work.
func Retryable(err error) bool {
	return Is(err, LockNotAvailable, DeadlockDetected, SerializationFailure)
}

// Content reports whether err is a server error caused by the text or
// values of the statement (by SQLSTATE class), rather than by the state of
// the server or the connection.
func Content(err error) bool {
	code := Code(err)
	if len(code) < 2 {
		return false
	}
	switch code[:2] {
	case "0A", // feature not supported
		"21", // cardinality violation
		"22", // data exception
		"23", // integrity constraint violation
		"2B", // dependent privilege descriptors still exist
		"3F", // invalid schema name
		"42", // syntax error or access rule violation
		"44", // WITH CHECK OPTION violation
		"54": // program limit exceeded
		return true
	}
	// Of class 55 (object not in prerequisite state) only this one is the
	// statement's fault: it uses an enum value added in the same
	// transaction. The others (a lock not available, an object in use)
	// are the server's state.
	return code == UnsafeNewEnumValueUsage
}

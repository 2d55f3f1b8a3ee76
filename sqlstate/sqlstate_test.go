package sqlstate_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/refit-dev/refit/sqlstate"
)

func pgErr(code string) error { return &pgconn.PgError{Code: code, Message: "server says " + code} }

func wrapped(code string) error { return fmt.Errorf("step: %w", fmt.Errorf("exec: %w", pgErr(code))) }

// redacted hides its cause from Unwrap but lets errors.As find a copy, like
// config.RedactError's errors.
type redacted struct{ orig error }

func (e redacted) Error() string { return "redacted" }

func (e redacted) As(target any) bool { return errors.As(e.orig, target) }

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"plain", errors.New("ERROR: lock timeout (SQLSTATE 55P03)"), ""}, // never from message text
		{"context", context.DeadlineExceeded, ""},
		{"direct", pgErr("55P03"), "55P03"},
		{"wrapped", wrapped("40P01"), "40P01"},
		{"joined", errors.Join(errors.New("rollback failed"), wrapped("23514")), "23514"},
		{"first in chain", fmt.Errorf("%w", errors.Join(pgErr("42601"), pgErr("55P03"))), "42601"},
		{"custom As", redacted{wrapped("28P01")}, "28P01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sqlstate.Code(tc.err); got != tc.want {
				t.Errorf("Code(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}

func TestIs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		codes []string
		want  bool
	}{
		{"nil", nil, []string{sqlstate.ObjectInUse}, false},
		{"no codes", wrapped("55006"), nil, false},
		{"match", wrapped("55006"), []string{sqlstate.ObjectInUse}, true},
		{"one of", wrapped("23502"), []string{sqlstate.CheckViolation, sqlstate.NotNullViolation}, true},
		{"other", wrapped("23505"), []string{sqlstate.CheckViolation, sqlstate.NotNullViolation}, false},
		{"message only", errors.New("SQLSTATE 42501"), []string{sqlstate.InsufficientPrivilege}, false},
		{"empty code", pgErr(""), []string{""}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sqlstate.Is(tc.err, tc.codes...); got != tc.want {
				t.Errorf("Is(%v, %q) = %v, want %v", tc.err, tc.codes, got, tc.want)
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{pgErr("55P03"), true}, // lock_not_available
		{pgErr("40P01"), true}, // deadlock_detected
		{pgErr("40001"), true}, // serialization_failure
		{wrapped("55P03"), true},
		{wrapped("40P01"), true},
		{wrapped("40001"), true},
		{errors.Join(errors.New("other"), pgErr("55P03")), true},
		{redacted{wrapped("40001")}, true},
		{wrapped("57014"), false}, // statement_timeout: would expire again
		{wrapped("57P01"), false},
		{wrapped("55006"), false},
		{wrapped("42601"), false},
		{wrapped("23505"), false},
		{wrapped("23514"), false},
		{wrapped("53400"), false},
		{context.DeadlineExceeded, false},
		{errors.New("canceling statement due to lock timeout"), false}, // never by message text
		{nil, false},
	} {
		if got := sqlstate.Retryable(tc.err); got != tc.want {
			t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestContent(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{wrapped("0A000"), true}, // feature_not_supported
		{wrapped("21000"), true}, // cardinality_violation
		{wrapped("22012"), true}, // division_by_zero
		{wrapped("22P02"), true}, // invalid_text_representation
		{wrapped("23502"), true},
		{wrapped("23505"), true},
		{wrapped("23514"), true},
		{wrapped("2BP01"), true}, // dependent_objects_still_exist
		{wrapped("3F000"), true}, // invalid_schema_name
		{wrapped("42601"), true},
		{wrapped("42703"), true}, // undefined_column
		{wrapped("42501"), true},
		{wrapped("44000"), true}, // with_check_option_violation
		{wrapped("54001"), true}, // statement_too_complex
		{wrapped("25001"), false},
		{wrapped("25006"), false},
		{wrapped("40001"), false},
		{wrapped("40P01"), false},
		{wrapped("53400"), false},
		{wrapped("55P03"), false},
		{pgErr("55P04"), true},  // unsafe_new_enum_value_usage: the statement's fault
		{pgErr("55006"), false}, // object_in_use: the server's state
		{wrapped("57014"), false},
		{wrapped("57P01"), false},
		{wrapped("08006"), false}, // connection_failure
		{wrapped("XX000"), false}, // internal_error
		{pgErr("4"), false},       // malformed: too short
		{pgErr(""), false},
		{errors.New("syntax error at or near"), false}, // never by message text
		{context.Canceled, false},
		{nil, false},
	} {
		if got := sqlstate.Content(tc.err); got != tc.want {
			t.Errorf("Content(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestCodes pins every named code to PostgreSQL's value: a typo here would
// silently change a decision elsewhere.
func TestCodes(t *testing.T) {
	for name, tc := range map[string]struct{ got, want string }{
		"DivisionByZero":             {sqlstate.DivisionByZero, "22012"},
		"NotNullViolation":           {sqlstate.NotNullViolation, "23502"},
		"UniqueViolation":            {sqlstate.UniqueViolation, "23505"},
		"CheckViolation":             {sqlstate.CheckViolation, "23514"},
		"ActiveSQLTransaction":       {sqlstate.ActiveSQLTransaction, "25001"},
		"ReadOnlySQLTransaction":     {sqlstate.ReadOnlySQLTransaction, "25006"},
		"InvalidPassword":            {sqlstate.InvalidPassword, "28P01"},
		"SerializationFailure":       {sqlstate.SerializationFailure, "40001"},
		"DeadlockDetected":           {sqlstate.DeadlockDetected, "40P01"},
		"InsufficientPrivilege":      {sqlstate.InsufficientPrivilege, "42501"},
		"SyntaxError":                {sqlstate.SyntaxError, "42601"},
		"UndefinedObject":            {sqlstate.UndefinedObject, "42704"},
		"DuplicateObject":            {sqlstate.DuplicateObject, "42710"},
		"UndefinedTable":             {sqlstate.UndefinedTable, "42P01"},
		"InvalidObjectDefinition":    {sqlstate.InvalidObjectDefinition, "42P17"},
		"ConfigurationLimitExceeded": {sqlstate.ConfigurationLimitExceeded, "53400"},
		"ObjectInUse":                {sqlstate.ObjectInUse, "55006"},
		"LockNotAvailable":           {sqlstate.LockNotAvailable, "55P03"},
		"QueryCanceled":              {sqlstate.QueryCanceled, "57014"},
		"AdminShutdown":              {sqlstate.AdminShutdown, "57P01"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", name, tc.got, tc.want)
		}
	}
}

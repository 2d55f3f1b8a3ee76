// Package migration owns the migration file: its model, strict parsing and
// static validation, and the translation of operations into an ordered plan of
// SQL steps per stage (expand, post-backfill, contract, rollback).
//
// A migration is a YAML (or JSON, which YAML accepts) document with a name and
// an ordered list of operations. Every operation is a one-key mapping whose key
// is the operation kind:
//
//	name: split_full_name
//	operations:
//	  - add_column:
//	      table: users
//	      column: {name: first_name, type: varchar(100), nullable: false}
//	      up: split_part(full_name, ' ', 1)
//
// Decoding is strict: unknown keys are errors naming the file, the operation
// index and the field, so a typo never silently changes what runs.
package migration

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ContractMode says when the contract gate opens.
type ContractMode string

// Contract modes.
const (
	ContractManual ContractMode = "manual" // wait for the operator
	ContractNow    ContractMode = "now"    // contract as soon as the window is ready
	ContractAuto   ContractMode = "auto"   // contract after a quiet period
)

// ParseContractMode validates a contract mode string.
func ParseContractMode(s string) (ContractMode, error) {
	switch m := ContractMode(s); m {
	case ContractManual, ContractNow, ContractAuto:
		return m, nil
	}
	return "", fmt.Errorf("contract mode %q: want one of manual, now, auto", s)
}

// Migration is one parsed migration file.
type Migration struct {
	Name       string       `yaml:"name" json:"name"`
	Contract   ContractMode `yaml:"contract,omitempty" json:"contract,omitempty"`
	Operations []Operation  `yaml:"-" json:"-"`
	// Settings are per-job tuning keys (backfill.batch_size, throttle.query,
	// …) that override the configuration for this migration's job.
	Settings map[string]string `yaml:"-" json:"-"`

	// File is the path the migration was read from (for error messages).
	File string `yaml:"-" json:"-"`
	// Checksum is the SHA-256 of the file's bytes.
	Checksum string `yaml:"-" json:"-"`
	// Source holds the raw file bytes; jobs persist it so a worker can rebuild
	// the migration without the file.
	Source []byte `yaml:"-" json:"-"`
}

// Error is a validation error that names where in the file it was found.
type Error struct {
	File  string
	Op    int    // operation index, -1 when the error is not inside an operation
	Kind  string // operation kind, if known
	Field string // field path inside the operation, if known
	Line  int
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
	} else {
		b.WriteString("<migration>")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Op >= 0 {
		fmt.Fprintf(&b, "operations[%d]", e.Op)
		if e.Kind != "" {
			fmt.Fprintf(&b, " (%s)", e.Kind)
		}
		if e.Field != "" {
			fmt.Fprintf(&b, " field %q", e.Field)
		}
		b.WriteString(": ")
	} else if e.Field != "" {
		fmt.Fprintf(&b, "field %q: ", e.Field)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// IsInvalid reports whether err is (or wraps) a migration validation error.
func IsInvalid(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// Load reads and parses a migration file.
func Load(path string) (*Migration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Op: -1, Msg: err.Error()}
	}
	return Parse(path, data)
}

// Parse parses migration bytes; file is used in error messages only.
func Parse(file string, data []byte) (*Migration, error) {
	m, err := decode(file, data)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	m.File = file
	m.Checksum = hex.EncodeToString(sum[:])
	m.Source = append([]byte(nil), data...)
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// Validate checks everything that can be checked without a database.
func (m *Migration) Validate() error {
	if strings.TrimSpace(m.Name) == "" {
		return &Error{File: m.File, Op: -1, Field: "name", Msg: "is required"}
	}
	if strings.Trim(m.Name, "0123456789") == "" || strings.HasPrefix(m.Name, "#") {
		// Commands take JOB as an id or a name: a name that reads as an id
		// would be confused with one.
		return &Error{File: m.File, Op: -1, Field: "name", Msg: fmt.Sprintf("%q reads as a job id: a migration name needs a letter (e.g. %q)", m.Name, "m"+strings.TrimPrefix(m.Name, "#"))}
	}
	if m.Contract != "" {
		if _, err := ParseContractMode(string(m.Contract)); err != nil {
			return &Error{File: m.File, Op: -1, Field: "contract", Msg: err.Error()}
		}
	}
	if len(m.Operations) == 0 {
		return &Error{File: m.File, Op: -1, Field: "operations", Msg: "at least one operation is required"}
	}
	seen := map[[2]string]int{} // {kind, key} → operation
	for i, op := range m.Operations {
		if err := op.validate(); err != nil {
			return m.opError(i, err)
		}
		for _, obj := range op.creates() {
			k := [2]string{obj.kind, obj.key}
			if j, dup := seen[k]; dup {
				return m.opError(i, fieldErr(obj.field, "%s %q is also created by operations[%d]", obj.kind, obj.name, j))
			}
			seen[k] = i
		}
	}
	return nil
}

// opError wraps an operation-level error into an *Error naming file and index.
func (m *Migration) opError(i int, err error) error {
	e := &Error{File: m.File, Op: i, Kind: m.Operations[i].Kind(), Msg: err.Error()}
	var fe *fieldError
	if errors.As(err, &fe) {
		e.Field, e.Msg, e.Line = fe.field, fe.msg, fe.line
	}
	return e
}

// OpError builds an *Error for operation i (used by database-side checks).
func (m *Migration) OpError(i int, field, format string, args ...any) error {
	return m.opError(i, fieldErr(field, format, args...))
}

type fieldError struct {
	field, msg string
	line       int // the line of the file it is about, when decoding knew it
}

func (e *fieldError) Error() string { return fmt.Sprintf("field %q: %s", e.field, e.msg) }

func fieldErr(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

// TableName is a possibly schema-qualified table name.
type TableName struct {
	Schema string `json:"schema,omitempty"` // empty means the search_path decides (normally public)
	Name   string `json:"name"`
}

// ParseTableName splits "schema.table" (or "table").
func ParseTableName(s string) TableName {
	if i := strings.IndexByte(s, '.'); i > 0 {
		return TableName{Schema: s[:i], Name: s[i+1:]}
	}
	return TableName{Name: s}
}

func (t TableName) String() string {
	if t.Schema == "" {
		return t.Name
	}
	return t.Schema + "." + t.Name
}

// Quoted returns the table name as a quoted SQL identifier.
func (t TableName) Quoted() string {
	if t.Schema == "" {
		return pgx.Identifier{t.Name}.Sanitize()
	}
	return pgx.Identifier{t.Schema, t.Name}.Sanitize()
}

// Literal returns the table name as a quoted string literal usable with ::regclass.
func (t TableName) Literal() string {
	return QuoteLiteral(t.Quoted())
}

// QuoteIdent quotes one SQL identifier.
func QuoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// QuoteLiteral quotes a string as an SQL literal.
func QuoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

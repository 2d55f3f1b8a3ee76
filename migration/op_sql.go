package migration

import (
	"context"
	"errors"
	"strings"
)

func init() { register("sql", func() Operation { return &SQL{} }) }

// SQL is the escape hatch: raw statements run at expand or contract.
type SQL struct {
	Up            string `yaml:"up" json:"up"`
	Down          string `yaml:"down" json:"down,omitempty"`
	Phase         string `yaml:"phase" json:"phase,omitempty"`
	Transactional *bool  `yaml:"transactional" json:"transactional,omitempty"`
}

// Kind implements Operation.
func (*SQL) Kind() string { return "sql" }

// Tables implements Operation: what raw SQL touches is not known, so it
// takes part in no per-table scheduling (the author orders such jobs).
func (o *SQL) Tables() []TableName { return nil }

func (o *SQL) creates() []object { return nil }

func (o *SQL) Needs() []Need { return nil }

// InTransaction reports whether up/down run inside a transaction (default true).
func (o *SQL) InTransaction() bool { return o.Transactional == nil || *o.Transactional }

func (o *SQL) validate() error {
	if strings.TrimSpace(o.Up) == "" {
		return fieldErr("up", "is required")
	}
	switch o.Phase {
	case "":
		o.Phase = "expand"
	case "expand", "contract":
	default:
		return fieldErr("phase", "%q: want expand or contract", o.Phase)
	}
	if o.Phase == "contract" && o.Down != "" {
		return fieldErr("down", "a contract-phase sql operation cannot be rolled back (contract is fix-forward); remove down")
	}
	return nil
}

func (o *SQL) inspect(ctx context.Context, in *inspector, i int) error {
	if o.Phase == "contract" {
		return nil // inspectLate: it runs after every other operation
	}
	// up stays in effect (rolled back with the inspection) so later
	// operations see what it created; down is checked on top of it and
	// undone, so an abort's undo step is known to work.
	if ok, err := in.checkSQL(ctx, i, "up", o.Up); err != nil || !ok || o.Down == "" {
		return err
	}
	err := in.savepoint(ctx, func() error {
		if _, err := in.checkSQL(ctx, i, "down", o.Down); err != nil {
			return err
		}
		return errRollbackProbe
	})
	if errors.Is(err, errRollbackProbe) {
		return nil
	}
	return err
}

// inspectLate checks a contract-phase sql after every other operation,
// which is when it runs.
func (o *SQL) inspectLate(ctx context.Context, in *inspector, i int) error {
	if o.Phase != "contract" {
		return nil
	}
	_, err := in.checkSQL(ctx, i, "up", o.Up)
	return err
}

func (o *SQL) plan(b *planBuilder) {
	s := Step{Transactional: o.InTransaction(),
		Description: "run sql (" + o.Phase + ")", SQL: o.Up,
		Lock: "whatever the statement takes", Cost: "unknown (escape hatch)", LongRunning: true}
	if o.Phase == "contract" {
		// Arbitrary SQL may drop what the sync reads.
		s.BreaksSync = true
		b.contract(s)
		return
	}
	var undo []Step
	if o.Down != "" {
		undo = append(undo, Step{Transactional: o.InTransaction(),
			Description: "run sql down", SQL: o.Down,
			Lock: "whatever the statement takes", Cost: "unknown (escape hatch)", LongRunning: true})
	}
	b.expand(s, undo...)
}

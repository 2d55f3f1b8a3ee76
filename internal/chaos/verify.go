package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// verify checks, with the application paused, that the job completed, that
// every row holds what the ledger says (old columns) and what `up` says
// (derived columns of every completed migration), that volatile columns
// hold a value of their own that nothing changed, that m's objects are in
// place, and that refit left nothing behind.
func (h *harness) verify(ctx context.Context, m *migration) error {
	h.w.pause()
	defer h.w.resume()
	if _, n, errs := h.w.snapshot(); n > 0 {
		return fmt.Errorf("the application saw %d errors: %w", n, errors.Join(errs...))
	}
	var applied bool
	if err := h.ctl.QueryRow(ctx, "SELECT EXISTS (SELECT FROM refit.migrations WHERE name = $1)", m.name).Scan(&applied); err != nil {
		return fmt.Errorf("read refit.migrations: %w", err)
	}
	if !applied {
		return fmt.Errorf("%s is not recorded in refit.migrations", m.name)
	}
	if err := h.checkRows(ctx); err != nil {
		return err
	}
	for _, c := range h.completed {
		for _, d := range c.derived {
			var bad int64
			var notNull bool
			if err := h.ctl.QueryRow(ctx, fmt.Sprintf(`SELECT (SELECT count(*) FROM %s WHERE %s IS DISTINCT FROM (%s)),
				(SELECT attnotnull FROM pg_attribute WHERE attrelid = '%s'::regclass AND attname = $1)`,
				table, pgx.Identifier{d.column}.Sanitize(), d.up, table), d.column).Scan(&bad, &notNull); err != nil {
				return fmt.Errorf("check %s: %w", d.column, err)
			}
			if bad > 0 {
				return fmt.Errorf("%d rows have %s different from its up %s", bad, d.column, d.up)
			}
			if notNull != d.notNull {
				return fmt.Errorf("%s: NOT NULL is %v, want %v", d.column, notNull, d.notNull)
			}
		}
		for _, v := range c.volatile {
			if err := h.checkVolatile(ctx, v.column); err != nil {
				return err
			}
		}
	}
	for _, a := range m.altered {
		var typ string
		var leftover int
		if err := h.ctl.QueryRow(ctx, fmt.Sprintf(`SELECT format_type(atttypid, atttypmod),
			(SELECT count(*) FROM pg_attribute WHERE attrelid = '%s'::regclass AND attname LIKE 'refit\_%%' AND NOT attisdropped)
			FROM pg_attribute WHERE attrelid = '%s'::regclass AND attname = $1`, table, table), a.column).Scan(&typ, &leftover); err != nil {
			return fmt.Errorf("check the type of %s: %w", a.column, err)
		}
		if typ != a.typ || leftover > 0 {
			return fmt.Errorf("column %s is %s (want %s), %d refit_ columns left", a.column, typ, a.typ, leftover)
		}
	}
	for _, idx := range m.indexes {
		var valid bool
		err := h.ctl.QueryRow(ctx, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", idx).Scan(&valid)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("index %s is missing", idx)
		case err != nil:
			return fmt.Errorf("check index %s: %w", idx, err)
		case !valid:
			return fmt.Errorf("index %s is INVALID", idx)
		}
	}
	for _, chk := range m.checks {
		var validated bool
		err := h.ctl.QueryRow(ctx, "SELECT convalidated FROM pg_constraint WHERE conname = $1 AND conrelid = $2::regclass", chk, table).Scan(&validated)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("check constraint %s is missing", chk)
		case err != nil:
			return fmt.Errorf("check constraint %s: %w", chk, err)
		case !validated:
			return fmt.Errorf("check constraint %s is not validated", chk)
		}
	}
	for _, col := range m.dropped {
		var n int
		if err := h.ctl.QueryRow(ctx, "SELECT count(*) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped", table, col).Scan(&n); err != nil {
			return fmt.Errorf("check column %s: %w", col, err)
		}
		if n != 0 {
			return fmt.Errorf("column %s was not dropped", col)
		}
	}
	if err := h.checkAudit(ctx); err != nil {
		return err
	}
	if err := h.checkLeftovers(ctx, "complete"); err != nil {
		return err
	}
	st, _, _ := h.w.snapshot()
	h.logf("  verified: %d rows as the ledger and up say after %d committed writes; nothing left behind", h.tally.lastRows, st.committed())
	return nil
}

// checkAudit checks that the sql steps of the completed migrations ran
// exactly once, and those of aborted attempts not at all (their down undid
// them).
func (h *harness) checkAudit(ctx context.Context) error {
	rows, err := h.ctl.Query(ctx, "SELECT tag, count(*) FROM "+auditTable+" GROUP BY tag")
	if err != nil {
		return fmt.Errorf("read %s: %w", auditTable, err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (struct {
		tag string
		n   int
	}, error) {
		var v struct {
			tag string
			n   int
		}
		return v, r.Scan(&v.tag, &v.n)
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", auditTable, err)
	}
	want := map[string]int{}
	for _, m := range h.completed {
		for _, tag := range m.audits {
			want[tag] = 1
		}
	}
	var bad []string
	for _, g := range got {
		if g.n != want[g.tag] {
			bad = append(bad, fmt.Sprintf("%s ran %d times", g.tag, g.n))
		}
		delete(want, g.tag)
	}
	for tag := range want {
		bad = append(bad, fmt.Sprintf("%s never ran", tag))
	}
	if len(bad) > 0 {
		h.tally.Discrepancies += len(bad)
		return fmt.Errorf("sql steps did not run exactly once: %s", strings.Join(bad, "; "))
	}
	return nil
}

// checkRows compares every row's old columns with the ledger.
func (h *harness) checkRows(ctx context.Context) error {
	rows, err := h.ctl.Query(ctx, "SELECT id, name, qty FROM "+table)
	if err != nil {
		return fmt.Errorf("read %s: %w", table, err)
	}
	defer rows.Close()
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	var n int64
	var bad []string
	seen := make(map[int64]bool, len(h.w.ledger))
	for rows.Next() {
		var id int64
		var name string
		var qty int
		if err := rows.Scan(&id, &name, &qty); err != nil {
			return fmt.Errorf("read %s: %w", table, err)
		}
		n++
		seen[id] = true
		want, ok := h.w.ledger[id]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("id %d (%q, %d) is not in the ledger (deleted or never inserted)", id, name, qty))
		case want.name != name || want.qty != qty:
			bad = append(bad, fmt.Sprintf("id %d holds (%q, %d), the ledger says (%q, %d)", id, name, qty, want.name, want.qty))
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read %s: %w", table, err)
	}
	for id, want := range h.w.ledger {
		if !seen[id] {
			bad = append(bad, fmt.Sprintf("id %d is missing, the ledger says (%q, %d)", id, want.name, want.qty))
		}
	}
	h.tally.RowsChecked += n
	h.tally.lastRows = n
	h.tally.Verifications++
	if len(bad) > 0 {
		h.tally.Discrepancies += len(bad)
		return fmt.Errorf("%d rows differ from the application's ledger, e.g.:\n  %s", len(bad), strings.Join(bad[:min(len(bad), 10)], "\n  "))
	}
	return nil
}

// checkVolatile checks a volatile-default column: every row has a value,
// all distinct, the application's own values kept, and no value changed
// since the previous check (nothing writes the column after its migration:
// the application never updates it).
func (h *harness) checkVolatile(ctx context.Context, col string) error {
	rows, err := h.ctl.Query(ctx, fmt.Sprintf("SELECT id, %s::text FROM %s", pgx.Identifier{col}.Sanitize(), table))
	if err != nil {
		return fmt.Errorf("read %s: %w", col, err)
	}
	cur := map[int64]string{}
	distinct := map[string]bool{}
	var nulls int
	for rows.Next() {
		var id int64
		var v *string
		if err := rows.Scan(&id, &v); err != nil {
			rows.Close()
			return fmt.Errorf("read %s: %w", col, err)
		}
		if v == nil {
			nulls++
			continue
		}
		cur[id] = *v
		distinct[*v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read %s: %w", col, err)
	}
	if nulls > 0 || len(distinct) != len(cur) {
		return fmt.Errorf("%s: %d NULLs, %d distinct values in %d rows", col, nulls, len(distinct), len(cur))
	}
	h.w.mu.Lock()
	var bad []string
	for id, r := range h.w.ledger {
		if want, ok := r.tokens[col]; ok && cur[id] != want {
			bad = append(bad, fmt.Sprintf("id %d: %s is %s, the application wrote %s", id, col, cur[id], want))
		}
	}
	h.w.mu.Unlock()
	for id, was := range h.tokens[col] {
		if now, ok := cur[id]; ok && now != was {
			bad = append(bad, fmt.Sprintf("id %d: %s changed from %s to %s", id, col, was, now))
		}
	}
	if len(bad) > 0 {
		h.tally.Discrepancies += len(bad)
		return fmt.Errorf("%d values of %s are wrong, e.g.:\n  %s", len(bad), col, strings.Join(bad[:min(len(bad), 10)], "\n  "))
	}
	h.tokens[col] = cur
	return nil
}

// leftovers counts what refit may leave behind.
type leftovers struct {
	slots, publications, origins, invalidIndexes, constraints, relations, sessions, advisory, prepared int
}

func (l leftovers) total() int {
	return l.slots + l.publications + l.origins + l.invalidIndexes + l.constraints + l.relations + l.sessions + l.advisory + l.prepared
}

func (l leftovers) String() string {
	return fmt.Sprintf("slots %d, publications %d, replication origins %d, invalid indexes %d, refit_* constraints %d, refit_* relations %d, refit sessions %d, advisory locks %d, prepared transactions %d",
		l.slots, l.publications, l.origins, l.invalidIndexes, l.constraints, l.relations, l.sessions, l.advisory, l.prepared)
}

// checkLeftovers checks that refit left nothing once its entry points are
// gone: no slot, publication or replication origin (the cluster is the
// harness's own, so any is refit's), no INVALID index, no helper
// constraint, no refit_* relation outside schema refit, no session of
// refit's, no advisory lock, no prepared transaction. Sessions of a killed
// process may take a moment to end.
func (h *harness) checkLeftovers(ctx context.Context, after string) error {
	var l leftovers
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := h.ctl.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM pg_replication_slots),
			(SELECT count(*) FROM pg_publication),
			(SELECT count(*) FROM pg_replication_origin),
			(SELECT count(*) FROM pg_index WHERE NOT indisvalid),
			(SELECT count(*) FROM pg_constraint WHERE conname LIKE 'refit\_%'),
			(SELECT count(*) FROM pg_class WHERE relname LIKE 'refit\_%' AND relnamespace <> coalesce(to_regnamespace('refit')::oid, 0)),
			(SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'refit%'),
			(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'),
			(SELECT count(*) FROM pg_prepared_xacts)`).
			Scan(&l.slots, &l.publications, &l.origins, &l.invalidIndexes, &l.constraints, &l.relations, &l.sessions, &l.advisory, &l.prepared)
		if err != nil {
			return fmt.Errorf("count leftovers: %w", err)
		}
		if l.total() == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	h.tally.Leftovers += l.total()
	return fmt.Errorf("after %s refit left behind: %s", after, l)
}

// schema describes the application table's shape.
func (h *harness) schema(ctx context.Context) (string, error) {
	var s string
	err := h.ctl.QueryRow(ctx, `SELECT concat_ws(' | ',
		(SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull || ':' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ',' ORDER BY a.attnum)
		   FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		   WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped),
		(SELECT string_agg(c.relname || ':' || i.indisvalid, ',' ORDER BY c.relname) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass),
		(SELECT string_agg(conname || ':' || convalidated, ',' ORDER BY conname) FROM pg_constraint WHERE conrelid = $1::regclass),
		(SELECT string_agg(typname, ',' ORDER BY typname) FROM pg_type WHERE typnamespace = 'public'::regnamespace AND typrelid = 0 AND typelem = 0))`, table).Scan(&s)
	if err != nil {
		return "", fmt.Errorf("describe %s: %w", table, err)
	}
	return s, nil
}

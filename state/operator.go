package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// OperatorRole is the role whose members may submit jobs through SQL:
// SELECT refit.submit(name, source, contract). refit.submit runs as the
// schema's owner (SECURITY DEFINER, search_path pg_catalog, pg_temp), so
// the role has USAGE on schema refit and EXECUTE on refit.submit and
// nothing else: it can neither read nor write refit's tables.
//
// A member of the role can have refit run any migration, sql operations
// included, with the privileges of refit's role: grant it as you would
// grant that role's DDL.
//
// refit creates the role (NOLOGIN) the first time it prepares a database's
// schema, if no such role exists and it may create roles (superuser or
// CREATEROLE); otherwise a superuser runs CREATE ROLE refit_operator
// NOLOGIN. Whenever the role exists, Open grants it what it needs.
const OperatorRole = "refit_operator"

// grantOperator gives OperatorRole, if it exists, USAGE on schema refit and
// EXECUTE on refit.submit, inside Open's transaction (after the trust check
// and the schema steps). It changes nothing when the grants are in place,
// and grants only what the role refit connects as may grant as the owner
// (a schema of a trusted owner is left as that owner set it up).
func grantOperator(ctx context.Context, tx pgx.Tx) error {
	var usage, execute, ownSchema, ownFunction bool
	err := tx.QueryRow(ctx, `SELECT pg_catalog.has_schema_privilege(r.oid, n.oid, 'USAGE'),
			pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE'),
			pg_catalog.pg_has_role(current_user, n.nspowner, 'USAGE'),
			pg_catalog.pg_has_role(current_user, p.proowner, 'USAGE')
		FROM pg_catalog.pg_roles r, pg_catalog.pg_namespace n, pg_catalog.pg_proc p
		WHERE r.rolname = $1 AND n.nspname = $2 AND p.oid = 'refit.submit(text, text, text)'::pg_catalog.regprocedure`,
		OperatorRole, schemaName).Scan(&usage, &execute, &ownSchema, &ownFunction)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check the privileges of role %s: %w", OperatorRole, err)
	}
	role := ident(OperatorRole)
	if !usage && ownSchema {
		if _, err := tx.Exec(ctx, "GRANT USAGE ON SCHEMA "+ident(schemaName)+" TO "+role); err != nil {
			return fmt.Errorf("grant usage on schema %s to %s: %w", schemaName, OperatorRole, err)
		}
	}
	if !execute && ownFunction {
		if _, err := tx.Exec(ctx, "GRANT EXECUTE ON FUNCTION refit.submit(text, text, text) TO "+role); err != nil {
			return fmt.Errorf("grant execute on refit.submit to %s: %w", OperatorRole, err)
		}
	}
	return nil
}

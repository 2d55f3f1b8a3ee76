package state

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// schemaName is the schema refit keeps its bookkeeping in.
const schemaName = "refit"

// Option configures Open.
type Option func(*openOptions)

type openOptions struct {
	trustedOwners []string
}

// TrustedOwners names roles, besides the one refit connects as
// (current_user) and superusers, that may own the refit schema and the
// objects in it, or hold CREATE on it. Use it when the schema was created by
// another role than the one refit runs as now. A role is trusted only when it
// is named, never because current_user is a member of it: before PostgreSQL
// 16 any role can grant membership in itself to any other role.
func TrustedOwners(roles ...string) Option {
	return func(o *openOptions) { o.trustedOwners = append(o.trustedOwners, roles...) }
}

// UntrustedError means the refit schema, or something in or on it, is
// controlled by a role refit does not trust. Reading or writing refit's
// tables could then run that role's code (a trigger, a rule, a policy, a
// view) with refit's privileges, so refit uses nothing in the schema.
type UntrustedError struct {
	Schema   string   // "refit"
	User     string   // the role refit connects as (current_user)
	Problems []string // one sentence per problem, with what to do about it
}

// maxProblems caps the problems listed in an UntrustedError's message.
const maxProblems = 20

func (e *UntrustedError) Error() string {
	shown := e.Problems
	more := ""
	if len(shown) > maxProblems {
		more = fmt.Sprintf("; and %d more problems in schema %s", len(shown)-maxProblems, pgx.Identifier{e.Schema}.Sanitize())
		shown = shown[:maxProblems]
	}
	return strings.Join(shown, "; ") + more
}

// trustQuery lists every reason not to trust schema $1, trusting
// current_user, superusers and the roles named in $2. One row per problem:
// kind, the object's description, the role involved, and the names a fix
// needs (an object name and the relation it is on); the role of a grant to
// PUBLIC is empty. It reads the catalogs only, so it runs no code of any
// role; it is run with search_path pg_catalog, pg_temp, so the descriptions
// are schema-qualified.
//
// Superusers are trusted because a superuser can already run any code as
// any role: an object it owns lets it do nothing it could not do anyway.
// Membership in a role is deliberately not trust (see TrustedOwners).
const trustQuery = `
WITH trusted AS (
	SELECT r.oid FROM pg_catalog.pg_roles r
	WHERE r.rolname = current_user OR r.rolsuper OR r.rolname = ANY ($2::text[])
), ns AS (
	SELECT n.oid, n.nspowner, n.nspacl FROM pg_catalog.pg_namespace n WHERE n.nspname = $1
), rel AS (
	SELECT c.oid, c.relkind, c.relowner, c.relacl FROM pg_catalog.pg_class c WHERE c.relnamespace IN (SELECT oid FROM ns)
), owned (classid, objid, owner) AS (
	SELECT 'pg_catalog.pg_class'::regclass, c.oid, c.relowner FROM pg_catalog.pg_class c WHERE c.relnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT 'pg_catalog.pg_proc'::regclass, p.oid, p.proowner FROM pg_catalog.pg_proc p WHERE p.pronamespace IN (SELECT oid FROM ns)
	UNION ALL
	-- Row types of relations, array types and multiranges belong to
	-- another object (internal dependency) and always share its owner.
	SELECT 'pg_catalog.pg_type'::regclass, t.oid, t.typowner FROM pg_catalog.pg_type t
	WHERE t.typnamespace IN (SELECT oid FROM ns)
	  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
	                  WHERE d.classid = 'pg_catalog.pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'i')
	UNION ALL
	SELECT 'pg_catalog.pg_operator'::regclass, o.oid, o.oprowner FROM pg_catalog.pg_operator o WHERE o.oprnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT 'pg_catalog.pg_collation'::regclass, c.oid, c.collowner FROM pg_catalog.pg_collation c WHERE c.collnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT 'pg_catalog.pg_conversion'::regclass, c.oid, c.conowner FROM pg_catalog.pg_conversion c WHERE c.connamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT 'pg_catalog.pg_opclass'::regclass, c.oid, c.opcowner FROM pg_catalog.pg_opclass c WHERE c.opcnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT 'pg_catalog.pg_opfamily'::regclass, f.oid, f.opfowner FROM pg_catalog.pg_opfamily f WHERE f.opfnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT 'pg_catalog.pg_ts_config'::regclass, c.oid, c.cfgowner FROM pg_catalog.pg_ts_config c WHERE c.cfgnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT 'pg_catalog.pg_ts_dict'::regclass, d.oid, d.dictowner FROM pg_catalog.pg_ts_dict d WHERE d.dictnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT 'pg_catalog.pg_statistic_ext'::regclass, s.oid, s.stxowner FROM pg_catalog.pg_statistic_ext s WHERE s.stxnamespace IN (SELECT oid FROM ns)
)
SELECT kind, coalesce(what, ''), coalesce(role, ''), coalesce(name, ''), coalesce(rel, '') FROM (
	SELECT 1 AS ord, 'schema-owner' AS kind, '' AS what, pg_catalog.pg_get_userbyid(ns.nspowner)::text AS role, '' AS name, '' AS rel
	FROM ns WHERE ns.nspowner NOT IN (SELECT oid FROM trusted)
	UNION ALL
	SELECT 2, 'schema-create', '', CASE WHEN a.grantee = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END, '', ''
	FROM ns, pg_catalog.aclexplode(ns.nspacl) a
	WHERE a.privilege_type = 'CREATE' AND a.grantee <> ns.nspowner AND a.grantee NOT IN (SELECT oid FROM trusted)
	UNION ALL
	SELECT 3, 'owner', pg_catalog.pg_describe_object(o.classid, o.objid, 0), pg_catalog.pg_get_userbyid(o.owner)::text, '', ''
	FROM owned o WHERE o.owner NOT IN (SELECT oid FROM trusted)
	UNION ALL
	SELECT 4, 'trigger', pg_catalog.pg_describe_object('pg_catalog.pg_trigger'::regclass, g.oid, 0),
		pg_catalog.pg_get_userbyid(p.proowner)::text, g.tgname::text, g.tgrelid::regclass::text
	FROM pg_catalog.pg_trigger g JOIN rel ON rel.oid = g.tgrelid JOIN pg_catalog.pg_proc p ON p.oid = g.tgfoid
	WHERE NOT g.tgisinternal
	UNION ALL
	SELECT 5, 'rule', pg_catalog.pg_describe_object('pg_catalog.pg_rewrite'::regclass, w.oid, 0), '', w.rulename::text, w.ev_class::regclass::text
	FROM pg_catalog.pg_rewrite w JOIN rel ON rel.oid = w.ev_class
	WHERE NOT (w.rulename = '_RETURN' AND rel.relkind IN ('v', 'm'))
	UNION ALL
	SELECT 6, 'policy', pg_catalog.pg_describe_object('pg_catalog.pg_policy'::regclass, y.oid, 0), '', y.polname::text, y.polrelid::regclass::text
	FROM pg_catalog.pg_policy y JOIN rel ON rel.oid = y.polrelid
	UNION ALL
	SELECT 7, 'trigger-grant', pg_catalog.pg_describe_object('pg_catalog.pg_class'::regclass, rel.oid, 0),
		CASE WHEN a.grantee = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END, '', rel.oid::regclass::text
	FROM rel, pg_catalog.aclexplode(rel.relacl) a
	WHERE a.privilege_type = 'TRIGGER' AND a.grantee <> rel.relowner AND a.grantee NOT IN (SELECT oid FROM trusted)
	UNION ALL
	SELECT 8, 'child', pg_catalog.pg_describe_object('pg_catalog.pg_class'::regclass, c.oid, 0),
		pg_catalog.pg_get_userbyid(c.relowner)::text, c.oid::regclass::text, i.inhparent::regclass::text
	FROM pg_catalog.pg_inherits i JOIN rel ON rel.oid = i.inhparent JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
) problems
ORDER BY ord, what, role, name`

// verifyTrust checks, inside the caller's transaction (which holds the
// schema lock), that schema refit and everything in it is controlled by
// trusted roles only; it returns an *UntrustedError naming every problem
// otherwise. It only reads the catalogs. A schema that does not exist passes.
func verifyTrust(ctx context.Context, tx pgx.Tx, trustedOwners []string) error {
	var me string
	if err := tx.QueryRow(ctx, "SELECT current_user::text").Scan(&me); err != nil {
		return fmt.Errorf("check schema %s before using it: %w", schemaName, err)
	}
	if trustedOwners == nil {
		trustedOwners = []string{}
	}
	rows, err := tx.Query(ctx, trustQuery, schemaName, trustedOwners)
	if err != nil {
		return fmt.Errorf("check schema %s before using it: %w", schemaName, err)
	}
	type problem struct{ kind, what, role, name, rel string }
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (problem, error) {
		var p problem
		err := r.Scan(&p.kind, &p.what, &p.role, &p.name, &p.rel)
		return p, err
	})
	if err != nil {
		return fmt.Errorf("check schema %s before using it: %w", schemaName, err)
	}
	if len(found) == 0 {
		return nil
	}
	e := &UntrustedError{Schema: schemaName, User: me}
	schema := pgx.Identifier{schemaName}.Sanitize()
	meQ := ident(me)
	trustedText := fmt.Sprintf("%s (the role refit connects as)", meQ)
	notBy := trustedText
	if len(trustedOwners) > 0 {
		names := make([]string, len(trustedOwners))
		for i, r := range trustedOwners {
			names[i] = ident(r)
		}
		trustedText += ", the trusted owners " + strings.Join(names, ", ")
		notBy += " nor by a trusted owner (" + strings.Join(names, ", ") + ")"
	}
	trustedText += " and superusers"
	for _, p := range found {
		var msg string
		switch p.kind {
		case "schema-owner":
			msg = fmt.Sprintf("schema %s is owned by role %s, not by %s: refit will not use it. "+
				"Drop it, or ALTER SCHEMA %s OWNER TO %s after checking its contents",
				schema, ident(p.role), notBy, schema, meQ)
		case "schema-create":
			msg = fmt.Sprintf("schema %s grants CREATE to %s, who could add objects that run code as %s: refit will not use it. "+
				"Run REVOKE CREATE ON SCHEMA %s FROM %s after checking its contents",
				schema, grantee(p.role), meQ, schema, grantee(p.role))
		case "owner":
			msg = fmt.Sprintf("%s is owned by role %s; refit trusts only %s: refit will not use schema %s. "+
				"Drop it, or ALTER … OWNER TO %s after checking it",
				p.what, ident(p.role), trustedText, schema, meQ)
		case "trigger":
			msg = fmt.Sprintf("%s (its function is owned by role %s) is not refit's: refit creates no triggers, and this one would run as %s. "+
				"DROP TRIGGER %s ON %s after checking it",
				p.what, ident(p.role), meQ, ident(p.name), p.rel)
		case "rule":
			msg = fmt.Sprintf("%s is not refit's: refit creates no rules, and this one would run as %s. DROP RULE %s ON %s after checking it",
				p.what, meQ, ident(p.name), p.rel)
		case "policy":
			msg = fmt.Sprintf("%s is not refit's: refit creates no row security policies, and this one would run as %s. DROP POLICY %s ON %s after checking it",
				p.what, meQ, ident(p.name), p.rel)
		case "trigger-grant":
			msg = fmt.Sprintf("%s grants TRIGGER to %s, who could add a trigger that runs as %s: refit will not use it. REVOKE TRIGGER ON %s FROM %s",
				p.what, grantee(p.role), meQ, p.rel, grantee(p.role))
		case "child":
			msg = fmt.Sprintf("%s (owned by role %s) inherits from %s: refit's tables have no children, and a child's triggers would run as %s. "+
				"ALTER TABLE %s NO INHERIT %s after checking it",
				p.what, ident(p.role), p.rel, meQ, p.name, p.rel)
		default:
			msg = fmt.Sprintf("%s: %s (role %s)", p.kind, p.what, ident(p.role))
		}
		e.Problems = append(e.Problems, msg)
	}
	return e
}

// ident quotes a role or object name for a message with a runnable fix.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// grantee quotes a grantee; "" is the PUBLIC pseudo-role.
func grantee(name string) string {
	if name == "" {
		return "PUBLIC"
	}
	return ident(name)
}

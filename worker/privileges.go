package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/replication"
)

// MissingPrivilege is one privilege the role refit connects as lacks for a
// migration: what it is, what needs it, and the statement that grants it.
type MissingPrivilege struct {
	Privilege string   // e.g. `CREATE on schema "public"`
	NeededFor []string // what in the migration needs it
	Fix       string   // the statement to run, as a superuser or the object's owner
}

// PrivilegeError lists every privilege a migration needs that the role
// refit connects as lacks. It is returned before anything is created.
type PrivilegeError struct {
	Role    string
	Missing []MissingPrivilege
}

func (e *PrivilegeError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "role %s lacks %d privilege(s) this migration needs (nothing was changed); run these as a superuser or the owner, then retry:",
		migration.QuoteIdent(e.Role), len(e.Missing))
	for _, p := range e.Missing {
		fmt.Fprintf(&b, "\n  - %s, to %s\n      %s", p.Privilege, strings.Join(p.NeededFor, "; "), p.Fix)
	}
	return b.String()
}

// privileges collects missing privileges, one entry per fix.
type privileges struct {
	byFix   map[string]*MissingPrivilege
	ordered []*MissingPrivilege
}

func (p *privileges) add(privilege, neededFor, fix string) {
	if p.byFix == nil {
		p.byFix = map[string]*MissingPrivilege{}
	}
	if m := p.byFix[fix]; m != nil {
		for _, n := range m.NeededFor {
			if n == neededFor {
				return
			}
		}
		m.NeededFor = append(m.NeededFor, neededFor)
		return
	}
	m := &MissingPrivilege{Privilege: privilege, NeededFor: []string{neededFor}, Fix: fix}
	p.byFix[fix] = m
	p.ordered = append(p.ordered, m)
}

// roleFacts is what CheckPrivileges needs to know about the current role.
type roleFacts struct {
	role, database   string
	superuser        bool
	inherit          bool
	version          int
	createDB, tempDB bool
	replication      bool
	rdsReplication   bool // the rds_replication role exists (Amazon RDS, Aurora)
	readAllStats     bool
	refitSchema      bool
}

// tableNeed is what a migration does to one table.
type tableNeed struct {
	name      migration.TableName
	alter     []string // operations that need the table's owner
	index     []string // operations that create an index in the table's schema
	rows      []string // bulk_insert operations (SELECT, INSERT, DELETE)
	refs      []string // foreign keys that reference the table (REFERENCES)
	published bool     // the table joins the job's publication
}

// CheckPrivileges computes the privileges this migration needs and returns
// a *PrivilegeError listing every one the role refit connects as lacks, each
// with the statement that grants it; nil when nothing is missing. It reads
// the catalogs only. Superusers pass. plan and facts may be nil (before
// inspection): the plan is then built from the migration and its tables are
// resolved like Inspect resolves them (search_path).
//
// What it checks, all verified against the server (PostgreSQL 15):
//   - every table that is altered (add_column, drop_column, create_index,
//     and the publication of the sync) is owned by the role or by a role
//     whose privileges it has (pg_has_role USAGE, as ALTER TABLE checks);
//   - create_index: CREATE on the table's schema (CREATE INDEX checks it,
//     CONCURRENTLY too); create_enum: CREATE on the type's schema;
//   - bulk_insert: SELECT, INSERT (expand) and DELETE (abort);
//   - a table in a named schema: USAGE on that schema;
//   - TEMPORARY on the database for any table operation (Inspect checks
//     expressions against temporary copies of the tables);
//   - CREATE on the database when the refit schema does not exist yet or the
//     migration keeps new columns in sync (CREATE PUBLICATION);
//   - a sync: REPLICATION (slots, the walsender) and the privileges of
//     pg_read_all_stats (without them the role's own walsender position in
//     pg_stat_replication reads NULL, and the decode-backlog throttle,
//     replication.max_decode_backlog, cannot see how far the stream is);
//   - an existing refit schema: USAGE and CREATE on it, and read/write on
//     its tables and sequences.
//
// Replication origins are not required: without EXECUTE on the origin
// functions refit runs untagged (see replication.TagSession).
func CheckPrivileges(ctx context.Context, pool *pgxpool.Pool, m *migration.Migration, plan *migration.Plan, facts *migration.Facts) error {
	rf, err := readRoleFacts(ctx, pool)
	if err != nil {
		return err
	}
	if rf.superuser {
		return nil
	}
	if plan == nil {
		plan = migration.BuildPlan(m, facts)
	}
	me := migration.QuoteIdent(rf.role)
	db := migration.QuoteIdent(rf.database)
	var missing privileges

	tables, enums := migrationNeeds(m, plan, facts)
	for _, t := range tables {
		if err := checkTable(ctx, pool, rf, t, &missing); err != nil {
			return err
		}
	}
	for _, e := range enums {
		if err := checkSchemaCreate(ctx, pool, rf, e.schema, e.neededFor, &missing); err != nil {
			return err
		}
	}
	if len(tables) > 0 && !rf.tempDB {
		missing.add(fmt.Sprintf("TEMPORARY on database %s", db),
			"validate the migration against temporary copies of its tables (nothing is written to them)",
			fmt.Sprintf("GRANT TEMPORARY ON DATABASE %s TO %s;", db, me))
	}
	if !rf.refitSchema && !rf.createDB {
		missing.add(fmt.Sprintf("CREATE on database %s", db), "create the refit schema (the first run in this database)",
			fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s;", db, me))
	}
	var synced []string
	for _, t := range tables {
		if t.published {
			synced = append(synced, t.name.Quoted())
		}
	}
	if len(synced) > 0 {
		what := "keep the new columns of " + strings.Join(synced, ", ") + " in sync"
		if !rf.createDB {
			missing.add(fmt.Sprintf("CREATE on database %s", db), "CREATE PUBLICATION for the sync of "+strings.Join(synced, ", "),
				fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s;", db, me))
		}
		if !rf.replication {
			fix := fmt.Sprintf("ALTER ROLE %s REPLICATION;", me)
			if rf.rdsReplication {
				fix = fmt.Sprintf("GRANT rds_replication TO %s;", me)
			}
			missing.add("REPLICATION", what+" (a logical replication slot and its stream)", fix)
		}
		if !rf.readAllStats {
			missing.add("the privileges of pg_read_all_stats",
				what+" without outrunning the stream: the decode-backlog throttle reads the position of refit's own walsender (pg_stat_replication.sent_lsn), which is NULL without them",
				fmt.Sprintf("GRANT pg_read_all_stats TO %s;", me))
		}
	}
	if rf.refitSchema {
		if err := checkRefitSchema(ctx, pool, me, &missing); err != nil {
			return err
		}
	}
	if len(missing.ordered) == 0 {
		return nil
	}
	e := &PrivilegeError{Role: rf.role}
	for _, p := range missing.ordered {
		e.Missing = append(e.Missing, *p)
	}
	return e
}

func readRoleFacts(ctx context.Context, pool *pgxpool.Pool) (*roleFacts, error) {
	var rf roleFacts
	err := pool.QueryRow(ctx, `SELECT current_user::text, current_database()::text, r.rolsuper, r.rolinherit,
			current_setting('server_version_num')::int,
			has_database_privilege(current_database(), 'CREATE'), has_database_privilege(current_database(), 'TEMPORARY'),
			EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'rds_replication'),
			pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
			EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'refit')
		FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`).Scan(&rf.role, &rf.database, &rf.superuser, &rf.inherit, &rf.version,
		&rf.createDB, &rf.tempDB, &rf.rdsReplication, &rf.readAllStats, &rf.refitSchema)
	if err != nil {
		return nil, fmt.Errorf("check privileges: %w", err)
	}
	if rf.replication, err = replication.CanReplicate(ctx, pool); err != nil {
		return nil, err
	}
	return &rf, nil
}

// enumNeed is CREATE on a schema for a type ("" = the creation schema of
// the search_path).
type enumNeed struct {
	schema    string
	neededFor string
}

// migrationNeeds lists, in the order of the file, the tables the migration
// touches and what it does to each, and the types it creates, from what
// each operation says it needs (migration.Need).
func migrationNeeds(m *migration.Migration, plan *migration.Plan, facts *migration.Facts) ([]*tableNeed, []enumNeed) {
	var tables []*tableNeed
	byKey := map[string]*tableNeed{}
	table := func(t migration.TableName) *tableNeed {
		name := t
		if tf := facts.Table(t); tf != nil {
			name = tf.Name
		}
		key := name.String()
		if n := byKey[key]; n != nil {
			return n
		}
		n := &tableNeed{name: name}
		byKey[key] = n
		tables = append(tables, n)
		return n
	}
	var enums []enumNeed
	for i, op := range m.Operations {
		what := fmt.Sprintf("operations[%d] (%s)", i, op.Kind())
		for _, need := range op.Needs() {
			why := what + ": " + need.For
			switch {
			case need.Kind == migration.NeedOwner:
				n := table(need.Table)
				n.alter = append(n.alter, why)
			case need.Kind == migration.NeedRows:
				n := table(need.Table)
				n.rows = append(n.rows, why)
			case need.Kind == migration.NeedReferences:
				n := table(need.Table)
				n.refs = append(n.refs, why)
			case need.Kind == migration.NeedSchemaCreate && need.Index:
				n := table(need.Table)
				n.index = append(n.index, why)
			case need.Kind == migration.NeedSchemaCreate:
				enums = append(enums, enumNeed{schema: need.Schema, neededFor: why})
			}
		}
	}
	for _, b := range plan.Backfills {
		if len(migration.Derived(b.Sets)) > 0 {
			table(b.Table).published = true
		}
	}
	return tables, enums
}

// checkTable adds what the role lacks for one table. A table that does not
// exist is left to Inspect, which names it.
func checkTable(ctx context.Context, pool *pgxpool.Pool, rf *roleFacts, t *tableNeed, missing *privileges) error {
	me := migration.QuoteIdent(rf.role)
	if t.name.Schema != "" {
		ok, exists, err := schemaPrivilege(ctx, pool, t.name.Schema, "USAGE")
		if err != nil {
			return err
		}
		if !exists {
			return nil
		}
		if !ok {
			missing.add(fmt.Sprintf("USAGE on schema %s", migration.QuoteIdent(t.name.Schema)), "reach table "+t.name.Quoted(),
				fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s;", migration.QuoteIdent(t.name.Schema), me))
			return nil
		}
	}
	var schema, name, owner string
	var ownerSuper, owned, sel, ins, del, ref bool
	err := pool.QueryRow(ctx, `SELECT n.nspname::text, c.relname::text, o.rolname::text, o.rolsuper, pg_has_role(c.relowner, 'USAGE'),
			has_table_privilege(c.oid, 'SELECT'), has_table_privilege(c.oid, 'INSERT'), has_table_privilege(c.oid, 'DELETE'),
			has_table_privilege(c.oid, 'REFERENCES')
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN pg_catalog.pg_roles o ON o.oid = c.relowner
		WHERE c.oid = to_regclass($1)`, t.name.Quoted()).Scan(&schema, &name, &owner, &ownerSuper, &owned, &sel, &ins, &del, &ref)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check privileges on table %s: %w", t.name, err)
	}
	table := migration.TableName{Schema: schema, Name: name}.Quoted()
	if len(t.alter) > 0 && !owned {
		reasons := t.alter
		if t.published {
			reasons = append(append([]string(nil), reasons...), "add it to the sync's publication (CREATE PUBLICATION … FOR TABLE)")
		}
		fix := ownerFix(rf, table, owner, ownerSuper)
		for _, r := range reasons {
			missing.add(fmt.Sprintf("ownership of table %s (owned by %s)", table, migration.QuoteIdent(owner)), r, fix)
		}
	}
	if len(t.rows) > 0 && !owned {
		var privs []string
		for _, p := range []struct {
			name string
			ok   bool
		}{{"SELECT", sel}, {"INSERT", ins}, {"DELETE", del}} {
			if !p.ok {
				privs = append(privs, p.name)
			}
		}
		if len(privs) > 0 {
			list := strings.Join(privs, ", ")
			for _, r := range t.rows {
				missing.add(fmt.Sprintf("%s on table %s", list, table), r, fmt.Sprintf("GRANT %s ON TABLE %s TO %s;", list, table, me))
			}
		}
	}
	if !ref && !owned {
		for _, r := range t.refs {
			missing.add("REFERENCES on table "+table, r, fmt.Sprintf("GRANT REFERENCES ON TABLE %s TO %s;", table, me))
		}
	}
	for _, r := range t.index {
		if err := checkSchemaCreate(ctx, pool, rf, schema, r, missing); err != nil {
			return err
		}
	}
	return nil
}

// ownerFix is the statement that lets the role alter a table owned by
// another role: membership in the owning role (the application keeps its
// ownership), or, for a table owned by a superuser (membership in which
// would give the privileges of everything it owns, the system catalogs
// included) or a role refit cannot inherit from, a change of owner.
func ownerFix(rf *roleFacts, table, owner string, ownerSuper bool) string {
	me := migration.QuoteIdent(rf.role)
	switch {
	case ownerSuper:
		return fmt.Sprintf("ALTER TABLE %s OWNER TO %s;", table, me)
	case rf.version >= 160000:
		return fmt.Sprintf("GRANT %s TO %s WITH INHERIT TRUE;", migration.QuoteIdent(owner), me)
	case !rf.inherit:
		return fmt.Sprintf("ALTER TABLE %s OWNER TO %s;", table, me)
	default:
		return fmt.Sprintf("GRANT %s TO %s;", migration.QuoteIdent(owner), me)
	}
}

// checkSchemaCreate adds CREATE on a schema ("" = the creation schema of
// the search_path) if the role lacks it. A schema that does not exist is
// left to Inspect.
func checkSchemaCreate(ctx context.Context, pool *pgxpool.Pool, rf *roleFacts, schema, neededFor string, missing *privileges) error {
	if schema == "" {
		var cur *string
		if err := pool.QueryRow(ctx, "SELECT current_schema()::text").Scan(&cur); err != nil {
			return fmt.Errorf("check privileges: current schema: %w", err)
		}
		if cur == nil {
			return nil
		}
		schema = *cur
	}
	ok, exists, err := schemaPrivilege(ctx, pool, schema, "CREATE")
	if err != nil || !exists || ok {
		return err
	}
	missing.add(fmt.Sprintf("CREATE on schema %s", migration.QuoteIdent(schema)), neededFor,
		fmt.Sprintf("GRANT CREATE ON SCHEMA %s TO %s;", migration.QuoteIdent(schema), migration.QuoteIdent(rf.role)))
	return nil
}

// schemaPrivilege reports whether the role has privilege on a schema, and
// whether the schema exists.
func schemaPrivilege(ctx context.Context, pool *pgxpool.Pool, schema, privilege string) (ok, exists bool, err error) {
	err = pool.QueryRow(ctx, `SELECT has_schema_privilege(oid, $2) FROM pg_catalog.pg_namespace WHERE nspname = $1`, schema, privilege).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("check %s on schema %s: %w", privilege, migration.QuoteIdent(schema), err)
	}
	return ok, true, nil
}

// checkRefitSchema adds what the role lacks to use an existing refit
// schema: refit creates its tables in it if missing (CREATE) and reads and
// writes them. The fix is to give the role the schema and what is in it,
// not grants: refit uses the schema only while it is controlled by the
// role it connects as, superusers and named trusted owners (state.Open),
// so CREATE granted to a second role would make other runs refuse it.
func checkRefitSchema(ctx context.Context, pool *pgxpool.Pool, me string, missing *privileges) error {
	var ok bool
	err := pool.QueryRow(ctx, `SELECT has_schema_privilege(n.oid, 'USAGE') AND has_schema_privilege(n.oid, 'CREATE')
			AND NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relkind = 'r'
				AND NOT (has_table_privilege(c.oid, 'SELECT') AND has_table_privilege(c.oid, 'INSERT')
					AND has_table_privilege(c.oid, 'UPDATE') AND has_table_privilege(c.oid, 'DELETE')))
			AND NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid
				AND NOT CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'USAGE') ELSE true END)
		FROM pg_catalog.pg_namespace n WHERE n.nspname = 'refit'`).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && ok) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check privileges on schema refit: %w", err)
	}
	// What the role does not own: the schema, its tables (with their
	// indexes and the sequences of their serial columns), other sequences,
	// and functions.
	rows, err := pool.Query(ctx, `WITH n AS (SELECT oid, nspowner FROM pg_catalog.pg_namespace WHERE nspname = 'refit'),
			me AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
		SELECT 0 AS ord, 'SCHEMA', '', '', pg_catalog.pg_get_userbyid(n.nspowner)::text FROM n WHERE n.nspowner <> (SELECT oid FROM me)
		UNION ALL
		SELECT CASE c.relkind WHEN 'S' THEN 2 ELSE 1 END, CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.relname::text, '',
			pg_catalog.pg_get_userbyid(c.relowner)::text
		FROM pg_catalog.pg_class c, n WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'S') AND c.relowner <> (SELECT oid FROM me)
			AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
				AND d.deptype IN ('a', 'i'))
		UNION ALL
		SELECT 3, 'FUNCTION', p.proname::text, pg_catalog.pg_get_function_identity_arguments(p.oid), pg_catalog.pg_get_userbyid(p.proowner)::text
		FROM pg_catalog.pg_proc p, n WHERE p.pronamespace = n.oid AND p.proowner <> (SELECT oid FROM me)
		ORDER BY 1, 3`)
	if err != nil {
		return fmt.Errorf("check the owners of schema refit: %w", err)
	}
	schema := migration.QuoteIdent("refit")
	var stmts, owners []string
	for rows.Next() {
		var ord int
		var kind, name, args, owner string
		if err := rows.Scan(&ord, &kind, &name, &args, &owner); err != nil {
			rows.Close()
			return fmt.Errorf("check the owners of schema refit: %w", err)
		}
		obj := schema
		switch kind {
		case "FUNCTION":
			obj = fmt.Sprintf("%s.%s(%s)", schema, migration.QuoteIdent(name), args)
		case "TABLE", "SEQUENCE":
			obj = schema + "." + migration.QuoteIdent(name)
		}
		stmts = append(stmts, fmt.Sprintf("ALTER %s %s OWNER TO %s;", kind, obj, me))
		if q := migration.QuoteIdent(owner); !slices.Contains(owners, q) {
			owners = append(owners, q)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check the owners of schema refit: %w", err)
	}
	if len(stmts) == 0 {
		// Owned, but its privileges were revoked from the owner itself.
		stmts = []string{fmt.Sprintf("GRANT USAGE, CREATE ON SCHEMA %s TO %s; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %s TO %s; GRANT USAGE ON ALL SEQUENCES IN SCHEMA %s TO %s;",
			schema, me, schema, me, schema, me)}
		owners = []string{me}
	}
	missing.add(fmt.Sprintf("ownership of schema %s and its objects (owned by %s)", schema, strings.Join(owners, ", ")),
		"record the job in the refit schema, which another role created (after checking its contents)", strings.Join(stmts, " "))
	return nil
}

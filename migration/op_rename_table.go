package migration

import (
	"context"
	"fmt"
	"strings"
)

func init() { register("rename_table", func() Operation { return &RenameTable{} }) }

// RenameTable renames a table. During the window both names work: expand
// creates a view under the new name (SELECT * FROM the table, which
// PostgreSQL makes updatable: INSERT, UPDATE, DELETE, RETURNING and ON
// CONFLICT go through to the table, with its defaults, identities,
// constraints and triggers), so the new application version can use the new
// name while the old one uses the old name. Contract drops the view and
// renames the table in one transaction; abort drops the view. On
// PostgreSQL 14 (no security_invoker views) there is no view: the rename
// happens at contract only.
type RenameTable struct {
	FromRaw string `yaml:"from" json:"from"`
	To      string `yaml:"to" json:"to"`

	From TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*RenameTable) Kind() string { return "rename_table" }

// Tables implements Operation: the table under both names, so a job on
// either waits for this one.
func (o *RenameTable) Tables() []TableName {
	return []TableName{o.From, o.target(o.From)}
}

// target is the new name of table t (the table stays in its schema).
func (o *RenameTable) target(t TableName) TableName { return TableName{Schema: t.Schema, Name: o.To} }

func (o *RenameTable) creates() []object {
	t := o.target(o.From)
	return []object{{kind: "table", key: t.String(), name: o.To, field: "to"},
		{kind: "type", key: t.String(), name: o.To, field: "to"}}
}

// Needs implements Operation: the table's owner (ALTER TABLE … RENAME) and
// CREATE on its schema (the view of the window).
func (o *RenameTable) Needs() []Need {
	what := fmt.Sprintf("rename table %s to %s", o.From.Quoted(), QuoteIdent(o.To))
	return []Need{{Kind: NeedOwner, Table: o.From, For: what},
		{Kind: NeedSchemaCreate, Schema: o.From.Schema, For: "create view " + o.target(o.From).Quoted() + " for the window of " + what}}
}

func (o *RenameTable) validate() error {
	if err := tableField("from", o.FromRaw, &o.From); err != nil {
		return err
	}
	if err := validIdentField("to", o.To); err != nil {
		return err
	}
	if strings.Contains(o.To, ".") {
		return fieldErr("to", "%q: give the new name without a schema (the table stays in its schema)", o.To)
	}
	if o.To == o.From.Name {
		return fieldErr("to", "%q is the table's name already", o.To)
	}
	return nil
}

// renameViewMinVersion is the first PostgreSQL with security_invoker views: a view
// that checks the privileges and row security policies of the user who
// queries it, not of its owner (refit).
const renameViewMinVersion = 150000

// renameTableView reports whether the window has a view under the new name
// (assumed without facts).
func renameTableView(facts *Facts) bool {
	return facts == nil || facts.ServerVersion >= renameViewMinVersion
}

// viewSQL creates the view of the window and gives it the table's grants
// (SELECT, INSERT, UPDATE, DELETE, of the table and of its columns,
// including the owner's): the application's roles use the view with the
// privileges they have on the table, and, security_invoker, the table's
// privileges and row security apply to them as if they used the table.
func (o *RenameTable) viewSQL(t TableName) string {
	view := o.target(t)
	grants := fmt.Sprintf(`
DECLARE
  r record;
BEGIN
  FOR r IN
    SELECT a.privilege_type AS priv, NULL::name AS col, a.grantee, a.is_grantable
    FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
    WHERE c.oid = %[1]s::regclass AND a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE')
    UNION ALL
    SELECT a.privilege_type, att.attname, a.grantee, a.is_grantable
    FROM pg_attribute att, aclexplode(att.attacl) a
    WHERE att.attrelid = %[1]s::regclass AND att.attnum > 0 AND NOT att.attisdropped AND att.attacl IS NOT NULL
      AND a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE')
    ORDER BY 3, 2 NULLS FIRST, 1
  LOOP
    EXECUTE format('GRANT %%s%%s ON %%s TO %%s%%s', r.priv,
      CASE WHEN r.col IS NULL THEN '' ELSE format(' (%%I)', r.col) END, %[2]s,
      CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END,
      CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
  END LOOP;
END`, QuoteLiteral(t.Quoted()), QuoteLiteral(view.Quoted()))
	return fmt.Sprintf("CREATE VIEW %s WITH (security_invoker = true) AS SELECT * FROM %s;\nDO %s",
		view.Quoted(), t.Quoted(), dollarQuoted(grants))
}

func (o *RenameTable) inspect(ctx context.Context, in *inspector, i int) error {
	tf, _, err := in.table(ctx, i, o.From)
	if err != nil {
		return retargetTableField(err, "from")
	}
	t := tf.Name
	if err := in.refuseOtherOperations(ctx, i, "from", t,
		"the other operations' steps name the table by one name, and the window's view has the columns the table had at expand", o.To); err != nil {
		return err
	}
	var rel, typ *string
	if err := in.tx.QueryRow(ctx, `SELECT
			(SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2),
			(SELECT t.typname::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $1 AND t.typname = $2)`,
		t.Schema, o.To).Scan(&rel, &typ); err != nil {
		return in.dbErr(i, "to", err)
	}
	switch {
	case rel != nil:
		return in.m.OpError(i, "to", "a relation named %s already exists in schema %s", o.To, t.Schema)
	case typ != nil:
		return in.m.OpError(i, "to", "a type named %s already exists in schema %s (a table's row type takes its name)", o.To, t.Schema)
	}
	if !renameTableView(in.facts) {
		return nil
	}
	if err := in.refusePlpgsql(ctx, i, "to"); err != nil {
		return err
	}
	// The view, for real, in the rolled-back inspection: CREATE VIEW takes
	// ACCESS SHARE on the table, like the shadow copy.
	if err := in.exec(ctx, o.viewSQL(t)); err != nil {
		return in.dbErr(i, "to", err)
	}
	return nil
}

func (o *RenameTable) plan(b *planBuilder) {
	t := b.table(o.From)
	view := o.target(t)
	rename := fmt.Sprintf("ALTER TABLE %s RENAME TO %s", t.Quoted(), QuoteIdent(o.To))
	if !renameTableView(b.facts) {
		b.contract(Step{Transactional: true, Table: t,
			Description: fmt.Sprintf("rename table %s to %s (PostgreSQL 14: no view in the window)", t, o.To),
			SQL:         rename,
			Lock:        lockAccessExclusive, Cost: "metadata only"})
		return
	}
	b.expand(Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("create view %s over %s for the window, with the table's grants", view, t),
		SQL:         o.viewSQL(t),
		Lock:        lockAccessShare, Cost: "catalog only"},
		Step{Transactional: true, Table: t,
			Description: "drop view " + view.String(),
			SQL:         "DROP VIEW IF EXISTS " + view.Quoted(),
			Lock:        lockAccessExclusive + " on the view only", Cost: "catalog only"})
	b.contract(Step{Transactional: true, Table: t,
		Description: fmt.Sprintf("drop view %s and rename table %s to %s, in one transaction", view, t, o.To),
		SQL:         "DROP VIEW IF EXISTS " + view.Quoted() + ";\n" + rename,
		Lock:        lockAccessExclusive + " on the table and the view", Cost: "metadata only"})
}

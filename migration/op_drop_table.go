package migration

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

func init() { register("drop_table", func() Operation { return &DropTable{} }) }

// DropTable drops a table at contract (the old application may read it
// until then). Nothing happens before contract, so abort has nothing to
// undo. A table other tables reference by foreign key is refused unless
// Cascade is set, which drops those foreign keys with it; anything else
// that depends on the table (a view, a function, a column of its row type,
// a policy or rule of another table) is always refused.
type DropTable struct {
	NameRaw string `yaml:"name" json:"name"`
	Cascade bool   `yaml:"cascade" json:"cascade,omitempty"`

	Table TableName `yaml:"-" json:"-"`
}

// Kind implements Operation.
func (*DropTable) Kind() string { return "drop_table" }

// Tables implements Operation: another job on the table waits for this one
// (and this one for an earlier job on it).
func (o *DropTable) Tables() []TableName { return []TableName{o.Table} }

func (o *DropTable) creates() []object { return nil }

// Needs implements Operation: DROP TABLE needs the table's owner.
func (o *DropTable) Needs() []Need {
	return []Need{{Kind: NeedOwner, Table: o.Table, For: "drop table " + o.Table.Quoted()}}
}

func (o *DropTable) validate() error {
	return tableField("name", o.NameRaw, &o.Table)
}

// tableDependentsSQL lists what depends on the table $1 (a regclass) from
// outside it, as DROP TABLE … RESTRICT would: every object with a normal
// dependency on the table or on something the table owns (its row type,
// indexes, sequences, constraints), that is not itself owned by the table.
// fk marks the foreign keys of other tables.
const tableDependentsSQL = `WITH RECURSIVE owned(classid, objid) AS (
		SELECT 'pg_class'::regclass::oid, $1::regclass::oid
		UNION
		SELECT d.classid, d.objid FROM pg_depend d JOIN owned o ON d.refclassid = o.classid AND d.refobjid = o.objid
		WHERE d.deptype IN ('a', 'i')
	)
	SELECT DISTINCT d.classid = 'pg_constraint'::regclass AND c.contype = 'f' AS fk,
		pg_describe_object(d.classid, d.objid, d.objsubid) AS what
	FROM pg_depend d JOIN owned o ON d.refclassid = o.classid AND d.refobjid = o.objid
	LEFT JOIN pg_constraint c ON d.classid = 'pg_constraint'::regclass AND c.oid = d.objid
	WHERE d.deptype = 'n' AND NOT EXISTS (SELECT FROM owned x WHERE x.classid = d.classid AND x.objid = d.objid)`

func (o *DropTable) inspect(ctx context.Context, in *inspector, i int) error {
	tf, _, err := in.table(ctx, i, o.Table)
	if err != nil {
		return retargetTableField(err, "name")
	}
	if err := in.refuseOtherOperations(ctx, i, "name", tf.Name, "a table dropped by the migration needs no other change in it"); err != nil {
		return err
	}
	rows, err := in.tx.Query(ctx, "SELECT fk, what FROM ("+tableDependentsSQL+") d ORDER BY fk, what", tf.Name.Quoted())
	if err != nil {
		return in.dbErr(i, "name", err)
	}
	var fks, others []string
	for rows.Next() {
		var fk bool
		var what string
		if err := rows.Scan(&fk, &what); err != nil {
			return in.dbErr(i, "name", err)
		}
		if fk {
			fks = append(fks, what)
		} else {
			others = append(others, what)
		}
	}
	if err := rows.Err(); err != nil {
		return in.dbErr(i, "name", err)
	}
	if len(others) > 0 {
		return in.m.OpError(i, "name", "%s depend(s) on table %s: DROP TABLE would fail at contract; drop or change them first (in an earlier migration, or a sql operation before this one)",
			listSomeNames(others), tf.Name)
	}
	if len(fks) > 0 && !o.Cascade {
		return in.m.OpError(i, "name", "table %s is referenced by foreign keys of other tables: %s; drop them first, or set cascade: true to drop them with the table",
			tf.Name, listSomeNames(fks))
	}
	if o.Cascade {
		if err := in.refusePlpgsql(ctx, i, "cascade"); err != nil {
			return err
		}
	}
	return nil
}

// listSomeNames lists up to 10 names, then how many more there are.
func listSomeNames(names []string) string {
	if len(names) <= 10 {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:10], ", ") + " and " + strconv.Itoa(len(names)-10) + " more"
}

// refusePlpgsql refuses an operation whose step runs a DO block where
// PL/pgSQL is missing or not usable by the role.
func (in *inspector) refusePlpgsql(ctx context.Context, i int, field string) error {
	var ok bool
	if err := in.tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_language WHERE lanname = 'plpgsql')
			AND has_language_privilege('plpgsql', 'USAGE')`).Scan(&ok); err != nil {
		return in.dbErr(i, field, err)
	}
	if !ok {
		return in.m.OpError(i, field, "refit runs this step as a PL/pgSQL DO block, and PL/pgSQL is not installed or not usable by the role refit connects as (CREATE EXTENSION plpgsql; GRANT USAGE ON LANGUAGE plpgsql)")
	}
	return nil
}

// refuseOtherOperations refuses operation i if another operation of the
// migration changes table t (as the database resolved it) or, when
// alsoNamed is set, a table written as alsoNamed in t's schema: why says
// why the operation wants the table to itself. Operations whose tables are
// not known (sql) are not seen.
func (in *inspector) refuseOtherOperations(ctx context.Context, i int, field string, t TableName, why string, alsoNamed ...string) error {
	for j, op := range in.m.Operations {
		if j == i {
			continue
		}
		for _, other := range op.Tables() {
			key, err := in.resolvedKey(ctx, other)
			if err != nil {
				return in.dbErr(i, field, err)
			}
			same := key == t.String()
			for _, n := range alsoNamed {
				if other.Name == n && (other.Schema == "" || other.Schema == t.Schema) {
					same = true
				}
			}
			if same {
				return in.m.OpError(i, field, "%s also changes table %s: %s (run it in a migration of its own)", describe(op.Kind(), j), other, why)
			}
		}
	}
	return nil
}

// resolvedKey returns the key ("schema.name") of a table as written, as the
// database resolves it in the inspection (an earlier operation's alias, or
// the relation it names now), or "" if it names nothing.
func (in *inspector) resolvedKey(ctx context.Context, t TableName) (string, error) {
	if key, ok := in.facts.Aliases[t.String()]; ok {
		return key, nil
	}
	var schema, name *string
	err := in.tx.QueryRow(ctx, `SELECT (SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)),
			(SELECT relname::text FROM pg_class WHERE oid = to_regclass($1))`, t.Quoted()).Scan(&schema, &name)
	if err != nil || schema == nil || name == nil {
		return "", err
	}
	return TableName{Schema: *schema, Name: *name}.String(), nil
}

// dollarQuoted quotes body as a dollar-quoted string literal with a tag
// that does not occur in it.
func dollarQuoted(body string) string {
	tag := "$refit$"
	for n := 1; strings.Contains(body, tag); n++ {
		tag = "$refit" + strconv.Itoa(n) + "$"
	}
	return tag + body + tag
}

// dropTableCascadeSQL drops the table and the foreign keys of other tables
// that reference it, and nothing else: under the table's lock (no new
// dependent can appear), anything else that depends on it fails the step
// (dependent_objects_still_exist) instead of being dropped by CASCADE.
func dropTableCascadeSQL(t TableName) string {
	body := fmt.Sprintf(`
DECLARE
  refit_rel regclass := to_regclass(%s);
  refit_dep text;
BEGIN
  IF refit_rel IS NULL THEN
    RETURN;
  END IF;
  EXECUTE format('LOCK TABLE %%s IN ACCESS EXCLUSIVE MODE', refit_rel);
  SELECT d.what INTO refit_dep FROM (%s) d WHERE NOT d.fk LIMIT 1;
  IF refit_dep IS NOT NULL THEN
    RAISE EXCEPTION 'cannot drop table %%: %% depends on it', refit_rel, refit_dep USING ERRCODE = 'dependent_objects_still_exist';
  END IF;
  EXECUTE format('DROP TABLE %%s CASCADE', refit_rel);
END`, QuoteLiteral(t.Quoted()), strings.ReplaceAll(tableDependentsSQL, "$1", "refit_rel"))
	return "DO " + dollarQuoted(body)
}

func (o *DropTable) plan(b *planBuilder) {
	t := b.table(o.Table)
	s := Step{Transactional: true, Table: t,
		Description: "drop table " + t.String(),
		SQL:         "DROP TABLE IF EXISTS " + t.Quoted(),
		Lock:        lockAccessExclusive + " on the table and on every table it references by foreign key (their triggers are dropped)",
		Cost:        "catalog only (the files are removed at commit)"}
	if o.Cascade {
		s.Description += " and the foreign keys of other tables that reference it"
		s.SQL = dropTableCascadeSQL(t)
		s.Lock += ", and on every table whose foreign key to it is dropped"
	}
	b.contract(s)
}

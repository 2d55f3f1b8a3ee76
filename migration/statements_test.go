package migration

import (
	"reflect"
	"testing"
)

func TestSplitStatements(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"SELECT 1", []string{"SELECT 1"}},
		{"SELECT 1; SELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"SELECT ';'; SELECT \";\"", []string{"SELECT ';'", "SELECT \";\""}},
		{"SELECT E'\\';'; SELECT 2", []string{"SELECT E'\\';'", "SELECT 2"}},
		{"SELECT $$;$$; SELECT $a$ ; $a$", []string{"SELECT $$;$$", "SELECT $a$ ; $a$"}},
		{"SELECT 1 -- ; not a separator\n; SELECT 2", []string{"SELECT 1", "SELECT 2"}},
		{"SELECT /* ; /* nested ; */ ; */ 1; SELECT 2", []string{"SELECT /* ; /* nested ; */ ; */ 1", "SELECT 2"}},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END; SELECT f()",
			[]string{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END", "SELECT f()"}},
		{" ; ;", nil},
		{"SELECT x$y; SELECT 2", []string{"SELECT x$y", "SELECT 2"}},
	}
	for _, c := range cases {
		if got := splitStatements(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("splitStatements(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestExplainable(t *testing.T) {
	for stmt, want := range map[string]bool{
		"SELECT 1": true, " (select 1)": true, "/* c */ update t set a = 1": true, "-- c\nWITH x AS (SELECT 1) SELECT * FROM x": true,
		"INSERT INTO t VALUES (1)": true, "delete from t": true, "CREATE TABLE t (a int)": false, "ALTER TABLE t ADD c int": false,
		"DO $$ BEGIN END $$": false, "VACUUM t": false,
	} {
		if got := explainable(stmt); got != want {
			t.Errorf("explainable(%q) = %v, want %v", stmt, got, want)
		}
	}
}

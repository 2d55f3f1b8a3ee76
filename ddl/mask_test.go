package ddl

import "testing"

func TestMaskLiterals(t *testing.T) {
	for in, want := range map[string]string{
		"ALTER ROLE app PASSWORD 's3cret'":          "ALTER ROLE app PASSWORD '…'",
		"SELECT 'a''b', x FROM t WHERE y = 'c'":     "SELECT '…', x FROM t WHERE y = '…'",
		"INSERT INTO t VALUES ('cut off in the mid": "INSERT INTO t VALUES ('…'",
		"LOCK TABLE users":                          "LOCK TABLE users",
	} {
		if got := maskLiterals(in); got != want {
			t.Errorf("maskLiterals(%q) = %q, want %q", in, got, want)
		}
	}
}

package migration

import (
	"context"
	"strings"
	"testing"
)

// NULLS NOT DISTINCT is refused before PostgreSQL 15, naming the field,
// before anything is asked of the database (the test server is newer).
func TestCreateIndexNullsNotDistinctNeedsPG15(t *testing.T) {
	m, err := Parse("old.yaml", []byte("name: m\noperations:\n  - create_index: {name: i, table: t, columns: [a], unique: true, nulls_not_distinct: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, version := range []int{140011, 130000} {
		in := &inspector{m: m, facts: &Facts{ServerVersion: version}}
		err := m.Operations[0].inspect(context.Background(), in, 0)
		if !IsInvalid(err) {
			t.Fatalf("server %d: %v, want a validation error", version, err)
		}
		msg := err.Error()
		for _, want := range []string{"operations[0] (create_index)", `field "nulls_not_distinct"`, "PostgreSQL 15", "the server is 1"} {
			if !strings.Contains(msg, want) {
				t.Errorf("server %d: %q does not mention %q", version, msg, want)
			}
		}
	}
}

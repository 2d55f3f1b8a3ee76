package replication

import "testing"

func TestVersionString(t *testing.T) {
	for num, want := range map[int]string{90624: "9.6.24", 100023: "10.23", 130012: "13.12", 140000: "14.0", 180004: "18.4"} {
		if got := versionString(num); got != want {
			t.Errorf("versionString(%d) = %q, want %q", num, got, want)
		}
	}
	if got := versionProblem(130023); got != "PostgreSQL 13.23: refit needs 14 or newer (logical decoding messages for the contract drain)" {
		t.Errorf("versionProblem(130023) = %q", got)
	}
}

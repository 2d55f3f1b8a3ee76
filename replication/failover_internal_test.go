package replication

import (
	"strings"
	"testing"
)

// TestFailoverSlotDecision: replication.failover_slot against the server's
// version and synchronized_standby_slots.
func TestFailoverSlotDecision(t *testing.T) {
	cases := []struct {
		mode     string
		version  int
		standbys string
		want     bool
		err      string
	}{
		{mode: "off", version: 170004, standbys: "sb1"},
		{mode: "on", version: 170004, want: true},
		{mode: "on", version: 160008, err: "replication.failover_slot: on needs PostgreSQL 17"},
		{mode: "auto", version: 160008, standbys: "sb1"},
		{mode: "auto", version: 170004},
		{mode: "auto", version: 170004, standbys: " "},
		{mode: "auto", version: 170004, standbys: "sb1, sb2", want: true},
		{mode: "auto", version: 180001, standbys: "sb1", want: true},
		{mode: "", version: 180001, standbys: "sb1", want: true}, // unset = auto
	}
	for _, tc := range cases {
		got, why, err := failoverSlot(tc.mode, tc.version, tc.standbys)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q on %d: err %v, want %q", tc.mode, tc.version, err, tc.err)
			}
		case err != nil:
			t.Errorf("%q on %d with %q: %v", tc.mode, tc.version, tc.standbys, err)
		case got != tc.want || why == "":
			t.Errorf("%q on %d with %q: failover %v (%s), want %v", tc.mode, tc.version, tc.standbys, got, why, tc.want)
		}
	}
}

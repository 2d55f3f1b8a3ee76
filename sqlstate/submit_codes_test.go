package sqlstate_test

import (
	"testing"

	"github.com/refit-dev/refit/sqlstate"
)

// TestSubmitCodes pins the codes refit.submit raises (state/schema.go).
func TestSubmitCodes(t *testing.T) {
	for name, tc := range map[string]struct{ got, want string }{
		"NullValueNotAllowed":   {sqlstate.NullValueNotAllowed, "22004"},
		"InvalidParameterValue": {sqlstate.InvalidParameterValue, "22023"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", name, tc.got, tc.want)
		}
	}
}

package replication

import "testing"

func TestAllVisible(t *testing.T) {
	cases := []struct {
		snap string
		xids []uint32
		want bool
	}{
		{"100:105:", []uint32{99, 104}, true},
		{"100:105:", []uint32{105}, false},             // at xmax: not yet visible
		{"100:105:101,103", []uint32{103}, false},      // still in the proc array
		{"100:105:101,103", []uint32{102, 104}, true},  // committed and gone
		{"4294967390:4294967400:", []uint32{90}, true}, // epoch 1, xid 94 → visible
		{"4294967390:4294967400:4294967398", []uint32{102}, false},
		{"4294967290:4294967300:", []uint32{4294967280}, true}, // previous epoch
	}
	for _, tc := range cases {
		got, err := allVisible(tc.snap, tc.xids)
		if err != nil || got != tc.want {
			t.Errorf("allVisible(%q, %v) = %v, %v; want %v", tc.snap, tc.xids, got, err, tc.want)
		}
	}
	if _, err := allVisible("garbage", []uint32{1}); err == nil {
		t.Error("garbage snapshot accepted")
	}
}

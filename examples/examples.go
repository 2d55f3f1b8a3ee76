// Package examples owns the example migrations shipped with refit; the demo
// runs split_full_name.yaml from here so it works from any directory.
package examples

import _ "embed"

// SplitFullName is examples/split_full_name.yaml: the article's full_name →
// first_name/last_name split with an enum status column and an index.
//
//go:embed split_full_name.yaml
var SplitFullName []byte

package migration

import (
	"crypto/sha256"
	"encoding/hex"
	"unicode/utf8"
)

// The shadow-column path shared by the kinds that change a column in place
// (alter_column today): expand adds a shadow column of the new shape, the
// backfill and the stream derive it from the live row, a verify step
// compares it before the cut-over, and a swap step renames it into place
// inside one lock-bounded transaction with the final drain. Contract then
// enforces what could not hold before the swap and drops what was set
// aside.
//
// Why NOT NULL (and CHECKs) on the new column are enforced after the swap,
// not on the shadow before it: until the swap the old application inserts
// rows that leave the shadow NULL, and only the sync fills it, after the
// insert has committed. Any constraint on the shadow, even NOT VALID, is
// checked on that insert and would fail the application's write (another
// tool's alter_column failed the live application's UPDATEs within 51 ms
// that way). After the swap the application writes the new column itself,
// so the swap adds the constraint NOT VALID (no scan) and contract
// validates it (no write lock) and turns it into NOT NULL without a scan.

// Swap is the data of a swap step: the runner takes ACCESS EXCLUSIVE on
// Table, drains the stream inside the lock (replication.DrainLocked),
// applies the keys still pending, runs Statements, and commits together
// with the step's checkpoint; if the lock is held longer than the bound
// (ddl.swap_max_lock) it rolls back and tries again.
type Swap struct {
	Table      TableName
	Statements []string
}

// Verify is the data of a verify step: before the swap, every row's Column
// must equal Expr over the row (the sync has converged). The runner reads
// the table in keyset chunks, re-checks the rows that differ after a drain
// (a write may just not be applied yet) and fails the job, naming sample
// keys, if any still differ. It changes nothing.
type Verify struct {
	Table  TableName
	Key    []KeyColumn
	Column string
	Expr   string
}

// refitName is the name of refit's object of a kind (prefix "refit_new"
// for a shadow column or index, "refit_old" for the column set aside) for
// name: ≤ 63 bytes, hashed when longer, plainly refit's.
func refitName(prefix, name string) string {
	n := prefix + "_" + name
	if len(n) <= maxIdentLen {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	cut := maxIdentLen - 9
	for cut > 0 && !utf8.RuneStart(n[cut]) {
		cut--
	}
	return n[:cut] + "_" + hex.EncodeToString(sum[:4])
}

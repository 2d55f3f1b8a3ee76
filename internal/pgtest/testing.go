package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

// The shared cluster of a test binary. It is started on first use by NewDB
// or Shared and stopped by Main.
//
// The intended use is
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Without it NewDB and Shared still work, but the shared cluster is never
// stopped: the server dies with the test binary (parent-death signal, on
// Linux), and its temporary directory is left behind.
//
// If REFIT_TEST_DSN is set, no cluster is started: it must be a superuser
// DSN of an existing server, on which the databases are created and dropped.
var shared struct {
	mu      sync.Mutex
	tried   bool
	cluster *Cluster
	err     error
}

var (
	dbSeq atomic.Int64
	// runTag tells apart the databases of test binaries sharing one
	// REFIT_TEST_DSN server, which go test may run in parallel.
	runTag = newRunTag()
)

// Main runs the tests of a package that uses the shared cluster, then stops
// the cluster if it was started and exits with the tests' exit code. Call it
// from TestMain. The cluster is started lazily, so test runs that select no
// database test do not pay for it.
func Main(m *testing.M) {
	code := m.Run()
	shared.mu.Lock()
	c := shared.cluster
	shared.mu.Unlock()
	if c != nil {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stopping the shared cluster: %v\n", err)
		}
	}
	os.Exit(code)
}

// Shared returns the shared cluster of this test binary, starting it on
// first use. It fails the test if the cluster cannot be started; once a
// start has failed, every later call fails the same way.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	c, err := sharedCluster()
	if err != nil {
		t.Fatalf("pgtest: shared cluster: %v", err)
	}
	return c
}

func sharedCluster() (*Cluster, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.tried {
		shared.tried = true
		ctx, cancel := context.WithTimeout(context.Background(), 2*readyTimeout)
		defer cancel()
		if dsn := os.Getenv("REFIT_TEST_DSN"); dsn != "" {
			shared.cluster, shared.err = connectExisting(ctx, dsn, zap.NewNop())
			if shared.err != nil {
				shared.err = fmt.Errorf("REFIT_TEST_DSN: %w", shared.err)
			}
		} else {
			shared.cluster, shared.err = Start(ctx, Options{})
		}
	}
	return shared.cluster, shared.err
}

// NewDB creates a fresh database on the shared cluster, named after the test
// (t_<test name>_<n>, at most 63 bytes), and returns its superuser DSN. The
// database is dropped, with its replication slots and connections, when the
// test and its subtests complete. NewDB is safe for parallel tests and fails
// the test on error.
func NewDB(t testing.TB) string {
	t.Helper()
	c := Shared(t)
	tag := ""
	if c.external {
		tag = runTag
	}
	name := databaseName(t.Name(), tag, dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn, err := c.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.DropDatabase(ctx, name); err != nil {
			t.Error(err)
		}
	})
	return dsn
}

// databaseName builds t_<sanitized test name>[_<tag>]_<n>, cutting the test
// name so that the whole fits PostgreSQL's 63-byte identifier limit.
func databaseName(testName, tag string, n int64) string {
	var b strings.Builder
	underscore := true
	for _, r := range strings.ToLower(testName) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			underscore = false
		} else if !underscore {
			b.WriteByte('_')
			underscore = true
		}
	}
	body := strings.TrimSuffix(b.String(), "_")
	suffix := "_" + strconv.FormatInt(n, 10)
	if tag != "" {
		suffix = "_" + tag + suffix
	}
	const maxLen = 63
	if room := maxLen - len("t_") - len(suffix); len(body) > room {
		body = strings.TrimSuffix(body[:max(room, 0)], "_")
	}
	if body == "" {
		body = "db"
	}
	return "t_" + body + suffix
}

func newRunTag() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

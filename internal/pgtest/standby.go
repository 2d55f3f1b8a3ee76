package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// ErrExternal is returned by operations that need a cluster started by this
// package when the cluster is an existing server (REFIT_TEST_DSN).
var ErrExternal = errors.New("pgtest: needs a cluster started by pgtest, not an existing server (REFIT_TEST_DSN)")

// StartStandby makes a streaming physical standby of c: pg_basebackup -R
// into a new temporary directory, then postgres on a free port with
// hot_standby on. The standby connects as application_name name, which is
// how it appears in c's pg_stat_replication. Stop the standby with its Stop.
// It is used by tests of replica-lag throttling; an existing server
// (REFIT_TEST_DSN) cannot be cloned here: ErrExternal.
func (c *Cluster) StartStandby(ctx context.Context, name string) (*Cluster, error) {
	if c.external {
		return nil, ErrExternal
	}
	basebackup := filepath.Join(c.binDir, "pg_basebackup")
	if _, err := os.Stat(basebackup); err != nil {
		return nil, fmt.Errorf("pgtest: standby: %w", err)
	}
	cred, err := dropPrivileges()
	if err != nil {
		return nil, err
	}
	st, logFile, err := newCluster(c.log, c.binDir, "refit-pgtest-standby-", cred)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	ok := false
	defer func() {
		if !ok {
			st.abort()
		}
	}()
	begin := time.Now()
	cmd := exec.CommandContext(ctx, basebackup,
		"-D", st.dataDir,
		"-h", "127.0.0.1",
		"-p", strconv.Itoa(c.port),
		"-U", superuser,
		"-R",           // standby.signal + primary_conninfo
		"-X", "stream", // WAL needed by the copy comes along
		"-c", "fast", // do not wait for a spread checkpoint
		"--no-sync", // throwaway data
		"-d", "application_name="+name,
	)
	cmd.Dir = st.rootDir
	cmd.Env = childEnv()
	cmd.SysProcAttr = sysProcAttr(cred, syscall.SIGKILL)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("pgtest: %s: %w\n%s", cmd.String(), err, tail(out.Bytes(), logTailBytes))
	}
	// -d's application_name is only used by pg_basebackup itself; the
	// standby's walreceiver takes it from primary_conninfo.
	conf := fmt.Sprintf("hot_standby = on\nwal_receiver_status_interval = 1s\nprimary_conninfo = 'host=127.0.0.1 port=%d user=%s application_name=%s'\n",
		c.port, superuser, name)
	if err := appendFile(filepath.Join(st.dataDir, "postgresql.auto.conf"), conf); err != nil {
		return nil, fmt.Errorf("pgtest: write standby settings: %w", err)
	}
	if err := st.start(ctx, cred, logFile); err != nil {
		return nil, err
	}
	if err := st.openAdmin(ctx); err != nil {
		return nil, err
	}
	ok = true
	c.log.Info("pgtest: standby started", zap.Int("port", st.port), zap.Int("primary_port", c.port),
		zap.Duration("took", time.Since(begin)))
	return st, nil
}

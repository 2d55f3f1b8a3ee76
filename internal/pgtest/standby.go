package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// ErrExternal is returned by operations that need a cluster started by this
// package when the cluster is an existing server (REFIT_TEST_DSN).
var ErrExternal = errors.New("pgtest: needs a cluster started by pgtest, not an existing server (REFIT_TEST_DSN)")

// StartStandby makes a streaming physical standby of c in a new temporary
// directory and starts it on a free port with hot_standby on. The standby
// connects as application_name name, which is how it appears in c's
// pg_stat_replication. Stop the standby with its Stop. It is used by tests
// of replica-lag throttling; an existing server (REFIT_TEST_DSN) cannot be
// cloned here: ErrExternal.
//
// The copy is made with pg_basebackup -R when the bin directory has one of
// the server's major version, and otherwise (server-only builds, such as
// those of scripts/pg-fetch) on the server side, as pg_basebackup does it: a
// non-exclusive backup (pg_backup_start, or pg_start_backup before 15)
// while the data directory is copied, then pg_backup_stop's backup_label,
// standby.signal and primary_conninfo; a temporary physical slot keeps the
// WAL the standby needs until it has caught up.
func (c *Cluster) StartStandby(ctx context.Context, name string) (*Cluster, error) {
	return c.StartStandbyWith(ctx, name, StandbyOptions{})
}

// StandbyOptions configures StartStandbyWith.
type StandbyOptions struct {
	// SyncSlots makes the standby synchronize the primary's failover
	// logical slots (PostgreSQL 17+): it streams through a permanent
	// physical slot of the primary (pgtest_<name>, dropped when the standby
	// stops), with hot_standby_feedback and sync_replication_slots on, and
	// the primary lists that slot in synchronized_standby_slots (reset when
	// the standby stops).
	SyncSlots bool
}

// StartStandbyWith is StartStandby with options.
func (c *Cluster) StartStandbyWith(ctx context.Context, name string, opts StandbyOptions) (*Cluster, error) {
	if c.external {
		return nil, ErrExternal
	}
	if opts.SyncSlots && c.version < 17 {
		return nil, fmt.Errorf("pgtest: slot synchronization needs PostgreSQL 17+, the server is %d", c.version)
	}
	basebackup, err := c.basebackup()
	if err != nil {
		c.log.Info("pgtest: standby: copying the data directory on the server side", zap.String("why", err.Error()))
	}
	if !opts.SyncSlots {
		return c.startStandby(ctx, name, basebackup, "")
	}
	slot := "pgtest_" + name
	conn, err := c.admin.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.admin.release(conn)
	if _, err := conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true)", slot); err != nil {
		return nil, fmt.Errorf("pgtest: standby: create physical slot %s: %w", slot, err)
	}
	cleanup := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := c.admin.acquire(ctx)
		if err != nil {
			return err
		}
		defer c.admin.release(conn)
		var errs []error
		// The walsender of the stopped standby lets go of the slot a moment later.
		for i := 0; i < 100; i++ {
			_, err = conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", slot)
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("pgtest: drop physical slot %s: %w", slot, err))
		}
		return errors.Join(errs...)
	}
	st, err := c.startStandby(ctx, name, basebackup, fmt.Sprintf(
		"primary_slot_name = '%s'\nhot_standby_feedback = on\nsync_replication_slots = on\n", slot))
	if err != nil {
		return nil, errors.Join(err, cleanup())
	}
	st.afterStop = cleanup
	return st, nil
}

// basebackup returns the path of pg_basebackup in c's bin directory, or an
// error saying why it is not to be used.
func (c *Cluster) basebackup() (string, error) {
	path := filepath.Join(c.binDir, "pg_basebackup")
	if _, err := os.Stat(path); err != nil {
		return "", err
	}
	major, err := binaryMajor(path)
	if err != nil {
		return "", err
	}
	if major != c.version {
		return "", fmt.Errorf("%s is of PostgreSQL %d, the server of %d", path, major, c.version)
	}
	return path, nil
}

var versionOutput = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// binaryMajor runs a PostgreSQL program with --version and returns its
// major version.
func binaryMajor(path string) (int, error) {
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", path, err)
	}
	m := versionOutput.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("%s --version: unexpected output %q", path, out)
	}
	return strconv.Atoi(string(m[1]))
}

// startStandby is StartStandby with pg_basebackup at basebackup, or a
// server-side copy if basebackup is empty; extra is appended to the
// standby's settings.
func (c *Cluster) startStandby(ctx context.Context, name, basebackup, extra string) (*Cluster, error) {
	if c.external {
		return nil, ErrExternal
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
	method := "pg_basebackup"
	if basebackup != "" {
		if err := c.runBasebackup(ctx, st, cred, basebackup, name); err != nil {
			return nil, err
		}
	} else {
		method = "server-side copy"
		release, err := c.copyBackup(ctx, st.dataDir)
		if err != nil {
			return nil, err
		}
		// The slot keeps the WAL from the backup's start until the standby
		// is consistent (ready), and streams by itself.
		defer release()
		if cred != nil {
			if err := chownTree(st.dataDir, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, err
			}
		}
	}
	// pg_basebackup's -d application_name is only used by pg_basebackup
	// itself; the standby's walreceiver takes it from primary_conninfo.
	// dbname: the slot sync worker of a standby connects to a database.
	conf := fmt.Sprintf("hot_standby = on\nwal_receiver_status_interval = 1s\nprimary_conninfo = 'host=127.0.0.1 port=%d user=%s application_name=%s dbname=%s'\n",
		c.port, superuser, name, adminDatabase) + extra
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
		zap.String("method", method), zap.Duration("took", time.Since(begin)))
	return st, nil
}

// runBasebackup clones c into st's data directory with pg_basebackup -R.
func (c *Cluster) runBasebackup(ctx context.Context, st *Cluster, cred *syscall.Credential, basebackup, name string) error {
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
		return fmt.Errorf("pgtest: %s: %w\n%s", cmd.String(), err, tail(out.Bytes(), logTailBytes))
	}
	return nil
}

// copyBackup makes a base backup of c into dst with the server's low-level
// backup functions and a file copy, and writes standby.signal. A temporary
// physical slot of the backup's session reserves the WAL from before the
// backup's start; release drops it and ends the session: call it once the
// standby is consistent.
func (c *Cluster) copyBackup(ctx context.Context, dst string) (release func(), err error) {
	conn, err := pgx.Connect(ctx, c.DSN(adminDatabase))
	if err != nil {
		return nil, fmt.Errorf("pgtest: standby: connect to the primary: %w", err)
	}
	defer func() {
		if err != nil {
			conn.Close(context.Background()) // also ends the backup and drops the slot
		}
	}()
	slot := fmt.Sprintf("pgtest_standby_%d", conn.PgConn().PID())
	if _, err := conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true, true)", slot); err != nil {
		return nil, fmt.Errorf("pgtest: standby: reserve WAL: %w", err)
	}
	start, stop := "SELECT pg_backup_start($1, true)", "SELECT labelfile, spcmapfile FROM pg_backup_stop(false)"
	if c.version < 15 {
		start, stop = "SELECT pg_start_backup($1, true, false)", "SELECT labelfile, spcmapfile FROM pg_stop_backup(false, false)"
	}
	if _, err := conn.Exec(ctx, start, "pgtest standby"); err != nil {
		return nil, fmt.Errorf("pgtest: standby: start backup: %w", err)
	}
	if err := copyDataDir(c.dataDir, dst); err != nil {
		return nil, fmt.Errorf("pgtest: standby: copy %s: %w", c.dataDir, err)
	}
	var label, spcmap string
	if err := conn.QueryRow(ctx, stop).Scan(&label, &spcmap); err != nil {
		return nil, fmt.Errorf("pgtest: standby: stop backup: %w", err)
	}
	files := map[string]string{"backup_label": label, "standby.signal": ""}
	if spcmap != "" {
		files["tablespace_map"] = spcmap
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dst, name), []byte(text), 0o600); err != nil {
			return nil, fmt.Errorf("pgtest: standby: %w", err)
		}
	}
	return func() {
		// Dropped now, not when the backend exits after the disconnection.
		_, _ = conn.Exec(context.Background(), "SELECT pg_drop_replication_slot($1)", slot)
		conn.Close(context.Background())
	}, nil
}

// Left out of a base backup, as pg_basebackup leaves them out: files that
// belong to the running server, not to its data.
var (
	// skippedFiles are never copied, wherever they are.
	skippedFiles = map[string]bool{
		"postmaster.pid": true, "postmaster.opts": true, "pg_internal.init": true,
		"backup_label": true, "backup_label.old": true, "tablespace_map": true, "tablespace_map.old": true,
		"current_logfiles": true, "postgresql.auto.conf.tmp": true,
		"standby.signal": true, "recovery.signal": true,
	}
	// emptiedDirs are copied without their files (pg_wal keeps its
	// subdirectories: archive_status, summaries).
	emptiedDirs = map[string]bool{
		"pg_wal": true, "pg_stat_tmp": true, "pg_replslot": true, "pg_dynshmem": true,
		"pg_notify": true, "pg_serial": true, "pg_snapshots": true, "pg_subtrans": true,
	}
)

// copyDataDir copies the data directory src of a running server to dst,
// which must not exist. Files that vanish meanwhile (a dropped database, a
// removed segment) are left out: WAL replay from the backup's start
// recreates or removes whatever changed.
func copyDataDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path != src {
				return nil
			}
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		name := d.Name()
		if path != src && (skippedFiles[name] || strings.HasPrefix(name, "pgsql_tmp")) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		top, _, nested := strings.Cut(rel, string(filepath.Separator))
		switch {
		case d.IsDir():
			if nested && emptiedDirs[top] && top != "pg_wal" {
				return fs.SkipDir // e.g. a slot's directory in pg_replslot
			}
			info, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return fs.SkipDir
			}
			if err != nil {
				return err
			}
			return os.Mkdir(target, info.Mode().Perm())
		case nested && emptiedDirs[top]:
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symbolic link (a tablespace or a moved pg_wal): not supported", path)
		case !d.Type().IsRegular():
			return nil
		}
		return copyFile(path, target)
	})
}

// copyFile copies a regular file with its permissions; a file that has
// vanished is no error.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

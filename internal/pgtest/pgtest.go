// Package pgtest owns ephemeral PostgreSQL clusters for tests and for the
// `refit demo` command.
//
// There are no mocks here: Start runs the real initdb and postgres binaries
// of a local PostgreSQL installation, in a fresh temporary directory, on a
// free TCP port of 127.0.0.1, configured for logical replication
// (wal_level=logical) and tuned for throwaway use (fsync=off,
// full_page_writes=off). Stop shuts the server down and removes everything it
// created.
//
// Binaries are looked up in this order: the directory named by the
// REFIT_PG_BIN environment variable; `pg_config --bindir`; the highest
// version of /usr/lib/postgresql/*/bin. scripts/pg-fetch provides server
// builds of every supported major (14-18) for REFIT_PG_BIN; they lack the
// client programs, which this package does without (see StartStandby).
//
// When the calling process runs as root, PostgreSQL refuses to start, so
// initdb and postgres are run as the unprivileged OS user "postgres" (or
// "nobody" if there is no such user), and the temporary directory is handed
// over to that user.
//
// The postmaster is started with a parent-death signal of SIGQUIT (immediate
// shutdown) on Linux, so a test binary that is killed does not leave an
// orphan server behind, and in its own process group, so a Ctrl-C in a
// terminal reaches the test binary but not the server directly.
//
// For tests, use Main from TestMain and NewDB in each test; see testing.go.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/refit-dev/refit/sqlstate"
)

// Options configures Start.
type Options struct {
	// Logger receives progress messages. Optional; nil means zap.NewNop().
	Logger *zap.Logger
	// Settings are extra postgresql.conf settings. They override the
	// defaults of this package (see defaultSettings). The listen address,
	// port and socket directory are passed on the postgres command line and
	// cannot be overridden.
	Settings map[string]string
}

// Cluster is a running PostgreSQL server: either one started by Start, or
// (for tests, see REFIT_TEST_DSN) an existing server used as is.
type Cluster struct {
	log *zap.Logger

	binDir  string
	rootDir string // temp dir holding everything below; removed by Stop
	dataDir string
	logPath string
	port    int
	version int

	// external is set when the cluster is an existing server reached via
	// extDSN; nothing is started or removed then.
	external bool
	extDSN   string

	proc  *process
	admin *connPool // superuser connections to the maintenance database

	stopOnce sync.Once
	stopErr  error
	// afterStop, if set, runs once the server has stopped (a standby's
	// physical slot on its primary is dropped there).
	afterStop func() error
}

const (
	superuser     = "postgres"
	adminDatabase = "postgres"
	readyTimeout  = 30 * time.Second
	stopTimeout   = 10 * time.Second
	startAttempts = 5
	logTailBytes  = 4096
)

// defaultSettings are written to postgresql.conf of every cluster of major
// version major (settings a version does not know are refused by it).
// synchronous_commit stays on: callers rely on commit flush behaviour.
func defaultSettings(major int) map[string]string {
	s := map[string]string{
		"wal_level":             "logical",
		"max_replication_slots": "32",
		"max_wal_senders":       "32",
		"fsync":                 "off",
		"synchronous_commit":    "on",
		"full_page_writes":      "off",
		"max_connections":       "200",
		"shared_buffers":        "128MB",
		"logging_collector":     "off",
	}
	if major >= 18 {
		// Before 18 the replication origins in use were bounded by
		// max_replication_slots; 18 bounds them by this setting (default
		// 10). Every refit job of the tests' shared cluster holds one per
		// backfill range and one for its apply until it ends.
		s["max_active_replication_origins"] = "64"
	}
	return s
}

// Start creates a fresh cluster with initdb and starts postgres on a free
// port of 127.0.0.1. ctx bounds the startup only; the server keeps running
// until Stop is called (or the calling process dies).
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	begin := time.Now()

	// Checked before anything is started; rendered with the defaults of
	// the server's version once initdb has written it.
	if _, err := renderConf(opts.Settings); err != nil {
		return nil, err
	}

	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := dropPrivileges()
	if err != nil {
		return nil, err
	}

	c, logFile, err := newCluster(log, binDir, "refit-pgtest-", cred)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	ok := false
	defer func() {
		if !ok {
			c.abort()
		}
	}()

	if err := c.initdb(ctx, cred); err != nil {
		return nil, err
	}
	major, err := c.dataVersion()
	if err != nil {
		return nil, err
	}
	settings := defaultSettings(major)
	for k, v := range opts.Settings {
		settings[k] = v
	}
	conf, err := renderConf(settings)
	if err != nil {
		return nil, err
	}
	if err := appendFile(filepath.Join(c.dataDir, "postgresql.conf"), conf); err != nil {
		return nil, fmt.Errorf("pgtest: write postgresql.conf: %w", err)
	}

	if err := c.start(ctx, cred, logFile); err != nil {
		return nil, err
	}
	if err := c.openAdmin(ctx); err != nil {
		return nil, err
	}
	ok = true
	log.Info("pgtest: cluster started",
		zap.Int("port", c.port),
		zap.Int("version", c.version),
		zap.String("data_dir", c.dataDir),
		zap.String("bin_dir", c.binDir),
		zap.Duration("took", time.Since(begin)))
	return c, nil
}

// Stop shuts the server down with a fast shutdown (SIGINT; SIGKILL if it
// has not exited within 10s) and removes the
// temporary directory. For an existing server (REFIT_TEST_DSN) it only
// closes this package's connections. Stop is idempotent; later calls return
// the result of the first.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		if c.admin != nil {
			c.admin.close()
		}
		if c.external {
			return
		}
		var errs []error
		if c.proc != nil {
			if err := c.proc.stop(stopTimeout); err != nil {
				errs = append(errs, fmt.Errorf("pgtest: stop postgres: %w\n%s", err, c.logTail()))
			}
		}
		if err := os.RemoveAll(c.rootDir); err != nil {
			errs = append(errs, fmt.Errorf("pgtest: remove %s: %w", c.rootDir, err))
		}
		if c.afterStop != nil {
			errs = append(errs, c.afterStop())
		}
		c.stopErr = errors.Join(errs...)
		c.log.Info("pgtest: cluster stopped", zap.Int("port", c.port), zap.Error(c.stopErr))
	})
	return c.stopErr
}

// Port is the TCP port the server listens on (on 127.0.0.1 for a started
// cluster).
func (c *Cluster) Port() int { return c.port }

// DataDir is the server's data directory; empty for an existing server
// (REFIT_TEST_DSN).
func (c *Cluster) DataDir() string { return c.dataDir }

// BinDir is the directory of the PostgreSQL binaries in use; empty for an
// existing server (REFIT_TEST_DSN).
func (c *Cluster) BinDir() string { return c.binDir }

// Version is the server's major version, e.g. 15.
func (c *Cluster) Version() int { return c.version }

// DSN is a superuser connection string for database dbname, of the form
// postgres://postgres@127.0.0.1:PORT/DB?sslmode=disable. For an existing
// server (REFIT_TEST_DSN) it is that DSN with the database replaced.
func (c *Cluster) DSN(dbname string) string {
	if c.external {
		return withDatabase(c.extDSN, dbname)
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDatabase creates database name and returns its DSN.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := c.admin.acquire(ctx)
	if err != nil {
		return "", fmt.Errorf("pgtest: create database %q: %w", name, err)
	}
	defer c.admin.release(conn)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pgtest: create database %q: %w", name, err)
	}
	return c.DSN(name), nil
}

// DropDatabase drops database name, if it exists, together with whatever
// keeps it alive: it first drops the replication slots of that database
// (terminating the backends using them), then terminates the backends
// connected to it, then runs DROP DATABASE ... WITH (FORCE). Races with
// clients that reconnect or create slots meanwhile are retried for a while.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	const attempts = 50
	for attempt := 1; ; attempt++ {
		err := c.dropDatabaseOnce(ctx, name)
		if err == nil {
			return nil
		}
		if !sqlstate.Is(err, sqlstate.ObjectInUse) || attempt == attempts {
			return fmt.Errorf("pgtest: drop database %q: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: drop database %q: %w (last error: %v)", name, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *Cluster) dropDatabaseOnce(ctx context.Context, name string) error {
	conn, err := c.admin.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.admin.release(conn)

	type slot struct {
		name string
		pid  *int32
	}
	rows, err := conn.Query(ctx,
		"SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = $1", name)
	if err != nil {
		return err
	}
	slots, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (slot, error) {
		var s slot
		err := row.Scan(&s.name, &s.pid)
		return s, err
	})
	if err != nil {
		return err
	}
	terminate := "SELECT pg_terminate_backend($1)"
	if c.version >= 14 {
		// Wait for the backend to be gone, so the slot is free to drop.
		terminate = "SELECT pg_terminate_backend($1, 5000)"
	}
	for _, s := range slots {
		if s.pid != nil {
			if _, err := conn.Exec(ctx, terminate, *s.pid); err != nil {
				return err
			}
		}
	}
	for _, s := range slots {
		_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", s.name)
		if err != nil && !sqlstate.Is(err, sqlstate.UndefinedObject) { // already gone
			return err
		}
	}
	if _, err := conn.Exec(ctx,
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
		name); err != nil {
		return err
	}
	drop := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize()
	if c.version >= 13 {
		drop += " WITH (FORCE)"
	}
	_, err = conn.Exec(ctx, drop)
	return err
}

// newCluster creates the temporary directory of a cluster to be started
// (readable by, and owned by, the user postgres runs as) and its server log.
// On error nothing is left behind; after it, the caller's abort removes all.
func newCluster(log *zap.Logger, binDir, prefix string, cred *syscall.Credential) (*Cluster, *os.File, error) {
	rootDir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, nil, fmt.Errorf("pgtest: create temp dir: %w", err)
	}
	c := &Cluster{
		log:     log,
		binDir:  binDir,
		rootDir: rootDir,
		dataDir: filepath.Join(rootDir, "data"),
		logPath: filepath.Join(rootDir, "postgres.log"),
	}
	fail := func(err error) (*Cluster, *os.File, error) {
		_ = os.RemoveAll(rootDir)
		return nil, nil, err
	}
	if err := os.Chmod(rootDir, 0o755); err != nil {
		return fail(fmt.Errorf("pgtest: chmod %s: %w", rootDir, err))
	}
	logFile, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fail(fmt.Errorf("pgtest: create server log: %w", err))
	}
	if cred != nil {
		err := checkTraversable(rootDir, cred)
		if err == nil {
			err = chownTree(rootDir, int(cred.Uid), int(cred.Gid))
		}
		if err != nil {
			logFile.Close()
			return fail(err)
		}
	}
	return c, logFile, nil
}

// start starts postgres on a free port, trying another port when the chosen
// one turns out to be taken.
func (c *Cluster) start(ctx context.Context, cred *syscall.Credential, logFile *os.File) error {
	for attempt := 1; ; attempt++ {
		retry, err := c.startServer(ctx, cred, logFile)
		if err == nil {
			return nil
		}
		if !retry || attempt == startAttempts {
			return err
		}
		c.log.Info("pgtest: postgres could not use its port, retrying on another",
			zap.Int("attempt", attempt), zap.Error(err))
	}
}

// initdb creates the data directory.
func (c *Cluster) initdb(ctx context.Context, cred *syscall.Credential) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "initdb"),
		"-D", c.dataDir,
		"-A", "trust",
		"-U", superuser,
		"--no-sync",
		"-E", "UTF8",
		"--locale=C",
	)
	cmd.Dir = c.rootDir
	cmd.Env = childEnv()
	cmd.SysProcAttr = sysProcAttr(cred, syscall.SIGKILL)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	begin := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgtest: %s: %w\n%s", cmd.String(), err, tail(out.Bytes(), logTailBytes))
	}
	c.log.Debug("pgtest: initdb done", zap.Duration("took", time.Since(begin)))
	return nil
}

// dataVersion is the major version initdb wrote to the data directory.
func (c *Cluster) dataVersion() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.dataDir, "PG_VERSION"))
	if err != nil {
		return 0, fmt.Errorf("pgtest: %w", err)
	}
	major, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("pgtest: PG_VERSION: %w", err)
	}
	return major, nil
}

// startServer starts postgres on a fresh port and waits until it accepts
// connections. retry reports whether the failure looks like a port clash, in
// which case another port may work.
func (c *Cluster) startServer(ctx context.Context, cred *syscall.Credential, logFile *os.File) (retry bool, err error) {
	port, err := freePort()
	if err != nil {
		return false, err
	}
	logStart, err := logFile.Seek(0, io.SeekEnd)
	if err != nil {
		return false, fmt.Errorf("pgtest: server log: %w", err)
	}
	cmd := exec.Command(filepath.Join(c.binDir, "postgres"),
		"-D", c.dataDir,
		"-p", strconv.Itoa(port),
		"-h", "127.0.0.1",
		"-k", c.rootDir,
	)
	cmd.Dir = c.rootDir
	cmd.Env = childEnv()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr(cred, syscall.SIGQUIT)
	proc, err := startProcess(cmd)
	if err != nil {
		return false, fmt.Errorf("pgtest: start %s: %w", cmd.Path, err)
	}
	c.port = port
	c.proc = proc
	c.log.Debug("pgtest: postgres started", zap.Int("pid", cmd.Process.Pid), zap.Int("port", port))

	err = c.waitReady(ctx)
	if err == nil {
		return false, nil
	}
	_ = proc.stop(stopTimeout)
	c.proc = nil
	newLog, _ := readFrom(c.logPath, logStart)
	clash := errors.Is(err, errNotOurServer) || portClash.Match(newLog)
	return clash, fmt.Errorf("pgtest: postgres on port %d did not become ready: %w\nserver log (%s):\n%s",
		port, err, c.logPath, tail(newLog, logTailBytes))
}

var (
	errNotOurServer = errors.New("another server answered on the port")
	portClash       = regexp.MustCompile(`could not bind IPv4 address|Address already in use|could not create any TCP/IP sockets`)
)

// waitReady polls with pgx connections until the server answers, checking
// that it is this cluster's server and not another one that grabbed the
// port; it records the server version.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	cfg, err := pgx.ParseConfig(c.DSN(adminDatabase))
	if err != nil {
		return err
	}
	cfg.ConnectTimeout = 2 * time.Second
	var lastErr error
	for {
		select {
		case <-c.proc.done:
			return fmt.Errorf("postgres exited: %v", c.proc.err)
		default:
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			var dataDir string
			var versionNum int
			err = conn.QueryRow(ctx,
				"SELECT current_setting('data_directory'), current_setting('server_version_num')::int",
			).Scan(&dataDir, &versionNum)
			conn.Close(context.Background())
			if err == nil {
				if filepath.Clean(dataDir) != filepath.Clean(c.dataDir) {
					return fmt.Errorf("%w (its data directory is %s)", errNotOurServer, dataDir)
				}
				c.version = versionNum / 10000
				return nil
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last connection error: %v)", ctx.Err(), lastErr)
		case <-c.proc.done:
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func (c *Cluster) openAdmin(ctx context.Context) error {
	pool, err := newConnPool(ctx, c.DSN(adminDatabase))
	if err != nil {
		return err
	}
	c.admin = pool
	return nil
}

// abort undoes a failed Start.
func (c *Cluster) abort() {
	if c.admin != nil {
		c.admin.close()
	}
	if c.proc != nil {
		_ = c.proc.stop(stopTimeout)
	}
	_ = os.RemoveAll(c.rootDir)
}

func (c *Cluster) logTail() string {
	b, err := readFrom(c.logPath, 0)
	if err != nil {
		return ""
	}
	return string(tail(b, logTailBytes))
}

// connectExisting wraps an existing server, reached with the superuser DSN
// dsn, as a Cluster whose databases are created and dropped on that server.
func connectExisting(ctx context.Context, dsn string, log *zap.Logger) (*Cluster, error) {
	pool, err := newConnPool(ctx, dsn)
	if err != nil {
		return nil, err
	}
	conn, err := pool.acquire(ctx)
	if err != nil {
		pool.close()
		return nil, err
	}
	var versionNum int
	err = conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&versionNum)
	pool.release(conn)
	if err != nil {
		pool.close()
		return nil, fmt.Errorf("pgtest: query server version: %w", err)
	}
	return &Cluster{
		log:      log,
		port:     int(pool.cfg.Port),
		version:  versionNum / 10000,
		external: true,
		extDSN:   dsn,
		admin:    pool,
	}, nil
}

// withDatabase returns dsn (URL or keyword/value form) pointing at dbname.
func withDatabase(dsn, dbname string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err == nil {
			u.Path = "/" + dbname
			u.RawPath = ""
			q := u.Query()
			if q.Has("dbname") {
				q.Del("dbname")
				u.RawQuery = q.Encode()
			}
			return u.String()
		}
	}
	// In keyword/value form the last occurrence of a keyword wins.
	quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(dbname)
	return strings.TrimSpace(dsn) + " dbname='" + quoted + "'"
}

// connPool keeps a few idle superuser connections for CreateDatabase and
// DropDatabase, which may be called from parallel tests.
type connPool struct {
	cfg *pgx.ConnConfig

	mu     sync.Mutex
	idle   []*pgx.Conn
	closed bool
}

const maxIdleConns = 4

// newConnPool checks that dsn can be connected to and keeps that connection.
func newConnPool(ctx context.Context, dsn string) (*connPool, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgtest: parse DSN: %w", err)
	}
	p := &connPool{cfg: cfg}
	conn, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	p.release(conn)
	return p, nil
}

func (p *connPool) acquire(ctx context.Context) (*pgx.Conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("pgtest: cluster stopped")
	}
	for len(p.idle) > 0 {
		conn := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if !conn.IsClosed() {
			p.mu.Unlock()
			return conn, nil
		}
	}
	p.mu.Unlock()
	conn, err := pgx.ConnectConfig(ctx, p.cfg)
	if err != nil {
		return nil, fmt.Errorf("pgtest: connect: %w", err)
	}
	return conn, nil
}

// release returns conn for reuse, or closes it if it is broken or not needed.
func (p *connPool) release(conn *pgx.Conn) {
	if conn.IsClosed() {
		return
	}
	p.mu.Lock()
	if !p.closed && len(p.idle) < maxIdleConns && conn.PgConn().TxStatus() == 'I' {
		p.idle = append(p.idle, conn)
		conn = nil
	}
	p.mu.Unlock()
	if conn != nil {
		conn.Close(context.Background())
	}
}

func (p *connPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, conn := range idle {
		conn.Close(context.Background())
	}
}

// process is a child process whose exit is observed by a goroutine.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // result of Wait; valid once done is closed
}

// startProcess starts cmd from a goroutine locked to its OS thread, which
// stays alive until the child exits: Linux delivers the parent-death signal
// when the thread that forked the child exits, not the process, and the Go
// runtime may otherwise retire that thread while the child still runs.
func startProcess(cmd *exec.Cmd) (*process, error) {
	p := &process{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			runtime.UnlockOSThread()
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		runtime.UnlockOSThread()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// stop asks postgres for a fast shutdown (SIGINT) and, if it has not exited
// within timeout, kills the postmaster. It reports an error if the
// process had already died on its own or had to be killed.
func (p *process) stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return fmt.Errorf("postgres had exited before shutdown: %v", p.err)
	default:
	}
	pid := p.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal postgres: %w", err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	// Backends detach into sessions of their own; they exit by themselves
	// once they notice that the postmaster is gone.
	_ = syscall.Kill(pid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("postgres did not shut down within %s and was killed", timeout)
}

// findBinDir locates the directory holding initdb and postgres.
func findBinDir() (string, error) {
	if dir := os.Getenv("REFIT_PG_BIN"); dir != "" {
		if err := hasServerBinaries(dir); err != nil {
			return "", fmt.Errorf("pgtest: REFIT_PG_BIN=%s: %w", dir, err)
		}
		return dir, nil
	}
	var tried []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if hasServerBinaries(dir) == nil {
			return dir, nil
		}
		tried = append(tried, dir+" (from pg_config --bindir)")
	} else {
		tried = append(tried, "pg_config --bindir: "+err.Error())
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a)))
	})
	for _, dir := range dirs {
		if hasServerBinaries(dir) == nil {
			return dir, nil
		}
		tried = append(tried, dir)
	}
	tried = append(tried, "/usr/lib/postgresql/*/bin")
	return "", fmt.Errorf("pgtest: no PostgreSQL server binaries (initdb, postgres) found; "+
		"install PostgreSQL or set REFIT_PG_BIN to their directory (tried: %s)", strings.Join(tried, "; "))
}

func hasServerBinaries(dir string) error {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s is not executable", filepath.Join(dir, name))
		}
	}
	return nil
}

// compareVersions compares dotted numeric versions such as "9.6" and "15".
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return strings.Compare(a, b)
}

// dropPrivileges returns the credentials to run the server with: nil when
// not root, else those of user postgres, or nobody.
func dropPrivileges() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			errs = append(errs, fmt.Errorf("user %s: %w", name, err))
			continue
		}
		if uid == 0 {
			errs = append(errs, fmt.Errorf("user %s has uid 0", name))
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
	}
	return nil, fmt.Errorf("pgtest: running as root, and PostgreSQL refuses to; no unprivileged user to run it as: %w",
		errors.Join(errs...))
}

// checkTraversable verifies that the user of cred can reach dir.
func checkTraversable(dir string, cred *syscall.Credential) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok {
			perm := fi.Mode().Perm()
			var canSearch bool
			switch {
			case st.Uid == cred.Uid:
				canSearch = perm&0o100 != 0
			case st.Gid == cred.Gid:
				canSearch = perm&0o010 != 0
			default:
				canSearch = perm&0o001 != 0
			}
			if !canSearch {
				return fmt.Errorf("pgtest: directory %s is not searchable by uid %d, which runs postgres; "+
					"set TMPDIR to a directory it can reach", d, cred.Uid)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func chownTree(root string, uid, gid int) error {
	return filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(path, uid, gid); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		return nil
	})
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	return port, nil
}

// childEnv is the environment of initdb and postgres: ours, minus the PG*
// variables that could redirect them elsewhere.
func childEnv() []string {
	env := os.Environ()
	return slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PG") })
}

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// renderConf renders settings as postgresql.conf lines, sorted by name.
func renderConf(settings map[string]string) (string, error) {
	names := make([]string, 0, len(settings))
	for name := range settings {
		names = append(names, name)
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString("\n# Added by refit internal/pgtest.\n")
	for _, name := range names {
		value := settings[name]
		if !settingName.MatchString(name) {
			return "", fmt.Errorf("pgtest: invalid setting name %q", name)
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			return "", fmt.Errorf("pgtest: invalid value for setting %s: %q", name, value)
		}
		fmt.Fprintf(&b, "%s = '%s'\n", name, strings.ReplaceAll(value, "'", "''"))
	}
	return b.String(), nil
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readFrom(path string, offset int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

func tail(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	b = b[len(b)-n:]
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return b
}

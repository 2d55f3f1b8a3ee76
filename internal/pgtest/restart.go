package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Kill stops the server the way a crash does: an immediate shutdown
// (`pg_ctl stop -m immediate`, or SIGQUIT to the postmaster, which is what
// pg_ctl sends, when the bin directory has no pg_ctl). Every backend ends at
// once, without a checkpoint; the next start runs crash recovery. Kill
// returns once the postmaster has exited; the data directory and the port are
// kept for Restart. A cluster that is an existing server (REFIT_TEST_DSN)
// cannot be killed: ErrExternal.
//
// Kill and Restart must not run concurrently with each other or with Stop;
// the other methods may be called meanwhile (they fail while the server is
// down).
func (c *Cluster) Kill(ctx context.Context) error {
	if c.external {
		return ErrExternal
	}
	if c.proc == nil {
		return errors.New("pgtest: kill: the server is not running")
	}
	select {
	case <-c.proc.done:
		if c.proc.err != nil {
			return fmt.Errorf("pgtest: kill: postgres had already exited: %w", c.proc.err)
		}
		return errors.New("pgtest: kill: postgres had already exited")
	default:
	}
	if err := c.pgCtlImmediate(ctx); err != nil {
		c.log.Info("pgtest: pg_ctl stop -m immediate unavailable, sending SIGQUIT", zap.Error(err))
		if err := syscall.Kill(c.proc.cmd.Process.Pid, syscall.SIGQUIT); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("pgtest: kill: signal postgres: %w", err)
		}
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-c.proc.done:
	case <-timer.C:
		_ = syscall.Kill(c.proc.cmd.Process.Pid, syscall.SIGKILL)
		<-c.proc.done
	case <-ctx.Done():
		return fmt.Errorf("pgtest: kill: waiting for postgres to exit: %w", ctx.Err())
	}
	c.proc = nil
	if c.admin != nil {
		c.admin.dropIdle()
	}
	c.log.Info("pgtest: cluster killed (immediate shutdown)", zap.Int("port", c.port))
	return nil
}

// pgCtlImmediate runs `pg_ctl stop -m immediate` of the bin directory, as the
// user postgres runs as.
func (c *Cluster) pgCtlImmediate(ctx context.Context) error {
	pgCtl := filepath.Join(c.binDir, "pg_ctl")
	if _, err := os.Stat(pgCtl); err != nil {
		return err
	}
	cred, err := dropPrivileges()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, pgCtl, "stop", "-D", c.dataDir, "-m", "immediate", "-w", "-t", strconv.Itoa(int(stopTimeout/time.Second)))
	cmd.Dir = c.rootDir
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", cmd.String(), err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// Restart starts the server again, after Kill (or after it died), on the same
// data directory and the same port, so every DSN handed out stays valid. It
// returns once the server accepts connections, that is after crash recovery.
func (c *Cluster) Restart(ctx context.Context) error {
	if c.external {
		return ErrExternal
	}
	if c.proc != nil {
		select {
		case <-c.proc.done:
		default:
			return errors.New("pgtest: restart: the server is running; Kill it first")
		}
		c.proc = nil
	}
	cred, err := dropPrivileges()
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: restart: server log: %w", err)
	}
	defer logFile.Close()
	begin := time.Now()
	for attempt := 1; ; attempt++ {
		err := c.startOnPort(ctx, cred, logFile)
		if err == nil {
			break
		}
		// The port is part of every DSN: it cannot change. Another process
		// may hold it for a moment (a client's TIME_WAIT does not count).
		if attempt == startAttempts || ctx.Err() != nil {
			return err
		}
		c.log.Info("pgtest: restart failed, retrying on the same port", zap.Int("attempt", attempt), zap.Error(err))
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("pgtest: restart: %w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
	if c.admin != nil {
		c.admin.dropIdle()
	}
	c.log.Info("pgtest: cluster restarted", zap.Int("port", c.port), zap.Duration("took", time.Since(begin)))
	return nil
}

// startOnPort starts postgres on c.port and waits until it is ready.
func (c *Cluster) startOnPort(ctx context.Context, cred *syscall.Credential, logFile *os.File) error {
	logStart, err := logFile.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("pgtest: server log: %w", err)
	}
	cmd := exec.Command(filepath.Join(c.binDir, "postgres"),
		"-D", c.dataDir,
		"-p", strconv.Itoa(c.port),
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
		return fmt.Errorf("pgtest: start %s: %w", cmd.Path, err)
	}
	c.proc = proc
	if err := c.waitReady(ctx); err != nil {
		_ = proc.stop(stopTimeout)
		c.proc = nil
		newLog, _ := readFrom(c.logPath, logStart)
		return fmt.Errorf("pgtest: postgres did not become ready again on port %d: %w\nserver log (%s):\n%s",
			c.port, err, c.logPath, tail(newLog, logTailBytes))
	}
	return nil
}

// LogTail returns the last few kilobytes of the server log (empty for an
// existing server).
func (c *Cluster) LogTail() string {
	if c.external {
		return ""
	}
	return c.logTail()
}

// dropIdle closes the idle connections, which a restart has broken.
func (p *connPool) dropIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, conn := range idle {
		conn.Close(context.Background())
	}
}

package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// proc is a refit process (`refit run` or `refit worker`) started by the
// harness. It is started from a goroutine locked to its OS thread for the
// child's lifetime, so that the child's parent-death signal (SIGKILL, on
// Linux) fires only when the harness dies, not when the Go runtime retires
// the thread that forked it: a harness killed by a test timeout leaves no
// refit process behind.
type proc struct {
	name    string
	cmd     *exec.Cmd
	started time.Time
	out     *tailBuffer
	done    chan struct{} // closed when the process has exited
	err     error         // Wait's result, once done is closed
}

// startProc starts bin with args; its output goes to a bounded buffer and,
// if logPath is not empty, to that file too.
func startProc(name, bin, logPath string, args ...string) (*proc, error) {
	p := &proc{name: name, out: &tailBuffer{max: 256 << 10}, done: make(chan struct{}), started: time.Now()}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), "REFIT_DSN=")
	var out io.Writer = p.out
	var logFile *os.File
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("log of %s: %w", name, err)
		}
		logFile = f
		out = io.MultiWriter(p.out, f)
	}
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = procAttr()
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := p.cmd.Start(); err != nil {
			if logFile != nil {
				logFile.Close()
			}
			started <- err
			return
		}
		started <- nil
		p.err = p.cmd.Wait()
		if logFile != nil {
			logFile.Close()
		}
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the exit status once exited: -1 for a signal.
func (p *proc) exitCode() int {
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		return -1
	}
	return 0
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// terminate sends SIGTERM and waits up to timeout, then kills.
func (p *proc) terminate(ctx context.Context, timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		if code := p.exitCode(); code != 0 {
			return fmt.Errorf("%s exited %d after SIGTERM", p.name, code)
		}
		return nil
	case <-t.C:
		p.kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM", p.name, timeout)
	case <-ctx.Done():
		p.kill()
		return ctx.Err()
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// tail is the last n bytes, from a line start.
func (t *tailBuffer) tail(n int) string {
	s := t.String()
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := bytes.IndexByte([]byte(s), '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// Package devstack starts the real local services of the product (PostgreSQL, Redis,
// ElasticMQ, Envoy and our own binaries) on loopback, for `make run` and the integration
// tests. It supervises them as child processes in their own process groups, each of which can
// be killed, frozen and restarted on the same ports and data, as a crash would have it.
package devstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Process is one supervised child process.
type Process struct {
	Name     string
	cmd      *exec.Cmd
	done     chan struct{}
	err      error
	once     sync.Once
	intended atomic.Bool // stopped or killed on purpose, not died on its own
}

// startProcess starts cmd in its own process group with output to out. The child is killed
// if this process dies, so a crashed test never leaves servers behind.
func startProcess(name string, cmd *exec.Cmd, out io.Writer) (*Process, error) {
	cmd.Stdout = out
	cmd.Stderr = out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the exit error once Done is closed.
func (p *Process) Err() error { return p.err }

// Pid is the process id, which is also its process group's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// alive reports a process that has not exited (a frozen one is alive).
func (p *Process) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop asks the process group to terminate and kills it after grace.
func (p *Process) Stop(grace time.Duration) { p.StopWith(syscall.SIGTERM, grace) }

// StopWith sends sig to the process group and kills it after grace. A frozen group is
// continued after the signal, or it would never act on it.
func (p *Process) StopWith(sig syscall.Signal, grace time.Duration) {
	p.once.Do(func() {
		p.intended.Store(true)
		pgid := -p.Pid()
		_ = syscall.Kill(pgid, sig)
		_ = syscall.Kill(pgid, syscall.SIGCONT)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(pgid, syscall.SIGKILL)
			<-p.done
		}
		waitGroupGone(p.Pid(), 10*time.Second)
	})
}

// Kill sends SIGKILL to the process group at once, as a crash would, and waits until every
// process of the group is gone.
func (p *Process) Kill() {
	p.once.Do(func() {
		p.intended.Store(true)
		// PostgreSQL's backends put themselves in process groups of their own, so the group
		// signal misses them; they exit once they see the postmaster gone, and a new
		// postmaster may not start before (their shared memory is still attached).
		children := descendants(p.Pid())
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
		<-p.done
		waitGroupGone(p.Pid(), 10*time.Second)
		waitGone(children, 10*time.Second)
	})
}

// waitGroupGone waits until no live process is left in the group: PostgreSQL's backends, for
// one, must be gone before a new postmaster may take over their shared memory. Zombies count
// as gone, as reaping orphans is up to whatever runs as PID 1.
func waitGroupGone(pgid int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for !groupGone(pgid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// descendants are the live processes below pid: its children, theirs, and so on.
func descendants(pid int) []int {
	parent := map[int]int{}
	for _, st := range procStats() {
		parent[st.pid] = st.ppid
	}
	var out []int
	for p := range parent {
		for q, hops := parent[p], 0; q > 1 && hops < 64; q, hops = parent[q], hops+1 {
			if q == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// waitGone waits until none of pids is alive (a zombie counts as gone).
func waitGone(pids []int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		alive := map[int]bool{}
		for _, st := range procStats() {
			if st.state != 'Z' && st.state != 'X' {
				alive[st.pid] = true
			}
		}
		left := false
		for _, p := range pids {
			left = left || alive[p]
		}
		if !left {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type procStat struct {
	pid, ppid, pgrp int
	state           byte
}

// procStats reads pid, state, parent and group of every process from /proc.
func procStats() []procStat {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(stat[i+1:])
		if len(f) < 3 || len(f[0]) == 0 {
			continue
		}
		ppid, _ := strconv.Atoi(string(f[1]))
		pgrp, _ := strconv.Atoi(string(f[2]))
		out = append(out, procStat{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0][0]})
	}
	return out
}

func groupGone(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	for _, st := range procStats() {
		if st.pgrp == pgid && st.state != 'Z' && st.state != 'X' {
			return false
		}
	}
	return true
}

// FreePort asks the kernel for an unused loopback TCP port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitFor polls check until it succeeds, the process exits or the deadline passes.
func waitFor(ctx context.Context, p *Process, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited before it was ready: %v (last check: %v)", p.Name, p.Err(), last)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %w", p.Name, timeout, errors.Join(ctx.Err(), last))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tcpReady succeeds once addr accepts connections.
func tcpReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// logFile opens dir/name.log for a child's output, truncated.
func logFile(dir, name string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
}

// ErrNotRunning is returned for a fault injected into a component that is not running.
var ErrNotRunning = errors.New("not running")

// ErrRunning is returned by a restart of a component that still runs (frozen included).
var ErrRunning = errors.New("still running: kill it first")

// child is one component across kills and restarts: every start runs a fresh command with the
// same settings, ports and data. The first start truncates the log, later ones append to it,
// so the output of a crashed run is still there to read.
type child struct {
	name         string
	logPath      string
	command      func() (*exec.Cmd, error)
	ready        func(context.Context) error
	readyTimeout time.Duration

	ops sync.Mutex // one kill, restart, freeze or thaw at a time

	mu       sync.Mutex // guards the fields below
	proc     *Process
	logBegun bool
	frozen   bool
	closed   bool          // stopped for good: no more starts
	exits    chan<- string // where deaths that nobody asked for are reported
}

// openLog opens the component's log: truncated the first time, then appended to, with a line
// marking each restart.
func (c *child) openLog() (*os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.openLogLocked()
}

func (c *child) openLogLocked() (*os.File, error) {
	if !c.logBegun {
		if err := os.MkdirAll(filepath.Dir(c.logPath), 0o755); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err == nil {
			c.logBegun = true
		}
		return f, err
	}
	f, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err == nil && c.proc != nil {
		_, err = fmt.Fprintf(f, "--- devstack: restart %s ---\n", time.Now().UTC().Format(time.RFC3339))
	}
	return f, err
}

// spawn starts the process without waiting for it to be ready.
func (c *child) spawn() (*Process, error) {
	cmd, err := c.command()
	if err != nil {
		return nil, err
	}
	// Under mu, so a concurrent stop sees either no process or this one.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("%s: the stack is stopping", c.name)
	}
	if c.proc != nil && c.proc.alive() {
		return nil, fmt.Errorf("%s: %w", c.name, ErrRunning)
	}
	out, err := c.openLogLocked()
	if err != nil {
		return nil, err
	}
	// The child holds its own copy of the descriptor.
	defer out.Close()
	p, err := startProcess(c.name, cmd, out)
	if err != nil {
		return nil, err
	}
	c.proc, c.frozen = p, false
	if c.exits != nil {
		go c.watch(p, c.exits)
	}
	return p, nil
}

// awaitReady waits for p to pass the component's health check; one that never does is killed,
// so a failed restart leaves the component not running rather than half up.
func (c *child) awaitReady(ctx context.Context, p *Process) error {
	if c.ready == nil {
		return nil
	}
	if err := waitFor(ctx, p, c.readyTimeout, c.ready); err != nil {
		p.Kill()
		return fmt.Errorf("%w (log: %s)", err, c.logPath)
	}
	return nil
}

// Start starts the component again after a kill (or a crash) with the same settings, ports
// and data, and returns once it is healthy. It fails with ErrRunning while the component still
// runs, frozen included: kill it first.
func (c *child) Start(ctx context.Context) error {
	c.ops.Lock()
	defer c.ops.Unlock()
	p, err := c.spawn()
	if err != nil {
		return err
	}
	return c.awaitReady(ctx, p)
}

// Kill stops the component's process group with SIGKILL, as a crash would, and returns once it
// has exited.
func (c *child) Kill() error {
	c.ops.Lock()
	defer c.ops.Unlock()
	p := c.current()
	if p == nil || !p.alive() {
		return fmt.Errorf("%s: %w", c.name, ErrNotRunning)
	}
	p.Kill()
	return nil
}

// Freeze stops the component's process group with SIGSTOP: its sockets stay open and nothing
// answers, as with a hung process.
func (c *child) Freeze() error { return c.signal(syscall.SIGSTOP, true) }

// Thaw lets a frozen component run again (SIGCONT).
func (c *child) Thaw() error { return c.signal(syscall.SIGCONT, false) }

func (c *child) signal(sig syscall.Signal, frozen bool) error {
	c.ops.Lock()
	defer c.ops.Unlock()
	p := c.current()
	if p == nil || !p.alive() {
		return fmt.Errorf("%s: %w", c.name, ErrNotRunning)
	}
	if err := syscall.Kill(-p.Pid(), sig); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	c.mu.Lock()
	c.frozen = frozen
	c.mu.Unlock()
	return nil
}

// Running reports whether the component's process is alive; a frozen one is.
func (c *child) Running() bool {
	p := c.current()
	return p != nil && p.alive()
}

// state is a word for operators: running, frozen or stopped.
func (c *child) state() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.proc == nil || !c.proc.alive():
		return "stopped"
	case c.frozen:
		return "frozen"
	default:
		return "running"
	}
}

func (c *child) current() *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc
}

// stop ends the component for good with sig, killing it after grace. It does not wait for a
// restart in progress: that one's process is stopped too and its health check fails.
func (c *child) stop(sig syscall.Signal, grace time.Duration) {
	c.mu.Lock()
	c.closed = true
	p := c.proc
	c.mu.Unlock()
	if p != nil {
		p.StopWith(sig, grace)
	}
}

// report sends deaths nobody asked for to exits, from now on.
func (c *child) report(exits chan<- string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exits = exits
	if c.proc != nil {
		go c.watch(c.proc, exits)
	}
}

func (c *child) watch(p *Process, exits chan<- string) {
	<-p.Done()
	if p.intended.Load() {
		return
	}
	select {
	case exits <- c.name:
	default: // the supervisor has been told about enough deaths already
	}
}

// claimDataDir empties .state/data/<name>/ for one server and locks it for this process until
// release, so two processes that picked the same free port never share or wipe each other's
// data. release removes the data. Data of processes that died without releasing it is removed
// on the way.
func claimDataDir(name string) (dir string, release func(), err error) {
	base := stateDir("data")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", nil, err
	}
	sweepDataDirs(base)
	dir = filepath.Join(base, name)
	lockPath := dir + ".lock"
	lock, err := lockFile(lockPath)
	if err != nil {
		return "", nil, fmt.Errorf("%s is in use by another process: %w", dir, err)
	}
	// Once only: a second release could remove the data of whoever claimed the name since.
	release = sync.OnceFunc(func() {
		_ = os.RemoveAll(dir)
		_ = os.Remove(lockPath)
		_ = lock.Close()
	})
	if err := os.RemoveAll(dir); err != nil {
		release()
		return "", nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		release()
		return "", nil, err
	}
	return dir, release, nil
}

// lockFile takes an exclusive lock on path, held until the returned file is closed or this
// process dies. The lock file is removed by whoever releases it, so a lock taken on a file
// that has just been removed is worth nothing: it is checked to still be the one at path.
func lockFile(path string) (*os.File, error) {
	for range 3 {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			return nil, err
		}
		held, err1 := f.Stat()
		now, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			return f, nil
		}
		f.Close()
	}
	return nil, errors.New("lock file keeps being replaced")
}

// sweepDataDirs removes data whose lock nobody holds: left by a process that died (a test
// killed at its timeout) without releasing it.
func sweepDataDirs(base string) {
	locks, _ := filepath.Glob(filepath.Join(base, "*.lock"))
	for _, path := range locks {
		f, err := lockFile(path)
		if err != nil {
			continue // in use
		}
		_ = os.RemoveAll(strings.TrimSuffix(path, ".lock"))
		_ = os.Remove(path)
		_ = f.Close()
	}
}

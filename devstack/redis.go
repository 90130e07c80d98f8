package devstack

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// Redis is a throwaway, non-persistent redis-server.
type Redis struct {
	Addr string
	proc *Process
}

// StartRedis serves an empty in-memory Redis on 127.0.0.1:port.
func StartRedis(ctx context.Context, port int) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found: run `make tools` first")
	}
	out, err := logFile(stateDir("logs"), fmt.Sprintf("redis-%d", port))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes")
	proc, err := startProcess("redis", cmd, out)
	if err != nil {
		return nil, err
	}
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port), proc: proc}
	if err := waitFor(ctx, proc, 10*time.Second, tcpReady(r.Addr)); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// Stop terminates the server; its data is gone.
func (r *Redis) Stop() { r.proc.Stop(5 * time.Second) }

// Pause freezes the server (SIGSTOP): connections stay open and nothing answers, as with a
// hung primary. Resume undoes it.
func (r *Redis) Pause() error { return syscall.Kill(r.proc.cmd.Process.Pid, syscall.SIGSTOP) }

// Resume lets a paused server run again.
func (r *Redis) Resume() error { return syscall.Kill(r.proc.cmd.Process.Pid, syscall.SIGCONT) }

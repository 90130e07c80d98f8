package devstack

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Redis is a redis-server as durable as ElastiCache across a node restart: every write is in
// its append-only file before it is acknowledged, so a viewer's one-vote key survives kill -9.
// Its data lives in .state/data/redis-<port>/, empty at start and removed at Stop.
type Redis struct {
	Addr string
	child
	release func()
}

// StartRedis serves an empty Redis on 127.0.0.1:port.
func StartRedis(ctx context.Context, port int) (*Redis, error) {
	return startRedis(ctx, port, ComponentRedis)
}

// startRedis starts one durable redis-server; extra arguments go after the durability ones
// (a cluster node's, say).
func startRedis(ctx context.Context, port int, name string, extra ...string) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found: run `make tools` first")
	}
	dir, release, err := claimDataDir(fmt.Sprintf("redis-%d", port))
	if err != nil {
		return nil, err
	}
	r := &Redis{Addr: addr(port), release: release}
	r.child = child{
		name:    name,
		logPath: filepath.Join(stateDir("logs"), fmt.Sprintf("redis-%d.log", port)),
		command: func() (*exec.Cmd, error) {
			// appendfsync always: Redis writes and fsyncs the AOF before it sends the replies of an
			// event-loop round, so an acknowledged write is on disk. No RDB snapshots: the AOF alone
			// is the data, and a restart replays it.
			args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
				"--appendonly", "yes", "--appendfsync", "always", "--save", "",
				"--daemonize", "no", "--protected-mode", "yes"}
			return exec.Command(bin, append(args, extra...)...), nil
		},
		ready:        redisReady(r.Addr),
		readyTimeout: 30 * time.Second,
	}
	if err := r.Start(ctx); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// redisReady succeeds once the server answers PING with PONG; while it replays its AOF it
// answers LOADING instead.
func redisReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		deadline, ok := ctx.Deadline()
		if !ok || time.Until(deadline) > time.Second {
			deadline = time.Now().Add(time.Second)
		}
		_ = c.SetDeadline(deadline)
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if line = strings.TrimSpace(line); line != "+PONG" {
			return fmt.Errorf("redis PING answered %q", line)
		}
		return nil
	}
}

// Stop terminates the server and removes its data.
func (r *Redis) Stop() {
	r.stop(syscall.SIGTERM, 5*time.Second)
	r.release()
}

// PID is the server's process id, 0 when it is not running (benchmarks read its CPU time).
func (r *Redis) PID() int {
	if p := r.current(); p != nil && p.alive() {
		return p.Pid()
	}
	return 0
}

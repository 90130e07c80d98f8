package devstack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a PostgreSQL server with its own cluster in .state/data/postgres-<port>/, fresh
// at start and removed at Stop. Killed with SIGKILL it restarts on the same data through crash
// recovery, as RDS would.
type Postgres struct {
	DSN  string
	Port int
	child
	release func()
}

// StartPostgres initialises a fresh cluster and serves it on 127.0.0.1:port (TCP only).
// PostgreSQL refuses to run as root, so as root it runs as the `postgres` user that Debian's
// package creates.
func StartPostgres(ctx context.Context, port int) (*Postgres, error) {
	initdb, err := postgresBin("initdb")
	if err != nil {
		return nil, err
	}
	server, err := postgresBin("postgres")
	if err != nil {
		return nil, err
	}
	dir, release, err := claimDataDir(fmt.Sprintf("postgres-%d", port))
	if err != nil {
		return nil, err
	}
	pg := &Postgres{
		DSN:  fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
		Port: port, release: release,
	}
	cred, err := postgresCredential(dir)
	if err != nil {
		release()
		return nil, err
	}
	if cred != nil && !reachable(dir, int(cred.Uid)) {
		// A checkout under a private folder (mktemp -d is 0700) keeps the postgres user out of
		// .state: its data then lives in a folder of its own under the system's temp dir.
		if dir, err = os.MkdirTemp("", fmt.Sprintf("voting-postgres-%d-", port)); err == nil {
			err = os.Chown(dir, int(cred.Uid), int(cred.Gid))
		}
		if err != nil {
			release()
			return nil, err
		}
		own, claimed := dir, release
		release = func() { _ = os.RemoveAll(own); claimed() }
		pg.release = release
	}
	pg.child = child{
		name:    ComponentPostgres,
		logPath: filepath.Join(stateDir("logs"), fmt.Sprintf("postgres-%d.log", port)),
		command: func() (*exec.Cmd, error) {
			// No Unix socket: every client uses TCP, and a deep checkout would make the socket's
			// path too long.
			cmd := exec.Command(server, "-D", dir, "-p", strconv.Itoa(port),
				"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
				"-c", "max_connections=200", "-c", "shared_buffers=256MB")
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
			return cmd, nil
		},
		ready:        pg.connect,
		readyTimeout: 60 * time.Second,
	}
	out, err := pg.openLog()
	if err != nil {
		release()
		return nil, err
	}
	init := exec.CommandContext(ctx, initdb, "-D", dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
	init.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	init.Stdout, init.Stderr = out, out
	err = init.Run()
	out.Close()
	if err != nil {
		release()
		return nil, fmt.Errorf("initdb failed (see %s): %w", pg.logPath, err)
	}
	if err := pg.Start(ctx); err != nil {
		pg.Stop()
		return nil, err
	}
	return pg, nil
}

// connect succeeds once the server accepts sessions (after crash recovery, on a restart).
func (p *Postgres) connect(ctx context.Context) error {
	c, err := pgx.Connect(ctx, p.DSN)
	if err != nil {
		return err
	}
	return c.Close(ctx)
}

// Stop shuts the server down and removes its data. SIGINT is PostgreSQL's fast shutdown;
// SIGTERM would wait for every client to disconnect.
func (p *Postgres) Stop() {
	p.stop(syscall.SIGINT, 15*time.Second)
	p.release()
}

// Restart shuts the server down cleanly (fast shutdown), waits down, and starts it again on the
// same data and port. Kill and Start are the crash instead.
func (p *Postgres) Restart(ctx context.Context, down time.Duration) error {
	p.ops.Lock()
	defer p.ops.Unlock()
	if old := p.current(); old != nil {
		old.StopWith(syscall.SIGINT, 15*time.Second)
	}
	time.Sleep(down)
	proc, err := p.spawn()
	if err != nil {
		return err
	}
	return p.awaitReady(ctx, proc)
}

// reachable says whether the user uid may walk down to dir: every folder above it lets others
// (or that user, as owner) search it. Root's own folders count by their "others" bits.
func reachable(dir string, uid int) bool {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return false
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		search := fi.Mode().Perm()&0o001 != 0 || (ok && int(st.Uid) == uid && fi.Mode().Perm()&0o100 != 0)
		if !search {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

// postgresCredential is who the server runs as: as root, the `postgres` user, who then owns dir.
func postgresCredential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the postgres user (apt package postgresql): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

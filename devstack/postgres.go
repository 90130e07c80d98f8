package devstack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway PostgreSQL server with its own data directory.
type Postgres struct {
	DSN  string
	Port int
	proc *Process
	dir  string
}

// StartPostgres initialises a fresh cluster in a new temporary directory and serves it on
// 127.0.0.1:port. PostgreSQL refuses to run as root, so as root it runs as the `postgres`
// user that Debian's package creates.
func StartPostgres(ctx context.Context, port int) (*Postgres, error) {
	initdb, err := postgresBin("initdb")
	if err != nil {
		return nil, err
	}
	server, err := postgresBin("postgres")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "votes-pg-")
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	out, err := logFile(stateDir("logs"), fmt.Sprintf("postgres-%d", port))
	if err != nil {
		return nil, err
	}
	init := exec.CommandContext(ctx, initdb, "-D", dir+"/data", "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
	init.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	init.Stdout, init.Stderr = out, out
	if err := init.Run(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb failed (see %s): %w", out.Name(), err)
	}
	cmd := exec.Command(server, "-D", dir+"/data", "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+dir,
		"-c", "max_connections=200", "-c", "shared_buffers=256MB")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	proc, err := startProcess("postgres", cmd, out)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	pg := &Postgres{
		DSN:  fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
		Port: port, proc: proc, dir: dir,
	}
	err = waitFor(ctx, proc, 30*time.Second, func(ctx context.Context) error {
		c, err := pgx.Connect(ctx, pg.DSN)
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
	if err != nil {
		pg.Stop()
		return nil, err
	}
	return pg, nil
}

// Stop shuts the server down and removes its data. SIGINT is PostgreSQL's fast shutdown;
// SIGTERM would wait for every client to disconnect.
func (p *Postgres) Stop() {
	p.proc.StopWith(syscall.SIGINT, 15*time.Second)
	os.RemoveAll(p.dir)
}

// Restart stops the server and starts it again on the same data and port, for failure tests.
func (p *Postgres) Restart(ctx context.Context, down time.Duration) error {
	p.proc.StopWith(syscall.SIGINT, 15*time.Second)
	time.Sleep(down)
	old := p.proc.cmd
	cmd := exec.Command(old.Path, old.Args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: old.SysProcAttr.Credential}
	proc, err := startProcess("postgres", cmd, old.Stdout.(*os.File))
	if err != nil {
		return err
	}
	p.proc = proc
	return waitFor(ctx, proc, 30*time.Second, func(ctx context.Context) error {
		c, err := pgx.Connect(ctx, p.DSN)
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
}

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

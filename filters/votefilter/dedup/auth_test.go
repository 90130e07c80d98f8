package dedup

import (
	"context"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/tvvote/voting/devstack"
)

// A store that requires AUTH (ElastiCache with an AUTH token) is reached with the token the
// Endpoint's Password gives, asked for on each new connection; without it every command fails.
func TestEndpointPasswordAuthenticates(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (make tools)")
	}
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	const token = "a-rotated-auth-token-0123456789"
	srv := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--requirepass", token,
		"--save", "", "--appendonly", "no")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)

	ping := func(e Endpoint) error {
		c, err := Dial(e)()
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return c.Do(ctx, c.B().Ping().Build()).Error()
	}
	deadline := time.Now().Add(10 * time.Second)
	for ping(Endpoint{Addr: addr, Password: func() string { return token }}) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis with AUTH not reachable with its token: %v", ping(Endpoint{Addr: addr, Password: func() string { return token }}))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := ping(Endpoint{Addr: addr}); err == nil {
		t.Fatal("a client without the token was served")
	}
	if err := ping(Endpoint{Addr: addr, Password: func() string { return "wrong-token-0123456789" }}); err == nil {
		t.Fatal("a client with a wrong token was served")
	}
}

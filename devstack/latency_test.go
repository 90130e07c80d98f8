package devstack

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// Bytes arrive intact, in order, each way a delay after they were sent.
func TestLatencyProxyDelaysEachWay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			c.Write([]byte("echo " + line))
		}
	}()
	const delay = 50 * time.Millisecond
	p, err := StartLatencyProxy(ln.Addr().String(), delay)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for _, msg := range []string{"one\n", "two\n"} {
		start := time.Now()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != "echo "+msg {
			t.Fatalf("got %q, %v", got, err)
		}
		// A lower bound only: the round trip cannot be shorter than the delay twice.
		if rtt := time.Since(start); rtt < 2*delay {
			t.Fatalf("round trip %s, shorter than twice the delay %s", rtt, delay)
		}
	}
}

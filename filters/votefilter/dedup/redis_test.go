package dedup

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tvvote/voting/devstack"
)

// client talks to one real redis-server started for this package's tests.
var client *redis.Client

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port, err := devstack.FreePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, "free port:", err)
		return 1
	}
	srv, err := devstack.StartRedis(ctx, port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start redis:", err)
		return 1
	}
	defer srv.Stop()
	client = redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer client.Close()
	return m.Run()
}

// ids gives each test its own election so tests never share keys.
func ids(t *testing.T) (election, viewer string) {
	t.Helper()
	return "election-" + unique(t), "auth0|viewer-1"
}

// unique names a test run: repeated runs (-count=N) share one Redis.
func unique(t *testing.T) string {
	return t.Name() + "-" + strconv.FormatInt(runs.Add(1), 10)
}

var runs atomic.Int64

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestKey(t *testing.T) {
	if got := Key("e1", "u1"); got != "vote:{e1:u1}" {
		t.Errorf("Key = %q, want vote:{e1:u1}", got)
	}
}

// attempt is a claim without limits or proof of work from a fixed address.
func attempt(election, viewer, value string) Attempt {
	return Attempt{ElectionID: election, ViewerID: viewer, ClientIP: "192.0.2.1", Value: value}
}

func admit(t *testing.T, g *Gate, a Attempt) Outcome {
	t.Helper()
	out, err := g.Admit(ctx(t), a)
	if err != nil {
		t.Fatalf("Admit(%+v): %v", a, err)
	}
	return out
}

func TestAdmitOnce(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v := ids(t)

	if out := admit(t, g, attempt(e, v, "vote-1|t1")); out != (Outcome{Verdict: Reserved}) {
		t.Fatalf("first Admit = %+v; want Reserved", out)
	}
	if out := admit(t, g, attempt(e, v, "vote-2|t2")); out != (Outcome{Verdict: Duplicate, Existing: "vote-1|t1"}) {
		t.Fatalf("second Admit = %+v; want Duplicate of vote-1|t1", out)
	}
	if got, err := client.Get(ctx(t), Key(e, v)).Result(); err != nil || got != "vote-1|t1" {
		t.Errorf("key holds %q (%v); want the first value vote-1|t1", got, err)
	}
	// Another viewer, and the same viewer in another election, are independent.
	if out := admit(t, g, attempt(e, "auth0|viewer-2", "vote-3|t3")); out.Verdict != Reserved {
		t.Errorf("other viewer Admit = %+v; want Reserved", out)
	}
	if out := admit(t, g, attempt(e+"-other", v, "vote-4|t4")); out.Verdict != Reserved {
		t.Errorf("other election Admit = %+v; want Reserved", out)
	}
}

func TestAdmitSetsTTL(t *testing.T) {
	g := NewGate(client, 90*time.Second)
	e, v := ids(t)
	if out := admit(t, g, attempt(e, v, "vote-1|t1")); out.Verdict != Reserved {
		t.Fatalf("Admit = %+v", out)
	}
	ttl, err := client.TTL(ctx(t), Key(e, v)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 80*time.Second || ttl > 90*time.Second {
		t.Errorf("TTL = %v, want about 90s", ttl)
	}

	// A refused second Admit neither changes the value nor refreshes the TTL.
	g2 := NewGate(client, time.Hour)
	if out := admit(t, g2, attempt(e, v, "vote-2|t2")); out.Verdict != Duplicate {
		t.Fatalf("second Admit = %+v", out)
	}
	if ttl, _ := client.TTL(ctx(t), Key(e, v)).Result(); ttl > 90*time.Second {
		t.Errorf("TTL after a refused Admit = %v, want still ≤ 90s", ttl)
	}
}

func TestAdmitKeyExpires(t *testing.T) {
	g := NewGate(client, time.Second)
	e, v := ids(t)
	if out := admit(t, g, attempt(e, v, "vote-1|t1")); out.Verdict != Reserved {
		t.Fatalf("Admit = %+v", out)
	}
	if pttl, _ := client.PTTL(ctx(t), Key(e, v)).Result(); pttl <= 0 || pttl > time.Second {
		t.Fatalf("PTTL = %v, want (0, 1s]", pttl)
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if n, _ := client.Exists(ctx(t), Key(e, v)).Result(); n == 0 {
			if out := admit(t, g, attempt(e, v, "vote-2|t2")); out.Verdict != Reserved {
				t.Fatalf("Admit after expiry = %+v", out)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("key did not expire")
}

func TestReleaseWrongValueKeepsKey(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v := ids(t)
	if out := admit(t, g, attempt(e, v, "vote-1|t1")); out.Verdict != Reserved {
		t.Fatalf("Admit = %+v", out)
	}
	// A slow, failed earlier attempt must not erase the key a later vote holds, nor
	// uncount it.
	for _, wrong := range []string{"vote-0|t0", "", "vote-1|t1 ", "vote-1"} {
		if err := g.Release(ctx(t), Attempt{ElectionID: e, ViewerID: v, Value: wrong}); err != nil {
			t.Fatalf("Release(%q) = %v", wrong, err)
		}
		got, err := client.Get(ctx(t), Key(e, v)).Result()
		if err != nil || got != "vote-1|t1" {
			t.Fatalf("after Release(%q) the key holds %q (%v); want vote-1|t1", wrong, got, err)
		}
		if n, _ := client.Get(ctx(t), AcceptedKey(e)).Int(); n != 1 {
			t.Fatalf("after Release(%q) the accepted counter is %d; want 1", wrong, n)
		}
	}
	if out := admit(t, g, attempt(e, v, "vote-2|t2")); out.Verdict != Duplicate {
		t.Errorf("Admit after a wrong-value Release = %+v; want Duplicate", out)
	}
}

func TestReleaseRightValueFreesKey(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v := ids(t)
	if out := admit(t, g, attempt(e, v, "vote-1|t1")); out.Verdict != Reserved {
		t.Fatalf("Admit = %+v", out)
	}
	if err := g.Release(ctx(t), Attempt{ElectionID: e, ViewerID: v, Value: "vote-1|t1"}); err != nil {
		t.Fatalf("Release = %v", err)
	}
	if n, err := client.Exists(ctx(t), Key(e, v)).Result(); err != nil || n != 0 {
		t.Fatalf("key still exists (%d, %v) after Release with its value", n, err)
	}
	if n, _ := client.Get(ctx(t), AcceptedKey(e)).Int(); n != 0 {
		t.Errorf("accepted counter = %d after the release, want 0", n)
	}
	if out := admit(t, g, attempt(e, v, "vote-2|t2")); out.Verdict != Reserved {
		t.Fatalf("Admit after Release = %+v; want Reserved", out)
	}
	if ttl, _ := client.TTL(ctx(t), Key(e, v)).Result(); ttl <= 0 {
		t.Errorf("re-reserved key has TTL %v", ttl)
	}
	// Releasing a key that is gone is not an error, and uncounts nothing.
	if err := g.Release(ctx(t), Attempt{ElectionID: e, ViewerID: "auth0|nobody", Value: "x"}); err != nil {
		t.Errorf("Release of a missing key = %v", err)
	}
	if n, _ := client.Get(ctx(t), AcceptedKey(e)).Int(); n != 1 {
		t.Errorf("accepted counter = %d, want 1", n)
	}
}

// Many concurrent attempts by one viewer: exactly one reservation wins.
func TestAdmitConcurrent(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v := ids(t)
	c := ctx(t)
	var wins, dups atomic.Int32
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := g.Admit(c, attempt(e, v, fmt.Sprintf("vote-%d|t", i)))
			if err != nil {
				t.Error(err)
			}
			switch out.Verdict {
			case Reserved:
				wins.Add(1)
			case Duplicate:
				dups.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || dups.Load() != 63 {
		t.Errorf("%d concurrent Admits won, %d duplicates; want exactly 1 and 63", wins.Load(), dups.Load())
	}
	if n, _ := client.Get(c, AcceptedKey(e)).Int(); n != 1 {
		t.Errorf("accepted counter = %d, want 1", n)
	}
}

// With Redis unreachable every call returns an error (the admitter turns them into 503s).
func TestRedisDown(t *testing.T) {
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dead := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer dead.Close()
	g := NewGate(dead, time.Hour)
	if out, err := g.Admit(ctx(t), attempt("e", "v", "x")); err == nil {
		t.Errorf("Admit on a dead Redis = %+v, %v; want an error", out, err)
	}
	if err := g.Release(ctx(t), Attempt{ElectionID: "e", ViewerID: "v", Value: "x"}); err == nil {
		t.Error("Release on a dead Redis returned no error")
	}
	if v, err := g.Lookup(ctx(t), "e", "v"); err == nil {
		t.Errorf("Lookup on a dead Redis = %q, nil; want an error", v)
	}
}

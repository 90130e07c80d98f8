package dedup

import (
	"context"
	"fmt"
	"os"
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
	return "election-" + t.Name(), "auth0|viewer-1"
}

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

func TestReserveOnce(t *testing.T) {
	r := NewRedis(client, time.Hour)
	e, v := ids(t)

	fresh, err := r.Reserve(ctx(t), e, v, "vote-1|t1")
	if err != nil || !fresh {
		t.Fatalf("first Reserve = %v, %v; want true", fresh, err)
	}
	fresh, err = r.Reserve(ctx(t), e, v, "vote-2|t2")
	if err != nil || fresh {
		t.Fatalf("second Reserve = %v, %v; want false", fresh, err)
	}
	if got, err := client.Get(ctx(t), Key(e, v)).Result(); err != nil || got != "vote-1|t1" {
		t.Errorf("key holds %q (%v); want the first value vote-1|t1", got, err)
	}
	// Another viewer, and the same viewer in another election, are independent.
	if fresh, err := r.Reserve(ctx(t), e, "auth0|viewer-2", "vote-3|t3"); err != nil || !fresh {
		t.Errorf("other viewer Reserve = %v, %v; want true", fresh, err)
	}
	if fresh, err := r.Reserve(ctx(t), e+"-other", v, "vote-4|t4"); err != nil || !fresh {
		t.Errorf("other election Reserve = %v, %v; want true", fresh, err)
	}
}

func TestReserveSetsTTL(t *testing.T) {
	r := NewRedis(client, 90*time.Second)
	e, v := ids(t)
	if fresh, err := r.Reserve(ctx(t), e, v, "vote-1|t1"); err != nil || !fresh {
		t.Fatalf("Reserve = %v, %v", fresh, err)
	}
	ttl, err := client.TTL(ctx(t), Key(e, v)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 80*time.Second || ttl > 90*time.Second {
		t.Errorf("TTL = %v, want about 90s", ttl)
	}

	// A failed second Reserve neither changes the value nor refreshes the TTL.
	r2 := NewRedis(client, time.Hour)
	if fresh, _ := r2.Reserve(ctx(t), e, v, "vote-2|t2"); fresh {
		t.Fatal("second Reserve succeeded")
	}
	if ttl, _ := client.TTL(ctx(t), Key(e, v)).Result(); ttl > 90*time.Second {
		t.Errorf("TTL after a refused Reserve = %v, want still ≤ 90s", ttl)
	}
}

func TestReserveKeyExpires(t *testing.T) {
	r := NewRedis(client, time.Second)
	e, v := ids(t)
	if fresh, err := r.Reserve(ctx(t), e, v, "vote-1|t1"); err != nil || !fresh {
		t.Fatalf("Reserve = %v, %v", fresh, err)
	}
	if pttl, _ := client.PTTL(ctx(t), Key(e, v)).Result(); pttl <= 0 || pttl > time.Second {
		t.Fatalf("PTTL = %v, want (0, 1s]", pttl)
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if n, _ := client.Exists(ctx(t), Key(e, v)).Result(); n == 0 {
			if fresh, err := r.Reserve(ctx(t), e, v, "vote-2|t2"); err != nil || !fresh {
				t.Fatalf("Reserve after expiry = %v, %v", fresh, err)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("key did not expire")
}

func TestReleaseWrongValueKeepsKey(t *testing.T) {
	r := NewRedis(client, time.Hour)
	e, v := ids(t)
	if fresh, err := r.Reserve(ctx(t), e, v, "vote-1|t1"); err != nil || !fresh {
		t.Fatalf("Reserve = %v, %v", fresh, err)
	}
	// A slow, failed earlier attempt must not erase the key a later vote holds.
	for _, wrong := range []string{"vote-0|t0", "", "vote-1|t1 ", "vote-1"} {
		if err := r.Release(ctx(t), e, v, wrong); err != nil {
			t.Fatalf("Release(%q) = %v", wrong, err)
		}
		got, err := client.Get(ctx(t), Key(e, v)).Result()
		if err != nil || got != "vote-1|t1" {
			t.Fatalf("after Release(%q) the key holds %q (%v); want vote-1|t1", wrong, got, err)
		}
	}
	if fresh, _ := r.Reserve(ctx(t), e, v, "vote-2|t2"); fresh {
		t.Error("Reserve succeeded after a wrong-value Release")
	}
}

func TestReleaseRightValueFreesKey(t *testing.T) {
	r := NewRedis(client, time.Hour)
	e, v := ids(t)
	if fresh, err := r.Reserve(ctx(t), e, v, "vote-1|t1"); err != nil || !fresh {
		t.Fatalf("Reserve = %v, %v", fresh, err)
	}
	if err := r.Release(ctx(t), e, v, "vote-1|t1"); err != nil {
		t.Fatalf("Release = %v", err)
	}
	if n, err := client.Exists(ctx(t), Key(e, v)).Result(); err != nil || n != 0 {
		t.Fatalf("key still exists (%d, %v) after Release with its value", n, err)
	}
	fresh, err := r.Reserve(ctx(t), e, v, "vote-2|t2")
	if err != nil || !fresh {
		t.Fatalf("Reserve after Release = %v, %v; want true", fresh, err)
	}
	if ttl, _ := client.TTL(ctx(t), Key(e, v)).Result(); ttl <= 0 {
		t.Errorf("re-reserved key has TTL %v", ttl)
	}
	// Releasing a key that is gone is not an error.
	if err := r.Release(ctx(t), e, "auth0|nobody", "x"); err != nil {
		t.Errorf("Release of a missing key = %v", err)
	}
}

// Many concurrent attempts by one viewer: exactly one reservation wins.
func TestReserveConcurrent(t *testing.T) {
	r := NewRedis(client, time.Hour)
	e, v := ids(t)
	c := ctx(t)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fresh, err := r.Reserve(c, e, v, fmt.Sprintf("vote-%d|t", i))
			if err != nil {
				t.Error(err)
			}
			if fresh {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("%d concurrent Reserves won, want exactly 1", wins.Load())
	}
}

// With Redis unreachable both calls return errors (the admitter turns them into 503s).
func TestRedisDown(t *testing.T) {
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dead := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer dead.Close()
	r := NewRedis(dead, time.Hour)
	if fresh, err := r.Reserve(ctx(t), "e", "v", "x"); err == nil || fresh {
		t.Errorf("Reserve on a dead Redis = %v, %v; want false and an error", fresh, err)
	}
	if err := r.Release(ctx(t), "e", "v", "x"); err == nil {
		t.Error("Release on a dead Redis returned no error")
	}
}

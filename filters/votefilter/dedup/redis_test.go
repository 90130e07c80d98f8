package dedup

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/tvvote/voting/devstack"
)

// client talks to one real redis-server started for this package's tests.
var client rueidis.Client

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
	client, err = NewClient(srv.Addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "redis client:", err)
		return 1
	}
	defer client.Close()
	return m.Run()
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

// raw runs one command on the test Redis.
func raw(t *testing.T, args ...string) rueidis.RedisResult {
	t.Helper()
	return client.Do(ctx(t), client.B().Arbitrary(args...).Build())
}

func get(t *testing.T, key string) string {
	t.Helper()
	v, err := raw(t, "GET", key).ToString()
	if rueidis.IsRedisNil(err) {
		return ""
	}
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

func count(t *testing.T, key string) int64 {
	t.Helper()
	n, err := raw(t, "GET", key).AsInt64()
	if rueidis.IsRedisNil(err) {
		return 0
	}
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return n
}

// accepted sums an election's accepted counter over its buckets.
func accepted(t *testing.T, electionID string) int64 {
	t.Helper()
	var n int64
	for _, key := range AcceptedKeys(electionID) {
		n += count(t, key)
	}
	return n
}

func pttl(t *testing.T, key string) time.Duration {
	t.Helper()
	n, err := raw(t, "PTTL", key).AsInt64()
	if err != nil {
		t.Fatalf("PTTL %s: %v", key, err)
	}
	return time.Duration(n) * time.Millisecond
}

// own gives a test a viewer and an address of its own: rate-limit counters are per viewer
// and per address, across elections, and every test shares one Redis.
func own(t *testing.T) (election, viewer, ip string) {
	t.Helper()
	n := unique(t)
	return "election-" + n, "viewer-" + n, "ip-" + n
}

var testStart = time.Date(2026, 12, 2, 20, 0, 0, 0, time.UTC)

// vote is an attempt without limits or proof of work: vote n of a viewer, for a candidate.
func vote(election, viewer, ip string, n int, candidate string) Attempt {
	return Attempt{ElectionID: election, ViewerID: viewer, ClientIP: ip,
		VoteID: fmt.Sprintf("vote-%d", n), AcceptedAt: testStart.Add(time.Duration(n) * time.Millisecond),
		CandidateID: candidate, Owner: fmt.Sprintf("owner-%d", n), Budget: 2 * time.Second}
}

func reserve(t *testing.T, g *Gate, a Attempt) Outcome {
	t.Helper()
	out, err := g.Reserve(ctx(t), a)
	if err != nil {
		t.Fatalf("Reserve(%+v): %v", a, err)
	}
	return out
}

func confirm(t *testing.T, g *Gate, a Attempt) Confirmation {
	t.Helper()
	c, err := g.Confirm(ctx(t), a)
	if err != nil {
		t.Fatalf("Confirm(%+v): %v", a, err)
	}
	return c
}

func lookup(t *testing.T, g *Gate, election, viewer string) Entry {
	t.Helper()
	e, err := g.Lookup(ctx(t), election, viewer)
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	return e
}

func TestKey(t *testing.T) {
	b := Bucket("u1")
	if got, want := Key("e1", "u1"), "vote:{e1:"+strconv.Itoa(b)+"}:u1"; got != want {
		t.Errorf("Key = %q, want %q", got, want)
	}
	if got, want := AcceptedKey("e1", b), "votes:accepted:{e1:"+strconv.Itoa(b)+"}"; got != want {
		t.Errorf("AcceptedKey = %q, want %q", got, want)
	}
	if keys := AcceptedKeys("e1"); len(keys) != Buckets || keys[b] != AcceptedKey("e1", b) {
		t.Errorf("AcceptedKeys = %d keys", len(keys))
	}
}

// A reservation is pending, not a vote: it answers a second attempt Busy (never Duplicate),
// and only Confirm makes it the viewer's vote.
func TestReserveThenConfirm(t *testing.T) {
	g := NewGate(client, Options{DedupTTL: 90 * time.Second})
	e, v, ip := own(t)
	first := vote(e, v, ip, 1, "cand-a")
	if out := reserve(t, g, first); out.Verdict != Reserved {
		t.Fatalf("first Reserve = %+v; want Reserved", out)
	}
	got := lookup(t, g, e, v)
	if got.State != Pending || got.VoteID != "vote-1" || got.CandidateID != "cand-a" || got.Owner != "owner-1" ||
		!got.AcceptedAt.Equal(first.AcceptedAt) {
		t.Fatalf("entry after Reserve = %+v; want pending vote-1 for cand-a owned by owner-1", got)
	}
	if d := pttl(t, Key(e, v)); d <= 25*time.Second || d > 30*time.Second {
		t.Errorf("pending PTTL = %v, want the 30 s default", d)
	}
	if n := accepted(t, e); n != 0 {
		t.Errorf("accepted = %d before any Confirm, want 0", n)
	}

	second := vote(e, v, ip, 2, "cand-b")
	out := reserve(t, g, second)
	if out.Verdict != Busy || out.RetryAfter <= 2*time.Second || out.RetryAfter > 2500*time.Millisecond {
		t.Fatalf("second Reserve while the first is in flight = %+v; want Busy until the first's deadline + 500 ms", out)
	}

	if c := confirm(t, g, first); c != Confirmed {
		t.Fatalf("Confirm = %d, want Confirmed", c)
	}
	want := FormatValue("vote-1", first.AcceptedAt)
	if v := get(t, Key(e, v)); v != want {
		t.Fatalf("key after Confirm = %q, want %q", v, want)
	}
	if d := pttl(t, Key(e, v)); d <= 80*time.Second || d > 90*time.Second {
		t.Errorf("final PTTL = %v, want about the 90 s dedup TTL", d)
	}
	if out := reserve(t, g, second); out.Verdict != Duplicate || out.Existing != want {
		t.Fatalf("Reserve after Confirm = %+v; want Duplicate of %q", out, want)
	}
	// Confirming again (a background retry after a timeout that did succeed) changes nothing.
	if c := confirm(t, g, first); c != Confirmed {
		t.Errorf("second Confirm = %d", c)
	}
	if n := accepted(t, e); n != 1 {
		t.Errorf("accepted = %d after two Confirms of one vote, want 1", n)
	}
	// Other viewers, and the same viewer in another election, are independent.
	if out := reserve(t, g, vote(e, v+"-2", ip, 3, "cand-a")); out.Verdict != Reserved {
		t.Errorf("other viewer = %+v", out)
	}
	if out := reserve(t, g, vote(e+"-other", v, ip, 4, "cand-a")); out.Verdict != Reserved {
		t.Errorf("other election = %+v", out)
	}
}

// The same attempt asking twice — a repeated call after a timeout whose first copy did run —
// is answered Reserved twice. A store that answered the repeat Duplicate made viewers their
// own duplicates whenever Redis stalled past a client's read timeout.
func TestReserveIsIdempotent(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	a := vote(e, v, ip, 1, "cand-a")
	for i := range 3 {
		if out := reserve(t, g, a); out.Verdict != Reserved {
			t.Fatalf("call %d of the same attempt = %+v; want Reserved", i+1, out)
		}
	}
	if got := lookup(t, g, e, v); got.State != Pending || got.Owner != "owner-1" {
		t.Errorf("entry = %+v", got)
	}
}

// An attempt that dies between Reserve and Confirm (its Envoy crashed) holds the viewer for
// the pending TTL at most; then the viewer votes normally.
func TestAbandonedReservationExpires(t *testing.T) {
	g := NewGate(client, Options{PendingTTL: 1500 * time.Millisecond})
	e, v, ip := own(t)
	dead := vote(e, v, ip, 1, "cand-a")
	dead.Budget = 300 * time.Millisecond
	if out := reserve(t, g, dead); out.Verdict != Reserved {
		t.Fatal(out)
	}
	// Another candidate cannot take over a vote whose fate is unknown: it waits, never 409.
	other := vote(e, v, ip, 2, "cand-b")
	start := time.Now()
	for {
		out := reserve(t, g, other)
		if out.Verdict == Reserved {
			break
		}
		if out.Verdict != Busy {
			t.Fatalf("Reserve of another candidate = %+v; want Busy, then Reserved", out)
		}
		if time.Since(start) > 3*time.Second {
			t.Fatal("the abandoned reservation never expired")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The bound is the 1.5 s pending TTL, plus this loop's polling and a loaded machine.
	if waited := time.Since(start); waited > 2500*time.Millisecond {
		t.Errorf("viewer held for %v by a dead attempt; the bound is the 1.5 s pending TTL", waited)
	}
	if c := confirm(t, g, other); c != Confirmed {
		t.Errorf("Confirm = %d", c)
	}
}

// A retry of the same vote (same candidate) after the owner's deadline adopts the pending
// vote id: if the first send did reach SQS after all, both copies carry one id and the
// processor keeps one. The adopter owns the reservation now.
func TestRetryAdoptsAbandonedVote(t *testing.T) {
	g := NewGate(client, Options{AdoptAfter: 100 * time.Millisecond})
	e, v, ip := own(t)
	first := vote(e, v, ip, 1, "cand-a")
	first.Budget = 200 * time.Millisecond
	if out := reserve(t, g, first); out.Verdict != Reserved {
		t.Fatal(out)
	}
	retry := vote(e, v, ip, 2, "cand-a")
	if out := reserve(t, g, retry); out.Verdict != Busy {
		t.Fatalf("retry within the owner's budget = %+v; want Busy", out)
	}
	time.Sleep(350 * time.Millisecond)
	out := reserve(t, g, retry)
	if out.Verdict != Adopted || out.VoteID != "vote-1" || !out.AcceptedAt.Equal(first.AcceptedAt) {
		t.Fatalf("retry after the deadline = %+v; want Adopted vote-1 at %v", out, first.AcceptedAt)
	}
	got := lookup(t, g, e, v)
	if got.State != Pending || got.VoteID != "vote-1" || got.Owner != "owner-2" {
		t.Fatalf("entry after adoption = %+v; want vote-1 owned by owner-2", got)
	}
	// The first owner's late release must not drop what the adopter holds now.
	if err := g.Release(ctx(t), first); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, g, e, v); got.State != Pending || got.Owner != "owner-2" {
		t.Fatalf("entry after the first owner's release = %+v; want still owner-2's", got)
	}
	adopted := retry
	adopted.VoteID, adopted.AcceptedAt = out.VoteID, out.AcceptedAt
	if c := confirm(t, g, adopted); c != Confirmed {
		t.Fatalf("Confirm of the adopted vote = %d", c)
	}
	// The first owner's own Confirm (its send was acknowledged late) is the same vote.
	if c := confirm(t, g, first); c != Confirmed {
		t.Errorf("first owner's Confirm = %d, want Confirmed (same vote)", c)
	}
	if v := get(t, Key(e, v)); v != FormatValue("vote-1", first.AcceptedAt) {
		t.Errorf("key = %q", v)
	}
	if n := accepted(t, e); n != 1 {
		t.Errorf("accepted = %d, want 1", n)
	}
}

// Another candidate after the owner's deadline is not adopted: the first vote may be in the
// queue, so the viewer waits for its fate (the processor or the TTL settles it).
func TestOtherCandidateWaitsForUnknownOutcome(t *testing.T) {
	g := NewGate(client, Options{AdoptAfter: 50 * time.Millisecond, PendingTTL: 20 * time.Second})
	e, v, ip := own(t)
	first := vote(e, v, ip, 1, "cand-a")
	first.Budget = 50 * time.Millisecond
	reserve(t, g, first)
	time.Sleep(150 * time.Millisecond)
	out := reserve(t, g, vote(e, v, ip, 2, "cand-b"))
	if out.Verdict != Busy || out.RetryAfter <= 15*time.Second || out.RetryAfter > 20*time.Second {
		t.Fatalf("other candidate after the deadline = %+v; want Busy for the rest of the pending TTL", out)
	}
	if got := lookup(t, g, e, v); got.VoteID != "vote-1" || got.Owner != "owner-1" {
		t.Errorf("entry changed: %+v", got)
	}
}

// Release drops only the caller's own pending reservation.
func TestReleaseOnlyOwnPending(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	a := vote(e, v, ip, 1, "cand-a")
	reserve(t, g, a)
	for _, wrong := range []Attempt{vote(e, v, ip, 2, "cand-a"), func() Attempt { b := a; b.Owner = "x"; return b }()} {
		if err := g.Release(ctx(t), wrong); err != nil {
			t.Fatal(err)
		}
		if got := lookup(t, g, e, v); got.State != Pending || got.VoteID != "vote-1" {
			t.Fatalf("after a foreign Release (%s/%s) the entry is %+v", wrong.VoteID, wrong.Owner, got)
		}
	}
	if err := g.Release(ctx(t), a); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, g, e, v); got.State != None {
		t.Fatalf("entry after own Release = %+v, want none", got)
	}
	// A final vote is never released, not even by the attempt that made it.
	b := vote(e, v, ip, 3, "cand-a")
	reserve(t, g, b)
	confirm(t, g, b)
	if err := g.Release(ctx(t), b); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, g, e, v); got.State != Final || got.VoteID != "vote-3" {
		t.Errorf("final entry after Release = %+v", got)
	}
	// Releasing a key that is gone is not an error.
	if err := g.Release(ctx(t), vote(e, v+"-nobody", ip, 4, "c")); err != nil {
		t.Errorf("Release of a missing key = %v", err)
	}
}

// Confirm of a vote that lost the store to another vote of the viewer says so.
func TestConfirmSupersededOrContended(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	mine := vote(e, v, ip, 1, "cand-a")
	other := vote(e, v, ip, 2, "cand-b")
	if err := raw(t, "SET", Key(e, v), "~vote-2|2026-12-02T20:00:00Z|cand-b|1|owner-2").Error(); err != nil {
		t.Fatal(err)
	}
	if c := confirm(t, g, mine); c != Contended {
		t.Errorf("Confirm against another vote's pending = %d, want Contended", c)
	}
	confirm(t, g, other)
	if c := confirm(t, g, mine); c != Superseded {
		t.Errorf("Confirm against another final vote = %d, want Superseded", c)
	}
	if n := accepted(t, e); n != 1 {
		t.Errorf("accepted = %d, want 1", n)
	}
	// A pending reservation that expired before the acknowledgement came is still this vote's.
	if c := confirm(t, g, vote(e, v+"-late", ip, 3, "c")); c != Confirmed {
		t.Errorf("Confirm with no entry = %d, want Confirmed", c)
	}
}

// Record (the processor, after PostgreSQL stored the votes) makes them final whatever the
// edge managed, once, and reports a viewer whose final key names another vote.
func TestRecord(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	at := testStart
	// v-none: the key expired or never existed; v-pending: the edge died before Confirm;
	// v-final: the edge confirmed; v-other: the key names another vote; v-contended: another
	// attempt holds a pending reservation.
	reserve(t, g, vote(e, v+"-pending", ip, 2, "c"))
	confirmed := vote(e, v+"-final", ip, 3, "c")
	reserve(t, g, confirmed)
	confirm(t, g, confirmed)
	otherVote := vote(e, v+"-other", ip, 40, "c")
	reserve(t, g, otherVote)
	confirm(t, g, otherVote)
	contender := vote(e, v+"-contended", ip, 50, "c")
	reserve(t, g, contender)

	stored := []Stored{
		{ElectionID: e, ViewerID: v + "-none", VoteID: "vote-1", AcceptedAt: at.Add(1 * time.Millisecond)},
		{ElectionID: e, ViewerID: v + "-pending", VoteID: "vote-2", AcceptedAt: at.Add(2 * time.Millisecond)},
		{ElectionID: e, ViewerID: v + "-final", VoteID: "vote-3", AcceptedAt: at.Add(3 * time.Millisecond)},
		{ElectionID: e, ViewerID: v + "-other", VoteID: "vote-4", AcceptedAt: at.Add(4 * time.Millisecond)},
		{ElectionID: e, ViewerID: v + "-contended", VoteID: "vote-5", AcceptedAt: at.Add(5 * time.Millisecond)},
	}
	got, err := Record(ctx(t), client, time.Hour, stored)
	if err != nil {
		t.Fatal(err)
	}
	want := []Recorded{RecordedNow, RecordedNow, RecordedAlready, RecordedOther, RecordedNow}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Record of %s = %d, want %d", stored[i].ViewerID, got[i], want[i])
		}
	}
	for _, s := range []Stored{stored[0], stored[1], stored[2], stored[4]} {
		if e := lookup(t, g, s.ElectionID, s.ViewerID); e.State != Final || e.VoteID != s.VoteID {
			t.Errorf("%s after Record = %+v, want final %s", s.ViewerID, e, s.VoteID)
		}
	}
	if e := lookup(t, g, e, v+"-other"); e.VoteID != "vote-40" {
		t.Errorf("Record overwrote another final vote: %+v", e)
	}
	// The contender learns at Confirm that the database decided for another vote.
	if c := confirm(t, g, contender); c != Superseded {
		t.Errorf("contender's Confirm = %d, want Superseded", c)
	}
	// Counted once per viewer: 3 confirmed/recorded by now... every final key once.
	if n := accepted(t, e); n != 5 {
		t.Errorf("accepted = %d, want 5 (one per viewer with a final vote)", n)
	}
	again, err := Record(ctx(t), client, time.Hour, stored)
	if err != nil {
		t.Fatal(err)
	}
	if again[0] != RecordedAlready || accepted(t, e) != 5 {
		t.Errorf("a second Record = %v, accepted %d; want Already and no new count", again, accepted(t, e))
	}
}

// Many concurrent attempts of one viewer: exactly one holds the reservation, the others are
// told to wait for it, and none is told "already voted" before the vote is final.
func TestReserveConcurrent(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	c := ctx(t)
	var wins, busy atomic.Int32
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := g.Reserve(c, vote(e, v, ip, i, "cand-a"))
			if err != nil {
				t.Error(err)
			}
			switch out.Verdict {
			case Reserved:
				wins.Add(1)
			case Busy:
				busy.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || busy.Load() != 63 {
		t.Errorf("%d concurrent Reserves won, %d busy; want exactly 1 and 63", wins.Load(), busy.Load())
	}
}

// A final key lives for the dedup TTL.
func TestFinalKeyExpires(t *testing.T) {
	g := NewGate(client, Options{DedupTTL: time.Second})
	e, v, ip := own(t)
	a := vote(e, v, ip, 1, "c")
	reserve(t, g, a)
	confirm(t, g, a)
	if d := pttl(t, Key(e, v)); d <= 0 || d > time.Second {
		t.Fatalf("PTTL = %v, want (0, 1s]", d)
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if lookup(t, g, e, v).State == None {
			if out := reserve(t, g, vote(e, v, ip, 2, "c")); out.Verdict != Reserved {
				t.Fatalf("Reserve after expiry = %+v", out)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("key did not expire")
}

// With Redis unreachable every call returns an error (the admitter turns them into 503s).
func TestRedisDown(t *testing.T) {
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dead, err := NewClient(fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	g := NewGate(dead, Options{})
	a := vote("e", "v", "ip", 1, "c")
	if out, err := g.Reserve(ctx(t), a); err == nil {
		t.Errorf("Reserve on a dead Redis = %+v, nil; want an error", out)
	}
	if _, err := g.Confirm(ctx(t), a); err == nil {
		t.Error("Confirm on a dead Redis returned no error")
	}
	if err := g.Release(ctx(t), a); err == nil {
		t.Error("Release on a dead Redis returned no error")
	}
	if e, err := g.Lookup(ctx(t), "e", "v"); err == nil {
		t.Errorf("Lookup on a dead Redis = %+v, nil; want an error", e)
	}
	if res, err := Record(ctx(t), dead, time.Hour, []Stored{{ElectionID: "e", ViewerID: "v", VoteID: "x"}}); err == nil ||
		res[0] != RecordFailed {
		t.Errorf("Record on a dead Redis = %v, %v; want RecordFailed and an error", res, err)
	}
}

// The scripts survive a SCRIPT FLUSH (a failover to a replica, a restart): EVALSHA falls
// back to EVAL.
func TestScriptCacheFlushed(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	reserve(t, g, vote(e, v, ip, 1, "c"))
	flush := func() {
		if err := raw(t, "SCRIPT", "FLUSH").Error(); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	b := vote(e, v+"-2", ip, 2, "c")
	if out := reserve(t, g, b); out.Verdict != Reserved {
		t.Errorf("Reserve after SCRIPT FLUSH = %+v", out)
	}
	flush()
	if err := g.Release(ctx(t), b); err != nil {
		t.Errorf("Release after SCRIPT FLUSH: %v", err)
	}
	flush()
	c := vote(e, v+"-3", ip, 3, "c")
	reserve(t, g, c)
	flush()
	if got := confirm(t, g, c); got != Confirmed {
		t.Errorf("Confirm after SCRIPT FLUSH = %d", got)
	}
	flush()
	if _, err := Record(ctx(t), client, time.Hour, []Stored{{ElectionID: e, ViewerID: v + "-4", VoteID: "x", AcceptedAt: testStart}}); err != nil {
		t.Errorf("Record after SCRIPT FLUSH: %v", err)
	}
}

// A client made while the store is down starts working once it is up: a config pushed during
// a Redis outage must not stay broken.
func TestClientConnectsLater(t *testing.T) {
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g := NewGate(c, Options{})
	if _, err := g.Reserve(ctx(t), vote("e", "v", "ip", 1, "c")); err == nil {
		t.Fatal("Reserve before the server is up succeeded")
	}
	srv, err := devstack.StartRedis(ctx(t), port)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := g.Reserve(ctx(t), vote("e", "v", "ip", 1, "c"))
		if err == nil && out.Verdict == Reserved {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Reserve still failing 5 s after the server came up: %+v, %v", out, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A Redis that stalls holds a reservation script in its socket and runs it when it resumes,
// after the attempt gave up. That late reservation must never make the viewer a duplicate:
// the next attempt waits for it (Busy), and once the failed attempt's release lands the
// viewer votes. Before the store had pending entries, such a script left a final key and the
// viewer's next vote was answered 409 with nothing queued.
func TestStalledReservationNeverMakesADuplicate(t *testing.T) {
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := devstack.StartRedis(ctx(t), port)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	c, err := NewClient(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g := NewGate(c, Options{})
	e, v, ip := own(t)

	// The attempt's script reaches the hung server, and the attempt gives up on it.
	stalled := vote(e, v, ip, 1, "cand-a")
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"EVAL", reserveLua, "2", Key(e, v), viewerWindowKey(e, v),
		stalled.VoteID, FormatTime(stalled.AcceptedAt), stalled.CandidateID, stalled.Owner, "2000", "30000",
		"0", "0", "500", "", "1"}
	var resp strings.Builder
	fmt.Fprintf(&resp, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&resp, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(resp.String())); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for lookup(t, g, e, v).State != Pending {
		if time.Now().After(deadline) {
			t.Fatal("the stalled script did not run when the server resumed")
		}
		time.Sleep(10 * time.Millisecond)
	}

	retry := vote(e, v, ip, 2, "cand-a")
	if out := reserve(t, g, retry); out.Verdict != Busy {
		t.Fatalf("the viewer's next attempt = %+v, want Busy (never a 409 with nothing queued)", out)
	}
	// The failed attempt's background release frees the viewer.
	if err := g.Release(ctx(t), stalled); err != nil {
		t.Fatal(err)
	}
	if out := reserve(t, g, retry); out.Verdict != Reserved {
		t.Errorf("next attempt after the release = %+v, want Reserved", out)
	}
}

package results

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tvvote/voting/contract"
)

// fakeSource is an in-memory countsSource whose data the test changes between refreshes.
type fakeSource struct {
	mu      sync.Mutex
	data    map[string]ElectionCounts
	fail    error
	queries int
}

func (f *fakeSource) ElectionsCounts(_ context.Context, ids []string) (map[string]ElectionCounts, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries++
	if f.fail != nil {
		return nil, f.fail
	}
	out := map[string]ElectionCounts{}
	for _, id := range ids {
		if ec, ok := f.data[id]; ok {
			ec.Candidates = slices.Clone(ec.Candidates)
			out[id] = ec
		}
	}
	return out, nil
}

func (f *fakeSource) Ping(context.Context) error { return nil }

func (f *fakeSource) set(id string, status string, votes ...int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ec := ElectionCounts{ElectionID: id, Title: "Fake", Status: status}
	for i, v := range votes {
		ec.Candidates = append(ec.Candidates, CandidateCount{ID: string(rune('a' + i)), Name: "C" + string(rune('a'+i)), Votes: v})
	}
	if f.data == nil {
		f.data = map[string]ElectionCounts{}
	}
	f.data[id] = ec
}

func quietLog() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

func newTestHub(src countsSource, interval time.Duration) *Hub {
	return newHub(src, nil, quietLog(), newMetrics(), HubOptions{StreamInterval: interval, PollInterval: time.Hour, HeartbeatInterval: time.Hour})
}

// recv waits for the next message of c, failing after d.
func recv(t *testing.T, c *client, d time.Duration) (StreamMessage, bool) {
	t.Helper()
	select {
	case m, ok := <-c.send:
		if !ok {
			return StreamMessage{}, false
		}
		var sm StreamMessage
		if err := json.Unmarshal(m.data, &sm); err != nil {
			t.Fatal(err)
		}
		return sm, true
	case <-time.After(d):
		t.Fatalf("no message within %s", d)
		return StreamMessage{}, false
	}
}

func expectNone(t *testing.T, c *client, d time.Duration) {
	t.Helper()
	select {
	case m := <-c.send:
		if m == nil {
			t.Fatal("client dropped")
		}
		t.Fatalf("unexpected message %s", m.data)
	case <-time.After(d):
	}
}

func votesOf(m StreamMessage) map[string][2]int64 {
	out := map[string][2]int64{}
	for _, c := range m.Candidates {
		out[c.CandidateID] = [2]int64{c.Votes, c.Delta}
	}
	return out
}

func TestBroadcastThrottleDeltasAndStatus(t *testing.T) {
	const id = "e1"
	src := &fakeSource{}
	src.set(id, contract.StatusActive, 10, 5)
	h := newTestHub(src, 300*time.Millisecond)
	c := newClient()
	bc, err := h.subscribe(context.Background(), id, c)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := recv(t, c, time.Second)
	if first.Type != MsgVoteUpdate || *first.TotalVotes != 15 || !maps.Equal(votesOf(first), map[string][2]int64{"a": {10, 0}, "b": {5, 0}}) {
		t.Fatalf("initial message %+v", first)
	}

	// Nothing changed: a refresh sends nothing.
	h.mark(id, time.Now())
	h.refresh(context.Background())
	expectNone(t, c, 100*time.Millisecond)

	// First change after quiet: sent at once, with deltas.
	src.set(id, contract.StatusActive, 12, 5)
	h.mark(id, time.Now())
	start := time.Now()
	h.refresh(context.Background())
	m, _ := recv(t, c, 100*time.Millisecond)
	if !maps.Equal(votesOf(m), map[string][2]int64{"a": {12, 2}, "b": {5, 0}}) || *m.TotalVotes != 17 {
		t.Fatalf("update %+v", m)
	}

	// Two more changes inside the interval: one message, at the end of the interval, with the
	// deltas summed.
	src.set(id, contract.StatusActive, 13, 5)
	h.mark(id, time.Now())
	h.refresh(context.Background())
	src.set(id, contract.StatusActive, 13, 9)
	h.mark(id, time.Now())
	h.refresh(context.Background())
	m, _ = recv(t, c, time.Second)
	if since := time.Since(start); since < 280*time.Millisecond {
		t.Fatalf("second update after %s, want ≥ the 300 ms interval", since)
	}
	if !maps.Equal(votesOf(m), map[string][2]int64{"a": {13, 1}, "b": {9, 4}}) {
		t.Fatalf("coalesced update %+v", m)
	}
	expectNone(t, c, 400*time.Millisecond)

	// Closing: STATUS_CHANGE at once, even inside the interval.
	src.set(id, contract.StatusClosed, 13, 9)
	h.mark(id, time.Now())
	h.refresh(context.Background())
	m, _ = recv(t, c, 100*time.Millisecond)
	if m.Type != MsgStatusChange || m.NewStatus != contract.StatusClosed || m.Message == "" || m.ElectionID != id {
		t.Fatalf("status change %+v", m)
	}

	bc.heartbeat()
	if m, _ = recv(t, c, 100*time.Millisecond); m.Type != MsgHeartbeat {
		t.Fatalf("heartbeat %+v", m)
	}
	bc.remove(c)
	if bc.clientCount() != 0 {
		t.Fatal("client not removed")
	}
}

func TestSlowClientIsDroppedOthersKeepUp(t *testing.T) {
	const id = "e2"
	src := &fakeSource{}
	src.set(id, contract.StatusActive, 0)
	h := newTestHub(src, time.Millisecond)
	slow, fast := newClient(), newClient()
	bc, err := h.subscribe(context.Background(), id, slow)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.subscribe(context.Background(), id, fast); err != nil {
		t.Fatal(err)
	}
	recv(t, fast, time.Second)
	// The slow client never reads. Every heartbeat goes to both; the slow one overflows its
	// queue after clientQueue messages and is dropped, the fast one gets every message.
	for i := range clientQueue + 2 {
		bc.heartbeat()
		if m, ok := recv(t, fast, time.Second); !ok || m.Type != MsgHeartbeat {
			t.Fatalf("fast client, message %d: %+v %v", i, m, ok)
		}
	}
	n := 0
	for range slow.send {
		n++
	}
	if n != clientQueue || slow.reason != reasonSlow {
		t.Fatalf("slow client got %d queued messages (want %d) and reason %d", n, clientQueue, slow.reason)
	}
	if bc.clientCount() != 1 {
		t.Fatalf("%d clients left, want the fast one", bc.clientCount())
	}
	h.Shutdown()
	if _, ok := <-fast.send; ok || fast.reason != reasonGoingAway {
		t.Fatal("shutdown did not close the fast client with going-away")
	}
}

func TestHubLoadsOnceAndFallsBack(t *testing.T) {
	src := &fakeSource{}
	src.set("e3", contract.StatusActive, 1, 2)
	h := newTestHub(src, time.Second)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if lt, err := h.LiveTotal(context.Background(), "e3"); err != nil || lt.Votes != 3 {
				t.Errorf("live total %+v %v", lt, err)
			}
		}()
	}
	wg.Wait()
	if src.queries != 1 {
		t.Fatalf("%d queries for 20 concurrent first requests, want 1", src.queries)
	}
	if _, err := h.ElectionCounts(context.Background(), "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing election: %v", err)
	}
	// The database fails: tracked elections keep answering from memory, untracked ones fail.
	src.fail = errors.New("database down")
	h.mark("", time.Now())
	h.refresh(context.Background())
	if lt, err := h.LiveTotal(context.Background(), "e3"); err != nil || lt.Votes != 3 {
		t.Fatalf("tracked election while the database is down: %+v %v", lt, err)
	}
	if _, err := h.ElectionCounts(context.Background(), "other"); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("untracked election while the database is down: %v", err)
	}
}

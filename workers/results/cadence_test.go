package results

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tvvote/voting/contract"
)

// fakeClock moves only when a test moves it, and runs timers only when told: a test can put a
// timer's callback late, as a busy machine does, and read exact send times from messages.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	clk     *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 1, 20, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clk: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	i := slices.Index(t.clk.timers, t)
	if i < 0 {
		return false
	}
	t.clk.timers = slices.Delete(t.clk.timers, i, i+1)
	return true
}

// popDue removes and returns the earliest timer due at or before limit.
func (c *fakeClock) popDue(limit time.Time) *fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	best := -1
	for i, t := range c.timers {
		if !t.at.After(limit) && (best < 0 || t.at.Before(c.timers[best].at)) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	t := c.timers[best]
	c.timers = slices.Delete(c.timers, best, best+1)
	return t
}

// set moves the clock without running the timers that fall due: their callbacks are late.
func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// fire runs, now, every timer already due (late ones included).
func (c *fakeClock) fire() {
	for t := c.popDue(c.Now()); t != nil; t = c.popDue(c.Now()) {
		t.f()
	}
}

// advance moves the clock by d, running each timer at its due time on the way.
func (c *fakeClock) advance(d time.Duration) {
	target := c.Now().Add(d)
	for t := c.popDue(target); t != nil; t = c.popDue(target) {
		if t.at.After(c.Now()) {
			c.set(t.at)
		}
		t.f()
	}
	c.set(target)
}

func newClockedHub(src countsSource, interval time.Duration, clk *fakeClock) *Hub {
	h := newTestHub(src, interval)
	h.clock = clk
	return h
}

// drainUpdates returns the broadcast VOTE_UPDATEs queued for c (not its initial message).
func drainUpdates(t *testing.T, c *client) []StreamMessage {
	t.Helper()
	var out []StreamMessage
	for {
		select {
		case m, ok := <-c.send:
			if !ok {
				t.Fatal("client dropped")
			}
			var sm StreamMessage
			if err := json.Unmarshal(m.data, &sm); err != nil {
				t.Fatal(err)
			}
			if sm.Type == MsgVoteUpdate && sm.Message == "" {
				out = append(out, sm)
			}
		default:
			return out
		}
	}
}

// countsPayload is what the processor notifies for one committed batch.
func countsPayload(t *testing.T, election string, deltas ...contract.CountDelta) string {
	t.Helper()
	b, err := json.Marshal(contract.CountsChanged{ElectionIDs: []string{election}, Deltas: deltas})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkSpacing fails if two VOTE_UPDATEs went out less than interval apart (by their
// timestamps, the hub's clock at the send) or if a delta does not follow from the previous
// update's counts.
func checkSpacing(t *testing.T, updates []StreamMessage, interval time.Duration) {
	t.Helper()
	for i := 1; i < len(updates); i++ {
		prev, cur := updates[i-1], updates[i]
		if gap := cur.Timestamp.Sub(prev.Timestamp); gap < interval {
			t.Fatalf("VOTE_UPDATE %d went out %s after the previous one, want ≥ %s\nprev %+v\ncur  %+v", i, gap, interval, prev, cur)
		}
		for _, c := range cur.Candidates {
			if pv, _ := candidateOf(prev, c.CandidateID); c.Delta != c.Votes-pv {
				t.Fatalf("VOTE_UPDATE %d: candidate %s votes %d delta %d, previous update had %d", i, c.CandidateID, c.Votes, c.Delta, pv)
			}
		}
	}
}

func candidateOf(m StreamMessage, id string) (votes int64, ok bool) {
	for _, c := range m.Candidates {
		if c.CandidateID == id {
			return c.Votes, true
		}
	}
	return 0, false
}

// TestVoteUpdatesNeverCloserThanTheInterval: whatever the order of deltas, re-reads and timer
// callbacks, including a timer that runs late while changes keep arriving, two VOTE_UPDATEs of
// one election are never sent less than the interval apart, and the last counts always go out.
func TestVoteUpdatesNeverCloserThanTheInterval(t *testing.T) {
	const id, interval = "5a1e0000-0000-4000-8000-000000000001", time.Second
	ctx := context.Background()
	clk := newFakeClock()
	src := &fakeSource{}
	src.set(id, contract.StatusActive, 0, 0)
	h := newClockedHub(src, interval, clk)
	c := newClient()
	if _, err := h.subscribe(ctx, id, c); err != nil {
		t.Fatal(err)
	}
	if m, _ := recv(t, c, time.Second); m.Message == "" {
		t.Fatalf("initial message %+v", m)
	}

	var votes [2]int64
	var updates []StreamMessage
	// change commits one batch: PostgreSQL holds the new count at once; the hub learns it from
	// the notification's delta, or from a re-read.
	change := func(rng *rand.Rand, viaDelta bool) {
		k := rng.IntN(2)
		votes[k] += 1 + rng.Int64N(5)
		src.set(id, contract.StatusActive, votes[0], votes[1])
		if viaDelta {
			h.notified(contract.ChannelVoteCounts, countsPayload(t, id,
				contract.CountDelta{ElectionID: id, CandidateID: string(rune('a' + k)), Delta: 1, Votes: votes[k]}), clk.Now())
		} else {
			h.mark(id, clk.Now())
			h.refresh(ctx)
		}
		updates = append(updates, drainUpdates(t, c)...)
	}
	rng := rand.New(rand.NewPCG(1, 2))

	// Spelled out: a change after a quiet second goes at once; the next one waits for the
	// interval; the timer's callback runs 5 ms late, and two more changes arrive before it does.
	change(rng, false)
	clk.advance(300 * time.Millisecond)
	change(rng, false)
	clk.set(clk.Now().Add(705 * time.Millisecond))
	change(rng, false)
	change(rng, false)
	clk.fire()
	updates = append(updates, drainUpdates(t, c)...)
	checkSpacing(t, updates, interval)

	// Then a long random mix, polls included.
	lastPoll := clk.Now()
	for range 600 {
		step := time.Duration(rng.IntN(350)) * time.Millisecond
		if rng.IntN(3) == 0 {
			clk.set(clk.Now().Add(step))
			change(rng, rng.IntN(4) != 0)
			clk.fire()
		} else {
			clk.advance(step)
			change(rng, rng.IntN(4) != 0)
		}
		if clk.Now().Sub(lastPoll) >= time.Second {
			h.mark("", clk.Now())
			h.refresh(ctx)
			lastPoll = clk.Now()
		}
		updates = append(updates, drainUpdates(t, c)...)
	}
	clk.advance(2 * interval)
	updates = append(updates, drainUpdates(t, c)...)
	checkSpacing(t, updates, interval)
	if len(updates) < 50 {
		t.Fatalf("only %d VOTE_UPDATEs over the run", len(updates))
	}
	last := updates[len(updates)-1]
	if a, _ := candidateOf(last, "a"); a != votes[0] {
		t.Fatalf("last update has a=%d, want %d", a, votes[0])
	}
	if b, _ := candidateOf(last, "b"); b != votes[1] {
		t.Fatalf("last update has b=%d, want %d", b, votes[1])
	}
}

// TestDeltasReachTheStreamWithinTheInterval: the processor's deltas move the counts without a
// query, at once for GET and, on the stream, at once after a quiet interval and otherwise at
// most one interval after they arrived. Stale deltas and lagging re-reads never move a count
// back; what the hub cannot apply it re-reads.
func TestDeltasReachTheStreamWithinTheInterval(t *testing.T) {
	const id, interval = "5a1e0000-0000-4000-8000-000000000002", time.Second
	ctx := context.Background()
	clk := newFakeClock()
	src := &fakeSource{}
	src.set(id, contract.StatusActive, 10, 5)
	h := newClockedHub(src, interval, clk)
	c := newClient()
	if _, err := h.subscribe(ctx, id, c); err != nil {
		t.Fatal(err)
	}
	recv(t, c, time.Second)
	clk.advance(5 * time.Second)
	queries := src.queries

	// After a quiet interval: sent when the notification arrives, with the delta.
	t1 := clk.Now()
	h.notified(contract.ChannelVoteCounts, countsPayload(t, id, contract.CountDelta{ElectionID: id, CandidateID: "a", Delta: 2, Votes: 12}), t1)
	ups := drainUpdates(t, c)
	if len(ups) != 1 || !ups[0].Timestamp.Equal(t1) || *ups[0].TotalVotes != 17 {
		t.Fatalf("after a quiet interval: %+v, want one update at %s with 17 votes", ups, t1)
	}
	if v, d := candidateVotes(ups[0], "a"); v != 12 || d != 2 {
		t.Fatalf("candidate a: votes %d delta %d, want 12 and 2", v, d)
	}
	if lt, err := h.LiveTotal(ctx, id); err != nil || lt.Votes != 17 {
		t.Fatalf("live total right after the delta: %+v %v", lt, err)
	}

	// Continuous batches, 50 ms apart for 10 s: each is on the stream within one interval,
	// and the stream keeps its cadence.
	type arrival struct {
		at    time.Time
		votes int64
	}
	var sent []arrival
	b := int64(5)
	var all []StreamMessage
	for range 200 {
		clk.advance(50 * time.Millisecond)
		b += 3
		h.notified(contract.ChannelVoteCounts, countsPayload(t, id, contract.CountDelta{ElectionID: id, CandidateID: "b", Delta: 3, Votes: b}), clk.Now())
		sent = append(sent, arrival{clk.Now(), b})
		all = append(all, drainUpdates(t, c)...)
	}
	clk.advance(interval)
	all = append(all, drainUpdates(t, c)...)
	checkSpacing(t, append(ups, all...), interval)
	for _, a := range sent {
		i := slices.IndexFunc(all, func(m StreamMessage) bool { v, _ := candidateOf(m, "b"); return v >= a.votes })
		if i < 0 {
			t.Fatalf("b=%d (arrived %s) never sent", a.votes, a.at.Format(time.StampMilli))
		}
		if lag := all[i].Timestamp.Sub(a.at); lag < 0 || lag > interval {
			t.Fatalf("b=%d arrived at %s, sent at %s: %s later, want ≤ %s", a.votes, a.at.Format(time.StampMilli),
				all[i].Timestamp.Format(time.StampMilli), lag, interval)
		}
	}
	if src.queries != queries {
		t.Fatalf("%d queries for deltas, want none", src.queries-queries)
	}

	// A repeated or out-of-order payload changes nothing.
	clk.advance(2 * interval)
	h.notified(contract.ChannelVoteCounts, countsPayload(t, id, contract.CountDelta{ElectionID: id, CandidateID: "b", Delta: 3, Votes: b - 3}), clk.Now())
	h.notified(contract.ChannelVoteCounts, countsPayload(t, id, contract.CountDelta{ElectionID: id, CandidateID: "b", Delta: 3, Votes: b}), clk.Now())
	// A re-read that predates those commits (PostgreSQL's answer still shows b=5) does not
	// move the counts back.
	h.mark(id, clk.Now())
	h.refresh(ctx)
	clk.advance(2 * interval)
	if ups := drainUpdates(t, c); len(ups) != 0 {
		t.Fatalf("stale deltas or a lagging re-read sent %+v", ups)
	}
	if lt, _ := h.LiveTotal(ctx, id); lt.Votes != 12+b {
		t.Fatalf("live total %d after stale input, want %d", lt.Votes, 12+b)
	}

	// A candidate the hub does not hold, or a payload without deltas: re-read.
	for _, p := range []string{
		countsPayload(t, id, contract.CountDelta{ElectionID: id, CandidateID: "z", Delta: 1, Votes: 1}),
		`{"electionIds":["` + id + `"]}`,
	} {
		h.notified(contract.ChannelVoteCounts, p, clk.Now())
		h.mu.Lock()
		_, marked := h.dirty[id]
		clear(h.dirty)
		h.mu.Unlock()
		if !marked {
			t.Fatalf("%s: election not marked for a re-read", p)
		}
	}
}

func TestCountDeltas(t *testing.T) {
	a, b := "550e8400-e29b-41d4-a716-446655440000", "660e8400-e29b-41d4-a716-446655440000"
	cand := "770e8400-e29b-41d4-a716-446655440000"
	delta := func(e string) string {
		return `{"electionId":"` + e + `","candidateId":"` + strings.ToUpper(cand) + `","delta":1,"votes":4}`
	}
	ok := []string{
		`{"electionIds":["` + a + `"],"deltas":[` + delta(a) + `]}`,
		`{"electionIds":["` + strings.ToUpper(a) + `"],"deltas":[` + delta(strings.ToUpper(a)) + `]}`,
		`{"deltas":[` + delta(a) + `]}`,
	}
	for _, p := range ok {
		ds, valid := countDeltas(p)
		if !valid || len(ds) != 1 || ds[0].ElectionID != a || ds[0].CandidateID != cand || ds[0].Votes != 4 {
			t.Errorf("countDeltas(%s) = %+v, %v", p, ds, valid)
		}
	}
	for _, p := range []string{
		a, `not json`, `{"electionIds":["` + a + `"]}`,
		`{"electionIds":["` + a + `"],"deltas":{"` + a + `":{"x":3}}}`,
		`{"electionIds":["` + a + `","` + b + `"],"deltas":[` + delta(a) + `]}`, // b listed without its deltas
		`{"electionIds":["` + a + `"],"deltas":[{"electionId":"` + a + `","candidateId":"` + cand + `","delta":1,"votes":0}]}`,
		`{"electionIds":["` + a + `"],"deltas":[{"electionId":"` + a + `","delta":1,"votes":3}]}`,
	} {
		if ds, valid := countDeltas(p); valid {
			t.Errorf("countDeltas(%s) = %+v, accepted", p, ds)
		}
	}
}

// TestStreamAppliesTheProcessorsDeltas: the processor's payload, through PostgreSQL's NOTIFY,
// moves the stream and the live count by its deltas, without a re-read; a re-read (the poll)
// afterwards gives lastUpdated the stored vote_counts.updated_at.
func TestStreamAppliesTheProcessorsDeltas(t *testing.T) {
	tw := startWorker(t, false, func(c *Config) { c.PollInterval = time.Hour })
	s := seed(t, contract.StatusActive)
	st, _, err := dial(t, tw.wsURL(s.election, tw.idp.token(t, "viewer-deltas", false)))
	if err != nil {
		t.Fatal(err)
	}
	st.next(2 * time.Second)
	time.Sleep(400 * time.Millisecond) // past the interval of the stream's first message

	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var total int64
	var updatedAt time.Time
	if err := tx.QueryRow(ctx, `UPDATE vote_counts SET votes = votes + 3, updated_at = now()
		WHERE election_id = $1 AND candidate_id = $2 RETURNING votes, updated_at`, s.election, s.jane).Scan(&total, &updatedAt); err != nil {
		t.Fatal(err)
	}
	payload := countsPayload(t, s.election, contract.CountDelta{ElectionID: s.election, CandidateID: s.jane, Delta: 3, Votes: total})
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, contract.ChannelVoteCounts, payload); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	m := st.nextOf(MsgVoteUpdate, 3*time.Second)
	if v, d := candidateVotes(m, s.jane); v != 8 || d != 3 || *m.TotalVotes != 12 {
		t.Fatalf("update %+v", m)
	}
	body := get(t, tw.srv.URL+"/metrics", nil).body
	for _, want := range []string{`voting_results_deltas_total{result="applied"} 1`, `voting_results_notifications_total{channel="vote_counts"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, `trigger="notify"`) {
		t.Error("the notification caused a re-read")
	}

	// The poll's re-read replaces the arrival time with the stored timestamp, and sends nothing.
	tw.w.Hub.mark("", time.Now())
	tw.w.Hub.refresh(ctx)
	lt, err := tw.w.Hub.LiveTotal(ctx, s.election)
	if err != nil || lt.Votes != 12 || !lt.CountsUpdatedAt.Equal(updatedAt.UTC()) {
		t.Fatalf("live total after the re-read: %+v %v, want 12 votes updated at %s", lt, err, updatedAt.UTC())
	}
}

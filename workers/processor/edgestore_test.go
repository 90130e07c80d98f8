package processor

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/rueidis"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/devstack/stacktest"
	"github.com/tvvote/voting/filters/votefilter/dedup"
)

func startEdgeStore(t *testing.T) rueidis.Client {
	t.Helper()
	rs := stacktest.Redis(t)
	rdb, err := dedup.NewClient(rs.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rdb.Close)
	return rdb
}

// A vote whose edge died after SQS acknowledged it but before it confirmed leaves a pending
// reservation behind; once the processor stores the vote, the viewer's entry is final, so the
// viewer is told "already voted" instead of getting a second vote in when the reservation
// expires. A vote the edge did confirm is counted once.
func TestStoredVotesBecomeFinalAtTheEdge(t *testing.T) {
	ctx := context.Background()
	rdb := startEdgeStore(t)
	g := dedup.NewGate(rdb, dedup.Options{})
	f := newFixture(t)
	orphan, confirmed := f.vote("user-orphan", f.candA), f.vote("user-confirmed", f.candB)
	for _, v := range []struct {
		vote    contract.QueuedVote
		confirm bool
	}{{orphan, false}, {confirmed, true}} {
		a := dedup.Attempt{ElectionID: v.vote.ElectionID, ViewerID: v.vote.UserID, VoteID: v.vote.VoteID,
			AcceptedAt: v.vote.AcceptedAt, CandidateID: v.vote.CandidateID, Owner: "edge", Budget: time.Second}
		if out, err := g.Reserve(ctx, a); err != nil || out.Verdict != dedup.Reserved {
			t.Fatalf("Reserve = %+v, %v", out, err)
		}
		if v.confirm {
			if c, err := g.Confirm(ctx, a); err != nil || c != dedup.Confirmed {
				t.Fatalf("Confirm = %v, %v", c, err)
			}
		}
	}

	send(t, f.queueURL, jsonBody(t, orphan), jsonBody(t, confirmed))
	m := NewMetrics()
	p := New(testConfig(f.queueURL), sqsc, pool, quietLogger(), m).WithEdgeStore(NewEdgeStore(rdb, time.Hour))
	if _, err := p.HandleBatch(ctx, receiveN(t, f.queueURL, 2, 30)); err != nil {
		t.Fatal(err)
	}
	for _, v := range []contract.QueuedVote{orphan, confirmed} {
		e, err := g.Lookup(ctx, v.ElectionID, v.UserID)
		if err != nil || e.State != dedup.Final || e.VoteID != v.VoteID {
			t.Errorf("entry of %s = %+v, %v; want final %s", v.UserID, e, err, v.VoteID)
		}
	}
	var n int64
	for _, res := range rdb.DoMulti(ctx, getAll(rdb, dedup.AcceptedKeys(f.election))...) {
		v, err := res.AsInt64()
		if err != nil && !rueidis.IsRedisNil(err) {
			t.Fatal(err)
		}
		n += v
	}
	if n != 2 {
		t.Errorf("accepted counter = %d, want 2: one per viewer with a final vote", n)
	}
	now := testutil.ToFloat64(m.EdgeRecords.WithLabelValues(recordNow))
	already := testutil.ToFloat64(m.EdgeRecords.WithLabelValues(recordAlready))
	if now != 1 || already != 1 {
		t.Errorf("edge records now=%v already=%v, want 1 and 1", now, already)
	}
	// The viewer's retry is now a duplicate, not a second vote.
	retry := dedup.Attempt{ElectionID: f.election, ViewerID: orphan.UserID, VoteID: "retry", CandidateID: f.candB,
		Owner: "retry", Budget: time.Second}
	if out, err := g.Reserve(ctx, retry); err != nil || out.Verdict != dedup.Duplicate {
		t.Errorf("retry after the processor stored the vote = %+v, %v; want Duplicate", out, err)
	}
}

// The edge store being away costs nothing but the records: the batch commits and is deleted.
func TestEdgeStoreDownDoesNotHoldTheBatch(t *testing.T) {
	ctx := context.Background()
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dead, err := dedup.NewClient("127.0.0.1:" + strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	f := newFixture(t)
	send(t, f.queueURL, jsonBody(t, f.vote("user-1", f.candA)))
	m := NewMetrics()
	p := New(testConfig(f.queueURL), sqsc, pool, quietLogger(), m).WithEdgeStore(NewEdgeStore(dead, time.Hour))
	res, err := p.HandleBatch(ctx, receiveN(t, f.queueURL, 1, 30))
	if err != nil || res.Persisted != 1 {
		t.Fatalf("HandleBatch = %+v, %v; want 1 persisted", res, err)
	}
	if n := testutil.ToFloat64(m.EdgeRecords.WithLabelValues(recordError)); n != 1 {
		t.Errorf("edge record errors = %v, want 1", n)
	}
	assertQueueEmpty(t, f.queueURL)
}

func getAll(c rueidis.Client, keys []string) rueidis.Commands {
	cmds := make(rueidis.Commands, len(keys))
	for i, k := range keys {
		cmds[i] = c.B().Get().Key(k).Build()
	}
	return cmds
}

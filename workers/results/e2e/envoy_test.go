package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/workers/results"
)

func wsURL(electionID, tok string) string {
	return strings.Replace(stack.EnvoyURL(), "http://", "ws://", 1) + "/api/v1/results/stream/" + electionID + "?token=" + tok
}

func readMsg(t *testing.T, c *websocket.Conn, d time.Duration) results.StreamMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("stream read: %v", err)
	}
	var m results.StreamMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestEndpointsThroughEnvoy(t *testing.T) {
	r := get(t, "/api/v1/results/"+election.ID, nil)
	etag := r.header.Get("ETag")
	if r.status != 200 || etag == "" || r.header.Get("Cache-Control") != "public, max-age=5" {
		t.Fatalf("results: %d %v %s", r.status, r.header, r.body)
	}
	if r := get(t, "/api/v1/results/"+election.ID, map[string]string{"If-None-Match": etag}); r.status != http.StatusNotModified {
		t.Fatalf("If-None-Match through envoy: %d", r.status)
	}
	if r := get(t, "/api/v1/results/live/"+election.ID, nil); r.status != 200 || r.header.Get("Cache-Control") != "no-cache, no-store, must-revalidate" {
		t.Fatalf("live: %d %v", r.status, r.header)
	}

	// Errors carry Envoy's x-request-id as traceId.
	rid := uuid.NewString()
	r = get(t, "/api/v1/results/not-a-uuid", map[string]string{"X-Request-Id": rid})
	var e contract.ErrorResponse
	if json.Unmarshal(r.body, &e) != nil || r.status != 400 || e.Code != contract.CodeInvalidElectionID || e.TraceID != rid {
		t.Fatalf("bad id: %d %s", r.status, r.body)
	}

	stats := "/api/v1/results/statistics/" + election.ID + "?includeHourly=true&includeRegional=true"
	if r := get(t, stats, nil); r.status != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("statistics without token: %d %v", r.status, r.header)
	}
	if r := get(t, stats, map[string]string{"Authorization": "Bearer " + token(t, uuid.NewString(), false)}); r.status != 403 {
		t.Fatalf("statistics as viewer: %d %s", r.status, r.body)
	}
	// One vote, stored, so that the statistics have a region and an average to show.
	cand := election.Candidates[1].ID
	before := votesOf(readResults(t, election.ID))[cand]
	vote(t, election.ID, cand)
	for deadline := time.Now().Add(10 * time.Second); votesOf(readResults(t, election.ID))[cand] <= before; {
		if time.Now().After(deadline) {
			t.Fatal("vote not counted within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r = get(t, stats, map[string]string{"Authorization": "Bearer " + token(t, uuid.NewString(), true)})
	var st results.ElectionStatistics
	if err := json.Unmarshal(r.body, &st); err != nil || r.status != 200 || st.ElectionID != election.ID ||
		len(st.CandidateStats) != len(election.Candidates) || len(st.VotesPerHour) == 0 || st.AverageVotingTime == nil {
		t.Fatalf("statistics as admin: %d %s", r.status, r.body)
	}
	// Every vote of this stack comes through its one edge, in region e2e-results.
	if len(st.RegionalBreakdown) != 1 || st.RegionalBreakdown[0].Region != "e2e-results" ||
		len(st.RegionalBreakdown[0].Candidates) != len(election.Candidates) || st.RegionalBreakdown[0].TotalVotes != st.TotalVotes {
		t.Fatalf("regional breakdown: %s", r.body)
	}
	for _, c := range st.RegionalBreakdown[0].Candidates {
		if c.CandidateID == cand && c.Votes < 1 {
			t.Fatalf("the vote is missing from its region: %s", r.body)
		}
	}

	r = get(t, "/api/v1/results/page/"+election.ID, nil)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("page: %d %v", r.status, r.header)
	}
}

// TestStreamThroughEnvoy: a vote acknowledged at the edge reaches a stream client through
// Envoy's WebSocket upgrade within a second.
func TestStreamThroughEnvoy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, wsURL(election.ID, token(t, uuid.NewString(), false)), nil)
	if err != nil {
		t.Fatalf("dial through envoy: %v (response %v) — Envoy needs upgrade_configs websocket on its HTTP connection manager", err, resp)
	}
	defer c.CloseNow()
	first := readMsg(t, c, 5*time.Second)
	if first.Type != results.MsgVoteUpdate || first.ElectionID != election.ID || len(first.Candidates) != len(election.Candidates) {
		t.Fatalf("first message %+v", first)
	}
	base := map[string]int64{}
	for _, cu := range first.Candidates {
		base[cu.CandidateID] = cu.Votes
	}

	for i := range 3 {
		time.Sleep(1100 * time.Millisecond) // past the 1 s throttle: each vote gets its own update
		cand := election.Candidates[i%len(election.Candidates)].ID
		acked := vote(t, election.ID, cand)
		for {
			m := readMsg(t, c, 3*time.Second)
			if m.Type != results.MsgVoteUpdate {
				continue
			}
			got := int64(-1)
			for _, cu := range m.Candidates {
				if cu.CandidateID == cand {
					got = cu.Votes
				}
			}
			if got < base[cand]+1 {
				continue // another test's vote
			}
			lag := time.Since(acked)
			t.Logf("vote %d: acknowledged → on the stream in %s", i+1, lag.Round(time.Millisecond))
			if lag > time.Second {
				t.Fatalf("vote %d reached the stream %s after its acknowledgement, want ≤ 1 s", i+1, lag)
			}
			for _, cu := range m.Candidates {
				base[cu.CandidateID] = cu.Votes
			}
			break
		}
	}

	// The sixth concurrent stream of one viewer is refused, through Envoy too.
	viewer := uuid.NewString()
	tok := token(t, viewer, false)
	for i := range 5 {
		c, _, err := websocket.Dial(ctx, wsURL(election.ID, tok), nil)
		if err != nil {
			t.Fatalf("stream %d: %v", i+1, err)
		}
		defer c.CloseNow()
	}
	if _, resp, err := websocket.Dial(ctx, wsURL(election.ID, tok), nil); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("sixth stream: %v %v", err, resp)
	}
}

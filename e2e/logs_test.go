package e2e

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/filters/votefilter"
)

// logLine is a structured (JSON) line of a component's log, with the fields every line about
// a vote carries.
type logLine struct {
	Msg        string `json:"msg"`
	RequestID  string `json:"requestId"`
	ElectionID string `json:"electionId"`
	VoteID     string `json:"voteId"`
}

// findLine returns the first JSON line of component's log that match accepts, waiting up to
// within for it to be written.
func findLine(t *testing.T, component string, within time.Duration, match func(logLine) bool) (logLine, bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		f, err := os.Open(stack.LogPath(component))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
		for sc.Scan() {
			var l logLine
			if strings.HasPrefix(sc.Text(), "{") && json.Unmarshal(sc.Bytes(), &l) == nil && match(l) {
				f.Close()
				return l, true
			}
		}
		f.Close()
		if time.Now().After(deadline) {
			return logLine{}, false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A vote can be followed by its correlation id: the edge's "vote accepted" line (in Envoy's
// log) and the processor's "vote persisted" line carry the same requestId, electionId and voteId.
func TestOneVoteIsFollowedFromEdgeToProcessorLogByItsRequestID(t *testing.T) {
	e := ownElection(t)
	viewer := uuid.NewString()
	r := vote(t, token(t, viewer), "", ballotIn(t, e, 0))
	var res contract.VoteResult
	if err := json.Unmarshal(r.body, &res); err != nil || r.status != http.StatusOK {
		t.Fatalf("vote: %d %s", r.status, r.body)
	}
	edge, ok := findLine(t, devstack.ComponentEnvoy, 5*time.Second, func(l logLine) bool {
		return l.Msg == votefilter.EventVoteAccepted && l.VoteID == res.VoteID
	})
	if !ok {
		t.Fatalf("no %q line with voteId %s in %s", votefilter.EventVoteAccepted, res.VoteID, stack.LogPath(devstack.ComponentEnvoy))
	}
	if edge.RequestID == "" || edge.ElectionID != e.ID {
		t.Fatalf("edge line lacks the correlation id or the election: %+v", edge)
	}
	if _, ok := findLine(t, devstack.ComponentProcessor, 30*time.Second, func(l logLine) bool {
		return l.Msg == "vote persisted" && l.RequestID == edge.RequestID && l.VoteID == res.VoteID && l.ElectionID == e.ID
	}); !ok {
		t.Fatalf("no \"vote persisted\" line with requestId %s in %s", edge.RequestID, stack.LogPath(devstack.ComponentProcessor))
	}
	// It is the id stored with the vote, too.
	if _, _, requestID, _ := rowIn(t, e.ID, viewer); requestID != edge.RequestID {
		t.Fatalf("votes row request_id %q, edge log %q", requestID, edge.RequestID)
	}
}

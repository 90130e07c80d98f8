package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

// The promise a viewer gets, checked through the real Envoy against what PostgreSQL stored: a
// 200 is the vote that is counted, a 409 comes only when a vote of the viewer is queued or
// stored, whatever crashes in between. The chaos suite (e2e/chaos) checks the same under load.

// finalAnswer sends the same vote until the edge decides (200 or 409), retrying 503s, 429s and
// broken connections after Retry-After, as a viewer's app does.
func finalAnswer(t *testing.T, tok string, body contract.VoteRequest, within time.Duration) (int, contract.VoteResult) {
	t.Helper()
	st, res, err := decide(tok, body, within)
	if err != nil {
		t.Fatal(err)
	}
	return st, res
}

// decide is finalAnswer for goroutines: it returns what went wrong instead of failing.
func decide(tok string, body contract.VoteRequest, within time.Duration) (int, contract.VoteResult, error) {
	b, _ := json.Marshal(body)
	deadline := time.Now().Add(within)
	for {
		r, err := tryVote(tok, b)
		if err == nil && (r.status == http.StatusOK || r.status == http.StatusConflict) {
			var res contract.VoteResult
			if r.status == http.StatusOK {
				if err := json.Unmarshal(r.body, &res); err != nil {
					return 0, res, fmt.Errorf("200 body %s: %w", r.body, err)
				}
			}
			return r.status, res, nil
		}
		if err == nil && r.status != http.StatusServiceUnavailable && r.status != http.StatusTooManyRequests {
			return 0, contract.VoteResult{}, fmt.Errorf("vote answered %d %s", r.status, r.body)
		}
		if time.Now().After(deadline) {
			return 0, contract.VoteResult{}, fmt.Errorf("no decision within %v (last: %v %d %s)", within, err, r.status, r.body)
		}
		pause := 250 * time.Millisecond
		if s, perr := strconv.Atoi(r.header.Get("Retry-After")); err == nil && perr == nil {
			pause = max(pause, time.Duration(s)*time.Second)
		}
		time.Sleep(pause)
	}
}

func tryVote(tok string, body []byte) (reply, error) {
	req, _ := http.NewRequest(http.MethodPost, stack.EnvoyURL()+"/api/v1/votes", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}, err
}

// checkPromise compares a viewer's final answer with the stored row.
func checkPromise(t *testing.T, electionID, viewer string, status int, res contract.VoteResult, candidateID string) {
	t.Helper()
	voteID, cand, _, _ := rowIn(t, electionID, viewer)
	switch status {
	case http.StatusOK:
		if voteID != res.VoteID || cand != candidateID {
			t.Errorf("viewer %s: 200 for vote %s (%s), but the row is %s (%s)", viewer, res.VoteID, candidateID, voteID, cand)
		}
	case http.StatusConflict:
		// rowIn already failed the test if there is no row: a 409 with nothing stored.
	}
}

// withoutViewerLimit lifts the per-viewer rate limit at this stack's edge for the test, through
// the admin API as an operator would, and waits until Envoy's vote filter runs without it.
func withoutViewerLimit(t *testing.T) {
	t.Helper()
	admin, err := stack.Token(context.Background(), "e2e-sre", true)
	if err != nil {
		t.Fatal(err)
	}
	settings := func(method string, body any) {
		t.Helper()
		b, _ := json.Marshal(body)
		// After the identity provider rotated its key (the JWKS test), the control plane looks
		// the new key up at most every 10 s: a 401 until then is expected.
		deadline := time.Now().Add(30 * time.Second)
		for {
			req, _ := http.NewRequest(method, stack.EnvoyURL()+"/api/v1/admin/edge-settings/"+stack.Region, bytes.NewReader(b))
			req.Header.Set("Authorization", "Bearer "+admin)
			req.Header.Set("Content-Type", "application/json")
			r := do(t, req)
			if r.status/100 == 2 {
				return
			}
			if r.status != http.StatusUnauthorized || time.Now().After(deadline) {
				t.Fatalf("%s edge settings: %d %s", method, r.status, r.body)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	settings(http.MethodPut, map[string]any{"perViewer": map[string]int{"max": 0, "windowSeconds": 60}})
	t.Cleanup(func() { settings(http.MethodDelete, nil) })
	deadline := time.Now().Add(10 * time.Second)
	for edgeViewerLimit(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the edge still limits viewers 10 s after the change")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// edgeViewerLimit is the per-viewer maximum the edge's vote filter runs with now.
func edgeViewerLimit(t *testing.T) int {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/config_dump?resource=ecds_filters", stack.Ports.EnvoyAdmin))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var dump struct {
		Configs []struct {
			EcdsFilter struct {
				Name        string `json:"name"`
				TypedConfig struct {
					FilterConfig struct {
						Value string `json:"value"`
					} `json:"filter_config"`
				} `json:"typed_config"`
			} `json:"ecds_filter"`
		} `json:"configs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		t.Fatal(err)
	}
	for _, c := range dump.Configs {
		if c.EcdsFilter.Name == edgeconfig.FilterName {
			var cfg edgeconfig.Config
			if err := json.Unmarshal([]byte(c.EcdsFilter.TypedConfig.FilterConfig.Value), &cfg); err != nil {
				t.Fatal(err)
			}
			return cfg.Limits.PerViewer.Max
		}
	}
	t.Fatal("no vote filter config at the edge")
	return -1
}

// Fifty votes of one viewer at once: one 200, forty-nine 409s, one row — the 200's.
func TestConcurrentVotesOfOneViewer(t *testing.T) {
	withoutViewerLimit(t)
	e := ownElection(t)
	viewer := uuid.NewString()
	tok := token(t, viewer)
	const n = 50
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i], _ = json.Marshal(ballotIn(t, e, i%2))
	}
	var wg sync.WaitGroup
	replies := make([]reply, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i], errs[i] = tryVote(tok, bodies[i])
		}()
	}
	wg.Wait()
	var oks, conflicts int
	var accepted contract.VoteResult
	winner := -1
	for i, r := range replies {
		switch {
		case errs[i] != nil:
			t.Fatalf("vote %d: %v", i, errs[i])
		case r.status == http.StatusOK:
			oks++
			winner = i
			if err := json.Unmarshal(r.body, &accepted); err != nil {
				t.Fatal(err)
			}
		case r.status == http.StatusConflict:
			conflicts++
		default:
			t.Errorf("vote %d: %d %s", i, r.status, r.body)
		}
	}
	if oks != 1 || conflicts != n-1 {
		t.Fatalf("%d × 200 and %d × 409 for %d concurrent votes of one viewer; want 1 and %d", oks, conflicts, n, n-1)
	}
	checkPromise(t, e.ID, viewer, http.StatusOK, accepted, e.Candidates[winner%2].ID)
}

// A Redis crash forgets nobody: viewers who voted before kill -9 are told 409 after the
// restart, whatever they vote for. (Its data was in memory only, and every one of them got a
// second 200 that was never counted.)
func TestStoreCrashKeepsEveryVoter(t *testing.T) {
	e := ownElection(t)
	const n = 40
	viewers := make([]string, n)
	tokens := make([]string, n)
	for i := range viewers {
		viewers[i] = uuid.NewString()
		tokens[i] = token(t, viewers[i])
		if st, _ := finalAnswer(t, tokens[i], ballotIn(t, e, 0), 10*time.Second); st != http.StatusOK {
			t.Fatalf("viewer %d: first vote answered %d", i, st)
		}
	}
	if err := stack.Kill(devstack.ComponentRedis); err != nil {
		t.Fatal(err)
	}
	if err := stack.Restart(context.Background(), devstack.ComponentRedis); err != nil {
		t.Fatal(err)
	}
	for i := range viewers {
		if st, res := finalAnswer(t, tokens[i], ballotIn(t, e, 1), 15*time.Second); st != http.StatusConflict {
			t.Errorf("viewer %d voted again after the store restarted: %d %+v, want 409", i, st, res)
		}
	}
}

// An Envoy that dies while its votes are on their way to SQS locks nobody out. The sends are
// held by a frozen ElasticMQ when Envoy is killed, and ElasticMQ is then killed too, so none
// of them is ever stored. The viewers' retries through the restarted Envoy end in a 200 that
// is their stored vote (a retry of the same vote adopts the abandoned one; one for another
// candidate waits until the abandoned reservation expires) — never in a 409 with nothing
// stored. (The reservation used to be final before the send, so such a crash meant "already
// voted" for a week.)
func TestEdgeCrashMidSendLocksNobodyOut(t *testing.T) {
	e := ownElection(t)
	const n = 12
	viewers := make([]string, n)
	tokens := make([]string, n)
	bodies := make([]contract.VoteRequest, n)
	for i := range viewers {
		viewers[i] = uuid.NewString()
		tokens[i] = token(t, viewers[i])
		bodies[i] = ballotIn(t, e, 0)
	}
	if err := stack.Freeze(devstack.ComponentElasticMQ); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _ := json.Marshal(bodies[i])
			_, _ = tryVote(tokens[i], b) // dies with Envoy
		}()
	}
	time.Sleep(500 * time.Millisecond) // every vote reserved and its send on the wire
	for _, step := range []func() error{
		func() error { return stack.Kill(devstack.ComponentEnvoy) },
		func() error { return stack.Kill(devstack.ComponentElasticMQ) },
		func() error { return stack.Restart(context.Background(), devstack.ComponentElasticMQ) },
		func() error { return stack.Restart(context.Background(), devstack.ComponentEnvoy) },
		func() error { return stack.WaitEnvoyKnows(context.Background(), e.ID) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	// Every app retries at once, the same request; a third of the viewers change their mind.
	type answer struct {
		status int
		res    contract.VoteResult
		err    error
		body   contract.VoteRequest
	}
	answers := make([]answer, n)
	for i := range viewers {
		answers[i].body = bodies[i]
		if i%3 == 0 {
			answers[i].body = ballotIn(t, e, 1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := &answers[i]
			a.status, a.res, a.err = decide(tokens[i], a.body, time.Minute)
		}()
	}
	wg.Wait()
	for i, a := range answers {
		if a.err != nil {
			t.Errorf("viewer %d: %v", i, a.err)
			continue
		}
		if a.status != http.StatusOK {
			t.Errorf("viewer %d: final answer %d, want 200: none of the first votes was stored", i, a.status)
			continue
		}
		checkPromise(t, e.ID, viewers[i], a.status, a.res, a.body.CandidateID)
	}
}

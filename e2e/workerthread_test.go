package e2e

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract/openapi"
	"github.com/tvvote/voting/devstack"
)

// Guarantee 3: the filter never blocks an Envoy worker thread. With Redis hung, votes wait
// (on goroutines) until their deadline; meanwhile every other request through the same Envoy,
// on every worker thread, is answered. Were the Redis call made on the worker thread, the
// requests sharing it would wait for the votes.
func TestHungRedisDoesNotBlockEnvoyWorkers(t *testing.T) {
	toks := make([]string, 8)
	ballots := make([]any, 8)
	for i := range toks {
		toks[i] = token(t, uuid.NewString())
		ballots[i] = ballot(t, 0)
	}
	if err := stack.Freeze(devstack.ComponentRedis); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stack.Thaw(devstack.ComponentRedis); err != nil {
			t.Error(err)
		}
	}()

	var votesDone sync.WaitGroup
	var mu sync.Mutex
	var firstVoteAnswer time.Time
	for i := range toks {
		votesDone.Add(1)
		go func() {
			defer votesDone.Done()
			r := vote(t, toks[i], "", ballots[i])
			mu.Lock()
			if firstVoteAnswer.IsZero() {
				firstVoteAnswer = time.Now()
			}
			mu.Unlock()
			if r.status != http.StatusServiceUnavailable {
				t.Errorf("vote with Redis hung: %d %s, want 503", r.status, r.body)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // the votes are now waiting on Redis

	// New connections each time, so Envoy spreads them over its worker threads.
	var lastOther time.Time
	for i := 0; i < 20; i++ {
		client := &http.Client{Transport: openapi.Transport{Contracts: contracts, Base: &http.Transport{DisableKeepAlives: true},
			Report: func(err error) { t.Errorf("contract violation: %v", err) }}}
		resp, err := client.Get(stack.EnvoyURL() + "/api/v1/results/live/" + election.ID)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("results through Envoy while votes wait: %d", resp.StatusCode)
		}
		lastOther = time.Now()
	}
	votesDone.Wait()
	if !lastOther.Before(firstVoteAnswer) {
		t.Fatalf("other requests finished at %v, after the first vote answer at %v: a worker thread waited on Redis",
			lastOther.Format(time.StampMicro), firstVoteAnswer.Format(time.StampMicro))
	}
}

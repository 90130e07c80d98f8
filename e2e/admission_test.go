package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter"
)

// The stack runs with the control plane's default limits: 10 attempts per viewer per minute.
func TestViewerRateLimitGives429AfterTheWindowIsFull(t *testing.T) {
	tok := token(t, uuid.NewString())
	if r := vote(t, tok, "", ballot(t, 0)); r.status != http.StatusOK {
		t.Fatalf("first vote: %d %s", r.status, r.body)
	}
	again := ballot(t, 0) // duplicates are refused before the captcha is spent
	for i := 2; i <= 10; i++ {
		wantError(t, vote(t, tok, "", again), http.StatusConflict, contract.CodeDuplicateVote)
	}
	r := vote(t, tok, "", again)
	wantError(t, r, http.StatusTooManyRequests, contract.CodeRateLimited)
	if ra := r.header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("429 Retry-After = %q", ra)
	}
}

func TestCaptchaMustBeSolvedAndUsedOnce(t *testing.T) {
	req, _ := http.NewRequest(http.MethodGet, stack.EnvoyURL()+"/api/v1/votes/challenge", nil)
	var c struct{ Challenge string }
	if err := json.Unmarshal(do(t, req).body, &c); err != nil {
		t.Fatal(err)
	}
	unsolved := contract.VoteRequest{ElectionID: election.ID, CandidateID: election.Candidates[0].ID,
		CaptchaToken: c.Challenge + ":not-the-answer"}
	wantError(t, vote(t, token(t, uuid.NewString()), "", unsolved), http.StatusForbidden, contract.CodeCaptchaFailed)

	forged := unsolved
	forged.CaptchaToken = strings.Repeat("f", 40)
	wantError(t, vote(t, token(t, uuid.NewString()), "", forged), http.StatusForbidden, contract.CodeCaptchaFailed)

	solved := ballot(t, 1)
	if r := vote(t, token(t, uuid.NewString()), "", solved); r.status != http.StatusOK {
		t.Fatalf("solved captcha: %d %s", r.status, r.body)
	}
	wantError(t, vote(t, token(t, uuid.NewString()), "", solved), http.StatusForbidden, contract.CodeCaptchaFailed)
}

func status(t *testing.T, tok, viewer string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, stack.EnvoyURL()+contract.PathVoteStatus+election.ID+"/"+viewer, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	return do(t, req)
}

func TestVoteStatusForSelfAndAdminsOnly(t *testing.T) {
	alice, bob := uuid.NewString(), uuid.NewString()
	aliceTok := token(t, alice)
	r := vote(t, aliceTok, "", ballot(t, 0))
	var res contract.VoteResult
	if err := json.Unmarshal(r.body, &res); err != nil || r.status != http.StatusOK {
		t.Fatalf("vote: %d %s", r.status, r.body)
	}

	var st votefilter.VoteStatus
	sr := status(t, aliceTok, alice)
	if err := json.Unmarshal(sr.body, &st); err != nil || sr.status != http.StatusOK || !st.HasVoted ||
		st.VoteID != res.VoteID || st.Timestamp == nil || !st.Timestamp.Equal(res.AcceptedAt) {
		t.Fatalf("own status: %d %s", sr.status, sr.body)
	}
	wantError(t, status(t, aliceTok, bob), http.StatusForbidden, contract.CodeForbidden)

	admin, err := stack.Token(context.Background(), uuid.NewString(), true)
	if err != nil {
		t.Fatal(err)
	}
	st = votefilter.VoteStatus{}
	sr = status(t, admin, bob)
	if err := json.Unmarshal(sr.body, &st); err != nil || sr.status != http.StatusOK || st.HasVoted || st.UserID != bob {
		t.Fatalf("admin asking about a non-voter: %d %s", sr.status, sr.body)
	}
}

func TestAdminRoutesNeedTheAdminPermissionAtTheEdge(t *testing.T) {
	get := func(tok string) reply {
		req, _ := http.NewRequest(http.MethodGet, stack.EnvoyURL()+"/api/v1/admin/elections", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		return do(t, req)
	}
	wantError(t, get(""), http.StatusUnauthorized, contract.CodeUnauthorized)
	wantError(t, get(token(t, uuid.NewString())), http.StatusForbidden, contract.CodeForbidden)
	admin, err := stack.Token(context.Background(), uuid.NewString(), true)
	if err != nil {
		t.Fatal(err)
	}
	if r := get(admin); r.status == http.StatusUnauthorized || r.status == http.StatusForbidden {
		t.Fatalf("admin token stopped at the edge: %d %s", r.status, r.body)
	}
}

func TestFilterStatsAreInEnvoysPrometheusEndpoint(t *testing.T) {
	if r := vote(t, token(t, uuid.NewString()), "", ballot(t, 0)); r.status != http.StatusOK {
		t.Fatalf("vote: %d %s", r.status, r.body)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/stats/prometheus", stack.Ports.EnvoyAdmin))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var accepted, latency bool
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "votefilter_requests") && strings.Contains(line, `outcome="accepted"`) && !strings.HasSuffix(line, " 0") {
			accepted = true
		}
		if strings.Contains(line, "votefilter_admission_latency_ms_bucket") {
			latency = true
		}
	}
	if !accepted || !latency {
		t.Fatalf("votefilter stats missing (accepted=%t latency=%t) in:\n%s", accepted, latency, grep(string(b), "votefilter"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Config pushes build a new filter config while requests are in flight; none may fail.
func TestConfigUpdatesUnderLoadNeverGive5xx(t *testing.T) {
	tok := token(t, uuid.NewString())
	stop := make(chan struct{})
	var sent, bad atomic.Int64
	var firstBad atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := contracts.Client(t)
			client.Timeout = 5 * time.Second
			body := `{"electionId":"` + election.ID + `","candidateId":"` + election.Candidates[0].ID + `","captchaToken":"short"}`
			for i := 0; i < 5000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodPost, stack.EnvoyURL()+"/api/v1/votes", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := client.Do(req)
				sent.Add(1)
				if err != nil || resp.StatusCode != http.StatusBadRequest {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("%v %v", err, resp))
				}
				if resp != nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	for i := 0; i < 5; i++ {
		e, err := stack.SeedElection(context.Background(), fmt.Sprintf("Churn %d", i), time.Hour, "Candidate One", "Candidate Two")
		if err != nil {
			t.Fatal(err)
		}
		if err := stack.WaitEnvoyKnows(context.Background(), e.ID); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if sent.Load() < 50 || bad.Load() != 0 {
		t.Fatalf("%d of %d requests not answered 400 during config pushes; first: %v", bad.Load(), sent.Load(), firstBad.Load())
	}
}

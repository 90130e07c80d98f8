// Package e2e drives the whole product through the real Envoy with our dynamic module, real
// PostgreSQL, Redis and ElasticMQ, the control plane and both workers, all started by devstack.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/contract/openapi"
	"github.com/tvvote/voting/devidp"
	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/dedup"
)

var (
	stack    *devstack.Stack
	election devstack.Election
	// contracts checks every answer that do reads, so any answer the public contracts do not
	// allow fails the test that got it.
	contracts *openapi.Contracts
)

func TestMain(m *testing.M) {
	var err error
	if contracts, err = openapi.Load(); err != nil {
		fmt.Fprintln(os.Stderr, "contracts:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	s, err := devstack.Start(ctx, devstack.Options{Region: "test-region"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "stack:", err)
		os.Exit(1)
	}
	election, err = s.SeedElection(ctx, "E2E election", time.Hour, "Alice Example", "Bob Example")
	if err == nil {
		err = s.WaitEnvoyKnows(ctx, election.ID)
	}
	cancel()
	if err != nil {
		s.Stop()
		fmt.Fprintln(os.Stderr, "seed:", err)
		os.Exit(1)
	}
	stack = s
	code := m.Run()
	s.Stop()
	os.Exit(code)
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func vote(t *testing.T, token, requestID string, body any) reply {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, stack.EnvoyURL()+"/api/v1/votes", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if requestID != "" {
		req.Header.Set("x-request-id", requestID)
	}
	return do(t, req)
}

// do sends req and reads the answer, which must conform to the contracts.
func do(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := contracts.Client(t).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

func token(t *testing.T, subject string) string {
	t.Helper()
	tok, err := stack.Token(context.Background(), subject, false)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ballot is a valid vote in the shared election with a freshly solved captcha.
func ballot(t *testing.T, candidate int) contract.VoteRequest {
	return ballotIn(t, election, candidate)
}

func ballotIn(t *testing.T, e devstack.Election, candidate int) contract.VoteRequest {
	return contract.VoteRequest{ElectionID: e.ID, CandidateID: e.Candidates[candidate].ID, CaptchaToken: solvedCaptcha(t)}
}

// ownElection seeds an election only this test votes in, so its counts are its own.
func ownElection(t *testing.T) devstack.Election {
	t.Helper()
	e, err := stack.SeedElection(context.Background(), t.Name(), time.Hour, "Alice Example", "Bob Example")
	if err == nil {
		err = stack.WaitEnvoyKnows(context.Background(), e.ID)
	}
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// solvedCaptcha fetches a challenge from the edge and solves it, as a viewer's app does.
func solvedCaptcha(t *testing.T) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, stack.EnvoyURL()+"/api/v1/votes/challenge", nil)
	r := do(t, req)
	var c captcha.Challenge
	if err := json.Unmarshal(r.body, &c); err != nil || r.status != http.StatusOK {
		t.Fatalf("challenge: %d %s %v", r.status, r.body, err)
	}
	return captcha.Solve(c.Challenge, c.Difficulty)
}

func wantError(t *testing.T, r reply, status int, code string) contract.ErrorResponse {
	t.Helper()
	var e contract.ErrorResponse
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("status %d, body %q is not an ErrorResponse: %v", r.status, r.body, err)
	}
	if r.status != status || e.Code != code || e.Message == "" {
		t.Fatalf("got %d %+v, want %d %s", r.status, e, status, code)
	}
	if _, err := uuid.Parse(e.TraceID); err != nil {
		t.Fatalf("traceId %q is not a uuid", e.TraceID)
	}
	return e
}

func liveVotes(t *testing.T, electionID string) int64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, stack.EnvoyURL()+"/api/v1/results/live/"+electionID, nil)
	r := do(t, req)
	if r.status != http.StatusOK {
		t.Fatalf("live results: %d %s", r.status, r.body)
	}
	var lc contract.LiveCount
	if err := json.Unmarshal(r.body, &lc); err != nil {
		t.Fatal(err)
	}
	return lc.CurrentVotes
}

// rowFor reads the persisted vote of a viewer in the shared election, waiting for the processor.
func rowFor(t *testing.T, viewer string) (voteID, candidateID, requestID, region string) {
	return rowIn(t, election.ID, viewer)
}

func rowIn(t *testing.T, electionID, viewer string) (voteID, candidateID, requestID, region string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, stack.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(15 * time.Second)
	for {
		err = conn.QueryRow(ctx, `SELECT id::text, candidate_id::text, request_id, region FROM votes
			WHERE election_id = $1 AND user_id = $2`, electionID, viewer).Scan(&voteID, &candidateID, &requestID, &region)
		if err == nil {
			return
		}
		if err != pgx.ErrNoRows || time.Now().After(deadline) {
			t.Fatalf("vote of %s not persisted: %v", viewer, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func countRows(t *testing.T, viewer string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, stack.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM votes WHERE election_id = $1 AND user_id = $2`,
		election.ID, viewer).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestVoteIsAdmittedOnceAndCounted(t *testing.T) {
	e := ownElection(t)
	viewer := uuid.NewString()
	tok := token(t, viewer)
	requestID := uuid.NewString()

	r := vote(t, tok, requestID, ballotIn(t, e, 0))
	if r.status != http.StatusOK {
		t.Fatalf("first vote: %d %s", r.status, r.body)
	}
	var res contract.VoteResult
	if err := json.Unmarshal(r.body, &res); err != nil {
		t.Fatal(err)
	}
	if id, err := uuid.Parse(res.VoteID); err != nil || id.Version() != 7 || res.Status != "accepted" ||
		time.Since(res.AcceptedAt) > time.Minute {
		t.Fatalf("VoteResult %+v", res)
	}

	again := vote(t, tok, "", ballotIn(t, e, 1))
	wantError(t, again, http.StatusConflict, contract.CodeDuplicateVote)

	// The processor persists it with the correlation id and region the edge stamped on it.
	voteID, candidateID, gotRequestID, region := rowIn(t, e.ID, viewer)
	if voteID != res.VoteID || candidateID != e.Candidates[0].ID || gotRequestID != requestID || region != "test-region" {
		t.Fatalf("row = (%s %s %s %s), want (%s %s %s test-region)", voteID, candidateID, gotRequestID, region,
			res.VoteID, e.Candidates[0].ID, requestID)
	}

	deadline := time.Now().Add(10 * time.Second)
	for liveVotes(t, e.ID) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("live count stayed at %d, want 1", liveVotes(t, e.ID))
		}
		time.Sleep(50 * time.Millisecond)
	}
	req, _ := http.NewRequest(http.MethodGet, stack.EnvoyURL()+"/api/v1/results/"+e.ID, nil)
	rr := do(t, req)
	var results contract.ElectionResults
	if err := json.Unmarshal(rr.body, &results); err != nil || rr.status != http.StatusOK {
		t.Fatalf("results: %d %s %v", rr.status, rr.body, err)
	}
	var alice int64 = -1
	for _, c := range results.Totals {
		if c.CandidateID == e.Candidates[0].ID {
			alice = c.Votes
		}
	}
	if alice != 1 || results.TotalVotes != 1 || results.ElectionTitle != e.Title {
		t.Fatalf("results %+v: want Alice 1 and total 1", results)
	}
}

func TestForgedAndMissingTokensAre401(t *testing.T) {
	// Same kid as the real key, but signed by another key: only the signature gives it away.
	other, err := devidp.New(stack.Issuer(), stack.Audience)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.Mint(uuid.NewString(), false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"iss": stack.Issuer(), "aud": stack.Audience,
		"sub": uuid.NewString(), "exp": time.Now().Add(time.Hour).Unix()})
	unsigned, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)

	for name, tok := range map[string]string{"other key": forged, "alg none": unsigned, "garbage": "not.a.jwt", "missing": ""} {
		t.Run(name, func(t *testing.T) {
			r := vote(t, tok, "", ballot(t, 0))
			wantError(t, r, http.StatusUnauthorized, contract.CodeUnauthorized)
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
			}
		})
	}
}

func TestBadInputIsRejectedAndNothingQueued(t *testing.T) {
	viewer := uuid.NewString()
	tok := token(t, viewer)
	cases := map[string]struct {
		body   any
		status int
		code   string
	}{
		"not json":        {"{", http.StatusBadRequest, contract.CodeInvalidRequest},
		"bad election id": {contract.VoteRequest{ElectionID: "x", CandidateID: election.Candidates[0].ID, CaptchaToken: strings.Repeat("c", 20)}, http.StatusBadRequest, contract.CodeInvalidElectionID},
		"short captcha":   {contract.VoteRequest{ElectionID: election.ID, CandidateID: election.Candidates[0].ID, CaptchaToken: "short"}, http.StatusBadRequest, contract.CodeInvalidCaptcha},
		"unknown election": {contract.VoteRequest{ElectionID: uuid.NewString(), CandidateID: election.Candidates[0].ID,
			CaptchaToken: strings.Repeat("c", 20)}, http.StatusNotFound, contract.CodeElectionNotFound},
		"foreign candidate": {contract.VoteRequest{ElectionID: election.ID, CandidateID: uuid.NewString(),
			CaptchaToken: strings.Repeat("c", 20)}, http.StatusUnprocessableEntity, contract.CodeCandidateNotFound},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var r reply
			if s, ok := c.body.(string); ok {
				req, _ := http.NewRequest(http.MethodPost, stack.EnvoyURL()+"/api/v1/votes", strings.NewReader(s))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+tok)
				r = do(t, req)
			} else {
				r = vote(t, tok, "", c.body)
			}
			wantError(t, r, c.status, c.code)
		})
	}
	// Nothing reserved for the viewer, so a valid vote afterwards still succeeds.
	if r := vote(t, tok, "", ballot(t, 1)); r.status != http.StatusOK {
		t.Fatalf("valid vote after rejections: %d %s", r.status, r.body)
	}
	rowFor(t, viewer)
}

// Guarantee 1: no 200 without an SQS acknowledgement, and no stuck "already voted" after a
// failed enqueue.
func TestQueueOutageGives503ThenTheRetrySucceedsOnce(t *testing.T) {
	viewer := uuid.NewString()
	tok := token(t, viewer)
	rdb := redis.NewClient(&redis.Options{Addr: stack.Redis.Addr})
	defer rdb.Close()

	if err := stack.Kill(devstack.ComponentElasticMQ); err != nil {
		t.Fatal(err)
	}
	r := vote(t, tok, "", ballot(t, 1))
	if err := stack.Restart(context.Background(), devstack.ComponentElasticMQ); err != nil {
		t.Fatal(err)
	}
	wantError(t, r, http.StatusServiceUnavailable, contract.CodeUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	if n, _ := rdb.Exists(context.Background(), dedup.Key(election.ID, viewer)).Result(); n != 0 {
		t.Fatal("dedup key left behind after a failed enqueue")
	}

	if r := vote(t, tok, "", ballot(t, 1)); r.status != http.StatusOK {
		t.Fatalf("retry after the queue is back: %d %s", r.status, r.body)
	}
	rowFor(t, viewer)
	time.Sleep(500 * time.Millisecond)
	if n := countRows(t, viewer); n != 1 {
		t.Fatalf("%d rows for the viewer, want 1", n)
	}
}

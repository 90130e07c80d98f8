package votefilter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/dedup/dedupfake"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

// Fixed identities of the test configuration.
const (
	testElection      = "3f1c2a9e-8b4d-4c6e-9f0a-1b2c3d4e5f60"
	testCandidate     = "a0b1c2d3-e4f5-4a6b-8c7d-8e9f0a1b2c3d"
	otherCandidate    = "b1c2d3e4-f5a6-4b7c-9d8e-9f0a1b2c3d4e"
	scheduledElection = "c2d3e4f5-a6b7-4c8d-8e9f-0a1b2c3d4e5f"
	closedElection    = "d3e4f5a6-b7c8-4d9e-9f0a-1b2c3d4e5f60"
	unknownElection   = "e4f5a6b7-c8d9-4e0f-8a1b-2c3d4e5f6071"
	unknownCandidate  = "f5a6b7c8-d9e0-4f1a-9b2c-3d4e5f607182"
	testRequestID     = "0b9c8d7e-6f5a-4b3c-8d2e-1f0a9b8c7d6e"
	goodToken         = "good-token"
	viewerSub         = "auth0|viewer-1"
	goodCaptcha       = "03AGdBq27X8kJYZ9abcdefgh" // 24 characters
)

var (
	windowStart = time.Date(2026, 1, 15, 20, 0, 0, 0, time.UTC)
	windowEnd   = time.Date(2026, 1, 15, 22, 0, 0, 0, time.UTC)
	duringVote  = time.Date(2026, 1, 15, 21, 0, 0, 123456789, time.UTC)
)

// Further identities: an admin, another viewer and a token the verifier calls expired.
const (
	adminToken   = "admin-token"
	adminSub     = "auth0|admin-1"
	otherToken   = "other-token"
	otherSub     = "auth0|viewer-2"
	expiredToken = "expired-token"
	testIP       = "198.51.100.7"
	testSecret   = "0123456789abcdef-test"
)

// fakeVerifier accepts exactly the tokens in ids; errs names tokens refused with a specific
// error (so token.Reason can classify it).
type fakeVerifier struct {
	mu          sync.Mutex
	ids         map[string]auth.Principal
	errs        map[string]error
	calls       []string
	sawDeadline bool
}

func newFakeVerifier() *fakeVerifier {
	return &fakeVerifier{
		ids: map[string]auth.Principal{
			goodToken:  {Subject: viewerSub, Permissions: []string{"vote"}},
			otherToken: {Subject: otherSub, Permissions: []string{"vote"}},
			adminToken: {Subject: adminSub, Permissions: []string{"vote", "admin:elections"}},
		},
		errs: map[string]error{expiredToken: fmt.Errorf("fake: %w", jwt.ErrTokenExpired)},
	}
}

func (f *fakeVerifier) Verify(ctx context.Context, tok string) (auth.Principal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, tok)
	_, f.sawDeadline = ctx.Deadline()
	if id, ok := f.ids[tok]; ok {
		return id, nil
	}
	if err, ok := f.errs[tok]; ok {
		return auth.Principal{}, err
	}
	return auth.Principal{}, errors.New("fake: token rejected")
}

// fakeQueue keeps what it acknowledged; err makes every send fail, block makes it wait for
// the context to expire first (and then report the vote as not sent, as the batcher does for
// a vote still waiting for its batch).
type fakeQueue struct {
	mu    sync.Mutex
	err   error
	block bool
	calls int
	sent  []contract.QueuedVote
}

func (f *fakeQueue) Enqueue(ctx context.Context, v contract.QueuedVote) error {
	f.mu.Lock()
	f.calls++
	block, err := f.block, f.err
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return notSentError{ctx.Err()}
	}
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.sent = append(f.sent, v)
	f.mu.Unlock()
	return nil
}

// notSentError is an enqueue failure that proves the vote is not in the queue.
type notSentError struct{ error }

func (notSentError) NotSent() bool { return true }

// testConfig has the captcha off, so the admission tests below are about JWT, body,
// election and store; the captcha modes have their own configurations (powConfig, ...).
func testConfig() *edgeconfig.Config {
	return &edgeconfig.Config{
		Region: "eu-west-1",
		JWT: edgeconfig.JWTConfig{Issuer: "https://idp.test/", Audience: "votes", JWKSURL: "http://idp.test/jwks", LeewaySeconds: 30,
			PermissionsClaim: "permissions", AdminPermission: "admin:elections"},
		Redis: edgeconfig.RedisConfig{Addr: "127.0.0.1:6379", DedupTTLSeconds: 3600},
		SQS:   edgeconfig.SQSConfig{QueueURL: "http://sqs.test/q/votes", Region: "eu-west-1"},
		Elections: []edgeconfig.Election{
			{ID: testElection, Status: "ACTIVE", StartDate: windowStart, EndDate: windowEnd,
				CandidateIDs: []string{testCandidate, strings.ToUpper(otherCandidate)}},
			{ID: scheduledElection, Status: "SCHEDULED", StartDate: windowStart, EndDate: windowEnd,
				CandidateIDs: []string{testCandidate}},
			{ID: closedElection, Status: "CLOSED", StartDate: windowStart, EndDate: windowEnd,
				CandidateIDs: []string{testCandidate}},
		},
		EnqueueTimeoutMs: 2000,
		MaxBodyBytes:     4096,
		Captcha:          edgeconfig.CaptchaConfig{Mode: "off"},
	}
}

// powConfig is testConfig with proof of work at a difficulty cheap enough to solve in a test.
func powConfig() *edgeconfig.Config {
	c := testConfig()
	c.Captcha = edgeconfig.CaptchaConfig{Mode: "pow", PoW: edgeconfig.PoWConfig{SecretFile: "/run/secrets/pow", Difficulty: 8, TTLSeconds: 300}}
	return c
}

type rig struct {
	adm  *Admitter
	ver  *fakeVerifier
	gate *dedupfake.Gate
	q    *fakeQueue
	// later are the reservations handed to the background release; confirmLater the votes
	// handed to the background Confirm.
	later, confirmLater []dedup.Attempt
}

func newRig(t testing.TB, cfg *edgeconfig.Config, now time.Time) *rig {
	t.Helper()
	r := &rig{ver: newFakeVerifier(), gate: dedupfake.New(duringVote, dedup.Options{}), q: &fakeQueue{}}
	adm, err := NewAdmitter(cfg, r.ver, r.gate, r.q, captcha.StaticKey(testSecret))
	if err != nil {
		t.Fatalf("NewAdmitter: %v", err)
	}
	r.adm = adm
	r.adm.now = func() time.Time { return now }
	r.adm.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	r.adm.releaseLater = func(_ Gate, a dedup.Attempt) { r.later = append(r.later, a) }
	r.adm.confirmLater = func(_ Gate, a dedup.Attempt) { r.confirmLater = append(r.confirmLater, a) }
	return r
}

// A failed gate call may still reserve when Redis recovers: the reservation is handed to the
// background release with the attempt's own value, so only this vote's key can go.
func TestGateFailureSchedulesTheReleaseOfItsOwnReservation(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	r.gate.ReserveErr = errors.New("i/o timeout")
	resp := admit(r.adm, context.Background(), goodRequest())
	if resp.Status != 503 || len(r.later) != 1 {
		t.Fatalf("status %d, background releases %v", resp.Status, r.later)
	}
	at, reserved := r.later[0], r.gate.Reserves[0]
	if at.ElectionID != testElection || at.ViewerID != viewerSub || at.VoteID == "" || at.Owner == "" ||
		at.VoteID != reserved.VoteID || at.Owner != reserved.Owner {
		t.Fatalf("release attempt %+v, reserved %+v", at, reserved)
	}
	if len(r.q.sent) != 0 {
		t.Fatal("a vote was queued after the gate failed")
	}
}

// admit runs a vote's whole admission as the Envoy adapter does when no siteverify call is
// needed: Check, then Commit.
func admit(a *Admitter, ctx context.Context, req Request) Response {
	b, rej := a.Check(ctx, req)
	if rej != nil {
		return ErrorReply(rej, req.RequestID)
	}
	if b.NeedsSiteverify {
		panic("admit: this test's configuration needs a siteverify call")
	}
	return a.Commit(ctx, b)
}

// mustAdmitter builds an admitter without I/O dependencies, for the parsers.
func mustAdmitter(t testing.TB, cfg *edgeconfig.Config) *Admitter {
	t.Helper()
	a, err := NewAdmitter(cfg, nil, nil, nil, captcha.StaticKey(testSecret))
	if err != nil {
		t.Fatalf("NewAdmitter: %v", err)
	}
	return a
}

func voteBody(election, candidate, captcha string) string {
	b, _ := json.Marshal(contract.VoteRequest{ElectionID: election, CandidateID: candidate, CaptchaToken: captcha})
	return string(b)
}

func goodRequest() Request {
	return Request{
		Authorization: "Bearer " + goodToken,
		ContentType:   "application/json",
		RequestID:     testRequestID,
		ClientIP:      testIP,
		Body:          []byte(voteBody(testElection, testCandidate, goodCaptcha)),
	}
}

func header(resp Response, name string) (string, bool) {
	for _, h := range resp.Headers {
		if strings.EqualFold(h[0], name) {
			return h[1], true
		}
	}
	return "", false
}

func decodeError(t testing.TB, resp Response) contract.ErrorResponse {
	t.Helper()
	var er contract.ErrorResponse
	dec := json.NewDecoder(strings.NewReader(string(resp.Body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&er); err != nil {
		t.Fatalf("error body %q is not an ErrorResponse: %v", resp.Body, err)
	}
	if er.Message == "" {
		t.Errorf("error body %q has no message", resp.Body)
	}
	return er
}

func TestAdmitAccepts(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	resp := admit(r.adm, context.Background(), goodRequest())

	if resp.Status != http.StatusOK {
		t.Fatalf("status = %d, body %s; want 200", resp.Status, resp.Body)
	}
	if ct, _ := header(resp, "content-type"); ct != "application/json" {
		t.Errorf("content-type = %q, want application/json", ct)
	}
	if cc, _ := header(resp, "cache-control"); cc != "no-store" {
		t.Errorf("cache-control = %q, want no-store", cc)
	}
	var res contract.VoteResult
	dec := json.NewDecoder(strings.NewReader(string(resp.Body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("body %s is not a VoteResult: %v", resp.Body, err)
	}
	id, err := uuid.Parse(res.VoteID)
	if err != nil || id.Version() != 7 || len(res.VoteID) != 36 {
		t.Errorf("voteId %q is not a canonical uuid v7 (err %v)", res.VoteID, err)
	}
	if res.Status != "accepted" {
		t.Errorf("status = %q, want accepted", res.Status)
	}
	if !res.AcceptedAt.Equal(duringVote) {
		t.Errorf("acceptedAt = %v, want %v", res.AcceptedAt, duringVote)
	}
	if !strings.Contains(string(resp.Body), `"acceptedAt":"2026-01-15T21:00:00.123456789Z"`) {
		t.Errorf("acceptedAt is not RFC 3339 UTC in %s", resp.Body)
	}

	// Guarantee 1: the 200 comes only with a vote the queue acknowledged.
	if len(r.q.sent) != 1 {
		t.Fatalf("queue acknowledged %d votes, want 1", len(r.q.sent))
	}
	want := contract.QueuedVote{VoteID: res.VoteID, ElectionID: testElection, CandidateID: testCandidate,
		UserID: viewerSub, Region: "eu-west-1", RequestID: testRequestID, AcceptedAt: duringVote}
	if got := r.q.sent[0]; got != want {
		t.Errorf("queued vote = %+v\nwant          %+v", got, want)
	}
	if !(r.gate.Entry(testElection, viewerSub).State != dedup.None) {
		t.Error("dedup key not held after an accepted vote")
	}
	if !r.gate.ReserveDL {
		t.Error("the gate ran without a deadline; enqueueTimeoutMs is not applied")
	}
	if !r.ver.sawDeadline {
		t.Error("the verifier ran without a deadline")
	}
	if len(r.gate.Releases) != 0 {
		t.Errorf("accepted vote released its dedup key: %v", r.gate.Releases)
	}
	if len(r.ver.calls) != 1 || r.ver.calls[0] != goodToken {
		t.Errorf("verifier saw %q, want exactly [%q]", r.ver.calls, goodToken)
	}
	if resp.Outcome != OutcomeAccepted || resp.Reason != "" {
		t.Errorf("outcome/reason = %q/%q, want accepted/\"\"", resp.Outcome, resp.Reason)
	}
	// The gate's attempt names this vote; the captcha is off so there is no proof-of-work id,
	// and the limits are off. The same attempt is confirmed once SQS has it.
	if len(r.gate.Reserves) != 1 || len(r.gate.Confirms) != 1 {
		t.Fatalf("gate saw %d reservations and %d confirmations, want 1 each", len(r.gate.Reserves), len(r.gate.Confirms))
	}
	a := r.gate.Reserves[0]
	if a.Owner == "" {
		t.Error("the attempt has no owner")
	}
	wantAttempt := dedup.Attempt{ElectionID: testElection, ViewerID: viewerSub, ClientIP: testIP,
		VoteID: res.VoteID, AcceptedAt: duringVote, CandidateID: testCandidate, Owner: a.Owner, Budget: 2 * time.Second}
	if a != wantAttempt {
		t.Errorf("attempt = %+v\nwant      %+v", a, wantAttempt)
	}
	if r.gate.Confirms[0] != a {
		t.Errorf("confirmed %+v, want the reserved attempt", r.gate.Confirms[0])
	}
	if e := r.gate.Entry(testElection, viewerSub); e.State != dedup.Final || e.VoteID != res.VoteID {
		t.Errorf("entry after the 200 = %+v, want final %s", e, res.VoteID)
	}
	if r.gate.Accepted(testElection) != 1 {
		t.Errorf("accepted counter = %d, want 1", r.gate.Accepted(testElection))
	}

	// The same viewer again: 409, and still only one vote in the queue.
	resp = admit(r.adm, context.Background(), goodRequest())
	if resp.Status != http.StatusConflict || decodeError(t, resp).Code != contract.CodeDuplicateVote {
		t.Errorf("second vote: %d %s, want 409 DUPLICATE_VOTE", resp.Status, resp.Body)
	}
	if resp.Outcome != OutcomeDuplicate {
		t.Errorf("duplicate outcome = %q, want %q", resp.Outcome, OutcomeDuplicate)
	}
	if len(r.q.sent) != 1 {
		t.Errorf("queue holds %d votes after a duplicate, want 1", len(r.q.sent))
	}
}

func TestAdmitNormalisesIDs(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	req := goodRequest()
	// Upper-case ids in the body, and a candidate configured in upper case.
	req.Body = []byte(voteBody(strings.ToUpper(testElection), otherCandidate, goodCaptcha))
	req.Authorization = "bearer   " + goodToken + "  "
	req.ContentType = "Application/JSON; charset=utf-8"
	resp := admit(r.adm, context.Background(), req)
	if resp.Status != http.StatusOK {
		t.Fatalf("status = %d %s, want 200", resp.Status, resp.Body)
	}
	if len(r.q.sent) != 1 || r.q.sent[0].ElectionID != testElection || r.q.sent[0].CandidateID != otherCandidate {
		t.Errorf("queued %+v, want lower-case ids %s / %s", r.q.sent, testElection, otherCandidate)
	}
	// The dedup key is per lower-cased election: the lower-case spelling is a duplicate.
	resp = admit(r.adm, context.Background(), goodRequest())
	if resp.Status != http.StatusConflict {
		t.Errorf("same viewer, other id spelling: %d, want 409", resp.Status)
	}
}

func TestAdmitRejects(t *testing.T) {
	big := voteBody(testElection, testCandidate, strings.Repeat("x", 5000))
	type setup func(r *rig)
	tests := []struct {
		name      string
		mutate    func(req *Request)
		now       time.Time
		setup     setup
		status    int
		code      string
		challenge string // want www-authenticate, "" for none
		retry     string // want retry-after, "" for none
		reserved  bool   // the gate must have been asked
		verified  bool   // the verifier must have been called
		outcome   string // want Response.Outcome; "" means "invalid"
		reason    string // want Response.Reason
	}{
		{name: "no authorization", mutate: func(q *Request) { q.Authorization = "" },
			status: 401, code: contract.CodeUnauthorized, challenge: `Bearer realm="votes"`, outcome: OutcomeJWTRejected, reason: "missing"},
		{name: "bearer without token", mutate: func(q *Request) { q.Authorization = "Bearer" },
			status: 401, code: contract.CodeUnauthorized, challenge: `Bearer realm="votes"`, outcome: OutcomeJWTRejected, reason: "missing"},
		{name: "bearer with blank token", mutate: func(q *Request) { q.Authorization = "Bearer    " },
			status: 401, code: contract.CodeUnauthorized, challenge: `Bearer realm="votes"`, outcome: OutcomeJWTRejected, reason: "missing"},
		{name: "basic scheme", mutate: func(q *Request) { q.Authorization = "Basic " + goodToken },
			status: 401, code: contract.CodeUnauthorized, challenge: `Bearer realm="votes"`, outcome: OutcomeJWTRejected, reason: "missing"},
		{name: "token without scheme", mutate: func(q *Request) { q.Authorization = goodToken },
			status: 401, code: contract.CodeUnauthorized, challenge: `Bearer realm="votes"`, outcome: OutcomeJWTRejected, reason: "missing"},
		{name: "garbled token", mutate: func(q *Request) { q.Authorization = "Bearer eyJ.garbage.!!" },
			status: 401, code: contract.CodeUnauthorized, challenge: `Bearer realm="votes", error="invalid_token"`, verified: true,
			outcome: OutcomeJWTRejected, reason: "invalid"},
		{name: "expired token", mutate: func(q *Request) { q.Authorization = "Bearer " + expiredToken },
			status: 401, code: contract.CodeUnauthorized, challenge: `Bearer realm="votes", error="invalid_token"`, verified: true,
			outcome: OutcomeJWTRejected, reason: "expired"},
		{name: "auth checked before body", mutate: func(q *Request) { q.Authorization = ""; q.Body = []byte("{") },
			status: 401, code: contract.CodeUnauthorized, challenge: `Bearer realm="votes"`, outcome: OutcomeJWTRejected, reason: "missing"},

		{name: "text/plain", mutate: func(q *Request) { q.ContentType = "text/plain" },
			status: 415, code: contract.CodeUnsupportedMedia, verified: true},
		{name: "no content type", mutate: func(q *Request) { q.ContentType = "" },
			status: 415, code: contract.CodeUnsupportedMedia, verified: true},
		{name: "json suffix type", mutate: func(q *Request) { q.ContentType = "application/merge-patch+json" },
			status: 415, code: contract.CodeUnsupportedMedia, verified: true},
		{name: "content type checked before size", mutate: func(q *Request) { q.ContentType = "text/plain"; q.Body = []byte(big) },
			status: 415, code: contract.CodeUnsupportedMedia, verified: true},

		{name: "body too large", mutate: func(q *Request) { q.Body = []byte(big) },
			status: 413, code: contract.CodePayloadTooLarge, verified: true},

		{name: "empty body", mutate: func(q *Request) { q.Body = nil },
			status: 400, code: contract.CodeInvalidRequest, verified: true},
		{name: "truncated json", mutate: func(q *Request) { q.Body = []byte(`{"electionId":"` + testElection) },
			status: 400, code: contract.CodeInvalidRequest, verified: true},
		{name: "array body", mutate: func(q *Request) { q.Body = []byte(`[]`) },
			status: 400, code: contract.CodeInvalidRequest, verified: true},
		{name: "number as id", mutate: func(q *Request) {
			q.Body = []byte(`{"electionId":1,"candidateId":"` + testCandidate + `","captchaToken":"` + goodCaptcha + `"}`)
		}, status: 400, code: contract.CodeInvalidRequest, verified: true},
		{name: "unknown field", mutate: func(q *Request) {
			q.Body = []byte(`{"electionId":"` + testElection + `","candidateId":"` + testCandidate +
				`","captchaToken":"` + goodCaptcha + `","userId":"someone-else"}`)
		}, status: 400, code: contract.CodeInvalidRequest, verified: true},
		{name: "two json values", mutate: func(q *Request) { q.Body = append(q.Body, q.Body...) },
			status: 400, code: contract.CodeInvalidRequest, verified: true},
		{name: "trailing garbage", mutate: func(q *Request) { q.Body = append(q.Body, " xyz"...) },
			status: 400, code: contract.CodeInvalidRequest, verified: true},

		{name: "electionId not a uuid", mutate: func(q *Request) { q.Body = []byte(voteBody("election-1", testCandidate, goodCaptcha)) },
			status: 400, code: contract.CodeInvalidElectionID, verified: true},
		{name: "electionId missing", mutate: func(q *Request) {
			q.Body = []byte(`{"candidateId":"` + testCandidate + `","captchaToken":"` + goodCaptcha + `"}`)
		}, status: 400, code: contract.CodeInvalidElectionID, verified: true},
		{name: "electionId without dashes", mutate: func(q *Request) {
			q.Body = []byte(voteBody(strings.ReplaceAll(testElection, "-", "")+"xxxx", testCandidate, goodCaptcha))
		}, status: 400, code: contract.CodeInvalidElectionID, verified: true},
		{name: "electionId braced", mutate: func(q *Request) { q.Body = []byte(voteBody("{"+testElection[1:35]+"}", testCandidate, goodCaptcha)) },
			status: 400, code: contract.CodeInvalidElectionID, verified: true},
		{name: "candidateId not a uuid", mutate: func(q *Request) {
			q.Body = []byte(voteBody(testElection, "zzzzzzzz-e4f5-4a6b-8c7d-8e9f0a1b2c3d", goodCaptcha))
		},
			status: 400, code: contract.CodeInvalidCandidateID, verified: true},
		{name: "captcha 19 characters", mutate: func(q *Request) { q.Body = []byte(voteBody(testElection, testCandidate, strings.Repeat("c", 19))) },
			status: 400, code: contract.CodeInvalidCaptcha, verified: true},
		{name: "captcha missing", mutate: func(q *Request) {
			q.Body = []byte(`{"electionId":"` + testElection + `","candidateId":"` + testCandidate + `"}`)
		}, status: 400, code: contract.CodeInvalidCaptcha, verified: true},

		{name: "unknown election", mutate: func(q *Request) { q.Body = []byte(voteBody(unknownElection, testCandidate, goodCaptcha)) },
			status: 404, code: contract.CodeElectionNotFound, verified: true},
		{name: "election scheduled", mutate: func(q *Request) { q.Body = []byte(voteBody(scheduledElection, testCandidate, goodCaptcha)) },
			status: 409, code: contract.CodeElectionNotOpen, verified: true, outcome: OutcomeNotOpen},
		{name: "election closed", mutate: func(q *Request) { q.Body = []byte(voteBody(closedElection, testCandidate, goodCaptcha)) },
			status: 409, code: contract.CodeElectionNotOpen, verified: true, outcome: OutcomeNotOpen},
		{name: "before the window", now: windowStart.Add(-time.Nanosecond),
			status: 409, code: contract.CodeElectionNotOpen, verified: true, outcome: OutcomeNotOpen},
		{name: "at the window end", now: windowEnd,
			status: 409, code: contract.CodeElectionNotOpen, verified: true, outcome: OutcomeNotOpen},
		{name: "after the window", now: windowEnd.Add(time.Hour),
			status: 409, code: contract.CodeElectionNotOpen, verified: true, outcome: OutcomeNotOpen},
		{name: "window checked before candidate", now: windowEnd,
			mutate: func(q *Request) { q.Body = []byte(voteBody(testElection, unknownCandidate, goodCaptcha)) },
			status: 409, code: contract.CodeElectionNotOpen, verified: true, outcome: OutcomeNotOpen},
		{name: "unknown candidate", mutate: func(q *Request) { q.Body = []byte(voteBody(testElection, unknownCandidate, goodCaptcha)) },
			status: 422, code: contract.CodeCandidateNotFound, verified: true},

		{name: "already voted", setup: func(r *rig) { r.gate.SetFinal(testElection, viewerSub, "earlier-vote", windowStart) },
			status: 409, code: contract.CodeDuplicateVote, verified: true, reserved: true, outcome: OutcomeDuplicate},
		{name: "dedup store down", setup: func(r *rig) { r.gate.ReserveErr = errors.New("redis: connection refused") },
			status: 503, code: contract.CodeUnavailable, retry: "1", verified: true, reserved: true, outcome: OutcomeStoreFailed},
		{name: "id allocation fails", setup: func(r *rig) {
			r.adm.newID = func() (uuid.UUID, error) { return uuid.Nil, errors.New("no entropy") }
		}, status: 500, code: contract.CodeInternal, verified: true, outcome: OutcomeInternal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := duringVote
			if !tc.now.IsZero() {
				now = tc.now
			}
			r := newRig(t, testConfig(), now)
			if tc.setup != nil {
				tc.setup(r)
			}
			req := goodRequest()
			if tc.mutate != nil {
				tc.mutate(&req)
			}
			resp := admit(r.adm, context.Background(), req)

			if resp.Status != tc.status {
				t.Fatalf("status = %d (body %s), want %d", resp.Status, resp.Body, tc.status)
			}
			er := decodeError(t, resp)
			if er.Code != tc.code {
				t.Errorf("code = %q, want %q", er.Code, tc.code)
			}
			if contract.Status(er.Code) != resp.Status {
				t.Errorf("status %d does not match code %s", resp.Status, er.Code)
			}
			if er.TraceID != testRequestID {
				t.Errorf("traceId = %q, want the request id %q", er.TraceID, testRequestID)
			}
			if ct, _ := header(resp, "content-type"); ct != "application/json" {
				t.Errorf("content-type = %q, want application/json", ct)
			}
			if ch, ok := header(resp, "www-authenticate"); ch != tc.challenge || ok != (tc.challenge != "") {
				t.Errorf("www-authenticate = %q (present %v), want %q", ch, ok, tc.challenge)
			}
			if ra, ok := header(resp, "retry-after"); ra != tc.retry || ok != (tc.retry != "") {
				t.Errorf("retry-after = %q (present %v), want %q", ra, ok, tc.retry)
			}
			// Guarantee 5: nothing enqueued for a rejected vote.
			if r.q.calls != 0 || len(r.q.sent) != 0 {
				t.Errorf("queue called %d times (%d sent) for a rejected vote", r.q.calls, len(r.q.sent))
			}
			if got := len(r.gate.Reserves) > 0; got != tc.reserved {
				t.Errorf("gate Admit called = %v, want %v (%+v)", got, tc.reserved, r.gate.Reserves)
			}
			if len(r.gate.Releases) != 0 {
				t.Errorf("gate Release called for a rejection that reserved nothing new: %v", r.gate.Releases)
			}
			if got := len(r.ver.calls) > 0; got != tc.verified {
				t.Errorf("verifier called = %v, want %v", got, tc.verified)
			}
			wantOutcome := tc.outcome
			if wantOutcome == "" {
				wantOutcome = OutcomeInvalid
			}
			if resp.Outcome != wantOutcome || resp.Reason != tc.reason {
				t.Errorf("outcome/reason = %q/%q, want %q/%q", resp.Outcome, resp.Reason, wantOutcome, tc.reason)
			}
			// Check alone gives the same verdict for everything it covers, and hands out no
			// ballot with a rejection.
			if !tc.reserved {
				b, rej := r.adm.Check(context.Background(), req)
				if b != nil || rej == nil || rej.Code != tc.code {
					t.Errorf("Check = %+v, %v; want no ballot and %s", b, rej, tc.code)
				}
			}
			if e := r.gate.Entry(testElection, viewerSub); tc.code == contract.CodeDuplicateVote && e.VoteID != "earlier-vote" {
				t.Errorf("a duplicate attempt changed the earlier vote's entry: %+v", e)
			}
		})
	}
}

// Guarantee 1: an enqueue that certainly failed answers 503 with Retry-After, puts nothing in
// the queue and releases the reservation, so the viewer's retry is accepted.
func TestAdmitEnqueueNotSentReleases(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	r.q.err = notSentError{errors.New("sqs: entry refused")}

	resp := admit(r.adm, context.Background(), goodRequest())
	if resp.Status != http.StatusServiceUnavailable {
		t.Fatalf("status = %d %s, want 503", resp.Status, resp.Body)
	}
	er := decodeError(t, resp)
	if er.Code != contract.CodeUnavailable || er.TraceID != testRequestID {
		t.Errorf("error = %+v, want SERVICE_UNAVAILABLE with traceId %s", er, testRequestID)
	}
	if ra, _ := header(resp, "retry-after"); ra != "2" {
		t.Errorf("retry-after = %q, want 2", ra)
	}
	if r.q.calls != 1 || len(r.q.sent) != 0 {
		t.Errorf("queue: %d calls, %d sent; want 1 call and nothing sent", r.q.calls, len(r.q.sent))
	}
	if len(r.gate.Reserves) != 1 || len(r.gate.Releases) != 1 || len(r.gate.Confirms) != 0 {
		t.Fatalf("gate: reserves %+v releases %+v confirms %+v; want one reserve, one release", r.gate.Reserves,
			r.gate.Releases, r.gate.Confirms)
	}
	if rel, res := r.gate.Releases[0], r.gate.Reserves[0]; rel.VoteID != res.VoteID || rel.Owner != res.Owner {
		t.Errorf("released %s/%s, want the reserved %s/%s", rel.VoteID, rel.Owner, res.VoteID, res.Owner)
	}
	if e := r.gate.Entry(testElection, viewerSub); e.State != dedup.None {
		t.Fatalf("entry after the failed enqueue = %+v: the viewer would be held", e)
	}
	if r.gate.Accepted(testElection) != 0 {
		t.Errorf("accepted counter = %d after a failed vote, want 0", r.gate.Accepted(testElection))
	}
	if resp.Outcome != OutcomeEnqueueFailed {
		t.Errorf("outcome = %q, want %q", resp.Outcome, OutcomeEnqueueFailed)
	}

	// The queue recovers: the retry is accepted and enqueued once.
	r.q.err = nil
	resp = admit(r.adm, context.Background(), goodRequest())
	if resp.Status != http.StatusOK || len(r.q.sent) != 1 {
		t.Fatalf("retry: status %d, %d sent; want 200 and 1 sent", resp.Status, len(r.q.sent))
	}
}

// An enqueue that ended in doubt (SQS may have the message) keeps the reservation: the
// viewer's retry of the same vote is sent again under the same vote id, so both copies are one
// vote; it is never answered "already voted" on the strength of a vote nobody saw queued.
func TestAdmitEnqueueInDoubtIsRetriedUnderTheSameID(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	r.q.err = errors.New("sqs: connection reset")
	resp := admit(r.adm, context.Background(), goodRequest())
	if resp.Status != http.StatusServiceUnavailable || resp.Outcome != OutcomeEnqueueFailed {
		t.Fatalf("status = %d %s, want 503", resp.Status, resp.Body)
	}
	if ra, _ := header(resp, "retry-after"); ra != "2" {
		t.Errorf("retry-after = %q, want 2", ra)
	}
	if len(r.gate.Releases) != 0 {
		t.Fatalf("a reservation whose vote may be queued was released: %+v", r.gate.Releases)
	}
	first := r.gate.Reserves[0]
	if e := r.gate.Entry(testElection, viewerSub); e.State != dedup.Pending || e.VoteID != first.VoteID {
		t.Fatalf("entry = %+v, want the pending vote %s", e, first.VoteID)
	}

	// The attempt gave up at its 2 s deadline; the viewer retries after Retry-After; SQS is back.
	r.q.err = nil
	r.gate.Advance(4 * time.Second)
	r.adm.now = func() time.Time { return duringVote.Add(4 * time.Second) }
	resp = admit(r.adm, context.Background(), goodRequest())
	if resp.Status != http.StatusOK {
		t.Fatalf("retry: %d %s, want 200", resp.Status, resp.Body)
	}
	var res contract.VoteResult
	if err := json.Unmarshal(resp.Body, &res); err != nil {
		t.Fatal(err)
	}
	if res.VoteID != first.VoteID || !res.AcceptedAt.Equal(first.AcceptedAt) {
		t.Errorf("retry answered vote %s at %v, want the first attempt's %s at %v", res.VoteID, res.AcceptedAt,
			first.VoteID, first.AcceptedAt)
	}
	if len(r.q.sent) != 1 || r.q.sent[0].VoteID != first.VoteID || r.q.sent[0].AcceptedAt != first.AcceptedAt {
		t.Errorf("queued %+v, want the first attempt's vote again", r.q.sent)
	}
	if e := r.gate.Entry(testElection, viewerSub); e.State != dedup.Final || e.VoteID != first.VoteID {
		t.Errorf("entry = %+v, want final %s", e, first.VoteID)
	}

	// An adopted vote whose resend certainly failed is still held: the first copy may be queued.
	r3 := newRig(t, testConfig(), duringVote)
	r3.q.err = errors.New("sqs: timeout")
	admit(r3.adm, context.Background(), goodRequest())
	r3.gate.Advance(4 * time.Second)
	r3.q.err = notSentError{errors.New("sqs: refused")}
	if resp := admit(r3.adm, context.Background(), goodRequest()); resp.Status != http.StatusServiceUnavailable {
		t.Fatalf("adopted resend refused: %d %s, want 503", resp.Status, resp.Body)
	}
	if len(r3.gate.Releases) != 0 {
		t.Errorf("an adopted vote was released although its first copy may be queued: %+v", r3.gate.Releases)
	}

	// A retry with another candidate while a vote's fate is unknown waits, it is not a 409.
	r2 := newRig(t, testConfig(), duringVote)
	r2.q.err = errors.New("sqs: timeout")
	admit(r2.adm, context.Background(), goodRequest())
	r2.q.err = nil
	r2.gate.Advance(4 * time.Second)
	req := goodRequest()
	req.Body = []byte(voteBody(testElection, otherCandidate, goodCaptcha))
	resp = admit(r2.adm, context.Background(), req)
	if resp.Status != http.StatusServiceUnavailable || resp.Outcome != OutcomeBusy || len(r2.q.sent) != 0 {
		t.Errorf("other candidate while the first vote is in doubt: %d %s (%s), %d sent; want 503 busy", resp.Status,
			resp.Body, resp.Outcome, len(r2.q.sent))
	}
	if ra, _ := header(resp, "retry-after"); ra == "" || ra == "0" {
		t.Errorf("retry-after = %q", ra)
	}
}

// The enqueue deadline expiring must not also cancel the release of the reservation.
func TestAdmitEnqueueTimeoutStillReleases(t *testing.T) {
	cfg := testConfig()
	cfg.EnqueueTimeoutMs = 50
	r := newRig(t, cfg, duringVote)
	r.q.block = true

	start := time.Now()
	resp := admit(r.adm, context.Background(), goodRequest())
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Admit took %v with a 50 ms enqueue timeout", el)
	}
	if resp.Status != http.StatusServiceUnavailable {
		t.Fatalf("status = %d %s, want 503", resp.Status, resp.Body)
	}
	if len(r.gate.Releases) != 1 {
		t.Fatalf("releases = %v, want 1", r.gate.Releases)
	}
	if r.gate.ReleaseCtxErr != nil {
		t.Errorf("Release ran with a dead context (%v): the reservation would stay", r.gate.ReleaseCtxErr)
	}
	if e := r.gate.Entry(testElection, viewerSub); e.State != dedup.None {
		t.Errorf("entry still held after the enqueue timed out: %+v", e)
	}
}

// A failing release still answers 503 (never 200) and puts nothing in the queue.
func TestAdmitEnqueueAndReleaseFail(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	r.q.err = notSentError{errors.New("sqs down")}
	r.gate.ReleaseErr = errors.New("redis down")
	resp := admit(r.adm, context.Background(), goodRequest())
	if resp.Status != http.StatusServiceUnavailable || decodeError(t, resp).Code != contract.CodeUnavailable {
		t.Fatalf("status = %d %s, want 503 SERVICE_UNAVAILABLE", resp.Status, resp.Body)
	}
	if len(r.q.sent) != 0 {
		t.Errorf("queue holds %d votes, want 0", len(r.q.sent))
	}
}

// Attempts never share a vote id or an owner, so a release can only ever name its own
// reservation.
func TestAdmitAttemptsAreDistinct(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	r.q.err = notSentError{errors.New("sqs down")}
	admit(r.adm, context.Background(), goodRequest())
	admit(r.adm, context.Background(), goodRequest())
	a, b := r.gate.Reserves[0], r.gate.Reserves[1]
	if a.VoteID == b.VoteID || a.Owner == b.Owner || !contract.IsUUID(a.VoteID) || len(a.Owner) < 16 {
		t.Errorf("attempts %s/%s and %s/%s: want distinct uuid vote ids and owners", a.VoteID, a.Owner, b.VoteID, b.Owner)
	}
}

// A vote SQS acknowledged is answered 200 even when the store cannot be told; Confirm is
// retried in the background.
func TestAdmitConfirmFailureStillAnswers200(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	r.gate.ConfirmErr = errors.New("redis: i/o timeout")
	resp := admit(r.adm, context.Background(), goodRequest())
	if resp.Status != http.StatusOK || len(r.q.sent) != 1 {
		t.Fatalf("status %d %s, %d sent; want 200 and 1 sent", resp.Status, resp.Body, len(r.q.sent))
	}
	if len(r.confirmLater) != 1 || r.confirmLater[0].VoteID != r.q.sent[0].VoteID {
		t.Errorf("background confirms %+v, want the queued vote", r.confirmLater)
	}
}

// A vote that lost the store to another vote of the viewer while it was being sent is not
// answered as the counted vote.
func TestAdmitSupersededIsNotA200(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	q := &supersedingQueue{fakeQueue: r.q, gate: r.gate}
	adm, err := NewAdmitter(testConfig(), r.ver, r.gate, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	adm.now, adm.Log = r.adm.now, r.adm.Log
	resp := admit(adm, context.Background(), goodRequest())
	if resp.Status != http.StatusConflict || decodeError(t, resp).Code != contract.CodeDuplicateVote || resp.Reason != "superseded" {
		t.Errorf("status %d %s (%s/%s), want 409 DUPLICATE_VOTE superseded", resp.Status, resp.Body, resp.Outcome, resp.Reason)
	}
}

// supersedingQueue acknowledges, but meanwhile another vote of the viewer became final.
type supersedingQueue struct {
	*fakeQueue
	gate *dedupfake.Gate
}

func (q *supersedingQueue) Enqueue(ctx context.Context, v contract.QueuedVote) error {
	q.gate.SetFinal(v.ElectionID, v.UserID, "another-vote", windowStart)
	return q.fakeQueue.Enqueue(ctx, v)
}

// An attempt that finds another attempt of the viewer in flight waits for its outcome: a 409
// once that vote is final, the vote itself if the other attempt let go.
func TestAdmitWaitsForAnAttemptInFlight(t *testing.T) {
	inFlight := dedup.Attempt{VoteID: "in-flight", AcceptedAt: windowStart, CandidateID: testCandidate, Owner: "other",
		Budget: time.Minute}

	r := newRig(t, testConfig(), duringVote)
	r.gate.SetPending(testElection, viewerSub, inFlight)
	go func() {
		time.Sleep(60 * time.Millisecond)
		r.gate.SetFinal(testElection, viewerSub, "in-flight", windowStart)
	}()
	resp := admit(r.adm, context.Background(), goodRequest())
	if resp.Status != http.StatusConflict || len(r.q.sent) != 0 {
		t.Errorf("other attempt confirmed meanwhile: %d %s, %d sent; want 409 and nothing sent", resp.Status, resp.Body, len(r.q.sent))
	}
	if len(r.gate.Reserves) != 1 || r.gate.Rechecks == 0 {
		t.Errorf("reserves %d, rechecks %d: want one reservation, then rechecks", len(r.gate.Reserves), r.gate.Rechecks)
	}

	r = newRig(t, testConfig(), duringVote)
	inFlight.ViewerID, inFlight.ElectionID = viewerSub, testElection
	r.gate.SetPending(testElection, viewerSub, inFlight)
	go func() {
		time.Sleep(60 * time.Millisecond)
		_ = r.gate.Release(context.Background(), inFlight)
	}()
	if resp := admit(r.adm, context.Background(), goodRequest()); resp.Status != http.StatusOK || len(r.q.sent) != 1 {
		t.Errorf("other attempt let go meanwhile: %d %s, %d sent; want 200", resp.Status, resp.Body, len(r.q.sent))
	}

	// Still in flight when the wait ends: 503 with Retry-After, not a guess.
	cfg := testConfig()
	cfg.EnqueueTimeoutMs = 300
	r = newRig(t, cfg, duringVote)
	r.gate.SetPending(testElection, viewerSub, inFlight)
	resp = admit(r.adm, context.Background(), goodRequest())
	if resp.Status != http.StatusServiceUnavailable || resp.Outcome != OutcomeBusy {
		t.Errorf("other attempt still in flight: %d %s (%s), want 503 busy", resp.Status, resp.Body, resp.Outcome)
	}
	if ra, _ := header(resp, "retry-after"); ra == "" {
		t.Error("no retry-after")
	}
}

func TestTraceID(t *testing.T) {
	for _, rid := range []string{"", "not-a-uuid", "req-123"} {
		r := newRig(t, testConfig(), duringVote)
		req := goodRequest()
		req.RequestID = rid
		req.Authorization = ""
		resp := admit(r.adm, context.Background(), req)
		er := decodeError(t, resp)
		if !contract.IsUUID(er.TraceID) || er.TraceID == rid {
			t.Errorf("request id %q: traceId = %q, want a fresh uuid", rid, er.TraceID)
		}
	}
	up := strings.ToUpper(testRequestID)
	resp := ErrorReply(&Rejection{Code: contract.CodeDuplicateVote, Message: "m"}, up)
	if er := decodeError(t, resp); er.TraceID != up {
		t.Errorf("traceId = %q, want %q", er.TraceID, up)
	}
}

func TestErrorReply(t *testing.T) {
	resp := ErrorReply(&Rejection{Code: contract.CodeUnavailable, Message: "later", RetryAfter: 1500 * time.Millisecond}, testRequestID)
	if resp.Status != 503 {
		t.Errorf("status = %d, want 503", resp.Status)
	}
	if ra, _ := header(resp, "retry-after"); ra != "2" {
		t.Errorf("retry-after for 1.5 s = %q, want 2 (rounded up)", ra)
	}
	want := `{"code":"SERVICE_UNAVAILABLE","message":"later","traceId":"` + testRequestID + `"}`
	if string(resp.Body) != want {
		t.Errorf("body = %s\nwant   %s", resp.Body, want)
	}
	resp = ErrorReply(&Rejection{Code: "SOMETHING_NEW", Message: "x"}, testRequestID)
	if resp.Status != 500 {
		t.Errorf("unknown code status = %d, want 500", resp.Status)
	}
}

// The window is [startDate, endDate): a vote at the first instant is accepted.
func TestAdmitWindowStartInclusive(t *testing.T) {
	r := newRig(t, testConfig(), windowStart)
	if resp := admit(r.adm, context.Background(), goodRequest()); resp.Status != http.StatusOK {
		t.Errorf("vote at startDate: %d %s, want 200", resp.Status, resp.Body)
	}
	r = newRig(t, testConfig(), windowEnd.Add(-time.Nanosecond))
	if resp := admit(r.adm, context.Background(), goodRequest()); resp.Status != http.StatusOK {
		t.Errorf("vote 1 ns before endDate: %d %s, want 200", resp.Status, resp.Body)
	}
}

// A non-UTC clock still yields a UTC acceptedAt.
func TestAdmitAcceptedAtUTC(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	r := newRig(t, testConfig(), duringVote.In(paris))
	resp := admit(r.adm, context.Background(), goodRequest())
	if !strings.Contains(string(resp.Body), `"acceptedAt":"2026-01-15T21:00:00.123456789Z"`) {
		t.Errorf("body %s: acceptedAt not in UTC", resp.Body)
	}
	if len(r.q.sent) != 1 || r.q.sent[0].AcceptedAt.Location() != time.UTC {
		t.Errorf("queued acceptedAt not UTC: %+v", r.q.sent)
	}
}

func TestParseBodyLimits(t *testing.T) {
	a := mustAdmitter(t, testConfig())
	// A body of exactly maxBodyBytes is parsed; one byte more is refused.
	prefix := voteBody(testElection, testCandidate, "")
	pad := 4096 - len(prefix)
	exact := voteBody(testElection, testCandidate, strings.Repeat("p", pad))
	if len(exact) != 4096 {
		t.Fatalf("test body is %d bytes", len(exact))
	}
	if _, rej := a.ParseBody("application/json", []byte(exact)); rej != nil {
		t.Errorf("4096-byte body rejected: %v", rej)
	}
	over := voteBody(testElection, testCandidate, strings.Repeat("p", pad+1))
	if _, rej := a.ParseBody("application/json", []byte(over)); rej == nil || rej.Code != contract.CodePayloadTooLarge {
		t.Errorf("4097-byte body: %v, want PAYLOAD_TOO_LARGE", rej)
	}
	// Exactly 20 captcha characters is enough.
	vr, rej := a.ParseBody("application/json", []byte(voteBody(testElection, testCandidate, strings.Repeat("c", 20))))
	if rej != nil || vr.CaptchaToken != strings.Repeat("c", 20) {
		t.Errorf("20-character captcha: %v %v", vr, rej)
	}
	// Whitespace around the one JSON value is fine.
	if _, rej := a.ParseBody("application/json", []byte("\n  "+voteBody(testElection, testCandidate, goodCaptcha)+" \r\n\t")); rej != nil {
		t.Errorf("body with surrounding whitespace rejected: %v", rej)
	}
}

// Trailing data after the one JSON value must be refused whatever it is. json.Decoder.More
// reports false for a following '}' or ']', so those slip through a More()-only check.
func TestParseBodyRejectsTrailingClosers(t *testing.T) {
	a := mustAdmitter(t, testConfig())
	body := voteBody(testElection, testCandidate, goodCaptcha)
	for _, trail := range []string{"}", "]", " }", "]]]", "}garbage"} {
		if _, rej := a.ParseBody("application/json", []byte(body+trail)); rej == nil || rej.Code != contract.CodeInvalidRequest {
			t.Errorf("body followed by %q: rejection %v, want INVALID_REQUEST", trail, rej)
		}
	}
}

// The contract's minLength counts characters (JSON Schema), not UTF-8 bytes.
func TestParseBodyCaptchaCountsCharacters(t *testing.T) {
	a := mustAdmitter(t, testConfig())
	tenChars := strings.Repeat("é", 10) // 20 bytes, 10 characters
	if _, rej := a.ParseBody("application/json", []byte(voteBody(testElection, testCandidate, tenChars))); rej == nil || rej.Code != contract.CodeInvalidCaptcha {
		t.Errorf("10-character (20-byte) captcha: rejection %v, want INVALID_CAPTCHA_TOKEN", rej)
	}
}

const validConfigJSON = `{
  "region": "eu-west-1",
  "jwt": {"issuer": "https://idp.test/", "audience": "votes", "jwksUrl": "http://127.0.0.1:1/jwks"},
  "redis": {"addr": "127.0.0.1:6379"},
  "captcha": {"mode": "pow", "pow": {"secretFile": "/run/secrets/pow"}},
  "sqs": {"queueUrl": "http://127.0.0.1:9324/000000000000/votes", "region": "elasticmq", "endpoint": "http://127.0.0.1:9324", "staticCredentials": true},
  "elections": [{
    "id": "3f1c2a9e-8b4d-4c6e-9f0a-1b2c3d4e5f60", "status": "ACTIVE",
    "startDate": "2026-01-15T20:00:00Z", "endDate": "2026-01-15T22:00:00Z",
    "candidateIds": ["a0b1c2d3-e4f5-4a6b-8c7d-8e9f0a1b2c3d"]
  }]
}`

func TestParseConfigDefaults(t *testing.T) {
	c, err := edgeconfig.Parse([]byte(validConfigJSON))
	if err != nil {
		t.Fatal(err)
	}
	if c.EnqueueTimeoutMs != 2000 || c.MaxBodyBytes != 4096 || c.Redis.DedupTTLSeconds != 7*24*3600 || c.JWT.LeewaySeconds != 30 {
		t.Errorf("defaults not filled: timeout %d, maxBody %d, ttl %d, leeway %d",
			c.EnqueueTimeoutMs, c.MaxBodyBytes, c.Redis.DedupTTLSeconds, c.JWT.LeewaySeconds)
	}
	if c.Region != "eu-west-1" || c.SQS.Endpoint != "http://127.0.0.1:9324" || !c.SQS.StaticCredentials ||
		len(c.Elections) != 1 || !c.Elections[0].StartDate.Equal(windowStart) || c.Elections[0].CandidateIDs[0] != testCandidate {
		t.Errorf("parsed config = %+v", c)
	}

	if c.Captcha.Mode != "pow" || c.Captcha.PoW.Difficulty != 16 || c.Captcha.PoW.TTLSeconds != 300 ||
		c.JWT.PermissionsClaim != "permissions" || c.JWT.AdminPermission != "admin:elections" {
		t.Errorf("captcha/jwt defaults not filled: %+v %+v", c.Captcha, c.JWT)
	}
	// An empty captcha mode means proof of work.
	c, err = edgeconfig.Parse([]byte(strings.Replace(validConfigJSON, `"mode": "pow", `, ``, 1)))
	if err != nil || c.Captcha.Mode != "pow" {
		t.Errorf("captcha without mode: %v, %v; want mode pow", c, err)
	}
	// Captcha off needs no secret; siteverify gets a default timeout.
	if c, err := edgeconfig.Parse([]byte(strings.Replace(validConfigJSON, `"mode": "pow", "pow": {"secretFile": "/run/secrets/pow"}`, `"mode": "off"`, 1))); err != nil || c.Captcha.Mode != "off" {
		t.Errorf("captcha off: %v, %v", c, err)
	}
	sv := strings.Replace(validConfigJSON, `"mode": "pow", "pow": {"secretFile": "/run/secrets/pow"}`,
		`"mode": "siteverify", "siteverify": {"cluster": "turnstile", "host": "challenges.cloudflare.com", "path": "/turnstile/v0/siteverify", "secretFile": "/run/secrets/site"}`, 1)
	if c, err := edgeconfig.Parse([]byte(sv)); err != nil || c.Captcha.Siteverify.TimeoutMs != 1000 {
		t.Errorf("captcha siteverify: %v, %v; want timeoutMs defaulted to 1000", c, err)
	}

	explicit := strings.Replace(validConfigJSON, `"region": "eu-west-1",`,
		`"region": "eu-west-1", "enqueueTimeoutMs": 750, "maxBodyBytes": 1024,`, 1)
	explicit = strings.Replace(explicit, `"addr": "127.0.0.1:6379"`, `"addr": "127.0.0.1:6379", "dedupTtlSeconds": 60`, 1)
	explicit = strings.Replace(explicit, `"jwksUrl"`, `"leewaySeconds": 5, "jwksUrl"`, 1)
	c, err = edgeconfig.Parse([]byte(explicit))
	if err != nil {
		t.Fatal(err)
	}
	if c.EnqueueTimeoutMs != 750 || c.MaxBodyBytes != 1024 || c.Redis.DedupTTLSeconds != 60 || c.JWT.LeewaySeconds != 5 {
		t.Errorf("explicit values overwritten: %+v", c)
	}

	// No elections at all is a valid (idle) edge.
	noElections := validConfigJSON[:strings.Index(validConfigJSON, `,
  "elections"`)] + "}"
	if c, err := edgeconfig.Parse([]byte(noElections)); err != nil || len(c.Elections) != 0 {
		t.Errorf("config without elections: %v, %v", c, err)
	}
}

// mustParseBase fails the test unless the unedited base configuration is accepted, so a
// "rejected" verdict on an edit is about that edit.
func mustParseBase(t *testing.T) {
	t.Helper()
	if _, err := edgeconfig.Parse([]byte(validConfigJSON)); err != nil {
		t.Fatalf("the base test configuration is refused: %v", err)
	}
}

func TestParseConfigRejects(t *testing.T) {
	mustParseBase(t)
	tests := []struct {
		name, old, new string
		wantErr        string
	}{
		{"missing region", `"region": "eu-west-1",`, ``, "region is required"},
		{"missing issuer", `"issuer": "https://idp.test/", `, ``, "jwt.issuer"},
		{"missing audience", `"audience": "votes", `, ``, "jwt.issuer, jwt.audience and jwt.jwksUrl are required"},
		{"missing jwks url", `, "jwksUrl": "http://127.0.0.1:1/jwks"`, ``, "jwt.jwksUrl"},
		{"missing redis addr", `"addr": "127.0.0.1:6379"`, ``, "redis.addr is required"},
		{"missing queue url", `"queueUrl": "http://127.0.0.1:9324/000000000000/votes", `, ``, "sqs.queueUrl and sqs.region are required"},
		{"missing sqs region", `"region": "elasticmq", `, ``, "sqs.queueUrl and sqs.region are required"},
		{"election id not a uuid", `"id": "3f1c2a9e-8b4d-4c6e-9f0a-1b2c3d4e5f60"`, `"id": "election-1"`, `elections[0].id "election-1" is not a uuid`},
		{"end before start", `"endDate": "2026-01-15T22:00:00Z"`, `"endDate": "2026-01-15T19:00:00Z"`, "elections[0]: endDate must be after startDate"},
		{"end equals start", `"endDate": "2026-01-15T22:00:00Z"`, `"endDate": "2026-01-15T20:00:00Z"`, "endDate must be after startDate"},
		{"no dates", `"startDate": "2026-01-15T20:00:00Z", "endDate": "2026-01-15T22:00:00Z",`, ``, "endDate must be after startDate"},
		{"bad date", `"2026-01-15T22:00:00Z"`, `"tomorrow"`, "votefilter config:"},
		{"unknown field", `"region": "eu-west-1",`, `"region": "eu-west-1", "regoin": "x",`, `unknown field "regoin"`},
		{"unknown nested field", `"addr": "127.0.0.1:6379"`, `"addr": "127.0.0.1:6379", "password": "x"`, `unknown field "password"`},
		{"wrong type", `"region": "eu-west-1",`, `"region": 7,`, "votefilter config:"},
		{"no captcha secret", `"captcha": {"mode": "pow", "pow": {"secretFile": "/run/secrets/pow"}},`, ``, "captcha.pow.secret"},
		{"relative captcha secret file", `"/run/secrets/pow"`, `"run/secrets/pow"`, "captcha.pow.secretFile must be an absolute path"},
		{"pow difficulty too high", `"secretFile": "/run/secrets/pow"`, `"secretFile": "/run/secrets/pow", "difficulty": 33`, "captcha.pow.difficulty"},
		{"pow difficulty negative", `"secretFile": "/run/secrets/pow"`, `"secretFile": "/run/secrets/pow", "difficulty": -1`, "captcha.pow.difficulty"},
		{"unknown captcha mode", `"mode": "pow"`, `"mode": "recaptcha"`, `captcha.mode "recaptcha"`},
		{"siteverify without secret", `"mode": "pow", "pow": {"secretFile": "/run/secrets/pow"}`,
			`"mode": "siteverify", "siteverify": {"cluster": "c", "host": "h", "path": "/p"}`, "captcha.siteverify needs cluster, host, path and secret"},
		{"negative rate limit", `"region": "eu-west-1",`, `"region": "eu-west-1", "limits": {"perViewer": {"max": -1, "windowSeconds": 60}},`, "limits.perViewer"},
		{"rate limit without window", `"region": "eu-west-1",`, `"region": "eu-west-1", "limits": {"perIp": {"max": 10}},`, "limits.perIp"},
		{"peer region named as this one", `"region": "eu-west-1",`, `"region": "eu-west-1", "peerRegions": [{"name": "eu-west-1",
			"redis": {"addr": "127.0.0.2:6379"}, "sqs": {"queueUrl": "http://q", "region": "r"}}],`, `peerRegions[0].name "eu-west-1"`},
		{"peer region without store", `"region": "eu-west-1",`, `"region": "eu-west-1", "peerRegions": [{"name": "us-east-1"}],`,
			"peerRegions[0].redis.addr is required"},
		{"peer region without queue", `"region": "eu-west-1",`, `"region": "eu-west-1", "peerRegions": [{"name": "us-east-1",
			"redis": {"addr": "127.0.0.2:6379"}}],`, "peerRegions[0].sqs.queueUrl"},
		{"not json", validConfigJSON, `region: eu-west-1`, "votefilter config:"},
		{"empty", validConfigJSON, ``, "votefilter config:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := strings.Replace(validConfigJSON, tc.old, tc.new, 1)
			if raw == validConfigJSON && tc.old != tc.new {
				t.Fatalf("test edit %q not applied", tc.old)
			}
			c, err := edgeconfig.Parse([]byte(raw))
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if c != nil {
				t.Errorf("returned a config with the error")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
	// Every problem is reported at once.
	_, err := edgeconfig.Parse([]byte(`{"elections":[{"id":"x"}]}`))
	for _, want := range []string{"region", "jwt.issuer", "redis.addr", "sqs.queueUrl", `elections[0].id "x"`, "elections[0]: endDate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

// Values that cannot be meant are refused, so the control plane's typo is NACKed instead of
// silently breaking every vote: a negative timeout is an already expired deadline, a negative
// body limit makes every body "too large", a negative TTL is an invalid Redis expiry, a
// candidate id that is not a uuid can never be voted for (ParseBody demands a uuid), and a
// second election with the same id silently replaces the first in the index.
func TestParseConfigRejectsUnusableValues(t *testing.T) {
	mustParseBase(t)
	tests := []struct{ name, old, new string }{
		{"negative enqueueTimeoutMs", `"region": "eu-west-1",`, `"region": "eu-west-1", "enqueueTimeoutMs": -1,`},
		{"negative maxBodyBytes", `"region": "eu-west-1",`, `"region": "eu-west-1", "maxBodyBytes": -1,`},
		{"negative dedupTtlSeconds", `"addr": "127.0.0.1:6379"`, `"addr": "127.0.0.1:6379", "dedupTtlSeconds": -5`},
		{"candidate id not a uuid", `"candidateIds": ["a0b1c2d3-e4f5-4a6b-8c7d-8e9f0a1b2c3d"]`, `"candidateIds": ["candidate-1"]`},
		{"duplicate election id", `"elections": [{`, `"elections": [{
    "id": "3F1C2A9E-8B4D-4C6E-9F0A-1B2C3D4E5F60", "status": "CLOSED",
    "startDate": "2026-01-15T20:00:00Z", "endDate": "2026-01-15T22:00:00Z", "candidateIds": []
  }, {`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := strings.Replace(validConfigJSON, tc.old, tc.new, 1)
			if raw == validConfigJSON {
				t.Fatalf("test edit %q not applied", tc.old)
			}
			if c, err := edgeconfig.Parse([]byte(raw)); err == nil {
				t.Errorf("accepted: %+v", c)
			}
		})
	}
}

// Negative captcha durations cannot be meant either: a negative pow ttlSeconds issues
// challenges that are expired when issued (every vote 403), a negative siteverify timeoutMs
// becomes a huge uint64 callout timeout.
func TestParseConfigRejectsNegativeCaptchaValues(t *testing.T) {
	mustParseBase(t)
	tests := []struct{ name, old, new string }{
		{"negative pow ttlSeconds", `"secretFile": "/run/secrets/pow"`, `"secretFile": "/run/secrets/pow", "ttlSeconds": -5`},
		{"negative siteverify timeoutMs", `"mode": "pow", "pow": {"secretFile": "/run/secrets/pow"}`,
			`"mode": "siteverify", "siteverify": {"cluster": "c", "host": "h", "path": "/p", "secretFile": "/run/secrets/site", "timeoutMs": -1}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := strings.Replace(validConfigJSON, tc.old, tc.new, 1)
			if raw == validConfigJSON {
				t.Fatalf("test edit %q not applied", tc.old)
			}
			if c, err := edgeconfig.Parse([]byte(raw)); err == nil {
				t.Errorf("accepted: %+v", c.Captcha)
			}
		})
	}
}

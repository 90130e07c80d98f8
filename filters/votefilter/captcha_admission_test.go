package votefilter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

// issue gets a challenge through the admitter's own endpoint logic.
func issue(t *testing.T, r *rig) captcha.Challenge {
	t.Helper()
	resp := r.adm.Challenge(testRequestID)
	if resp.Status != http.StatusOK {
		t.Fatalf("Challenge: %d %s", resp.Status, resp.Body)
	}
	var c captcha.Challenge
	if err := json.Unmarshal(resp.Body, &c); err != nil {
		t.Fatalf("challenge body %s: %v", resp.Body, err)
	}
	return c
}

func powRequest(tok, captchaToken string) Request {
	req := goodRequest()
	req.Authorization = "Bearer " + tok
	req.Body = []byte(voteBody(testElection, testCandidate, captchaToken))
	return req
}

// weakNonce finds a nonce whose work on challenge stays below bits, so an "unsolved" token
// is unsolved for sure, not with probability 1 - 2^-bits.
func weakNonce(challenge string, bits int) string {
	for i := 0; ; i++ {
		n := "n" + strconv.Itoa(i)
		if captcha.LeadingZeroBits(captcha.Work(challenge, n)) < bits {
			return n
		}
	}
}

func TestChallengeJSON(t *testing.T) {
	r := newRig(t, powConfig(), duringVote)
	resp := r.adm.Challenge(testRequestID)
	if resp.Status != http.StatusOK || resp.Outcome != OutcomeAnswered {
		t.Fatalf("Challenge = %d %s outcome %q; want 200 answered", resp.Status, resp.Body, resp.Outcome)
	}
	if ct, _ := header(resp, "content-type"); ct != "application/json" {
		t.Errorf("content-type = %q", ct)
	}
	if cc, _ := header(resp, "cache-control"); cc != "no-store" {
		t.Errorf("cache-control = %q, want no-store (a cached challenge is a shared challenge)", cc)
	}
	var c captcha.Challenge
	dec := json.NewDecoder(strings.NewReader(string(resp.Body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("body %s: %v", resp.Body, err)
	}
	wantExp := time.Date(2026, 1, 15, 21, 5, 0, 0, time.UTC) // duringVote + 300 s, whole seconds
	if c.Difficulty != 8 || c.Algorithm != "sha256-leading-zero-bits" || !c.ExpiresAt.Equal(wantExp) {
		t.Errorf("challenge = %+v, want difficulty 8, expiry %v", c, wantExp)
	}
	for _, field := range []string{`"challenge":`, `"difficulty":8`, `"expiresAt":"2026-01-15T21:05:00Z"`, `"algorithm":`} {
		if !strings.Contains(string(resp.Body), field) {
			t.Errorf("body %s lacks %s", resp.Body, field)
		}
	}
	parts := strings.Split(c.Challenge, ".")
	if len(parts) != 4 || parts[1] != strconv.FormatInt(wantExp.Unix(), 10) || parts[2] != "8" {
		t.Errorf("challenge %q is not id.expiry.difficulty.mac", c.Challenge)
	}
	if again := issue(t, r); again.Challenge == c.Challenge {
		t.Error("two challenges are identical")
	}

	// Modes without proof of work issue no challenges.
	for _, mode := range []string{"off", "siteverify"} {
		cfg := testConfig()
		cfg.Captcha.Mode = mode
		resp := newRig(t, cfg, duringVote).adm.Challenge(testRequestID)
		if resp.Status != http.StatusNotFound || decodeError(t, resp).Code != contract.CodeNotFound {
			t.Errorf("mode %s: %d %s, want 404 NOT_FOUND", mode, resp.Status, resp.Body)
		}
	}
}

func TestPoWSolvedAccepted(t *testing.T) {
	r := newRig(t, powConfig(), duringVote)
	c := issue(t, r)
	tok := captcha.Solve(c.Challenge, c.Difficulty)
	resp := admit(r.adm, context.Background(), powRequest(goodToken, tok))
	if resp.Status != http.StatusOK || resp.Outcome != OutcomeAccepted {
		t.Fatalf("solved challenge: %d %s (%s), want 200 accepted", resp.Status, resp.Body, resp.Outcome)
	}
	if len(r.q.sent) != 1 {
		t.Fatalf("%d votes queued, want 1", len(r.q.sent))
	}
	// The gate records the challenge id until the challenge expires, to refuse replays.
	a := r.gate.Reserves[0]
	if id := strings.Split(c.Challenge, ".")[0]; a.PoWID != id || !a.PoWExpiry.Equal(c.ExpiresAt) {
		t.Errorf("attempt PoW = %q until %v, want %q until %v", a.PoWID, a.PoWExpiry, id, c.ExpiresAt)
	}
	// A challenge is good until its expiry second has passed.
	r2 := newRig(t, powConfig(), duringVote)
	r2.adm.now = func() time.Time { return c.ExpiresAt.Add(999 * time.Millisecond) }
	if resp := admit(r2.adm, context.Background(), powRequest(goodToken, tok)); resp.Status != http.StatusOK {
		t.Errorf("at the expiry second: %d %s, want 200", resp.Status, resp.Body)
	}
}

func TestPoWRejected(t *testing.T) {
	r0 := newRig(t, powConfig(), duringVote)
	c := issue(t, r0)
	parts := strings.Split(c.Challenge, ".")
	other := issue(t, r0)
	mustPoW := func(secret string, difficulty int) *captcha.PoW {
		p, err := captcha.NewPoW(captcha.StaticKey(secret), difficulty, 300*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	issued := func(p *captcha.PoW, at time.Time) string {
		ch, err := p.Issue(at)
		if err != nil {
			t.Fatal(err)
		}
		return ch.Challenge
	}
	expired := issued(mustPoW(testSecret, 8), duringVote.Add(-301*time.Second))
	foreign := issued(mustPoW("another-secret-of-16-bytes", 8), duringVote)
	easy := issued(mustPoW(testSecret, 4), duringVote)
	forgedExp := strings.Join([]string{parts[0], strconv.FormatInt(duringVote.Add(time.Hour).Unix(), 10), parts[2], parts[3]}, ".")
	forgedDiff := strings.Join([]string{parts[0], parts[1], "1", parts[3]}, ".")
	solvedOther := captcha.Solve(other.Challenge, 8)
	_, otherNonce, _ := strings.Cut(solvedOther, ":")
	for captcha.LeadingZeroBits(captcha.Work(c.Challenge, otherNonce)) >= 8 { // astronomically unlikely
		t.Skip("nonce happens to solve both challenges")
	}

	tests := map[string]string{
		"not a proof-of-work token":    goodCaptcha,
		"unsolved":                     c.Challenge + ":" + weakNonce(c.Challenge, 8),
		"no nonce":                     c.Challenge + ":",
		"nonce too long":               captcha.Solve(c.Challenge, 8) + strings.Repeat("0", 65),
		"nonce of another challenge":   c.Challenge + ":" + otherNonce,
		"expired":                      captcha.Solve(expired, 8),
		"issued with another secret":   captcha.Solve(foreign, 8),
		"issued at a lower difficulty": captcha.Solve(easy, 4),
		"forged expiry":                captcha.Solve(forgedExp, 8),
		"forged difficulty":            captcha.Solve(forgedDiff, 1),
		"mac stripped":                 captcha.Solve(strings.Join(parts[:3], ".")+".", 8),
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, powConfig(), duringVote)
			resp := admit(r.adm, context.Background(), powRequest(goodToken, tok))
			if resp.Status != http.StatusForbidden {
				t.Fatalf("status = %d %s, want 403", resp.Status, resp.Body)
			}
			if er := decodeError(t, resp); er.Code != contract.CodeCaptchaFailed || er.TraceID != testRequestID {
				t.Errorf("error = %+v, want CAPTCHA_FAILED", er)
			}
			if resp.Outcome != OutcomeCaptchaFailed || resp.Reason != "pow" {
				t.Errorf("outcome/reason = %q/%q, want captcha_failed/pow", resp.Outcome, resp.Reason)
			}
			if _, ok := header(resp, "retry-after"); ok {
				t.Error("a failed captcha carries Retry-After")
			}
			if len(r.gate.Reserves) != 0 || r.q.calls != 0 {
				t.Errorf("a failed captcha reached the gate (%d) or the queue (%d)", len(r.gate.Reserves), r.q.calls)
			}
			if b, rej := r.adm.Check(context.Background(), powRequest(goodToken, tok)); b != nil || rej == nil || rej.Code != contract.CodeCaptchaFailed {
				t.Errorf("Check = %+v, %v; want CAPTCHA_FAILED", b, rej)
			}
		})
	}
}

// A solved challenge is good for one vote: another viewer presenting it is refused because
// the gate has seen its id.
func TestPoWReplayRefused(t *testing.T) {
	r := newRig(t, powConfig(), duringVote)
	c := issue(t, r)
	tok := captcha.Solve(c.Challenge, c.Difficulty)
	if resp := admit(r.adm, context.Background(), powRequest(goodToken, tok)); resp.Status != http.StatusOK {
		t.Fatalf("first use: %d %s", resp.Status, resp.Body)
	}
	resp := admit(r.adm, context.Background(), powRequest(otherToken, tok))
	if resp.Status != http.StatusForbidden || decodeError(t, resp).Code != contract.CodeCaptchaFailed {
		t.Fatalf("replay: %d %s, want 403 CAPTCHA_FAILED", resp.Status, resp.Body)
	}
	if resp.Outcome != OutcomeCaptchaFailed || resp.Reason != "replay" {
		t.Errorf("outcome/reason = %q/%q, want captcha_failed/replay", resp.Outcome, resp.Reason)
	}
	if len(r.gate.Reserves) != 2 || r.gate.Reserves[1].PoWID != r.gate.Reserves[0].PoWID {
		t.Errorf("gate attempts %+v: want the replay to present the same challenge id", r.gate.Reserves)
	}
	if len(r.q.sent) != 1 || r.q.sent[0].UserID != viewerSub {
		t.Errorf("queued %+v, want only the first viewer's vote", r.q.sent)
	}
	if (r.gate.Entry(testElection, otherSub).State != dedup.None) || len(r.gate.Releases) != 0 {
		t.Error("a replayed challenge reserved or released a key")
	}
	// A fresh challenge lets the second viewer vote.
	c2 := issue(t, r)
	if resp := admit(r.adm, context.Background(), powRequest(otherToken, captcha.Solve(c2.Challenge, 8))); resp.Status != http.StatusOK {
		t.Errorf("fresh challenge: %d %s, want 200", resp.Status, resp.Body)
	}
}

func siteverifyConfig() *edgeconfig.Config {
	c := testConfig()
	c.Captcha = edgeconfig.CaptchaConfig{Mode: "siteverify", Siteverify: edgeconfig.SiteverifyConfig{Cluster: "turnstile",
		Host: "challenges.cloudflare.com", Path: "/turnstile/v0/siteverify", SecretFile: "/run/secrets/site", TimeoutMs: 1000}}
	return c
}

// In siteverify mode Check leaves the captcha to the adapter's HTTP call; Admit, which has no
// such call, never lets the vote through.
func TestSiteverifyModeNeedsTheCall(t *testing.T) {
	r := newRig(t, siteverifyConfig(), duringVote)
	b, rej := r.adm.Check(context.Background(), goodRequest())
	if rej != nil || b == nil {
		t.Fatalf("Check = %+v, %v", b, rej)
	}
	if !b.NeedsSiteverify || b.Captcha != goodCaptcha || b.ClientIP != testIP {
		t.Errorf("ballot = %+v, want NeedsSiteverify with the captcha token and client IP", b)
	}
	if b.Vote.UserID != viewerSub || b.Vote.ElectionID != testElection || !contract.IsUUID(b.Vote.VoteID) {
		t.Errorf("ballot vote = %+v", b.Vote)
	}
	if len(r.gate.Reserves) != 0 || r.q.calls != 0 {
		t.Error("Check touched the gate or the queue")
	}

	// After a successful siteverify call the adapter commits the ballot.
	resp := r.adm.Commit(context.Background(), b)
	if resp.Status != http.StatusOK || len(r.q.sent) != 1 || r.q.sent[0].VoteID != b.Vote.VoteID {
		t.Fatalf("Commit: %d %s, queued %+v", resp.Status, resp.Body, r.q.sent)
	}
	if a := r.gate.Reserves[0]; a.PoWID != "" || a.ClientIP != testIP {
		t.Errorf("attempt = %+v, want no proof-of-work id and the client IP", a)
	}
}

func TestCaptchaRejected(t *testing.T) {
	tests := []struct {
		name         string
		err          error
		status       int
		code, reason string
		retry        string
	}{
		{"refused", fmt.Errorf("%w: invalid-input-response", captcha.ErrFailed), 403, contract.CodeCaptchaFailed, "siteverify", ""},
		{"refused by CheckSiteverify", captcha.CheckSiteverify(200, []byte(`{"success":false,"error-codes":["timeout-or-duplicate"]}`), 0),
			403, contract.CodeCaptchaFailed, "siteverify", ""},
		{"timed out", context.DeadlineExceeded, 503, contract.CodeUnavailable, "unavailable", "1"},
		{"callout not started", context.Canceled, 503, contract.CodeUnavailable, "unavailable", "1"},
		{"other error", errors.New("boom"), 503, contract.CodeUnavailable, "unavailable", "1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := CaptchaRejected(tc.err, testRequestID)
			if resp.Status != tc.status {
				t.Fatalf("status = %d %s, want %d", resp.Status, resp.Body, tc.status)
			}
			if er := decodeError(t, resp); er.Code != tc.code || er.TraceID != testRequestID {
				t.Errorf("error = %+v, want %s", er, tc.code)
			}
			if ra, ok := header(resp, "retry-after"); ra != tc.retry || ok != (tc.retry != "") {
				t.Errorf("retry-after = %q (present %v), want %q", ra, ok, tc.retry)
			}
			if resp.Outcome != OutcomeCaptchaFailed || resp.Reason != tc.reason {
				t.Errorf("outcome/reason = %q/%q, want captcha_failed/%s", resp.Outcome, resp.Reason, tc.reason)
			}
		})
	}
}

// edgeconfig.Parse fills proof of work as the default mode, and the admitter built from it issues
// challenges and demands solved ones.
func TestParsedConfigDemandsProofOfWork(t *testing.T) {
	cfg, err := edgeconfig.Parse([]byte(strings.Replace(validConfigJSON, `"mode": "pow", `, ``, 1)))
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, cfg, duringVote)
	if resp := admit(r.adm, context.Background(), goodRequest()); resp.Status != http.StatusForbidden {
		t.Errorf("unsolved captcha with the default mode: %d %s, want 403", resp.Status, resp.Body)
	}
	c := issue(t, r)
	if c.Difficulty != 16 {
		t.Errorf("default difficulty = %d, want 16", c.Difficulty)
	}
}

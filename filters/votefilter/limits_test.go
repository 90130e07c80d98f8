package votefilter

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

func limitedConfig() *edgeconfig.Config {
	c := testConfig()
	c.Limits = edgeconfig.Limits{PerViewer: edgeconfig.Limit{Max: 2, WindowSeconds: 60}, PerIP: edgeconfig.Limit{Max: 3, WindowSeconds: 10}}
	return c
}

func requestFrom(tok, ip string) Request {
	req := goodRequest()
	req.Authorization = "Bearer " + tok
	req.ClientIP = ip
	return req
}

func assertRateLimited(t *testing.T, resp Response, reason, retry string) {
	t.Helper()
	if resp.Status != http.StatusTooManyRequests {
		t.Fatalf("status = %d %s, want 429", resp.Status, resp.Body)
	}
	if er := decodeError(t, resp); er.Code != contract.CodeRateLimited || er.TraceID != testRequestID {
		t.Errorf("error = %+v, want RATE_LIMITED", er)
	}
	if ra, _ := header(resp, "retry-after"); ra != retry {
		t.Errorf("retry-after = %q, want %q", ra, retry)
	}
	if resp.Outcome != OutcomeRateLimited || resp.Reason != reason {
		t.Errorf("outcome/reason = %q/%q, want rate_limited/%s", resp.Outcome, resp.Reason, reason)
	}
}

// The configured limits reach the gate with every attempt.
func TestLimitsReachTheGate(t *testing.T) {
	r := newRig(t, limitedConfig(), duringVote)
	admit(r.adm, context.Background(), goodRequest())
	if len(r.gate.Reserves) != 1 {
		t.Fatalf("%d attempts", len(r.gate.Reserves))
	}
	a := r.gate.Reserves[0]
	if a.PerViewer != (edgeconfig.Limit{Max: 2, WindowSeconds: 60}) || a.PerIP != (edgeconfig.Limit{Max: 3, WindowSeconds: 10}) {
		t.Errorf("attempt limits = %+v / %+v, want 2 per 60 s and 3 per 10 s", a.PerViewer, a.PerIP)
	}
}

// Every attempt of a viewer counts, duplicates included; the third within the minute gets 429
// with the rest of the window (rounded up) in Retry-After, and nothing is queued or released.
func TestViewerRateLimit(t *testing.T) {
	r := newRig(t, limitedConfig(), duringVote)
	if resp := admit(r.adm, context.Background(), requestFrom(goodToken, "192.0.2.1")); resp.Status != http.StatusOK {
		t.Fatalf("first vote: %d %s", resp.Status, resp.Body)
	}
	r.gate.Advance(5 * time.Second)
	if resp := admit(r.adm, context.Background(), requestFrom(goodToken, "192.0.2.2")); resp.Status != http.StatusConflict {
		t.Fatalf("second attempt: %d %s, want 409", resp.Status, resp.Body)
	}
	r.gate.Advance(5500 * time.Millisecond) // 10.5 s into the 60 s window
	resp := admit(r.adm, context.Background(), requestFrom(goodToken, "192.0.2.3"))
	assertRateLimited(t, resp, "viewer", "50") // 49.5 s left, rounded up
	if len(r.q.sent) != 1 || r.q.calls != 1 || len(r.gate.Releases) != 0 {
		t.Errorf("queue %d sent / %d calls, releases %v; want the first vote only and no release",
			len(r.q.sent), r.q.calls, r.gate.Releases)
	}
	// Another viewer is not affected.
	if resp := admit(r.adm, context.Background(), requestFrom(otherToken, "192.0.2.4")); resp.Status != http.StatusOK {
		t.Errorf("other viewer: %d %s, want 200", resp.Status, resp.Body)
	}
}

// Attempts from one address count across viewers.
func TestIPRateLimit(t *testing.T) {
	r := newRig(t, limitedConfig(), duringVote)
	r.ver.ids["t4"] = tokenFor("auth0|viewer-4")
	r.ver.ids["t3"] = tokenFor("auth0|viewer-3")
	for _, tok := range []string{goodToken, otherToken, "t3"} {
		if resp := admit(r.adm, context.Background(), requestFrom(tok, testIP)); resp.Status != http.StatusOK {
			t.Fatalf("%s: %d %s", tok, resp.Status, resp.Body)
		}
	}
	r.gate.Advance(2 * time.Second)
	resp := admit(r.adm, context.Background(), requestFrom("t4", testIP))
	assertRateLimited(t, resp, "ip", "8")
	if len(r.q.sent) != 3 || (r.gate.Entry(testElection, "auth0|viewer-4").State != dedup.None) {
		t.Errorf("%d queued, viewer-4 reserved %v; want 3 and no reservation", len(r.q.sent), (r.gate.Entry(testElection, "auth0|viewer-4").State != dedup.None))
	}
	// The same viewer from another address gets through.
	if resp := admit(r.adm, context.Background(), requestFrom("t4", "203.0.113.50")); resp.Status != http.StatusOK {
		t.Errorf("other address: %d %s, want 200", resp.Status, resp.Body)
	}
}

// A RetryAfter under a second still says "1", never "0" or nothing.
func TestRateLimitRetryAfterRoundsUp(t *testing.T) {
	r := newRig(t, limitedConfig(), duringVote)
	admit(r.adm, context.Background(), goodRequest())
	admit(r.adm, context.Background(), goodRequest())
	r.gate.Advance(59*time.Second + 700*time.Millisecond)
	assertRateLimited(t, admit(r.adm, context.Background(), goodRequest()), "viewer", "1")
}

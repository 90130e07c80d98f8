package envoymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared"
	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared/fake"
	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared/mocks"
	"go.uber.org/mock/gomock"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter"
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

func withPoW(c *edgeconfig.Config) {
	c.Captcha = edgeconfig.CaptchaConfig{Mode: "pow", PoW: edgeconfig.PoWConfig{SecretFile: "/run/secrets/pow", Difficulty: 8, TTLSeconds: 300}}
}

func withSiteverify(c *edgeconfig.Config) {
	c.Captcha = edgeconfig.CaptchaConfig{Mode: "siteverify", Siteverify: edgeconfig.SiteverifyConfig{Cluster: "turnstile",
		Host: "challenges.cloudflare.com", Path: "/turnstile/v0/siteverify", SecretFile: "/run/secrets/site", MinScore: 0.5, TimeoutMs: 750}}
}

func withStatusCluster(c *edgeconfig.Config) { c.StatusCluster = "vote_status" }

// vote sends a complete POST /api/v1/votes with body through the filter.
func (h *harness) vote(t *testing.T, body string) {
	t.Helper()
	if st := h.filter.OnRequestHeaders(headers(http.MethodPost, contract.PathVotes), false); st != shared.HeadersStatusStop {
		t.Fatalf("OnRequestHeaders = %v, want Stop", st)
	}
	if st := h.filter.OnRequestBody(fake.NewFakeBodyBuffer([]byte(body)), true); st != shared.BodyStatusStopNoBuffer {
		t.Fatalf("OnRequestBody = %v, want StopNoBuffer", st)
	}
}

// The challenge is answered at once, on the worker thread: it needs no I/O.
func TestChallengeAnsweredLocally(t *testing.T) {
	h := newHarness(t, 4096, withPoW)
	r := h.expectReply() // no scheduler expectation: a goroutine hop fails the test
	if st := h.filter.OnRequestHeaders(headers(http.MethodGet, contract.PathVoteChallenge+"?v=1", "authorization", ""), true); st != shared.HeadersStatusStop {
		t.Fatalf("OnRequestHeaders = %v, want Stop", st)
	}
	if r.status != http.StatusOK || r.header("content-type") != "application/json" || r.header("cache-control") != "no-store" ||
		r.detail != "votefilter" {
		t.Fatalf("reply %d %v %s", r.status, r.headers, r.body)
	}
	var c captcha.Challenge
	if err := json.Unmarshal(r.body, &c); err != nil || c.Difficulty != 8 || strings.Count(c.Challenge, ".") != 3 ||
		c.ExpiresAt.Before(time.Now().Add(4*time.Minute)) {
		t.Fatalf("challenge %s (%v)", r.body, err)
	}

	// The solved challenge is a valid captcha for a vote: a new stream of the same factory.
	h.filter = (&filterFactory{adm: h.adm, maxBody: 4096, siteSecret: h.site}).Create(h.handle)
	tasks := h.expectSchedule()
	h.vote(t, voteJSONWith(captcha.Solve(c.Challenge, c.Difficulty)))
	task := waitTask(t, tasks)
	r2 := h.expectReply()
	task()
	if r2.status != http.StatusOK || len(h.q.Votes()) != 1 {
		t.Fatalf("vote with the solved challenge: %d %s, %d queued", r2.status, r2.body, len(h.q.Votes()))
	}
	if a := h.gate.ReserveCalls(); len(a) != 1 || a[0].PoWID != strings.Split(c.Challenge, ".")[0] {
		t.Errorf("gate attempts %+v, want the challenge id recorded", a)
	}
}

func TestChallengeOtherMethodsAndModes(t *testing.T) {
	h := newHarness(t, 4096, withPoW)
	r := h.expectReply()
	h.filter.OnRequestHeaders(headers(http.MethodPost, contract.PathVoteChallenge), false)
	if r.status != http.StatusMethodNotAllowed || r.header("allow") != http.MethodGet || r.errorBody(t).TraceID != requestID {
		t.Errorf("POST challenge: %d allow %q %s", r.status, r.header("allow"), r.body)
	}

	h = newHarness(t, 4096) // captcha off: no challenges
	r = h.expectReply()
	h.filter.OnRequestHeaders(headers(http.MethodGet, contract.PathVoteChallenge), true)
	if r.status != http.StatusNotFound || r.errorBody(t).Code != contract.CodeNotFound {
		t.Errorf("challenge with captcha off: %d %s", r.status, r.body)
	}
}

func statusURL(user string) string {
	return contract.PathVoteStatus + election + "/" + url.PathEscape(user)
}

// The status answer is computed on a goroutine and comes back through the scheduler.
func TestStatusThroughScheduler(t *testing.T) {
	h := newHarness(t, 4096)
	at := time.Date(2026, 1, 15, 21, 0, 0, 0, time.UTC)
	h.gate.SetFinal(election, viewer, "01890a5d-ac96-774b-bcce-b302099a8057", at)
	h.ver.gate = make(chan struct{})

	tasks := h.expectSchedule()
	if st := h.filter.OnRequestHeaders(headers(http.MethodGet, statusURL(viewer)+"?fresh=1"), true); st != shared.HeadersStatusStop {
		t.Fatalf("OnRequestHeaders = %v, want Stop", st)
	}
	select {
	case <-tasks:
		t.Fatal("status answered while the token check was still blocked")
	case <-time.After(20 * time.Millisecond):
	}
	close(h.ver.gate)
	task := waitTask(t, tasks)
	r := h.expectReply()
	task()
	want := `{"electionId":"` + election + `","userId":"auth0|viewer-1","hasVoted":true,` +
		`"voteId":"01890a5d-ac96-774b-bcce-b302099a8057","timestamp":"2026-01-15T21:00:00Z"}`
	if r.status != http.StatusOK || string(r.body) != want || r.header("content-type") != "application/json" {
		t.Errorf("status reply %d %s\nwant %s", r.status, r.body, want)
	}
	var st votefilter.VoteStatus
	dec := json.NewDecoder(strings.NewReader(string(r.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil || !st.HasVoted || st.Timestamp == nil || !st.Timestamp.Equal(at) {
		t.Errorf("VoteStatus %+v (%v)", st, err)
	}
}

func TestStatusRefusals(t *testing.T) {
	// Another viewer's status: 403 through the scheduler.
	h := newHarness(t, 4096)
	tasks := h.expectSchedule()
	h.filter.OnRequestHeaders(headers(http.MethodGet, statusURL("auth0|someone-else")), true)
	task := waitTask(t, tasks)
	r := h.expectReply()
	task()
	if r.status != http.StatusForbidden || r.errorBody(t).Code != contract.CodeForbidden {
		t.Errorf("other viewer: %d %s, want 403", r.status, r.body)
	}

	// An admin may ask about anyone.
	h = newHarness(t, 4096)
	tasks = h.expectSchedule()
	h.filter.OnRequestHeaders(headers(http.MethodGet, statusURL("auth0|someone-else"), "authorization", "Bearer "+adminToken), true)
	task = waitTask(t, tasks)
	r = h.expectReply()
	task()
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"hasVoted":false`) {
		t.Errorf("admin: %d %s, want 200 not voted", r.status, r.body)
	}

	// Only GET, refused on the worker thread.
	h = newHarness(t, 4096)
	r = h.expectReply()
	if st := h.filter.OnRequestHeaders(headers(http.MethodPost, statusURL(viewer)), false); st != shared.HeadersStatusStop {
		t.Errorf("POST status: %v", st)
	}
	if r.status != http.StatusMethodNotAllowed || r.header("allow") != http.MethodGet {
		t.Errorf("POST status: %d allow %q", r.status, r.header("allow"))
	}
}

// No key in Redis and a status cluster configured: the filter asks the status service
// through Envoy's HTTP client and relays its answer.
func TestStatusFallbackCallout(t *testing.T) {
	h := newHarness(t, 4096, withStatusCluster)
	tasks := h.expectSchedule()
	h.filter.OnRequestHeaders(headers(http.MethodGet, statusURL(viewer)), true)
	task := waitTask(t, tasks)
	c := h.expectCallout("vote_status", shared.HttpCalloutInitSuccess)
	task() // on the worker thread: starts the callout
	if c.cb == nil {
		t.Fatal("no callout started")
	}
	if c.header(":method") != http.MethodGet || c.header(":path") != "/internal/v1/vote-status/"+election+"/auth0%7Cviewer-1" ||
		c.header(":authority") == "" || c.header("x-request-id") != requestID || len(c.body) != 0 || c.timeout == 0 {
		t.Errorf("callout %+v", *c)
	}
	r := h.expectReply()
	body := `{"electionId":"` + election + `","userId":"auth0|viewer-1","hasVoted":true,"voteId":"01890a5d-ac96-774b-bcce-b302099a8057","timestamp":"2026-01-15T21:00:00Z"}`
	c.answer("200", body)
	if r.status != http.StatusOK || string(r.body) != body {
		t.Errorf("relayed %d %s, want 200 %s", r.status, r.body, body)
	}
}

func TestStatusFallbackFailures(t *testing.T) {
	tests := []struct {
		name  string
		init  shared.HttpCalloutInitResult
		reply func(c *callout)
	}{
		{"service 500", shared.HttpCalloutInitSuccess, func(c *callout) { c.answer("500", `{"hasVoted":true}`) }},
		{"service answers about someone else", shared.HttpCalloutInitSuccess, func(c *callout) {
			c.answer("200", `{"electionId":"`+election+`","userId":"auth0|viewer-2","hasVoted":true}`)
		}},
		{"callout reset", shared.HttpCalloutInitSuccess, func(c *callout) {
			c.cb.OnHttpCalloutDone(7, shared.HttpCalloutReset, nil, nil)
		}},
		{"cluster missing", shared.HttpCalloutInitClusterNotFound, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 4096, withStatusCluster)
			tasks := h.expectSchedule()
			h.filter.OnRequestHeaders(headers(http.MethodGet, statusURL(viewer)), true)
			task := waitTask(t, tasks)
			c := h.expectCallout("vote_status", tc.init)
			r := h.expectReply()
			task()
			if tc.reply != nil {
				tc.reply(c)
			}
			if r.status != http.StatusServiceUnavailable || r.header("retry-after") != "1" || r.errorBody(t).Code != contract.CodeUnavailable {
				t.Errorf("reply %d %s retry-after %q, want 503", r.status, r.body, r.header("retry-after"))
			}
		})
	}
}

// The admin route holds the request while the token is checked on a goroutine, then lets it
// through to the control plane from the worker thread.
func TestAdminAllowed(t *testing.T) {
	h := newHarness(t, 4096)
	h.ver.gate = make(chan struct{})
	tasks := h.expectSchedule()
	if st := h.filter.OnRequestHeaders(headers(http.MethodPost, contract.PathAdmin+"elections", "authorization", "Bearer "+adminToken), false); st != shared.HeadersStatusStopAllAndBuffer {
		t.Fatalf("OnRequestHeaders = %v, want StopAllAndBuffer", st)
	}
	if st := h.filter.OnRequestBody(fake.NewFakeBodyBuffer([]byte(`{"title":"x"}`)), true); st != shared.BodyStatusStopAndBuffer {
		t.Errorf("OnRequestBody = %v, want StopAndBuffer (the body goes upstream)", st)
	}
	if st := h.filter.OnRequestTrailers(fake.NewFakeHeaderMap(nil)); st != shared.TrailersStatusStop {
		t.Errorf("OnRequestTrailers = %v, want Stop", st)
	}
	close(h.ver.gate)
	task := waitTask(t, tasks)
	h.handle.EXPECT().ContinueRequest().Times(1)
	task()
	if len(h.q.Votes()) != 0 {
		t.Error("an admin request was enqueued")
	}
}

func TestAdminRefused(t *testing.T) {
	tests := []struct {
		name, auth string
		status     uint32
		code       string
	}{
		{"viewer token", "Bearer " + goodToken, 403, contract.CodeForbidden},
		{"bad token", "Bearer forged", 401, contract.CodeUnauthorized},
		{"no token", "", 401, contract.CodeUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 4096)
			tasks := h.expectSchedule()
			h.filter.OnRequestHeaders(headers(http.MethodDelete, contract.PathAdmin+"elections/"+election, "authorization", tc.auth), true)
			task := waitTask(t, tasks)
			r := h.expectReply() // and no ContinueRequest: gomock fails an unexpected call
			task()
			if r.status != tc.status || r.errorBody(t).Code != tc.code || r.errorBody(t).TraceID != requestID {
				t.Errorf("reply %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
		})
	}
}

// Siteverify mode: the captcha service is asked through Envoy's HTTP client on the worker
// thread with the form every siteverify API takes; on success the vote is committed on a
// goroutine and answered through the scheduler.
func TestSiteverifySuccess(t *testing.T) {
	h := newHarness(t, 4096, withSiteverify)
	h.mu.Lock()
	h.srcAddr = "1.2.3.4:5678"
	h.mu.Unlock()
	tasks := h.expectScheduler(2, 2)
	h.vote(t, voteJSON())
	task := waitTask(t, tasks)
	c := h.expectCallout("turnstile", shared.HttpCalloutInitSuccess)
	task()
	if c.cb == nil {
		t.Fatal("no siteverify callout")
	}
	if c.header(":method") != http.MethodPost || c.header(":path") != "/turnstile/v0/siteverify" ||
		c.header(":authority") != "challenges.cloudflare.com" || c.header("content-type") != "application/x-www-form-urlencoded" ||
		c.timeout != 750 {
		t.Errorf("callout headers %v timeout %d", c.headers, c.timeout)
	}
	form, err := url.ParseQuery(string(c.body))
	if err != nil || form.Get("secret") != siteSecret || form.Get("response") != captchaToken || form.Get("remoteip") != "1.2.3.4" {
		t.Errorf("callout form %q (%v)", c.body, err)
	}
	if len(h.gate.ReserveCalls()) != 0 || len(h.q.Votes()) != 0 {
		t.Fatal("the vote reached the gate before the captcha was verified")
	}
	c.answer("200", `{"success":true,"score":0.9}`)
	task = waitTask(t, tasks)
	r := h.expectReply()
	task()
	if r.status != http.StatusOK || len(h.q.Votes()) != 1 {
		t.Fatalf("after siteverify success: %d %s, %d queued", r.status, r.body, len(h.q.Votes()))
	}
	if a := h.gate.ReserveCalls(); len(a) != 1 || a[0].ClientIP != "1.2.3.4" || a[0].PoWID != "" {
		t.Errorf("gate attempts %+v", a)
	}
}

func TestSiteverifyFailures(t *testing.T) {
	tests := []struct {
		name   string
		init   shared.HttpCalloutInitResult
		answer func(c *callout)
		status uint32
		code   string
	}{
		{"refused", shared.HttpCalloutInitSuccess, func(c *callout) {
			c.answer("200", `{"success":false,"error-codes":["invalid-input-response"]}`)
		}, 403, contract.CodeCaptchaFailed},
		{"score too low", shared.HttpCalloutInitSuccess, func(c *callout) { c.answer("200", `{"success":true,"score":0.1}`) },
			403, contract.CodeCaptchaFailed},
		{"callout reset", shared.HttpCalloutInitSuccess, func(c *callout) {
			c.cb.OnHttpCalloutDone(7, shared.HttpCalloutReset, nil, nil)
		}, 503, contract.CodeUnavailable},
		{"cluster missing", shared.HttpCalloutInitClusterNotFound, nil, 503, contract.CodeUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 4096, withSiteverify)
			tasks := h.expectSchedule()
			h.vote(t, voteJSON())
			task := waitTask(t, tasks)
			c := h.expectCallout("turnstile", tc.init)
			r := h.expectReply()
			task()
			if tc.answer != nil {
				tc.answer(c)
			}
			if r.status != tc.status || r.errorBody(t).Code != tc.code {
				t.Errorf("reply %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
			if (tc.status == 503) != (r.header("retry-after") != "") {
				t.Errorf("retry-after %q on a %d", r.header("retry-after"), r.status)
			}
			time.Sleep(20 * time.Millisecond)
			if len(h.gate.ReserveCalls()) != 0 || len(h.q.Votes()) != 0 {
				t.Error("a vote with a failed captcha reached the gate or the queue")
			}
		})
	}
}

// The client address the gate limits on is Envoy's downstream address without its port.
func TestClientIP(t *testing.T) {
	tests := map[string]string{
		"1.2.3.4:5678":      "1.2.3.4",
		"[2001:db8::1]:443": "2001:db8::1",
		"1.2.3.4":           "1.2.3.4",
		"":                  "unknown",
	}
	for src, want := range tests {
		t.Run(src, func(t *testing.T) {
			h := newHarness(t, 4096)
			h.mu.Lock()
			h.srcAddr = src
			h.mu.Unlock()
			tasks := h.expectSchedule()
			h.vote(t, voteJSON())
			task := waitTask(t, tasks)
			r := h.expectReply()
			task()
			a := h.gate.ReserveCalls()
			if r.status != http.StatusOK || len(a) != 1 || a[0].ClientIP != want {
				t.Errorf("source %q: reply %d, attempts %+v; want client IP %q", src, r.status, a, want)
			}
		})
	}
}

// statsHarness is a harness whose factory has defined metrics 1 (requests), 2 (latency) and
// 3 (batch sizes).
func statsHarness(t *testing.T, opts ...func(*edgeconfig.Config)) *harness {
	t.Helper()
	h := newHarness(t, 4096, opts...)
	ch := mocks.NewMockHttpFilterConfigHandle(h.ctrl)
	expectDefineStats(ch)
	h.filter = (&filterFactory{adm: h.adm, maxBody: 4096, stats: defineStats(ch), siteSecret: h.site}).Create(h.handle)
	for len(batchSizes) > 0 { // sizes left by other tests
		<-batchSizes
	}
	return h
}

func (h *harness) expectCount(outcome, reason string) {
	// A single-region edge: no home region.
	h.handle.EXPECT().IncrementCounterValue(shared.MetricID(1), uint64(1), outcome, reason, "").
		Times(1).Return(shared.MetricsSuccess)
	h.handle.EXPECT().RecordHistogramValue(shared.MetricID(2), gomock.Any()).Times(1).Return(shared.MetricsSuccess)
}

// Every reply is counted by outcome and reason, and its latency recorded.
func TestStatsRecorded(t *testing.T) {
	t.Run("accepted", func(t *testing.T) {
		h := statsHarness(t)
		h.expectCount(votefilter.OutcomeAccepted, "")
		tasks := h.expectSchedule()
		h.vote(t, voteJSON())
		task := waitTask(t, tasks)
		r := h.expectReply()
		task()
		if r.status != http.StatusOK {
			t.Errorf("status %d", r.status)
		}
	})
	t.Run("duplicate", func(t *testing.T) {
		h := statsHarness(t)
		h.gate.SetFinal(election, viewer, "earlier", time.Now())
		h.expectCount(votefilter.OutcomeDuplicate, "")
		tasks := h.expectSchedule()
		h.vote(t, voteJSON())
		task := waitTask(t, tasks)
		h.expectReply()
		task()
	})
	t.Run("jwt missing", func(t *testing.T) {
		h := statsHarness(t)
		h.expectCount(votefilter.OutcomeJWTRejected, "missing")
		tasks := h.expectSchedule()
		h.filter.OnRequestHeaders(headers(http.MethodPost, contract.PathVotes, "authorization", ""), false)
		h.filter.OnRequestBody(fake.NewFakeBodyBuffer([]byte(voteJSON())), true)
		task := waitTask(t, tasks)
		h.expectReply()
		task()
	})
	t.Run("captcha failed", func(t *testing.T) {
		h := statsHarness(t, withPoW)
		h.expectCount(votefilter.OutcomeCaptchaFailed, "pow")
		tasks := h.expectSchedule()
		h.vote(t, voteJSON())
		task := waitTask(t, tasks)
		h.expectReply()
		task()
	})
	t.Run("method not allowed, on the worker thread", func(t *testing.T) {
		h := statsHarness(t)
		h.expectCount(votefilter.OutcomeInvalid, "")
		h.expectReply()
		h.filter.OnRequestHeaders(headers(http.MethodGet, contract.PathVotes), true)
	})
	t.Run("challenge", func(t *testing.T) {
		h := statsHarness(t, withPoW)
		h.expectCount(votefilter.OutcomeAnswered, "")
		h.expectReply()
		h.filter.OnRequestHeaders(headers(http.MethodGet, contract.PathVoteChallenge), true)
	})
	t.Run("admin let through", func(t *testing.T) {
		h := statsHarness(t)
		h.expectCount(votefilter.OutcomeAnswered, "admin")
		tasks := h.expectSchedule()
		h.filter.OnRequestHeaders(headers(http.MethodGet, contract.PathAdmin+"elections", "authorization", "Bearer "+adminToken), true)
		task := waitTask(t, tasks)
		h.handle.EXPECT().ContinueRequest().Times(1)
		task()
	})
	t.Run("admin forbidden", func(t *testing.T) {
		h := statsHarness(t)
		h.expectCount(votefilter.OutcomeForbidden, "")
		tasks := h.expectSchedule()
		h.filter.OnRequestHeaders(headers(http.MethodGet, contract.PathAdmin+"elections"), true)
		task := waitTask(t, tasks)
		h.expectReply()
		task()
	})
	t.Run("status store failed", func(t *testing.T) {
		h := statsHarness(t)
		h.gate.LookupErr = errors.New("redis down")
		h.expectCount(votefilter.OutcomeStoreFailed, "")
		tasks := h.expectSchedule()
		h.filter.OnRequestHeaders(headers(http.MethodGet, statusURL(viewer)), true)
		task := waitTask(t, tasks)
		h.expectReply()
		task()
	})
}

// Batch sizes reported by the batchers' goroutines are recorded by the next reply.
func TestStatsDrainBatchSizes(t *testing.T) {
	h := statsHarness(t)
	reportBatch(7)
	reportBatch(10)
	h.expectCount(votefilter.OutcomeInvalid, "")
	h.handle.EXPECT().RecordHistogramValue(shared.MetricID(3), uint64(7)).Times(1).Return(shared.MetricsSuccess)
	h.handle.EXPECT().RecordHistogramValue(shared.MetricID(3), uint64(10)).Times(1).Return(shared.MetricsSuccess)
	h.expectReply()
	h.filter.OnRequestHeaders(headers(http.MethodPut, contract.PathVotes), false)
	if len(batchSizes) != 0 {
		t.Errorf("%d batch sizes left undrained", len(batchSizes))
	}
}

// The captcha provider failing is an outage, not a refused captcha: the viewer gets 503 and
// may retry, instead of 403 telling them their captcha failed.
func TestSiteverifyServiceErrorIs503(t *testing.T) {
	h := newHarness(t, 4096, withSiteverify)
	tasks := h.expectSchedule()
	h.vote(t, voteJSON())
	task := waitTask(t, tasks)
	c := h.expectCallout("turnstile", shared.HttpCalloutInitSuccess)
	r := h.expectReply()
	task()
	c.answer("503", `upstream connect error`)
	if r.status != http.StatusServiceUnavailable || r.header("retry-after") == "" {
		t.Errorf("siteverify answered 503: viewer got %d %s, want 503 with Retry-After", r.status, r.body)
	}
}

package envoymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go"
	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared"
	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared/fake"
	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared/mocks"
	"go.uber.org/mock/gomock"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter"
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/dedup/dedupfake"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/filters/votefilter/enqueue/enqueuefake"
	"github.com/tvvote/voting/filters/votefilter/secretfile"
)

const (
	election     = "3f1c2a9e-8b4d-4c6e-9f0a-1b2c3d4e5f60"
	candidate    = "a0b1c2d3-e4f5-4a6b-8c7d-8e9f0a1b2c3d"
	requestID    = "0b9c8d7e-6f5a-4b3c-8d2e-1f0a9b8c7d6e"
	goodToken    = "good-token"
	adminToken   = "admin-token"
	viewer       = "auth0|viewer-1"
	admin        = "auth0|admin-1"
	captchaToken = "03AGdBq27X8kJYZ9abcdefgh"
	defaultSrc   = "203.0.113.9:4711"
)

// verifier accepts goodToken (a viewer) and adminToken (an admin); while gate is non-nil it
// blocks until gate closes.
type verifier struct{ gate chan struct{} }

func (v *verifier) Verify(ctx context.Context, tok string) (auth.Principal, error) {
	if v.gate != nil {
		select {
		case <-v.gate:
		case <-ctx.Done():
			return auth.Principal{}, ctx.Err()
		}
	}
	switch tok {
	case goodToken:
		return auth.Principal{Subject: viewer, Permissions: []string{"vote"}}, nil
	case adminToken:
		return auth.Principal{Subject: admin, Permissions: []string{"vote", "admin:elections"}}, nil
	}
	return auth.Principal{}, errors.New("bad token")
}

type harness struct {
	ctrl   *gomock.Controller
	handle *mocks.MockHttpFilterHandle
	sched  *mocks.MockScheduler
	ver    *verifier
	gate   *dedupfake.Gate
	q      *enqueuefake.Queue
	adm    *votefilter.Admitter
	filter shared.HttpFilter
	// site is the siteverify secret file, in siteverify mode.
	site *secretfile.File

	mu      sync.Mutex
	srcAddr string // the downstream address Envoy reports; "" for none
}

func testConfig(maxBody int) *edgeconfig.Config {
	now := time.Now().UTC()
	return &edgeconfig.Config{
		Region: "eu-west-1",
		JWT:    edgeconfig.JWTConfig{PermissionsClaim: "permissions", AdminPermission: "admin:elections"},
		Elections: []edgeconfig.Election{{ID: election, Status: "ACTIVE", StartDate: now.Add(-time.Hour),
			EndDate: now.Add(time.Hour), CandidateIDs: []string{candidate}}},
		EnqueueTimeoutMs: 5000,
		MaxBodyBytes:     maxBody,
		Captcha:          edgeconfig.CaptchaConfig{Mode: "off"},
	}
}

// newHarness builds a filter on cfg (testConfig(maxBody) edited by opts) without stats.
func newHarness(t *testing.T, maxBody int, opts ...func(*edgeconfig.Config)) *harness {
	t.Helper()
	cfg := testConfig(maxBody)
	for _, o := range opts {
		o(cfg)
	}
	h := &harness{ctrl: gomock.NewController(t), ver: &verifier{}, gate: dedupfake.New(time.Now(), dedup.Options{}), q: &enqueuefake.Queue{}, srcAddr: defaultSrc}
	adm, err := votefilter.NewAdmitter(cfg, h.ver, h.gate, h.q, captcha.StaticKey(powSecret))
	if err != nil {
		t.Fatalf("NewAdmitter: %v", err)
	}
	if cfg.Captcha.Mode == edgeconfig.CaptchaSiteverify {
		h.site = secretFile(t, siteSecret)
	}
	adm.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	h.adm = adm
	h.handle = mocks.NewMockHttpFilterHandle(h.ctrl)
	h.sched = mocks.NewMockScheduler(h.ctrl)
	h.handle.EXPECT().GetAttributeString(shared.AttributeIDSourceAddress).AnyTimes().
		DoAndReturn(func(shared.AttributeID) (shared.UnsafeEnvoyBuffer, bool) {
			h.mu.Lock()
			defer h.mu.Unlock()
			return buf(h.srcAddr), h.srcAddr != ""
		})
	h.filter = (&filterFactory{adm: adm, maxBody: maxBody, siteSecret: h.site}).Create(h.handle)
	return h
}

// The secrets of the tests, and a file holding one, as the control plane's config names it.
const (
	powSecret  = "0123456789abcdef-test"
	siteSecret = "sv-secret-of-the-tests"
)

func secretFile(t *testing.T, secret string) *secretfile.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := secretfile.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// buf is Envoy-owned memory as the SDK hands it over.
func buf(s string) shared.UnsafeEnvoyBuffer {
	if s == "" {
		return shared.UnsafeEnvoyBuffer{}
	}
	b := []byte(s)
	return shared.UnsafeEnvoyBuffer{Ptr: &b[0], Len: uint64(len(b))}
}

func headers(method, path string, extra ...string) *fake.FakeHeaderMap {
	m := map[string][]string{
		":method": {method}, ":path": {path}, ":authority": {"vote.test"},
		"authorization": {"Bearer " + goodToken}, "content-type": {"application/json"}, "x-request-id": {requestID},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "" {
			delete(m, extra[i])
		} else {
			m[extra[i]] = []string{extra[i+1]}
		}
	}
	return fake.NewFakeHeaderMap(m)
}

func voteJSON() string { return voteJSONWith(captchaToken) }

func voteJSONWith(captcha string) string {
	return `{"electionId":"` + election + `","candidateId":"` + candidate + `","captchaToken":"` + captcha + `"}`
}

// reply is one SendLocalResponse call.
type reply struct {
	status  uint32
	headers [][2]string
	body    []byte
	detail  string
}

func (r reply) header(name string) string {
	for _, h := range r.headers {
		if strings.EqualFold(h[0], name) {
			return h[1]
		}
	}
	return ""
}

func (r reply) errorBody(t *testing.T) contract.ErrorResponse {
	t.Helper()
	var er contract.ErrorResponse
	dec := json.NewDecoder(strings.NewReader(string(r.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&er); err != nil {
		t.Fatalf("local reply body %q is not an ErrorResponse: %v", r.body, err)
	}
	return er
}

// expectReply records exactly one SendLocalResponse.
func (h *harness) expectReply() *reply {
	r := &reply{}
	h.handle.EXPECT().SendLocalResponse(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).Times(1).
		Do(func(status uint32, hs [][2]string, body []byte, detail string) {
			*r = reply{status, hs, append([]byte(nil), body...), detail}
		})
	return r
}

// expectSchedule wires GetScheduler and hands every scheduled task to the returned channel.
func (h *harness) expectSchedule() chan func() { return h.expectScheduler(1, 1) }

// expectScheduler expects gets GetScheduler calls and schedules Schedule calls.
func (h *harness) expectScheduler(gets, schedules int) chan func() {
	tasks := make(chan func(), schedules+1)
	h.handle.EXPECT().GetScheduler().Return(h.sched).Times(gets)
	h.sched.EXPECT().Schedule(gomock.Any()).Times(schedules).Do(func(f func()) { tasks <- f })
	return tasks
}

func waitTask(t *testing.T, tasks chan func()) func() {
	t.Helper()
	select {
	case f := <-tasks:
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("the admission never scheduled its reply")
		return nil
	}
}

// callout is one HttpCallout the filter started.
type callout struct {
	cluster string
	headers [][2]string
	body    []byte
	timeout uint64
	cb      shared.HttpCalloutCallback
}

func (c callout) header(name string) string {
	for _, h := range c.headers {
		if h[0] == name {
			return h[1]
		}
	}
	return ""
}

// answer delivers the callout's response as Envoy does, on the worker thread.
func (c callout) answer(status, body string) {
	c.cb.OnHttpCalloutDone(7, shared.HttpCalloutSuccess,
		[][2]shared.UnsafeEnvoyBuffer{{buf(":status"), buf(status)}, {buf("content-type"), buf("application/json")}},
		[]shared.UnsafeEnvoyBuffer{buf(body)})
}

// expectCallout records one HttpCallout to cluster and answers its start with res.
func (h *harness) expectCallout(cluster string, res shared.HttpCalloutInitResult) *callout {
	c := &callout{}
	h.handle.EXPECT().HttpCallout(cluster, gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).Times(1).
		DoAndReturn(func(cl string, hs [][2]string, body []byte, timeout uint64, cb shared.HttpCalloutCallback) (shared.HttpCalloutInitResult, uint64) {
			*c = callout{cl, hs, append([]byte(nil), body...), timeout, cb}
			return res, 7
		})
	return c
}

func TestRegistered(t *testing.T) {
	if sdk.GetHttpFilterConfigFactory(edgeconfig.FilterName) == nil {
		t.Fatalf("no config factory registered as %q", edgeconfig.FilterName)
	}
}

func TestOtherPathsPassThrough(t *testing.T) {
	// Admin and status routes are the filter's own now (see their tests); these are not.
	for _, p := range []string{"/api/v1/results/" + election, "/api/v1/votes/", "/api/v1/voteszzz", "/", "/API/V1/VOTES",
		"/api/v1/votes/status", "/api/v1/admin", "/api/v1/votes/challenge/x", "/api/v1/results/live?x=/api/v1/votes"} {
		t.Run(p, func(t *testing.T) {
			h := newHarness(t, 4096)
			// No EXPECT on the handle: any local reply or scheduler use fails the test.
			if st := h.filter.OnRequestHeaders(headers(http.MethodPost, p), false); st != shared.HeadersStatusContinue {
				t.Errorf("OnRequestHeaders = %v, want Continue", st)
			}
			if st := h.filter.OnRequestBody(fake.NewFakeBodyBuffer([]byte(voteJSON())), true); st != shared.BodyStatusContinue {
				t.Errorf("OnRequestBody = %v, want Continue", st)
			}
			if st := h.filter.OnRequestTrailers(fake.NewFakeHeaderMap(nil)); st != shared.TrailersStatusContinue {
				t.Errorf("OnRequestTrailers = %v, want Continue", st)
			}
			if len(h.q.Votes()) != 0 {
				t.Error("a request to another path was enqueued")
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, "post"} {
		t.Run(m, func(t *testing.T) {
			h := newHarness(t, 4096)
			r := h.expectReply()
			if st := h.filter.OnRequestHeaders(headers(m, "/api/v1/votes"), m == http.MethodGet); st != shared.HeadersStatusStop {
				t.Errorf("OnRequestHeaders = %v, want Stop", st)
			}
			if r.status != http.StatusMethodNotAllowed {
				t.Fatalf("local reply status = %d, want 405", r.status)
			}
			er := r.errorBody(t)
			if er.Code != contract.CodeMethodNotAllowed || er.TraceID != requestID || er.Message == "" {
				t.Errorf("error body = %+v, want METHOD_NOT_ALLOWED with traceId %s", er, requestID)
			}
			if ct := r.header("content-type"); ct != "application/json" {
				t.Errorf("content-type = %q", ct)
			}
			if r.detail != "votefilter" {
				t.Errorf("details = %q, want votefilter", r.detail)
			}
			// A body after the reply is swallowed and never admitted.
			if m != http.MethodGet {
				if st := h.filter.OnRequestBody(fake.NewFakeBodyBuffer([]byte(voteJSON())), true); st != shared.BodyStatusStopNoBuffer {
					t.Errorf("OnRequestBody after the reply = %v, want StopNoBuffer", st)
				}
			}
			time.Sleep(20 * time.Millisecond)
			if len(h.q.Votes()) != 0 {
				t.Error("a non-POST vote was enqueued")
			}
		})
	}
}

// Guarantee 3: the body is accumulated across chunks, the admission runs on a goroutine while
// the worker thread is free, and the reply comes back through the stream's scheduler.
func TestVoteInTwoChunks(t *testing.T) {
	h := newHarness(t, 4096)
	h.ver.gate = make(chan struct{}) // hold the admission inside "JWT verification"

	if st := h.filter.OnRequestHeaders(headers(http.MethodPost, "/api/v1/votes?src=app"), false); st != shared.HeadersStatusStop {
		t.Fatalf("OnRequestHeaders = %v, want Stop", st)
	}
	body := voteJSON()
	first := []byte(body[:30])
	if st := h.filter.OnRequestBody(fake.NewFakeBodyBuffer(first), false); st != shared.BodyStatusStopNoBuffer {
		t.Fatalf("first chunk: %v, want StopNoBuffer", st)
	}
	// Envoy owns chunk memory and reuses it once the callback returned.
	for i := range first {
		first[i] = 'X'
	}

	tasks := h.expectSchedule()
	returned := make(chan shared.BodyStatus, 1)
	go func() { returned <- h.filter.OnRequestBody(fake.NewFakeBodyBuffer([]byte(body[30:])), true) }()
	select {
	case st := <-returned:
		if st != shared.BodyStatusStopNoBuffer {
			t.Fatalf("last chunk: %v, want StopNoBuffer", st)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("OnRequestBody blocked on the admission: the Envoy worker thread would stall")
	}
	select {
	case <-tasks:
		t.Fatal("reply scheduled while the admission was still blocked")
	case <-time.After(20 * time.Millisecond):
	}
	close(h.ver.gate)

	task := waitTask(t, tasks)
	r := h.expectReply()
	task() // Envoy runs the task on the worker thread
	if r.status != http.StatusOK {
		t.Fatalf("reply status = %d body %s, want 200", r.status, r.body)
	}
	var res contract.VoteResult
	if err := json.Unmarshal(r.body, &res); err != nil || res.Status != "accepted" || len(res.VoteID) != 36 || res.AcceptedAt.IsZero() {
		t.Fatalf("reply body %s is not an accepted VoteResult (%v)", r.body, err)
	}
	votes := h.q.Votes()
	if len(votes) != 1 {
		t.Fatalf("%d votes enqueued, want 1", len(votes))
	}
	v := votes[0]
	if v.VoteID != res.VoteID || v.ElectionID != election || v.CandidateID != candidate || v.UserID != viewer ||
		v.RequestID != requestID || v.Region != "eu-west-1" {
		t.Errorf("queued %+v does not match the request (voteId %s)", v, res.VoteID)
	}
	if r.header("content-type") != "application/json" || r.detail != "votefilter" {
		t.Errorf("reply headers %v detail %q", r.headers, r.detail)
	}
}

// A rejection from the admission also travels through the scheduler, with its headers.
func TestRejectionThroughScheduler(t *testing.T) {
	h := newHarness(t, 4096)
	h.filter.OnRequestHeaders(headers(http.MethodPost, "/api/v1/votes", "authorization", ""), false)
	tasks := h.expectSchedule()
	h.filter.OnRequestBody(fake.NewFakeBodyBuffer([]byte(voteJSON())), true)
	task := waitTask(t, tasks)
	r := h.expectReply()
	task()
	if r.status != http.StatusUnauthorized {
		t.Fatalf("status = %d, want 401", r.status)
	}
	if er := r.errorBody(t); er.Code != contract.CodeUnauthorized || er.TraceID != requestID {
		t.Errorf("error = %+v", er)
	}
	if ch := r.header("www-authenticate"); !strings.HasPrefix(ch, "Bearer") {
		t.Errorf("www-authenticate = %q", ch)
	}
	if len(h.q.Votes()) != 0 {
		t.Error("rejected vote enqueued")
	}
}

// A POST without a body (end of stream on the headers) is admitted at once: 400.
func TestHeadersOnlyPost(t *testing.T) {
	h := newHarness(t, 4096)
	tasks := h.expectSchedule()
	if st := h.filter.OnRequestHeaders(headers(http.MethodPost, "/api/v1/votes"), true); st != shared.HeadersStatusStop {
		t.Fatalf("OnRequestHeaders = %v, want Stop", st)
	}
	task := waitTask(t, tasks)
	r := h.expectReply()
	task()
	if r.status != http.StatusBadRequest || r.errorBody(t).Code != contract.CodeInvalidRequest {
		t.Errorf("reply %d %s, want 400 INVALID_REQUEST", r.status, r.body)
	}
}

// Trailers end the stream too: the body seen so far is admitted.
func TestTrailersEndTheVote(t *testing.T) {
	h := newHarness(t, 4096)
	h.filter.OnRequestHeaders(headers(http.MethodPost, "/api/v1/votes"), false)
	h.filter.OnRequestBody(fake.NewFakeBodyBuffer([]byte(voteJSON())), false)
	tasks := h.expectSchedule()
	if st := h.filter.OnRequestTrailers(fake.NewFakeHeaderMap(map[string][]string{"x-t": {"1"}})); st != shared.TrailersStatusStop {
		t.Fatalf("OnRequestTrailers = %v, want Stop", st)
	}
	task := waitTask(t, tasks)
	r := h.expectReply()
	task()
	if r.status != http.StatusOK || len(h.q.Votes()) != 1 {
		t.Errorf("reply %d %s, %d enqueued; want 200 and 1", r.status, r.body, len(h.q.Votes()))
	}
}

func TestBodyOverLimit(t *testing.T) {
	h := newHarness(t, 64)
	h.filter.OnRequestHeaders(headers(http.MethodPost, "/api/v1/votes"), false)
	if st := h.filter.OnRequestBody(fake.NewFakeBodyBuffer([]byte(strings.Repeat("a", 40))), false); st != shared.BodyStatusStopNoBuffer {
		t.Fatalf("first chunk: %v", st)
	}
	r := h.expectReply()
	// 80 bytes in total: refused synchronously, before the end of the stream and without the
	// scheduler (no GetScheduler expectation).
	if st := h.filter.OnRequestBody(fake.NewFakeBodyBuffer([]byte(strings.Repeat("b", 40))), false); st != shared.BodyStatusStopNoBuffer {
		t.Fatalf("second chunk: %v", st)
	}
	if r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d, want 413", r.status)
	}
	if er := r.errorBody(t); er.Code != contract.CodePayloadTooLarge || er.TraceID != requestID {
		t.Errorf("error = %+v", er)
	}
	// The rest of the stream is swallowed: no second reply, no admission.
	if st := h.filter.OnRequestBody(fake.NewFakeBodyBuffer([]byte("c")), true); st != shared.BodyStatusStopNoBuffer {
		t.Errorf("chunk after the reply: %v", st)
	}
	if st := h.filter.OnRequestTrailers(fake.NewFakeHeaderMap(nil)); st != shared.TrailersStatusStop {
		t.Errorf("trailers after the reply: %v", st)
	}
	time.Sleep(20 * time.Millisecond)
	if len(h.q.Votes()) != 0 {
		t.Error("oversized vote enqueued")
	}
}

// A body of exactly maxBody bytes is admitted.
func TestBodyAtLimit(t *testing.T) {
	body := voteJSON()
	h := newHarness(t, len(body))
	h.filter.OnRequestHeaders(headers(http.MethodPost, "/api/v1/votes"), false)
	tasks := h.expectSchedule()
	h.filter.OnRequestBody(fake.NewFakeBodyBuffer([]byte(body)), true)
	task := waitTask(t, tasks)
	r := h.expectReply()
	task()
	if r.status != http.StatusOK {
		t.Errorf("status = %d %s, want 200", r.status, r.body)
	}
}

// expectDefineStats expects one config push's metric definitions and returns ids 1, 2, 3.
func expectDefineStats(ch *mocks.MockHttpFilterConfigHandle) {
	ch.EXPECT().DefineCounter("votefilter_requests", "outcome", "reason", "home_region").Times(1).Return(shared.MetricID(1), shared.MetricsSuccess)
	ch.EXPECT().DefineHistogram("votefilter_admission_latency_ms").Times(1).Return(shared.MetricID(2), shared.MetricsSuccess)
	ch.EXPECT().DefineHistogram("votefilter_enqueue_batch_size").Times(1).Return(shared.MetricID(3), shared.MetricsSuccess)
}

// goodConfigJSON names its pow secret file SECRET_FILE, replaced by goodConfig.
const goodConfigJSON = `{"region":"eu-west-1","maxBodyBytes":512,
	  "jwt":{"issuer":"https://idp.test/","audience":"votes","jwksUrl":"http://127.0.0.1:1/jwks"},
	  "redis":{"addr":"127.0.0.1:1"},
	  "captcha":{"mode":"pow","pow":{"secretFile":"SECRET_FILE"}},
	  "sqs":{"queueUrl":"http://127.0.0.1:1/000000000000/votes","region":"elasticmq","endpoint":"http://127.0.0.1:1","staticCredentials":true},
	  "elections":[]}`

func TestConfigFactory(t *testing.T) {
	ctrl := gomock.NewController(t)
	ch := mocks.NewMockHttpFilterConfigHandle(ctrl)
	cf := sdk.GetHttpFilterConfigFactory(edgeconfig.FilterName)
	if cf == nil {
		t.Fatal("not registered")
	}

	// A bad config is refused (Envoy NACKs it) and logged as an error; it defines no metrics.
	ch.EXPECT().Log(shared.LogLevelError, gomock.Any(), gomock.Any()).Times(1)
	if ff, err := cf.Create(ch, []byte(`{"region":"eu-west-1","bogus":1}`)); err == nil || ff != nil {
		t.Fatalf("bad config: factory %v, error %v; want an error", ff, err)
	}
	// A config that parses but fails validation likewise (pow without its secret).
	ch.EXPECT().Log(shared.LogLevelError, gomock.Any(), gomock.Any()).Times(1)
	noSecret := strings.Replace(goodConfigJSON, `"captcha":{"mode":"pow","pow":{"secretFile":"SECRET_FILE"}},`, ``, 1)
	if ff, err := cf.Create(ch, []byte(noSecret)); err == nil || ff != nil {
		t.Fatalf("config without a pow secret: factory %v, error %v; want an error", ff, err)
	}
	// And one whose secret file cannot be read: the error names the file, never a secret.
	dir := t.TempDir()
	ch.EXPECT().Log(shared.LogLevelError, gomock.Any(), gomock.Any()).Times(1)
	missing := strings.Replace(goodConfigJSON, "SECRET_FILE", filepath.Join(dir, "missing"), 1)
	if ff, err := cf.Create(ch, []byte(missing)); err == nil || ff != nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("config with a missing secret file: factory %v, error %v; want an error", ff, err)
	}
	path := filepath.Join(dir, "pow")
	if err := os.WriteFile(path, []byte(powSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	goodConfig := strings.Replace(goodConfigJSON, "SECRET_FILE", path, 1)

	// A good config builds a factory with the configured body limit and its metrics. Nothing
	// here dials out: the Redis pool connects lazily, the JWKS loads in the background.
	ch.EXPECT().Log(shared.LogLevelInfo, gomock.Any(), gomock.Any()).Times(1)
	expectDefineStats(ch)
	ff, err := cf.Create(ch, []byte(goodConfig))
	if err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	f, ok := ff.(*filterFactory)
	if !ok || f.adm == nil || f.maxBody != 512 {
		t.Fatalf("factory = %#v, want a filterFactory with maxBody 512", ff)
	}
	if !f.stats.ok || f.stats.requests != 1 || f.stats.latencyMs != 2 || f.stats.batchSize != 3 {
		t.Errorf("stats = %+v, want the three defined metrics", f.stats)
	}
	if c := f.adm.Config(); c.Captcha.Mode != "pow" || c.Captcha.PoW.Difficulty != 16 {
		t.Errorf("admitter config captcha = %+v", c.Captcha)
	}
	// A second push of the same endpoints defines its metrics again (a new config has a new
	// stats scope); the clients are the process-wide ones (edgeruntime).
	ch.EXPECT().Log(shared.LogLevelInfo, gomock.Any(), gomock.Any()).Times(1)
	expectDefineStats(ch)
	if _, err := cf.Create(ch, []byte(goodConfig)); err != nil {
		t.Fatal(err)
	}
	// Captcha off is loud.
	ch.EXPECT().Log(shared.LogLevelCritical, gomock.Any(), gomock.Any()).Times(1)
	ch.EXPECT().Log(shared.LogLevelInfo, gomock.Any(), gomock.Any()).Times(1)
	expectDefineStats(ch)
	off := strings.Replace(goodConfigJSON, `"captcha":{"mode":"pow","pow":{"secretFile":"SECRET_FILE"}},`, `"captcha":{"mode":"off"},`, 1)
	if _, err := cf.Create(ch, []byte(off)); err != nil {
		t.Fatal(err)
	}
}

// Metrics that cannot be defined switch recording off instead of breaking the filter.
func TestDefineStatsFailure(t *testing.T) {
	ch := mocks.NewMockHttpFilterConfigHandle(gomock.NewController(t))
	ch.EXPECT().DefineCounter(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).Return(shared.MetricID(0), shared.MetricsFrozen)
	ch.EXPECT().DefineHistogram(gomock.Any()).Times(2).Return(shared.MetricID(2), shared.MetricsSuccess)
	if s := defineStats(ch); s.ok {
		t.Errorf("stats %+v usable although the counter was not defined", s)
	}
}

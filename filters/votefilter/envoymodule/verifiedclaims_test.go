package envoymodule

import (
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	sdk "github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go"
	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared"
	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared/fake"
	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared/mocks"
	"go.uber.org/mock/gomock"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/dedup/dedupfake"
	"github.com/tvvote/voting/filters/votefilter/enqueue/enqueuefake"
)

// newVerifiedClaimsHarness is the benchmark variant on the test's fakes, Envoy's dynamic
// metadata holding sub (none when "").
func newVerifiedClaimsHarness(t *testing.T, sub string) *harness {
	t.Helper()
	h := &harness{ctrl: gomock.NewController(t), gate: dedupfake.New(time.Now(), dedup.Options{}), q: &enqueuefake.Queue{}}
	adm, err := votefilter.NewAdmitter(testConfig(4096), verifiedSubject{}, h.gate, h.q, nil)
	if err != nil {
		t.Fatal(err)
	}
	adm.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	h.adm = adm
	h.handle = mocks.NewMockHttpFilterHandle(h.ctrl)
	h.sched = mocks.NewMockScheduler(h.ctrl)
	h.handle.EXPECT().GetAttributeString(shared.AttributeIDSourceAddress).AnyTimes().Return(buf(defaultSrc), true)
	h.handle.EXPECT().GetMetadataString(shared.MetadataSourceTypeDynamic, VerifiedSubjectNamespace, VerifiedSubjectKey).
		Return(buf(sub), sub != "")
	h.filter = verifiedClaimsFactory{&filterFactory{adm: adm, maxBody: 4096}}.Create(h.handle)
	return h
}

func (h *harness) voteWith(t *testing.T, hs shared.HeaderMap) *reply {
	t.Helper()
	h.filter.OnRequestHeaders(hs, false)
	tasks := h.expectSchedule()
	h.filter.OnRequestBody(fake.NewFakeBodyBuffer([]byte(voteJSON())), true)
	task := waitTask(t, tasks)
	r := h.expectReply()
	task()
	return r
}

// The viewer is the subject Envoy verified, whatever Authorization header the client sent.
func TestVerifiedClaimsTakeTheViewerFromMetadata(t *testing.T) {
	h := newVerifiedClaimsHarness(t, "auth0|verified")
	r := h.voteWith(t, headers(http.MethodPost, "/api/v1/votes", "authorization", "Bearer auth0|someone-else"))
	if r.status != http.StatusOK {
		t.Fatalf("status = %d body %s, want 200", r.status, r.body)
	}
	if v := h.q.Votes(); len(v) != 1 || v[0].UserID != "auth0|verified" {
		t.Fatalf("queued %+v, want one vote of auth0|verified", v)
	}
}

// Without a verified subject the client's own header is not trusted: 401, nothing queued.
func TestVerifiedClaimsWithoutMetadata(t *testing.T) {
	h := newVerifiedClaimsHarness(t, "")
	r := h.voteWith(t, headers(http.MethodPost, "/api/v1/votes", "authorization", "Bearer auth0|someone-else"))
	if r.status != http.StatusUnauthorized || r.errorBody(t).Code != contract.CodeUnauthorized {
		t.Fatalf("reply %d %s, want 401 UNAUTHORIZED", r.status, r.body)
	}
	if len(h.q.Votes()) != 0 {
		t.Error("a vote without a verified subject was queued")
	}
}

func TestVerifiedClaimsRegistered(t *testing.T) {
	if sdk.GetHttpFilterConfigFactory(VerifiedClaimsFilterName) == nil {
		t.Fatalf("no config factory registered as %q", VerifiedClaimsFilterName)
	}
}

package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	dynmodulesfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_modules/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/snapshot"
)

var start = time.Date(2026, 11, 28, 20, 0, 0, 0, time.UTC)

func election(id string) edgeconfig.Election {
	return edgeconfig.Election{
		ID: id, Status: "ACTIVE", StartDate: start, EndDate: start.Add(time.Hour),
		CandidateIDs: []string{"aaaaaaaa-0000-4000-8000-000000000001"},
	}
}

var (
	one = election("11111111-1111-4111-8111-111111111111")
	two = election("22222222-2222-4222-8222-222222222222")
)

func newControlPlane(t *testing.T) *ControlPlane {
	t.Helper()
	b, err := snapshot.NewBuilder(snapshot.Settings{
		ListenerPort: 8080,
		ResultsAddr:  "127.0.0.1:8082",
		Filter: edgeconfig.Config{
			JWT:     edgeconfig.JWTConfig{Issuer: "https://idp.test/", Audience: "votes", JWKSURL: "http://127.0.0.1:1/jwks"},
			Captcha: edgeconfig.CaptchaConfig{Mode: "pow", PoW: edgeconfig.PoWConfig{SecretFile: "/run/secrets/pow"}},
			Redis:   edgeconfig.RedisConfig{Addr: "127.0.0.1:6379"},
			SQS:     edgeconfig.SQSConfig{QueueURL: "http://127.0.0.1:9324/q/votes", Region: "eu-west-1"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return New(b, slog.New(slog.NewJSONHandler(io.Discard, nil)), prometheus.NewRegistry())
}

func request(nodeID string, n *core.Node) *discovery.DiscoveryRequest {
	if n == nil {
		n = &core.Node{}
	}
	n.Id = nodeID
	return &discovery.DiscoveryRequest{Node: n, TypeUrl: resource.ListenerType}
}

func withRegion(region string) *core.Node {
	return &core.Node{Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{"region": structpb.NewStringValue(region)}}}
}

// filterConfig digs the votefilter config out of the ECDS resource the cache holds for nodeID.
func filterConfig(t *testing.T, cp *ControlPlane, nodeID string) (string, *edgeconfig.Config) {
	t.Helper()
	snap, err := cp.Cache().GetSnapshot(nodeID)
	if err != nil {
		t.Fatalf("no snapshot for %s: %v", nodeID, err)
	}
	ext := snap.GetResources(resource.ExtensionConfigType)[snapshot.VoteFilterName].(*core.TypedExtensionConfig)
	var dm dynmodulesfilter.DynamicModuleFilter
	if err := ext.GetTypedConfig().UnmarshalTo(&dm); err != nil {
		t.Fatal(err)
	}
	var raw wrapperspb.StringValue
	if err := dm.GetFilterConfig().UnmarshalTo(&raw); err != nil {
		t.Fatal(err)
	}
	cfg, err := edgeconfig.Parse([]byte(raw.GetValue()))
	if err != nil {
		t.Fatal(err)
	}
	return snap.GetVersion(resource.ExtensionConfigType), cfg
}

func state(elections ...edgeconfig.Election) snapshot.State {
	return snapshot.State{Elections: elections}
}

func TestPublishOnlyWhenContentChanges(t *testing.T) {
	cp := newControlPlane(t)
	ctx := context.Background()
	steps := []struct {
		elections []edgeconfig.Election
		changed   bool
		version   uint64
	}{
		{[]edgeconfig.Election{one}, true, 1},
		{[]edgeconfig.Election{election(one.ID)}, false, 1}, // equal content, new slice
		{[]edgeconfig.Election{one, two}, true, 2},
		{nil, true, 3},
		{[]edgeconfig.Election{}, false, 3}, // the edge sees [] for both
	}
	for i, s := range steps {
		changed, err := cp.Publish(ctx, state(s.elections...))
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if changed != s.changed || cp.Version() != s.version {
			t.Fatalf("step %d: changed %v version %d, want %v %d", i, changed, cp.Version(), s.changed, s.version)
		}
	}
	if got := testutil.ToFloat64(cp.metrics.version); got != 3 {
		t.Fatalf("version gauge = %v", got)
	}
}

func TestRejectedElectionsKeepTheLastGoodSnapshot(t *testing.T) {
	cp := newControlPlane(t)
	ctx := context.Background()
	if err := cp.onRequest(1, request("edge-1", withRegion("eu"))); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Publish(ctx, state(one)); err != nil {
		t.Fatal(err)
	}
	bad := election("not-a-uuid")
	if _, err := cp.Publish(ctx, state(bad)); err == nil {
		t.Fatal("published elections the filter would reject")
	}
	version, cfg := filterConfig(t, cp, "edge-1")
	if version != "1" || len(cfg.Elections) != 1 || cfg.Elections[0].ID != one.ID || cp.Version() != 1 {
		t.Fatalf("version %s, elections %+v", version, cfg.Elections)
	}
}

func TestNodesGetSnapshotsForTheirRegion(t *testing.T) {
	cp := newControlPlane(t)
	ctx := context.Background()

	// Before the first load a node must get nothing, not an empty election list.
	if err := cp.onRequest(1, request("edge-eu", withRegion("eu-west"))); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Cache().GetSnapshot("edge-eu"); err == nil {
		t.Fatal("snapshot set before elections were loaded")
	}
	if _, err := cp.Publish(ctx, state(one)); err != nil {
		t.Fatal(err)
	}
	if v, cfg := filterConfig(t, cp, "edge-eu"); v != "1" || cfg.Region != "eu-west" {
		t.Fatalf("edge-eu: version %s region %s", v, cfg.Region)
	}

	// After the load a new node is served on its first request; region falls back to locality,
	// then to "local".
	if err := cp.onRequest(2, request("edge-us", &core.Node{Locality: &core.Locality{Region: "us-east"}})); err != nil {
		t.Fatal(err)
	}
	if err := cp.onRequest(3, request("edge-x", nil)); err != nil {
		t.Fatal(err)
	}
	if _, cfg := filterConfig(t, cp, "edge-us"); cfg.Region != "us-east" {
		t.Fatalf("edge-us region %s", cfg.Region)
	}
	if _, cfg := filterConfig(t, cp, "edge-x"); cfg.Region != DefaultRegion {
		t.Fatalf("edge-x region %s", cfg.Region)
	}

	// A change reaches every node with the next version.
	if _, err := cp.Publish(ctx, state(one, two)); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"edge-eu", "edge-us", "edge-x"} {
		if v, cfg := filterConfig(t, cp, id); v != "2" || len(cfg.Elections) != 2 {
			t.Fatalf("%s: version %s, %d elections", id, v, len(cfg.Elections))
		}
	}

	// Further requests on a stream count nothing new; closing the last stream forgets the node.
	if err := cp.onRequest(1, request("edge-eu", nil)); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(cp.metrics.streams.WithLabelValues("eu-west")); got != 1 {
		t.Fatalf("eu-west streams = %v", got)
	}
	cp.onClosed(1, nil)
	if got := testutil.ToFloat64(cp.metrics.streams.WithLabelValues("eu-west")); got != 0 {
		t.Fatalf("eu-west streams after close = %v", got)
	}
	if _, err := cp.Cache().GetSnapshot("edge-eu"); err == nil {
		t.Fatal("snapshot of a gone node kept")
	}
	if _, err := cp.Cache().GetSnapshot("edge-us"); err != nil {
		t.Fatal("other node lost its snapshot")
	}
}

func TestNodeWithoutIDIsRefused(t *testing.T) {
	cp := newControlPlane(t)
	if err := cp.onRequest(1, request("", nil)); err == nil {
		t.Fatal("accepted a node without id")
	}
}

func TestNACKsAreCounted(t *testing.T) {
	cp := newControlPlane(t)
	req := request("edge-1", nil)
	req.ErrorDetail = &status.Status{Code: 3, Message: "boom"}
	if err := cp.onRequest(1, req); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(cp.metrics.nacks.WithLabelValues(resource.ListenerType, DefaultRegion)); got != 1 {
		t.Fatalf("nacks = %v", got)
	}
}

// flakySource serves its answers in turn and repeats the last.
type flakySource struct {
	mu      sync.Mutex
	answers []func() ([]edgeconfig.Election, error)
	calls   int
}

func (f *flakySource) Load(context.Context) (snapshot.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.answers[min(f.calls, len(f.answers)-1)]
	f.calls++
	es, err := a()
	return state(es...), err
}

func TestRunReloadsOnChangeAndSurvivesLoadErrors(t *testing.T) {
	cp := newControlPlane(t)
	src := &flakySource{answers: []func() ([]edgeconfig.Election, error){
		func() ([]edgeconfig.Election, error) { return []edgeconfig.Election{one}, nil },
		func() ([]edgeconfig.Election, error) { return nil, errors.New("database down") },
		func() ([]edgeconfig.Election, error) { return []edgeconfig.Election{one, two}, nil },
	}}
	changes := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cp.Run(ctx, src, changes, time.Hour) }()
	defer func() { cancel(); <-done }()

	waitFor(t, func() bool { return cp.Version() == 1 })
	changes <- struct{}{} // load fails: version stays
	waitFor(t, func() bool { return testutil.ToFloat64(cp.metrics.reloadErrors) == 1 })
	if cp.Version() != 1 {
		t.Fatalf("version %d after a failed load", cp.Version())
	}
	changes <- struct{}{}
	waitFor(t, func() bool { return cp.Version() == 2 })
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNACKedVersionIsNotResent(t *testing.T) {
	cp := newControlPlane(t)
	if _, err := cp.Publish(context.Background(), state(one)); err != nil {
		t.Fatal(err)
	}
	if err := cp.onRequest(1, request("edge-1", nil)); err != nil {
		t.Fatal(err)
	}
	cp.onResponse(context.Background(), 1, nil, &discovery.DiscoveryResponse{TypeUrl: resource.ListenerType, VersionInfo: "1", Nonce: "5"})
	req := request("edge-1", nil)
	req.ResponseNonce, req.VersionInfo = "5", ""
	req.ErrorDetail = &status.Status{Code: 13, Message: "module missing"}
	if err := cp.onRequest(1, req); err != nil {
		t.Fatal(err)
	}
	// The cache now sees version 1 as known and waits for a newer one.
	if req.GetVersionInfo() != "1" {
		t.Fatalf("request version = %q, want the rejected 1", req.GetVersionInfo())
	}

	// A NACK of an older response (stale nonce) leaves the request alone.
	stale := request("edge-1", nil)
	stale.ResponseNonce = "4"
	stale.ErrorDetail = &status.Status{Code: 13}
	if err := cp.onRequest(1, stale); err != nil {
		t.Fatal(err)
	}
	if stale.GetVersionInfo() != "" {
		t.Fatalf("stale NACK rewritten to %q", stale.GetVersionInfo())
	}
}

func withMetadata(fields map[string]*structpb.Value) *core.Node {
	return &core.Node{Metadata: &structpb.Struct{Fields: fields}}
}

func TestListenerPortFromMetadata(t *testing.T) {
	for name, c := range map[string]struct {
		v    *structpb.Value
		port int
		ok   bool
	}{
		"number": {structpb.NewNumberValue(18080), 18080, true},
		"string": {structpb.NewStringValue("18081"), 18081, true},
		"zero":   {structpb.NewNumberValue(0), 0, false},
		"text":   {structpb.NewStringValue("http"), 0, false},
	} {
		p, err := ListenerPort(withMetadata(map[string]*structpb.Value{"listener_port": c.v}))
		if (err == nil) != c.ok || p != c.port {
			t.Errorf("%s: port %d err %v", name, p, err)
		}
	}
	if p, err := ListenerPort(&core.Node{}); p != 0 || err != nil {
		t.Errorf("absent: %d %v", p, err)
	}
	// A node with a bad port is refused at its first request.
	cp := newControlPlane(t)
	if err := cp.onRequest(1, request("bad", withMetadata(map[string]*structpb.Value{"listener_port": structpb.NewStringValue("x")}))); err == nil {
		t.Fatal("node with a bad listener_port accepted")
	}
}

// An elections change moves only the extension config's version; ACKs set the per-node version
// gauge and the push latency; connected Envoys are counted per region.
func TestVersionsAcksAndFleetMetrics(t *testing.T) {
	cp := newControlPlane(t)
	ctx := context.Background()
	if _, err := cp.Publish(ctx, state(one)); err != nil {
		t.Fatal(err)
	}
	eu := withRegion("eu")
	eu.Metadata.Fields["listener_port"] = structpb.NewNumberValue(18080)
	if err := cp.onRequest(1, request("edge-eu", eu)); err != nil {
		t.Fatal(err)
	}
	if err := cp.onRequest(2, request("edge-us", withRegion("us"))); err != nil {
		t.Fatal(err)
	}
	if err := cp.onRequest(3, request("edge-us", withRegion("us"))); err != nil { // a second stream
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(cp.metrics.nodes.WithLabelValues("us")); got != 1 {
		t.Fatalf("connected us envoys = %v", got)
	}
	if got := testutil.ToFloat64(cp.metrics.streams.WithLabelValues("us")); got != 2 {
		t.Fatalf("us streams = %v", got)
	}
	snap, _ := cp.Cache().GetSnapshot("edge-eu")
	if p := snap.GetResources(resource.ListenerType)[snapshot.ListenerName].(*listener.Listener).GetAddress().GetSocketAddress().GetPortValue(); p != 18080 {
		t.Fatalf("edge-eu listener port %d", p)
	}

	if _, err := cp.Publish(ctx, state(one, two)); err != nil {
		t.Fatal(err)
	}
	snap, _ = cp.Cache().GetSnapshot("edge-eu")
	if snap.GetVersion(resource.ListenerType) != "1" || snap.GetVersion(resource.ExtensionConfigType) != "2" {
		t.Fatalf("versions: lds %s ecds %s", snap.GetVersion(resource.ListenerType), snap.GetVersion(resource.ExtensionConfigType))
	}

	// The ECDS push of version 2 to edge-eu, then its ACK.
	cp.onResponse(ctx, 1, nil, &discovery.DiscoveryResponse{TypeUrl: resource.ExtensionConfigType, VersionInfo: "2", Nonce: "7"})
	ack := request("edge-eu", nil)
	ack.TypeUrl, ack.VersionInfo, ack.ResponseNonce = resource.ExtensionConfigType, "2", "7"
	if err := cp.onRequest(1, ack); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(cp.metrics.nodeVersion.WithLabelValues("edge-eu", "eu", "extension_config")); got != 2 {
		t.Fatalf("edge-eu ecds version = %v", got)
	}
	if n := testutil.CollectAndCount(cp.metrics.pushLatency); n != 1 {
		t.Fatalf("push latency series = %d", n)
	}
	// A repeated ACK is not a second push.
	if err := cp.onRequest(1, ack); err != nil {
		t.Fatal(err)
	}
	if got := histogramCount(t, cp, "extension_config"); got != 1 {
		t.Fatalf("push latency observations = %d", got)
	}

	// A gone node's version series goes with it.
	cp.onClosed(1, nil)
	if n := testutil.CollectAndCount(cp.metrics.nodeVersion); n != 0 {
		t.Fatalf("version series of a gone node: %d", n)
	}
	if got := testutil.ToFloat64(cp.metrics.nodes.WithLabelValues("eu")); got != 0 {
		t.Fatalf("connected eu envoys after close = %v", got)
	}
}

func histogramCount(t *testing.T, cp *ControlPlane, typ string) uint64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(cp.metrics.pushLatency)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == typ {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

// failingVersions stands for a database that cannot hand out a version.
type failingVersions struct{}

func (failingVersions) Next(context.Context) (uint64, error) { return 0, errors.New("database down") }

func TestPublishWithoutAVersionKeepsTheLastState(t *testing.T) {
	b, err := snapshot.NewBuilder(snapshot.Settings{ListenerPort: 8080, ResultsAddr: "127.0.0.1:8082"}, snapshot.WithoutVoteFilter())
	if err != nil {
		t.Fatal(err)
	}
	cp := New(b, slog.New(slog.NewJSONHandler(io.Discard, nil)), prometheus.NewRegistry(), WithVersions(failingVersions{}))
	if _, err := cp.Publish(context.Background(), state(one)); err == nil || cp.Version() != 0 {
		t.Fatalf("published without a version: %v, version %d", err, cp.Version())
	}
}

package snapshot_test

import (
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	dynmodulesfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_modules/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/edgesettings"
	"github.com/tvvote/voting/xds/snapshot"
)

var (
	start = time.Date(2026, 11, 28, 20, 0, 0, 0, time.UTC)
	fixed = []edgeconfig.Election{
		{
			ID: "11111111-1111-4111-8111-111111111111", Status: "ACTIVE",
			StartDate: start, EndDate: start.Add(time.Hour),
			CandidateIDs: []string{"aaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa-0000-4000-8000-000000000002"},
		},
		{
			ID: "22222222-2222-4222-8222-222222222222", Status: "SCHEDULED",
			StartDate: start.Add(24 * time.Hour), EndDate: start.Add(25 * time.Hour),
		},
	}
)

func settings() snapshot.Settings {
	return snapshot.Settings{
		ListenerPort: 8080,
		ResultsAddr:  "127.0.0.1:8082",
		Filter: edgeconfig.Config{
			JWT:     edgeconfig.JWTConfig{Issuer: "https://idp.test/", Audience: "votes", JWKSURL: "http://127.0.0.1:9000/jwks.json"},
			Captcha: edgeconfig.CaptchaConfig{Mode: "pow", PoW: edgeconfig.PoWConfig{SecretFile: "/run/secrets/pow"}},
			Redis:   edgeconfig.RedisConfig{Addr: "127.0.0.1:6379"},
			SQS:     edgeconfig.SQSConfig{QueueURL: "http://127.0.0.1:9324/000000000000/votes", Region: "eu-west-1", StaticCredentials: true},
		},
	}
}

func build(t *testing.T, s snapshot.Settings, region string, elections []edgeconfig.Election, opts ...snapshot.Option) *cache.Snapshot {
	t.Helper()
	b, err := snapshot.NewBuilder(s, opts...)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := b.Build("7", snapshot.Node{ID: "n", Region: region}, snapshot.State{Elections: elections}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// filterJSON digs the votefilter JSON out of the snapshot's ECDS resource.
func filterJSON(t *testing.T, snap *cache.Snapshot) string {
	t.Helper()
	ext := only[*core.TypedExtensionConfig](t, snap, resource.ExtensionConfigType, snapshot.VoteFilterName)
	if ext.GetTypedConfig().GetTypeUrl() != snapshot.DynamicModuleFilterTypeURL {
		t.Fatalf("extension config type = %q", ext.GetTypedConfig().GetTypeUrl())
	}
	var dm dynmodulesfilter.DynamicModuleFilter
	if err := ext.GetTypedConfig().UnmarshalTo(&dm); err != nil {
		t.Fatal(err)
	}
	if dm.GetDynamicModuleConfig().GetName() != "votefilter" || !dm.GetDynamicModuleConfig().GetDoNotClose() || dm.GetFilterName() != edgeconfig.FilterName {
		t.Fatalf("dynamic module filter = %v", &dm)
	}
	if got := dm.GetFilterConfig().GetTypeUrl(); got != snapshot.FilterConfigTypeURL {
		t.Fatalf("filter_config type = %q", got)
	}
	var raw wrapperspb.StringValue
	if err := dm.GetFilterConfig().UnmarshalTo(&raw); err != nil {
		t.Fatal(err)
	}
	return raw.GetValue()
}

func only[T any](t *testing.T, snap *cache.Snapshot, typ resource.Type, name string) T {
	t.Helper()
	res := snap.GetResources(typ)
	if len(res) != 1 || res[name] == nil {
		t.Fatalf("%s: want exactly %q, got %v", typ, name, keys(res))
	}
	if v := snap.GetVersion(typ); v != "7" {
		t.Fatalf("%s version = %q, want 7", typ, v)
	}
	return res[name].(T)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func httpManager(t *testing.T, l *listener.Listener) *hcm.HttpConnectionManager {
	t.Helper()
	var m hcm.HttpConnectionManager
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&m); err != nil {
		t.Fatal(err)
	}
	return &m
}

func TestSnapshotCarriesRegionAndElectionsToTheFilter(t *testing.T) {
	snap := build(t, settings(), "eu-west", fixed)
	if err := snap.Consistent(); err != nil {
		t.Fatal(err)
	}
	l := only[*listener.Listener](t, snap, resource.ListenerType, snapshot.ListenerName)
	if a := l.GetAddress().GetSocketAddress(); a.GetAddress() != "127.0.0.1" || a.GetPortValue() != 8080 {
		t.Fatalf("listener address = %v", a)
	}
	m := httpManager(t, l)
	if m.GetStatPrefix() != "ingress" || !m.GetGenerateRequestId().GetValue() {
		t.Fatalf("stat prefix %q, generate_request_id %v", m.GetStatPrefix(), m.GetGenerateRequestId())
	}
	if m.GetRds().GetRouteConfigName() != snapshot.RouteName || m.GetRds().GetConfigSource().GetAds() == nil {
		t.Fatalf("rds = %v", m.GetRds())
	}
	filters := m.GetHttpFilters()
	if len(filters) != 2 || filters[0].GetName() != snapshot.VoteFilterName || filters[1].GetName() != wellknown.Router {
		t.Fatalf("http filters = %v", filters)
	}
	// The filter's config comes by ECDS over ADS, so elections never touch the listener.
	cd := filters[0].GetConfigDiscovery()
	if cd.GetConfigSource().GetAds() == nil || len(cd.GetTypeUrls()) != 1 || cd.GetTypeUrls()[0] != snapshot.DynamicModuleFilterTypeURL {
		t.Fatalf("config discovery = %v", cd)
	}
	raw := filterJSON(t, snap)
	cfg, err := edgeconfig.Parse([]byte(raw))
	if err != nil {
		t.Fatalf("filter config does not parse: %v\n%s", err, raw)
	}
	if cfg.Region != "eu-west" || cfg.Version != "7" || cfg.StatusCluster != snapshot.StatusCluster {
		t.Fatalf("region %q version %q status cluster %q", cfg.Region, cfg.Version, cfg.StatusCluster)
	}
	want := append([]edgeconfig.Election(nil), fixed...)
	want[1].CandidateIDs = []string{}
	if !reflect.DeepEqual(cfg.Elections, want) {
		t.Fatalf("elections = %+v\nwant %+v", cfg.Elections, want)
	}
	if cfg.SQS != settings().Filter.SQS || cfg.JWT.Issuer != "https://idp.test/" || cfg.Redis.Addr != "127.0.0.1:6379" {
		t.Fatalf("runtime settings lost: %+v", cfg)
	}
}

func TestRegionDecidesOnlyTheRegion(t *testing.T) {
	b, err := snapshot.NewBuilder(settings())
	if err != nil {
		t.Fatal(err)
	}
	us, eu := b.FilterConfig("us-east", snapshot.State{Elections: fixed}, "1"), b.FilterConfig("eu-west", snapshot.State{Elections: fixed}, "1")
	if us.Region != "us-east" || eu.Region != "eu-west" {
		t.Fatalf("regions %q %q", us.Region, eu.Region)
	}
	us.Region = eu.Region
	if !reflect.DeepEqual(us, eu) {
		t.Fatal("configs of two regions differ in more than the region")
	}
}

func TestNoElectionsIsAnEmptyListNotNull(t *testing.T) {
	if raw := filterJSON(t, build(t, settings(), "local", nil)); !strings.Contains(raw, `"elections":[]`) {
		t.Fatalf("config = %s", raw)
	}
}

func TestRoutes(t *testing.T) {
	s := settings()
	s.AdminAddr = "127.0.0.1:18001"
	snap := build(t, s, "local", fixed)
	rc := only[*route.RouteConfiguration](t, snap, resource.RouteType, snapshot.RouteName)
	routes := rc.GetVirtualHosts()[0].GetRoutes()
	type want struct {
		prefix  string
		cluster string // empty: direct 404
	}
	wants := []want{
		{"/api/v1/votes", ""},
		{"/api/v1/results/stream/", snapshot.ResultsCluster},
		{"/api/v1/results/", snapshot.ResultsCluster},
		{contract.PathAdmin, snapshot.AdminCluster},
		{"/", ""},
	}
	if len(routes) != len(wants) {
		t.Fatalf("routes = %v", routes)
	}
	for i, w := range wants {
		r := routes[i]
		if r.GetMatch().GetPrefix() != w.prefix {
			t.Fatalf("route %d prefix = %q, want %q", i, r.GetMatch().GetPrefix(), w.prefix)
		}
		if w.cluster != "" {
			if r.GetRoute().GetCluster() != w.cluster {
				t.Fatalf("route %s goes to %q", w.prefix, r.GetRoute().GetCluster())
			}
			continue
		}
		d := r.GetDirectResponse()
		fields := d.GetBodyFormat().GetJsonFormat().GetFields()
		if d.GetStatus() != 404 || fields["code"].GetStringValue() != "NOT_FOUND" || fields["message"].GetStringValue() == "" ||
			d.GetBodyFormat().GetContentType() != "application/json" {
			t.Fatalf("route %s direct response = %v", w.prefix, d)
		}
	}
}

func TestResultsCluster(t *testing.T) {
	for addr, kind := range map[string]cluster.Cluster_DiscoveryType{
		"127.0.0.1:8082":      cluster.Cluster_STATIC,
		"results.internal:80": cluster.Cluster_STRICT_DNS,
	} {
		s := settings()
		s.ResultsAddr = addr
		c := clusterNamed(t, build(t, s, "local", fixed), snapshot.ResultsCluster)
		if c.GetType() != kind || c.GetConnectTimeout().AsDuration() != time.Second {
			t.Fatalf("%s: type %v, connect timeout %v", addr, c.GetType(), c.GetConnectTimeout())
		}
		sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))) != addr {
			t.Fatalf("endpoint %v, want %s", sa, addr)
		}
	}
}

func TestWithoutVoteFilterKeepsOnlyTheRouter(t *testing.T) {
	snap := build(t, snapshot.Settings{ListenerPort: 9000, ResultsAddr: "127.0.0.1:1"}, "local", fixed, snapshot.WithoutVoteFilter())
	if err := snap.Consistent(); err != nil {
		t.Fatal(err)
	}
	filters := httpManager(t, only[*listener.Listener](t, snap, resource.ListenerType, snapshot.ListenerName)).GetHttpFilters()
	if len(filters) != 1 || filters[0].GetName() != wellknown.Router {
		t.Fatalf("http filters = %v", filters)
	}
}

func TestBuildRefusesWhatTheFilterWouldRefuse(t *testing.T) {
	b, err := snapshot.NewBuilder(settings())
	if err != nil {
		t.Fatal(err)
	}
	bad := []edgeconfig.Election{{ID: "not-a-uuid", StartDate: start, EndDate: start.Add(time.Hour)}}
	if _, err := b.Build("1", snapshot.Node{ID: "n", Region: "local"}, snapshot.State{Elections: bad}, nil); err == nil {
		t.Fatal("built a snapshot the filter would reject")
	}
	if _, err := b.Build("1", snapshot.Node{ID: "n"}, snapshot.State{Elections: fixed}, nil); err == nil {
		t.Fatal("built a snapshot without a region")
	}
}

func TestNewBuilderChecksSettings(t *testing.T) {
	for name, s := range map[string]snapshot.Settings{
		"port 0":           {ListenerPort: 0, ResultsAddr: "127.0.0.1:8082"},
		"port too large":   {ListenerPort: 70000, ResultsAddr: "127.0.0.1:8082"},
		"no results port":  {ListenerPort: 8080, ResultsAddr: "127.0.0.1"},
		"bad results port": {ListenerPort: 8080, ResultsAddr: "127.0.0.1:http"},
		"bad status addr":  {ListenerPort: 8080, ResultsAddr: "127.0.0.1:8082", StatusAddr: "nowhere"},
		"bad admin addr":   {ListenerPort: 8080, ResultsAddr: "127.0.0.1:8082", AdminAddr: "127.0.0.1:0"},
		"bad listener ip":  {ListenerPort: 8080, ResultsAddr: "127.0.0.1:8082", ListenerAddress: "localhost"},
	} {
		if _, err := snapshot.NewBuilder(s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func clusterNamed(t *testing.T, snap *cache.Snapshot, name string) *cluster.Cluster {
	t.Helper()
	c, ok := snap.GetResources(resource.ClusterType)[name].(*cluster.Cluster)
	if !ok {
		t.Fatalf("no cluster %q in %v", name, keys(snap.GetResources(resource.ClusterType)))
	}
	return c
}

func endpointOf(c *cluster.Cluster) string {
	sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
}

func TestClustersForStatusAdminAndSiteverify(t *testing.T) {
	s := settings()
	snap := build(t, s, "local", fixed)
	// Without admin or siteverify settings: results and the vote status (defaulting to the
	// results worker) only, and no admin route.
	if got := len(snap.GetResources(resource.ClusterType)); got != 2 {
		t.Fatalf("clusters = %v", keys(snap.GetResources(resource.ClusterType)))
	}
	if got := endpointOf(clusterNamed(t, snap, snapshot.StatusCluster)); got != s.ResultsAddr {
		t.Fatalf("status cluster endpoint = %s", got)
	}
	for _, r := range only[*route.RouteConfiguration](t, snap, resource.RouteType, snapshot.RouteName).GetVirtualHosts()[0].GetRoutes() {
		if r.GetMatch().GetPrefix() == contract.PathAdmin {
			t.Fatal("admin route without an admin address")
		}
	}

	s.StatusAddr = "127.0.0.1:9090"
	s.AdminAddr = "controlplane.internal:18001"
	s.Siteverify = snapshot.SiteverifyUpstream{Addr: "challenges.cloudflare.com:443", TLS: true}
	snap = build(t, s, "local", fixed)
	if got := endpointOf(clusterNamed(t, snap, snapshot.StatusCluster)); got != "127.0.0.1:9090" {
		t.Fatalf("status cluster endpoint = %s", got)
	}
	admin := clusterNamed(t, snap, snapshot.AdminCluster)
	if endpointOf(admin) != "controlplane.internal:18001" || admin.GetType() != cluster.Cluster_STRICT_DNS {
		t.Fatalf("admin cluster = %v", admin)
	}
	sv := clusterNamed(t, snap, snapshot.SiteverifyCluster)
	if endpointOf(sv) != "challenges.cloudflare.com:443" || sv.GetTransportSocket().GetName() != wellknown.TransportSocketTLS {
		t.Fatalf("siteverify cluster = %v", sv)
	}
	var tlsCtx tlsv3.UpstreamTlsContext
	if err := sv.GetTransportSocket().GetTypedConfig().UnmarshalTo(&tlsCtx); err != nil {
		t.Fatal(err)
	}
	vc := tlsCtx.GetCommonTlsContext().GetValidationContext()
	if tlsCtx.GetSni() != "challenges.cloudflare.com" || vc.GetTrustedCa().GetFilename() != snapshot.DefaultCAFile ||
		vc.GetMatchTypedSubjectAltNames()[0].GetMatcher().GetExact() != "challenges.cloudflare.com" {
		t.Fatalf("tls context = %v", &tlsCtx)
	}

	// Without TLS the service is plain HTTP (a local captcha stand-in).
	s.Siteverify = snapshot.SiteverifyUpstream{Addr: "127.0.0.1:9443"}
	if ts := clusterNamed(t, build(t, s, "local", fixed), snapshot.SiteverifyCluster).GetTransportSocket(); ts != nil {
		t.Fatalf("transport socket without TLS: %v", ts)
	}
}

// Only what changed gets a new version: elections move the extension config alone, so Envoy
// swaps the filter config and never drains the listener for it.
func TestVersionsMoveOnlyWithContent(t *testing.T) {
	b, err := snapshot.NewBuilder(settings())
	if err != nil {
		t.Fatal(err)
	}
	n := snapshot.Node{ID: "n", Region: "eu"}
	v1, err := b.Build("1", n, snapshot.State{Elections: fixed[:1]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := b.Build("2", n, snapshot.State{Elections: fixed}, v1)
	if err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[string]string{resource.ListenerType: "1", resource.RouteType: "1", resource.ClusterType: "1",
		resource.ExtensionConfigType: "2"} {
		if got := v2.GetVersion(typ); got != want {
			t.Fatalf("%s version %s, want %s", typ, got, want)
		}
	}
	// Same state again: nothing moves, and the filter keeps saying version 2.
	v3, err := b.Build("3", n, snapshot.State{Elections: fixed}, v2)
	if err != nil {
		t.Fatal(err)
	}
	if got := v3.GetVersion(resource.ExtensionConfigType); got != "2" || !strings.Contains(filterJSON2(t, v3), `"version":"2"`) {
		t.Fatalf("unchanged state: extension config version %s", got)
	}
	// A new listener port for the node moves the listener only.
	n.ListenerPort = 9999
	v4, err := b.Build("4", n, snapshot.State{Elections: fixed}, v3)
	if err != nil {
		t.Fatal(err)
	}
	if v4.GetVersion(resource.ListenerType) != "4" || v4.GetVersion(resource.ExtensionConfigType) != "2" || v4.GetVersion(resource.RouteType) != "1" {
		t.Fatalf("versions after port change: lds %s ecds %s rds %s", v4.GetVersion(resource.ListenerType),
			v4.GetVersion(resource.ExtensionConfigType), v4.GetVersion(resource.RouteType))
	}
	l := v4.GetResources(resource.ListenerType)[snapshot.ListenerName].(*listener.Listener)
	if l.GetAddress().GetSocketAddress().GetPortValue() != 9999 {
		t.Fatalf("listener port = %v", l.GetAddress())
	}
}

func filterJSON2(t *testing.T, snap *cache.Snapshot) string {
	t.Helper()
	// The same digging as filterJSON, without its version expectation of "7".
	ext := snap.GetResources(resource.ExtensionConfigType)[snapshot.VoteFilterName].(*core.TypedExtensionConfig)
	var dm dynmodulesfilter.DynamicModuleFilter
	if err := ext.GetTypedConfig().UnmarshalTo(&dm); err != nil {
		t.Fatal(err)
	}
	var raw wrapperspb.StringValue
	if err := dm.GetFilterConfig().UnmarshalTo(&raw); err != nil {
		t.Fatal(err)
	}
	return raw.GetValue()
}

func TestEdgeSettingsLayerDefaultsGlobalRegion(t *testing.T) {
	s := settings()
	s.Filter.Limits = edgeconfig.Limits{PerViewer: edgeconfig.Limit{Max: 10, WindowSeconds: 60}, PerIP: edgeconfig.Limit{Max: 600, WindowSeconds: 60}}
	b, err := snapshot.NewBuilder(s)
	if err != nil {
		t.Fatal(err)
	}
	one := edgeconfig.Limit{Max: 1, WindowSeconds: 30}
	ip := edgeconfig.Limit{Max: 50, WindowSeconds: 10}
	state := snapshot.State{Edge: edgesettings.Set{
		Global:  edgesettings.Override{PerViewer: &one},
		Regions: map[string]edgesettings.Override{"eu": {PerIP: &ip, CaptchaMode: "off"}},
	}}
	eu, us := b.FilterConfig("eu", state, "1"), b.FilterConfig("us", state, "1")
	if eu.Limits.PerViewer != one || eu.Limits.PerIP != ip || eu.Captcha.Mode != "off" {
		t.Fatalf("eu: %+v %+v", eu.Limits, eu.Captcha.Mode)
	}
	if us.Limits.PerViewer != one || us.Limits.PerIP != s.Filter.Limits.PerIP || us.Captcha.Mode != "pow" {
		t.Fatalf("us: %+v %+v", us.Limits, us.Captcha.Mode)
	}
}

func TestCheckEdgeSettingsRefusesWhatCannotShip(t *testing.T) {
	s := settings()
	s.Filter.Captcha = edgeconfig.CaptchaConfig{Mode: "off"} // no pow secret configured
	b, err := snapshot.NewBuilder(s)
	if err != nil {
		t.Fatal(err)
	}
	none := edgesettings.Set{}
	for name, o := range map[string]edgesettings.Override{
		"pow without a secret":       {CaptchaMode: "pow"},
		"siteverify without service": {CaptchaMode: "siteverify"},
		"unknown mode":               {CaptchaMode: "maybe"},
		"negative max":               {PerViewer: &edgeconfig.Limit{Max: -1, WindowSeconds: 1}},
		"no window":                  {PerIP: &edgeconfig.Limit{Max: 5}},
	} {
		if err := b.CheckEdgeSettings(none, "eu", o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := b.CheckEdgeSettings(none, edgesettings.Global, edgesettings.Override{PerViewer: &edgeconfig.Limit{Max: 0, WindowSeconds: 1}, CaptchaMode: "off"}); err != nil {
		t.Fatalf("valid override refused: %v", err)
	}
}

// Equal input gives byte-equal resources, so an unchanged listener keeps its version (and
// Envoy never drains it) however often it is rebuilt.
func TestBuildIsDeterministic(t *testing.T) {
	s := settings()
	s.AdminAddr = "127.0.0.1:18001"
	b, err := snapshot.NewBuilder(s)
	if err != nil {
		t.Fatal(err)
	}
	n := snapshot.Node{ID: "n", Region: "eu"}
	prev, err := b.Build("1", n, snapshot.State{Elections: fixed}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		next, err := b.Build(strconv.Itoa(i+2), n, snapshot.State{Elections: fixed}, prev)
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.ExtensionConfigType} {
			if v := next.GetVersion(typ); v != "1" {
				t.Fatalf("build %d: %s version %s for equal input", i, typ, v)
			}
		}
		prev = next
	}
}

package snapshot_test

import (
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	dynmodulesfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_modules/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tvvote/voting/filters/votefilter"
	"github.com/tvvote/voting/xds/snapshot"
)

var (
	start = time.Date(2026, 11, 28, 20, 0, 0, 0, time.UTC)
	fixed = []votefilter.Election{
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
		Filter: votefilter.Config{
			JWT:     votefilter.JWTConfig{Issuer: "https://idp.test/", Audience: "votes", JWKSURL: "http://127.0.0.1:9000/jwks.json"},
			Captcha: votefilter.CaptchaConfig{Mode: "pow", PoW: votefilter.PoWConfig{Secret: "0123456789abcdef-test"}},
			Redis:   votefilter.RedisConfig{Addr: "127.0.0.1:6379"},
			SQS:     votefilter.SQSConfig{QueueURL: "http://127.0.0.1:9324/000000000000/votes", Region: "eu-west-1", StaticCredentials: true},
		},
	}
}

func build(t *testing.T, s snapshot.Settings, region string, elections []votefilter.Election, opts ...snapshot.Option) *cache.Snapshot {
	t.Helper()
	b, err := snapshot.NewBuilder(s, opts...)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := b.Build("7", region, elections)
	if err != nil {
		t.Fatal(err)
	}
	return snap
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
	if len(filters) != 2 || filters[0].GetName() != snapshot.DynamicModuleFilterName || filters[1].GetName() != wellknown.Router {
		t.Fatalf("http filters = %v", filters)
	}

	var dm dynmodulesfilter.DynamicModuleFilter
	if err := filters[0].GetTypedConfig().UnmarshalTo(&dm); err != nil {
		t.Fatal(err)
	}
	if dm.GetDynamicModuleConfig().GetName() != "votefilter" || !dm.GetDynamicModuleConfig().GetDoNotClose() || dm.GetFilterName() != votefilter.FilterName {
		t.Fatalf("dynamic module filter = %v", &dm)
	}
	if got := dm.GetFilterConfig().GetTypeUrl(); got != snapshot.FilterConfigTypeURL {
		t.Fatalf("filter_config type = %q", got)
	}
	var raw wrapperspb.StringValue
	if err := dm.GetFilterConfig().UnmarshalTo(&raw); err != nil {
		t.Fatal(err)
	}
	cfg, err := votefilter.Parse([]byte(raw.GetValue()))
	if err != nil {
		t.Fatalf("filter config does not parse: %v\n%s", err, raw.GetValue())
	}
	if cfg.Region != "eu-west" {
		t.Fatalf("region = %q", cfg.Region)
	}
	want := append([]votefilter.Election(nil), fixed...)
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
	us, eu := b.FilterConfig("us-east", fixed), b.FilterConfig("eu-west", fixed)
	if us.Region != "us-east" || eu.Region != "eu-west" {
		t.Fatalf("regions %q %q", us.Region, eu.Region)
	}
	us.Region = eu.Region
	if !reflect.DeepEqual(us, eu) {
		t.Fatal("configs of two regions differ in more than the region")
	}
}

func TestNoElectionsIsAnEmptyListNotNull(t *testing.T) {
	snap := build(t, settings(), "local", nil)
	l := only[*listener.Listener](t, snap, resource.ListenerType, snapshot.ListenerName)
	var dm dynmodulesfilter.DynamicModuleFilter
	if err := httpManager(t, l).GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&dm); err != nil {
		t.Fatal(err)
	}
	var raw wrapperspb.StringValue
	if err := dm.GetFilterConfig().UnmarshalTo(&raw); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(raw.GetValue(), `"elections":[]`) {
		t.Fatalf("config = %s", raw.GetValue())
	}
}

func TestRoutes(t *testing.T) {
	snap := build(t, settings(), "local", fixed)
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
		c := only[*cluster.Cluster](t, build(t, s, "local", fixed), resource.ClusterType, snapshot.ResultsCluster)
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
	bad := []votefilter.Election{{ID: "not-a-uuid", StartDate: start, EndDate: start.Add(time.Hour)}}
	if _, err := b.Build("1", "local", bad); err == nil {
		t.Fatal("built a snapshot the filter would reject")
	}
	if _, err := b.Build("1", "", fixed); err == nil {
		t.Fatal("built a snapshot without a region")
	}
}

func TestNewBuilderChecksSettings(t *testing.T) {
	for name, s := range map[string]snapshot.Settings{
		"port 0":           {ListenerPort: 0, ResultsAddr: "127.0.0.1:8082"},
		"port too large":   {ListenerPort: 70000, ResultsAddr: "127.0.0.1:8082"},
		"no results port":  {ListenerPort: 8080, ResultsAddr: "127.0.0.1"},
		"bad results port": {ListenerPort: 8080, ResultsAddr: "127.0.0.1:http"},
	} {
		if _, err := snapshot.NewBuilder(s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

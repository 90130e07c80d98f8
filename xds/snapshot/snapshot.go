// Package snapshot turns what the control plane knows (settings, the node's region, the open
// elections) into one complete, consistent xDS snapshot for one Envoy node: the public
// listener with the votefilter dynamic module, its route table and the results cluster.
package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	dynmodules "github.com/envoyproxy/go-control-plane/envoy/extensions/dynamic_modules/v3"
	dynmodulesfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_modules/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter"
)

// Names of the resources every node receives. Tests and operators look them up by these names.
const (
	ListenerName   = "public"
	RouteName      = "public"
	ResultsCluster = "results"
	// DynamicModuleFilterName is the Envoy extension name of the dynamic modules HTTP filter.
	DynamicModuleFilterName = "envoy.filters.http.dynamic_modules"
	// ModuleName makes Envoy dlopen lib<ModuleName>.so from ENVOY_DYNAMIC_MODULES_SEARCH_PATH.
	ModuleName = "votefilter"
	// FilterConfigTypeURL wraps the votefilter JSON: Envoy hands a StringValue's value to the
	// module as-is, without the wrapper.
	FilterConfigTypeURL = "type.googleapis.com/google.protobuf.StringValue"
)

// Settings are the node-independent parts of a snapshot.
type Settings struct {
	// ListenerPort is the port the public listener binds on 127.0.0.1.
	ListenerPort int
	// ResultsAddr is host:port of the results worker.
	ResultsAddr string
	// Filter carries the votefilter runtime settings (JWT, Redis, SQS, limits). Region and
	// Elections are ignored here: they are filled per node and per reload.
	Filter votefilter.Config
}

// Option changes how a Builder builds snapshots.
type Option func(*Builder)

// WithoutVoteFilter leaves the dynamic module filter out of the listener, for tests that run
// Envoy without libvotefilter.so (Envoy would reject the listener if the module is missing).
func WithoutVoteFilter() Option {
	return func(b *Builder) { b.voteFilter = false }
}

// Builder builds per-node snapshots from fixed settings.
type Builder struct {
	settings    Settings
	resultsHost string
	resultsPort uint32
	voteFilter  bool
}

// NewBuilder checks the settings once so that Build only fails on bad elections.
func NewBuilder(s Settings, opts ...Option) (*Builder, error) {
	if s.ListenerPort < 1 || s.ListenerPort > 65535 {
		return nil, fmt.Errorf("listener port %d out of range 1-65535", s.ListenerPort)
	}
	host, portText, err := net.SplitHostPort(s.ResultsAddr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("results address %q must be host:port", s.ResultsAddr)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("results address %q has a bad port", s.ResultsAddr)
	}
	b := &Builder{settings: s, resultsHost: host, resultsPort: uint32(port), voteFilter: true}
	for _, o := range opts {
		o(b)
	}
	return b, nil
}

// FilterConfig is the votefilter configuration a node in region gets.
func (b *Builder) FilterConfig(region string, elections []votefilter.Election) votefilter.Config {
	c := b.settings.Filter
	c.Region = region
	// Never send null: an empty list says "no election is open" explicitly.
	c.Elections = make([]votefilter.Election, 0, len(elections))
	for _, e := range elections {
		if e.CandidateIDs == nil {
			e.CandidateIDs = []string{}
		}
		c.Elections = append(c.Elections, e)
	}
	return c
}

// Build returns the complete snapshot for one node. Every resource carries version, and the
// snapshot is checked with Consistent so that Envoy never gets a listener whose route is missing.
func (b *Builder) Build(version string, region string, elections []votefilter.Election) (*cache.Snapshot, error) {
	if region == "" {
		return nil, errors.New("region is required")
	}
	l, err := b.listener(region, elections)
	if err != nil {
		return nil, err
	}
	rc, err := routeConfig()
	if err != nil {
		return nil, err
	}
	snap, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ListenerType: {l},
		resource.RouteType:    {rc},
		resource.ClusterType:  {b.resultsCluster()},
	})
	if err != nil {
		return nil, err
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("snapshot inconsistent: %w", err)
	}
	return snap, nil
}

func (b *Builder) listener(region string, elections []votefilter.Election) (*listener.Listener, error) {
	var filters []*hcm.HttpFilter
	if b.voteFilter {
		f, err := b.voteFilterHTTPFilter(region, elections)
		if err != nil {
			return nil, err
		}
		filters = append(filters, f)
	}
	routerAny, err := anypb.New(&router.Router{})
	if err != nil {
		return nil, err
	}
	filters = append(filters, &hcm.HttpFilter{
		Name:       wellknown.Router,
		ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: routerAny},
	})
	manager := &hcm.HttpConnectionManager{
		CodecType:  hcm.HttpConnectionManager_AUTO,
		StatPrefix: "ingress",
		// Every request gets an x-request-id: the correlation id that follows a vote into SQS
		// and the processor.
		GenerateRequestId: wrapperspb.Bool(true),
		// Normalise before the vote filter sees the path, so /api/v1//votes cannot dodge it.
		NormalizePath: wrapperspb.Bool(true),
		MergeSlashes:  true,
		// The results worker streams live counts over WebSocket.
		UpgradeConfigs: []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: RouteName,
		}},
		HttpFilters: filters,
	}
	managerAny, err := anypb.New(manager)
	if err != nil {
		return nil, err
	}
	return &listener.Listener{
		Name: ListenerName,
		Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address:       "127.0.0.1",
			PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(b.settings.ListenerPort)},
		}}},
		FilterChains: []*listener.FilterChain{{
			Filters: []*listener.Filter{{
				Name:       wellknown.HTTPConnectionManager,
				ConfigType: &listener.Filter_TypedConfig{TypedConfig: managerAny},
			}},
		}},
	}, nil
}

func (b *Builder) voteFilterHTTPFilter(region string, elections []votefilter.Election) (*hcm.HttpFilter, error) {
	raw, err := json.Marshal(b.FilterConfig(region, elections))
	if err != nil {
		return nil, err
	}
	// Refuse to ship what the filter itself would refuse: Envoy would NACK it and keep serving
	// the previous elections without anyone noticing until votes fail.
	if _, err := votefilter.Parse(raw); err != nil {
		return nil, err
	}
	cfgAny, err := anypb.New(wrapperspb.String(string(raw)))
	if err != nil {
		return nil, err
	}
	filterAny, err := anypb.New(&dynmodulesfilter.DynamicModuleFilter{
		DynamicModuleConfig: &dynmodules.DynamicModuleConfig{
			Name: ModuleName,
			// The Go runtime cannot be unloaded; dlclose on a config update would crash Envoy.
			DoNotClose: true,
		},
		FilterName:   votefilter.FilterName,
		FilterConfig: cfgAny,
	})
	if err != nil {
		return nil, err
	}
	return &hcm.HttpFilter{
		Name:       DynamicModuleFilterName,
		ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: filterAny},
	}, nil
}

func routeConfig() (*route.RouteConfiguration, error) {
	votes, err := notFound("no such vote endpoint")
	if err != nil {
		return nil, err
	}
	other, err := notFound("no such endpoint")
	if err != nil {
		return nil, err
	}
	toResults := func(timeout time.Duration) *route.Route_Route {
		return &route.Route_Route{Route: &route.RouteAction{
			ClusterSpecifier: &route.RouteAction_Cluster{Cluster: ResultsCluster},
			Timeout:          durationpb.New(timeout),
		}}
	}
	return &route.RouteConfiguration{
		Name: RouteName,
		VirtualHosts: []*route.VirtualHost{{
			Name:    "public",
			Domains: []string{"*"},
			Routes: []*route.Route{
				// The vote filter answers votes before routing; whatever it lets through here
				// has no handler.
				{Match: prefix("/api/v1/votes"), Action: votes},
				// A WebSocket lives for the whole show: no route timeout.
				{Match: prefix("/api/v1/results/stream/"), Action: toResults(0)},
				{Match: prefix("/api/v1/results/"), Action: toResults(15 * time.Second)},
				{Match: prefix("/"), Action: other},
			},
		}},
	}, nil
}

func prefix(p string) *route.RouteMatch {
	return &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: p}}
}

// notFound answers with the contract's ErrorResponse. The body is formatted per request so
// that traceId carries the request's x-request-id.
func notFound(message string) (*route.Route_DirectResponse, error) {
	body, err := structpb.NewStruct(map[string]any{
		"code":    contract.CodeNotFound,
		"message": message,
		"traceId": "%REQ(X-REQUEST-ID)%",
	})
	if err != nil {
		return nil, err
	}
	return &route.Route_DirectResponse{DirectResponse: &route.DirectResponseAction{
		Status: uint32(contract.Status(contract.CodeNotFound)),
		// body_format needs a body to format, even if the format does not print it.
		Body: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: message}},
		BodyFormat: &core.SubstitutionFormatString{
			Format:      &core.SubstitutionFormatString_JsonFormat{JsonFormat: body},
			ContentType: "application/json",
		},
	}}, nil
}

func (b *Builder) resultsCluster() *cluster.Cluster {
	kind := cluster.Cluster_STRICT_DNS
	if net.ParseIP(b.resultsHost) != nil {
		kind = cluster.Cluster_STATIC
	}
	return &cluster.Cluster{
		Name:                 ResultsCluster,
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: kind},
		DnsLookupFamily:      cluster.Cluster_V4_PREFERRED,
		LoadAssignment: &endpoint.ClusterLoadAssignment{
			ClusterName: ResultsCluster,
			Endpoints: []*endpoint.LocalityLbEndpoints{{
				LbEndpoints: []*endpoint.LbEndpoint{{
					HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
						Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
							Address:       b.resultsHost,
							PortSpecifier: &core.SocketAddress_PortValue{PortValue: b.resultsPort},
						}}},
					}},
				}},
			}},
		},
	}
}

func adsSource() *core.ConfigSource {
	return &core.ConfigSource{
		ResourceApiVersion:    core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
	}
}

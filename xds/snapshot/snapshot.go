// Package snapshot turns what the control plane knows (settings, the node, the elections and the
// live edge settings) into one complete, consistent xDS snapshot for one Envoy node: the public
// listener, its route table, the upstream clusters, and the votefilter configuration as an
// ECDS extension config. Elections and limits change only the extension config, so Envoy swaps
// the filter's configuration without draining the listener.
package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	accesslog "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	dynmodules "github.com/envoyproxy/go-control-plane/envoy/extensions/dynamic_modules/v3"
	dynmodulesfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_modules/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	proxyprotocol "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	uuidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/edgesettings"
)

// Names of the resources every node receives. Tests and operators look them up by these names.
const (
	ListenerName = "public"
	RouteName    = "public"
	// ResultsCluster is the results worker behind /api/v1/results/.
	ResultsCluster = "results"
	// StatusCluster answers the filter's GET /internal/v1/vote-status/{electionId}/{userId}
	// when Redis has no key; it has no public route.
	StatusCluster = "vote_status"
	// AdminCluster is the control plane's admin API behind /api/v1/admin/.
	AdminCluster = "controlplane_admin"
	// SiteverifyCluster is the third-party captcha service the filter calls in siteverify mode.
	SiteverifyCluster = "captcha_siteverify"
	// VoteFilterName names the HCM http filter and its ECDS resource: Envoy asks for the
	// extension config by the filter's name.
	VoteFilterName = "votefilter"
	// ModuleName makes Envoy dlopen lib<ModuleName>.so from ENVOY_DYNAMIC_MODULES_SEARCH_PATH.
	ModuleName = "votefilter"
	// DynamicModuleFilterTypeURL is the only type the ECDS resource may carry.
	DynamicModuleFilterTypeURL = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
	// FilterConfigTypeURL wraps the votefilter JSON: Envoy hands a StringValue's value to the
	// module as-is, without the wrapper.
	FilterConfigTypeURL = "type.googleapis.com/google.protobuf.StringValue"
	// TracingCluster is the OTLP gRPC collector Envoy's OpenTelemetry tracer exports spans to.
	TracingCluster = "otel_collector"
	// TracingServiceName is the service Envoy's spans carry in the trace backend.
	TracingServiceName = "voting-edge"
	// DefaultCAFile is Debian's bundle of public CAs, to verify the siteverify service.
	DefaultCAFile = "/etc/ssl/certs/ca-certificates.crt"
)

// Settings are the node-independent parts of a snapshot, fixed for the control plane's life.
type Settings struct {
	// ListenerAddress is the address the public listener binds; default 127.0.0.1.
	ListenerAddress string
	// ListenerPort is the port of the public listener unless the node names its own.
	ListenerPort int
	// ResultsAddr is host:port of the results worker.
	ResultsAddr string
	// StatusAddr is host:port of the vote-status endpoint; default ResultsAddr.
	StatusAddr string
	// AdminAddr is host:port of the control plane's admin API as Envoy reaches it; empty
	// leaves the admin route and cluster out.
	AdminAddr string
	// Siteverify is the captcha service; an empty Addr leaves its cluster out.
	Siteverify SiteverifyUpstream
	// UpstreamTimeout bounds a request to the results worker or the admin API (the WebSocket
	// stream has none); default DefaultUpstreamTimeout.
	UpstreamTimeout time.Duration
	// TrustedHops and ProxyProtocol are the defaults of the live edge settings of those names:
	// where the client address comes from.
	TrustedHops   int
	ProxyProtocol bool
	// Tracing turns on Envoy's OpenTelemetry tracer; an empty CollectorAddr leaves it off.
	Tracing Tracing
	// Regions are every region's store and queue in a multi-region fleet: a node gets its
	// region's as Filter.Redis and Filter.SQS and the others' as Filter.PeerRegions, and a node
	// of a region not listed gets no snapshot. Empty: Filter.Redis and Filter.SQS serve every
	// node.
	Regions []edgeconfig.RegionStore
	// Filter carries the votefilter runtime settings (JWT, Redis, SQS) and the default limits
	// and captcha mode. Region, Elections, StatusCluster and Version are filled per node and
	// per build; limits and captcha mode are overridden by the live edge settings.
	Filter edgeconfig.Config
}

// DefaultUpstreamTimeout is Settings.UpstreamTimeout when unset.
const DefaultUpstreamTimeout = 15 * time.Second

// SiteverifyUpstream locates the siteverify service.
type SiteverifyUpstream struct {
	// Addr is host:port.
	Addr string
	// TLS turns on TLS to the service, with SNI and certificate name SNI.
	TLS bool
	// SNI is the server name for TLS; default the host of Addr.
	SNI string
	// CAFile verifies the service's certificate; default DefaultCAFile.
	CAFile string
}

// Tracing is the edge's tracing: where spans go and how many requests start a trace.
type Tracing struct {
	// CollectorAddr is host:port of an OTLP gRPC collector.
	CollectorAddr string
	// SamplingPercent of requests are traced (0..100).
	SamplingPercent float64
}

// Node is what the snapshot of one Envoy depends on.
type Node struct {
	ID     string
	Region string
	// ListenerPort overrides Settings.ListenerPort (node metadata listener_port), so several
	// edges can share one host in development; 0 keeps the default.
	ListenerPort int
}

// State is the changing input: everything in PostgreSQL that shapes the edge config.
type State struct {
	Elections []edgeconfig.Election `json:"elections"`
	Edge      edgesettings.Set      `json:"edge"`
}

// Option changes how a Builder builds snapshots.
type Option func(*Builder)

// WithoutVoteFilter leaves the dynamic module filter out of the listener, for tests that run
// Envoy without libvotefilter.so (Envoy would reject the extension config if the module is
// missing).
func WithoutVoteFilter() Option {
	return func(b *Builder) { b.voteFilter = false }
}

type upstream struct {
	host string
	port uint32
}

// Builder builds per-node snapshots from fixed settings.
type Builder struct {
	settings   Settings
	results    upstream
	status     upstream
	admin      *upstream
	siteverify *upstream
	collector  *upstream
	voteFilter bool
}

// NewBuilder checks the settings once so that Build only fails on bad input.
func NewBuilder(s Settings, opts ...Option) (*Builder, error) {
	if s.ListenerPort < 1 || s.ListenerPort > 65535 {
		return nil, fmt.Errorf("listener port %d out of range 1-65535", s.ListenerPort)
	}
	if s.ListenerAddress == "" {
		s.ListenerAddress = "127.0.0.1"
	}
	if net.ParseIP(s.ListenerAddress) == nil {
		return nil, fmt.Errorf("listener address %q is not an IP address", s.ListenerAddress)
	}
	if s.StatusAddr == "" {
		s.StatusAddr = s.ResultsAddr
	}
	if s.UpstreamTimeout == 0 {
		s.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if s.UpstreamTimeout < 0 {
		return nil, fmt.Errorf("upstream timeout %s is negative", s.UpstreamTimeout)
	}
	if s.TrustedHops < 0 || s.TrustedHops > edgesettings.MaxTrustedHops {
		return nil, fmt.Errorf("trusted hops %d out of range 0-%d", s.TrustedHops, edgesettings.MaxTrustedHops)
	}
	b := &Builder{settings: s, voteFilter: true}
	var err error
	if b.results, err = parseUpstream("results", s.ResultsAddr); err != nil {
		return nil, err
	}
	if b.status, err = parseUpstream("status", s.StatusAddr); err != nil {
		return nil, err
	}
	if s.AdminAddr != "" {
		u, err := parseUpstream("admin", s.AdminAddr)
		if err != nil {
			return nil, err
		}
		b.admin = &u
	}
	if s.Siteverify.Addr != "" {
		u, err := parseUpstream("siteverify", s.Siteverify.Addr)
		if err != nil {
			return nil, err
		}
		b.siteverify = &u
		if b.settings.Siteverify.SNI == "" {
			b.settings.Siteverify.SNI = u.host
		}
		if b.settings.Siteverify.CAFile == "" {
			b.settings.Siteverify.CAFile = DefaultCAFile
		}
	}
	if t := s.Tracing; t.CollectorAddr != "" {
		if t.SamplingPercent < 0 || t.SamplingPercent > 100 {
			return nil, fmt.Errorf("tracing sampling %g%% out of range 0-100", t.SamplingPercent)
		}
		u, err := parseUpstream("tracing collector", t.CollectorAddr)
		if err != nil {
			return nil, err
		}
		b.collector = &u
	}
	for _, o := range opts {
		o(b)
	}
	return b, nil
}

func parseUpstream(what, addr string) (upstream, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return upstream{}, fmt.Errorf("%s address %q must be host:port", what, addr)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return upstream{}, fmt.Errorf("%s address %q has a bad port", what, addr)
	}
	return upstream{host: host, port: uint32(port)}, nil
}

// Serves reports whether nodes of region can be configured: any region of a one-store fleet,
// the listed ones of a multi-region fleet.
func (b *Builder) Serves(region string) bool {
	if len(b.settings.Regions) == 0 {
		return true
	}
	return slices.Contains(b.RegionNames(), region)
}

// RegionNames are the regions of a multi-region fleet, in Settings order; nil for one store.
func (b *Builder) RegionNames() []string {
	var out []string
	for _, r := range b.settings.Regions {
		out = append(out, r.Name)
	}
	return out
}

// Defaults are the edge settings a region gets when nothing is stored.
func (b *Builder) Defaults() edgesettings.Effective {
	f := b.settings.Filter
	return edgesettings.Effective{PerViewer: f.Limits.PerViewer, PerIP: f.Limits.PerIP, CaptchaMode: f.Captcha.Mode,
		TrustedHops: b.settings.TrustedHops, ProxyProtocol: b.settings.ProxyProtocol}
}

// FilterConfig is the votefilter configuration a node in region gets at version.
func (b *Builder) FilterConfig(region string, state State, version string) edgeconfig.Config {
	c := b.settings.Filter
	c.Region = region
	c.Version = version
	if len(b.settings.Regions) > 0 {
		c.PeerRegions = nil
		for _, r := range b.settings.Regions {
			if r.Name == region {
				c.Redis, c.SQS = r.Redis, r.SQS
			} else {
				c.PeerRegions = append(c.PeerRegions, r)
			}
		}
	}
	c.StatusCluster = StatusCluster
	if b.collector != nil {
		c.Tracing = &edgeconfig.TracingConfig{SamplingPercent: b.settings.Tracing.SamplingPercent}
	}
	eff := state.Edge.Resolve(b.Defaults(), region)
	c.Limits = edgeconfig.Limits{PerViewer: eff.PerViewer, PerIP: eff.PerIP}
	c.Captcha.Mode = eff.CaptchaMode
	// Never send null: an empty list says "no election is open" explicitly.
	c.Elections = make([]edgeconfig.Election, 0, len(state.Elections))
	for _, e := range state.Elections {
		if e.CandidateIDs == nil {
			e.CandidateIDs = []string{}
		}
		c.Elections = append(c.Elections, e)
	}
	return c
}

// CheckEdgeSettings tells whether storing o for scope would give every region a config the
// filter accepts (a pow secret for pow, a siteverify service for siteverify), so the admin API
// refuses a setting that would otherwise stop every later config push.
func (b *Builder) CheckEdgeSettings(current edgesettings.Set, scope string, o edgesettings.Override) error {
	if err := o.Validate(); err != nil {
		return err
	}
	next := edgesettings.Set{Global: current.Global, Regions: map[string]edgesettings.Override{}}
	for r, ov := range current.Regions {
		next.Regions[r] = ov
	}
	if scope == edgesettings.Global {
		next.Global = o
	} else {
		next.Regions[scope] = o
	}
	// Every region with an override, and one standing for all regions without one.
	regions := append(next.RegionNames(), "region-without-override")
	for _, r := range regions {
		eff := next.Resolve(b.Defaults(), r)
		if eff.CaptchaMode == "siteverify" && b.siteverify == nil {
			return errors.New("captchaMode siteverify needs the control plane's XDS_SITEVERIFY_ADDR")
		}
		if _, err := b.filterJSON(r, State{Edge: next}, "check"); err != nil {
			return err
		}
	}
	return nil
}

// Build returns the complete snapshot for one node. Resource types whose content equals prev's
// keep prev's version, so Envoy is only sent what changed: an election or limit change moves
// the extension config alone and the listener is never drained for it (a change of where the
// client address comes from does replace the listener). The snapshot is checked with Consistent
// so that Envoy never gets a listener whose route is missing.
func (b *Builder) Build(version string, node Node, state State, prev *cache.Snapshot) (*cache.Snapshot, error) {
	if node.Region == "" {
		return nil, errors.New("region is required")
	}
	if !b.Serves(node.Region) {
		return nil, fmt.Errorf("region %q has no admission store: the fleet's regions are %v", node.Region, b.RegionNames())
	}
	port := b.settings.ListenerPort
	if node.ListenerPort != 0 {
		port = node.ListenerPort
	}
	l, err := b.listener(port, state.Edge.Resolve(b.Defaults(), node.Region))
	if err != nil {
		return nil, err
	}
	rc, err := b.routeConfig()
	if err != nil {
		return nil, err
	}
	clusters, err := b.clusters()
	if err != nil {
		return nil, err
	}
	items := map[resource.Type][]types.Resource{
		resource.ListenerType: {l},
		resource.RouteType:    {rc},
		resource.ClusterType:  clusters,
	}
	if b.voteFilter {
		ext, err := b.extensionConfig(node.Region, state, version)
		if err != nil {
			return nil, err
		}
		// Unchanged content keeps the old version, and the old version string inside it.
		if prevVersion := prev.GetVersion(resource.ExtensionConfigType); prevVersion != "" && prevVersion != version {
			if same, err := b.extensionConfig(node.Region, state, prevVersion); err == nil &&
				equalResources(prev.GetResources(resource.ExtensionConfigType), []types.Resource{same}) {
				ext = same
			}
		}
		items[resource.ExtensionConfigType] = []types.Resource{ext}
	}
	snap := &cache.Snapshot{}
	for typ, res := range items {
		v := version
		if old := prev.GetResources(typ); old != nil && equalResources(old, res) {
			v = prev.GetVersion(typ)
		}
		snap.Resources[cache.GetResponseType(typ)] = cache.NewResources(v, res)
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("snapshot inconsistent: %w", err)
	}
	return snap, nil
}

// equalResources compares by name and proto content.
func equalResources(old map[string]types.Resource, res []types.Resource) bool {
	if len(old) != len(res) {
		return false
	}
	for _, r := range res {
		o, ok := old[cache.GetResourceName(r)]
		if !ok || !proto.Equal(o, r) {
			return false
		}
	}
	return true
}

// listener is the public listener; eff says where the client address comes from.
func (b *Builder) listener(port int, eff edgesettings.Effective) (*listener.Listener, error) {
	var filters []*hcm.HttpFilter
	if b.voteFilter {
		filters = append(filters, &hcm.HttpFilter{
			Name: VoteFilterName,
			// The filter's config comes by ECDS: a new one is swapped in for new streams while
			// the listener and its connections stay.
			ConfigType: &hcm.HttpFilter_ConfigDiscovery{ConfigDiscovery: &core.ExtensionConfigSource{
				ConfigSource: adsSource(),
				TypeUrls:     []string{DynamicModuleFilterTypeURL},
			}},
		})
	}
	routerAny, err := deterministicAny(&router.Router{})
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
		// and the processor, and an admin change into the audit trail.
		GenerateRequestId: wrapperspb.Bool(true),
		// A client's own x-request-id stays its correlation id (the contract echoes it as traceId);
		// without this Envoy would replace it on every request from outside.
		PreserveExternalRequestId: true,
		// The client address (per-IP limit, siteverify's remoteip) is the connection's peer, or
		// the X-Forwarded-For entry TrustedHops from the right when that many trusted proxies
		// stand in front: never an entry the client wrote itself. No address counts as internal
		// (Envoy's default), so clients' x-envoy-* headers are stripped as well.
		UseRemoteAddress:  wrapperspb.Bool(true),
		XffNumTrustedHops: uint32(eff.TrustedHops),
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
	if manager.LocalReplyConfig, err = localReplies(); err != nil {
		return nil, err
	}
	if b.collector != nil {
		if err := b.addTracing(manager); err != nil {
			return nil, err
		}
	}
	managerAny, err := deterministicAny(manager)
	if err != nil {
		return nil, err
	}
	var listenerFilters []*listener.ListenerFilter
	if eff.ProxyProtocol {
		// Required, not optional: a client that reaches the listener without the load balancer
		// could otherwise name any peer address it likes.
		ppAny, err := deterministicAny(&proxyprotocol.ProxyProtocol{})
		if err != nil {
			return nil, err
		}
		listenerFilters = append(listenerFilters, &listener.ListenerFilter{
			Name:       wellknown.ProxyProtocol,
			ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: ppAny},
		})
	}
	return &listener.Listener{
		ListenerFilters: listenerFilters,
		Name:            ListenerName,
		Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address:       b.settings.ListenerAddress,
			PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)},
		}}},
		FilterChains: []*listener.FilterChain{{
			Filters: []*listener.Filter{{
				Name:       wellknown.HTTPConnectionManager,
				ConfigType: &listener.Filter_TypedConfig{TypedConfig: managerAny},
			}},
		}},
	}, nil
}

// filterJSON renders and checks the votefilter config of region at version.
func (b *Builder) filterJSON(region string, state State, version string) ([]byte, error) {
	raw, err := json.Marshal(b.FilterConfig(region, state, version))
	if err != nil {
		return nil, err
	}
	// Refuse to ship what the filter itself would refuse: Envoy would NACK it and keep serving
	// the previous elections without anyone noticing until votes fail.
	if _, err := edgeconfig.Parse(raw); err != nil {
		return nil, err
	}
	return raw, nil
}

func (b *Builder) extensionConfig(region string, state State, version string) (*core.TypedExtensionConfig, error) {
	raw, err := b.filterJSON(region, state, version)
	if err != nil {
		return nil, err
	}
	cfgAny, err := deterministicAny(wrapperspb.String(string(raw)))
	if err != nil {
		return nil, err
	}
	filterAny, err := deterministicAny(&dynmodulesfilter.DynamicModuleFilter{
		DynamicModuleConfig: &dynmodules.DynamicModuleConfig{
			Name: ModuleName,
			// The Go runtime cannot be unloaded; dlclose on a config update would crash Envoy.
			DoNotClose: true,
		},
		FilterName:   edgeconfig.FilterName,
		FilterConfig: cfgAny,
	})
	if err != nil {
		return nil, err
	}
	return &core.TypedExtensionConfig{Name: VoteFilterName, TypedConfig: filterAny}, nil
}

func (b *Builder) routeConfig() (*route.RouteConfiguration, error) {
	votes, err := notFound("no such vote endpoint")
	if err != nil {
		return nil, err
	}
	other, err := notFound("no such endpoint")
	if err != nil {
		return nil, err
	}
	to := func(cluster string, timeout time.Duration) *route.Route_Route {
		return &route.Route_Route{Route: &route.RouteAction{
			ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cluster},
			Timeout:          durationpb.New(timeout),
		}}
	}
	routes := []*route.Route{
		// The vote filter answers votes before routing; whatever it lets through here has no
		// handler.
		{Match: prefix(contract.PathVotes), Action: votes},
		// A WebSocket lives for the whole show: no route timeout.
		{Match: prefix("/api/v1/results/stream/"), Action: to(ResultsCluster, 0)},
		{Match: prefix(contract.PathResults), Action: to(ResultsCluster, b.settings.UpstreamTimeout)},
	}
	if b.admin != nil {
		// The vote filter checks the admin permission at the edge; the control plane checks the
		// token again, so neither alone guards the elections.
		routes = append(routes, &route.Route{Match: prefix(contract.PathAdmin), Action: to(AdminCluster, b.settings.UpstreamTimeout)})
	}
	routes = append(routes, &route.Route{Match: prefix("/"), Action: other})
	return &route.RouteConfiguration{
		Name:         RouteName,
		VirtualHosts: []*route.VirtualHost{{Name: "public", Domains: []string{"*"}, Routes: routes}},
	}, nil
}

// localReplies makes every answer Envoy writes itself the contract's ErrorResponse, with the
// request's x-request-id as traceId and the status contract/errors.go gives the code (each
// mapping comes twice: with the request's id, and with a fresh one for a request without):
//
//   - an unreachable or failing upstream (results worker, admin API: no healthy host, refused
//     connection, reset, route timeout): 503 SERVICE_UNAVAILABLE with Retry-After;
//   - 404: NOT_FOUND; 413 (a body over Envoy's buffer limit): PAYLOAD_TOO_LARGE;
//   - any other 4xx (a malformed request or unknown method, headers over Envoy's limit, which
//     Envoy answers 431, a request timeout): 400 INVALID_REQUEST;
//   - 502, 503, 504: 503 SERVICE_UNAVAILABLE with Retry-After; any other 5xx: 500 INTERNAL_ERROR.
//
// The vote filter's replies and the routes' direct responses are JSON already and are left as
// they are: the mappers match only local replies whose response code details are neither.
func localReplies() (*hcm.LocalReplyConfig, error) {
	type mapping struct {
		filter     *accesslog.AccessLogFilter
		code       string
		message    string
		retryAfter bool
	}
	envoys := func(cond string) (*accesslog.AccessLogFilter, error) {
		return celFilter(fmt.Sprintf("response.code_details != '%s' && response.code_details != 'direct_response' && (%s)",
			edgeconfig.LocalReplyDetails, cond))
	}
	unavailable := "service temporarily unavailable, try again"
	mappings := []mapping{{
		filter: &accesslog.AccessLogFilter{FilterSpecifier: &accesslog.AccessLogFilter_ResponseFlagFilter{
			ResponseFlagFilter: &accesslog.ResponseFlagFilter{Flags: []string{"UH", "UF", "UO", "URX", "UT", "UC", "UR"}},
		}},
		code: contract.CodeUnavailable, message: unavailable, retryAfter: true,
	}}
	for _, m := range []struct {
		cond, code, message string
		retryAfter          bool
	}{
		{"response.code == 404", contract.CodeNotFound, "no such endpoint", false},
		{"response.code == 413", contract.CodePayloadTooLarge, "request too large", false},
		{"response.code >= 400 && response.code < 500", contract.CodeInvalidRequest,
			"request refused by the edge (%RESPONSE_CODE_DETAILS%)", false},
		{"response.code == 502 || response.code == 503 || response.code == 504", contract.CodeUnavailable, unavailable, true},
		{"response.code >= 500", contract.CodeInternal, "internal error", false},
	} {
		f, err := envoys(m.cond)
		if err != nil {
			return nil, err
		}
		mappings = append(mappings, mapping{filter: f, code: m.code, message: m.message, retryAfter: m.retryAfter})
	}
	// Envoy sets x-request-id once it has the request's headers; a request its codec refused
	// (unknown method, headers too large) never got one, so its traceId is a fresh UUID, as the
	// vote filter's is for a request without a usable id.
	hasRequestID, err := celFilter("'x-request-id' in request.headers")
	if err != nil {
		return nil, err
	}
	cfg := &hcm.LocalReplyConfig{}
	for _, m := range mappings {
		for _, traced := range []bool{true, false} {
			filter, traceID := m.filter, "%UNIQUE_ID%"
			if traced {
				filter, traceID = &accesslog.AccessLogFilter{FilterSpecifier: &accesslog.AccessLogFilter_AndFilter{
					AndFilter: &accesslog.AndFilter{Filters: []*accesslog.AccessLogFilter{m.filter, hasRequestID}},
				}}, "%REQ(X-REQUEST-ID)%"
			}
			body, err := structpb.NewStruct(map[string]any{"code": m.code, "message": m.message, "traceId": traceID})
			if err != nil {
				return nil, err
			}
			rm := &hcm.ResponseMapper{
				Filter:     filter,
				StatusCode: wrapperspb.UInt32(uint32(contract.Status(m.code))),
				BodyFormatOverride: &core.SubstitutionFormatString{
					Format:      &core.SubstitutionFormatString_JsonFormat{JsonFormat: body},
					ContentType: "application/json",
				},
			}
			if m.retryAfter {
				rm.HeadersToAdd = []*core.HeaderValueOption{{
					Header:       &core.HeaderValue{Key: "retry-after", Value: "1"},
					AppendAction: core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
				}}
			}
			cfg.Mappers = append(cfg.Mappers, rm)
		}
	}
	return cfg, nil
}

// celFilter matches what the CEL expression accepts (Envoy's attributes: response.code,
// response.code_details, ...).
func celFilter(expr string) (*accesslog.AccessLogFilter, error) {
	a, err := deterministicAny(&celv3.ExpressionFilter{Expression: expr})
	if err != nil {
		return nil, err
	}
	return &accesslog.AccessLogFilter{FilterSpecifier: &accesslog.AccessLogFilter_ExtensionFilter{
		ExtensionFilter: &accesslog.ExtensionFilter{
			Name:       "envoy.access_loggers.extension_filters.cel",
			ConfigType: &accesslog.ExtensionFilter_TypedConfig{TypedConfig: a},
		},
	}}, nil
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

func (b *Builder) clusters() ([]types.Resource, error) {
	out := []types.Resource{
		staticOrDNS(ResultsCluster, b.results),
		staticOrDNS(StatusCluster, b.status),
	}
	if b.admin != nil {
		out = append(out, staticOrDNS(AdminCluster, *b.admin))
	}
	if b.collector != nil {
		c, err := http2Cluster(staticOrDNS(TracingCluster, *b.collector))
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if b.siteverify != nil {
		c := staticOrDNS(SiteverifyCluster, *b.siteverify)
		if b.settings.Siteverify.TLS {
			ts, err := b.siteverifyTLS()
			if err != nil {
				return nil, err
			}
			c.TransportSocket = ts
		}
		out = append(out, c)
	}
	return out, nil
}

// siteverifyTLS verifies the service against the public CAs and its name against SNI: the
// filter sends the site secret there.
func (b *Builder) siteverifyTLS() (*core.TransportSocket, error) {
	sv := b.settings.Siteverify
	ctx := &tlsv3.UpstreamTlsContext{
		Sni: sv.SNI,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &core.DataSource{Specifier: &core.DataSource_Filename{Filename: sv.CAFile}},
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_DNS,
					Matcher: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: sv.SNI}},
				}},
			}},
		},
	}
	a, err := deterministicAny(ctx)
	if err != nil {
		return nil, err
	}
	return &core.TransportSocket{Name: wellknown.TransportSocketTLS, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

func staticOrDNS(name string, u upstream) *cluster.Cluster {
	kind := cluster.Cluster_STRICT_DNS
	if net.ParseIP(u.host) != nil {
		kind = cluster.Cluster_STATIC
	}
	return &cluster.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: kind},
		// Envoy's default breakers (1024 connections/requests) would cap WebSocket streams,
		// each of which holds an upstream connection, far below what a results worker serves.
		CircuitBreakers: &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
			MaxConnections:     wrapperspb.UInt32(100000),
			MaxPendingRequests: wrapperspb.UInt32(100000),
			MaxRequests:        wrapperspb.UInt32(100000),
		}}},
		DnsLookupFamily: cluster.Cluster_V4_PREFERRED,
		LoadAssignment: &endpoint.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpoint.LocalityLbEndpoints{{
				LbEndpoints: []*endpoint.LbEndpoint{{
					HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
						Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
							Address:       u.host,
							PortSpecifier: &core.SocketAddress_PortValue{PortValue: u.port},
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

// deterministicAny packs m with a stable byte order: the listener embeds maps (the JSON error
// bodies), and Go's default marshalling orders map entries randomly, which would make equal
// listeners differ — a new version, and for Envoy a changed listener to drain.
func deterministicAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}

// addTracing gives the connection manager Envoy's OpenTelemetry tracer: a span per request,
// exported over OTLP gRPC to the collector, for SamplingPercent of requests. The x-request-id
// is left as the client or Envoy made it, as it is the contract's traceId and the vote's
// correlation id (Envoy would otherwise write its trace decision into the UUID).
func (b *Builder) addTracing(manager *hcm.HttpConnectionManager) error {
	otel, err := deterministicAny(&tracev3.OpenTelemetryConfig{
		GrpcService: &core.GrpcService{
			TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: TracingCluster}},
			Timeout:         durationpb.New(time.Second),
		},
		ServiceName: TracingServiceName,
	})
	if err != nil {
		return err
	}
	// The decision still derives from the request id (a random UUID, or the client's), which
	// is what makes random_sampling apply: without it Envoy leaves sampling to the tracer, whose
	// default samples everything.
	reqID, err := deterministicAny(&uuidv3.UuidRequestIdConfig{PackTraceReason: wrapperspb.Bool(false)})
	if err != nil {
		return err
	}
	manager.RequestIdExtension = &hcm.RequestIDExtension{TypedConfig: reqID}
	manager.Tracing = &hcm.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: b.settings.Tracing.SamplingPercent},
		// Clients cannot force a trace (x-client-trace-id, x-envoy-force-trace) past the rate.
		ClientSampling: &typev3.Percent{Value: 0},
		Provider: &tracev3.Tracing_Http{
			Name:       "envoy.tracers.opentelemetry",
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: otel},
		},
	}
	return nil
}

// http2Cluster makes Envoy speak HTTP/2 to the cluster, as gRPC needs.
func http2Cluster(c *cluster.Cluster) (*cluster.Cluster, error) {
	opts, err := deterministicAny(&upstreamhttp.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &core.Http2ProtocolOptions{},
				},
			},
		},
	})
	if err != nil {
		return nil, err
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}
	return c, nil
}

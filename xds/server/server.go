// Package server is the control plane's ADS server: it keeps one snapshot per connected Envoy
// node, built for the node's region from the newest elections and edge settings, and
// republishes all of them with a new version whenever that state changes.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	xdslog "github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xds "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/edgesettings"
	"github.com/tvvote/voting/xds/snapshot"
)

// DefaultRegion is used for a node that says nothing about its region.
const DefaultRegion = "local"

// Source yields everything that shapes the edge config; in the binary it reads PostgreSQL.
type Source interface {
	Load(ctx context.Context) (snapshot.State, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context) (snapshot.State, error)

// Load calls f.
func (f SourceFunc) Load(ctx context.Context) (snapshot.State, error) { return f(ctx) }

// Versions hands out snapshot versions. They must only ever increase, also across restarts of
// the control plane, so operators can compare versions across the fleet and over time.
type Versions interface {
	Next(ctx context.Context) (uint64, error)
}

// ControlPlane owns the snapshot cache and decides what each node gets.
type ControlPlane struct {
	log      *slog.Logger
	builder  *snapshot.Builder
	cache    cache.SnapshotCache
	metrics  *metrics
	versions Versions

	mu sync.Mutex
	// loaded is false until the first successful load: until then nodes get nothing rather than
	// an empty election list that would wipe a restarted control plane's fleet.
	loaded  bool
	version uint64
	state   snapshot.State
	content []byte // state as JSON, to notice "nothing changed"
	// published remembers when recent versions were published, for the push latency.
	published map[string]time.Time
	nodes     map[string]*node
	streams   map[int64]*stream
	// peers names each open stream's client certificate until its first request logs it.
	peers map[int64]string
	// mtls, when set, serves ADS over mutual TLS.
	mtls *MutualTLS
}

type node struct {
	region       string
	listenerPort int
	streams      int
	// snap is the node's current snapshot: the next build keeps its per-type versions where
	// the content did not change.
	snap *cache.Snapshot
}

type stream struct {
	nodeID    string
	region    string
	connected time.Time
	// sent is the last response per type URL, to know which version a NACK rejects and what an
	// ACK acknowledges.
	sent map[string]sentResponse
}

type sentResponse struct {
	nonce   string
	version string
	// publishedAt is when the control plane published this version, if the stream was already
	// open then: the start of the push whose ACK ends the latency measurement.
	publishedAt time.Time
}

// memoryVersions counts in memory: for tests and for a control plane without a database.
type memoryVersions struct {
	mu sync.Mutex
	n  uint64
}

func (m *memoryVersions) Next(context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n++
	return m.n, nil
}

// New returns a control plane that builds snapshots with builder and registers its metrics
// with reg. Versions count from 1 in memory unless WithVersions is given.
func New(builder *snapshot.Builder, log *slog.Logger, reg prometheus.Registerer, opts ...Option) *ControlPlane {
	cp := &ControlPlane{
		log:       log,
		builder:   builder,
		cache:     cache.NewSnapshotCache(true, cache.IDHash{}, libraryLogger(log)),
		metrics:   newMetrics(reg),
		versions:  &memoryVersions{},
		published: map[string]time.Time{},
		nodes:     map[string]*node{},
		streams:   map[int64]*stream{},
		peers:     map[int64]string{},
	}
	for _, o := range opts {
		o(cp)
	}
	return cp
}

// Option configures a ControlPlane.
type Option func(*ControlPlane)

// WithVersions takes versions from v, e.g. a PostgreSQL sequence.
func WithVersions(v Versions) Option { return func(cp *ControlPlane) { cp.versions = v } }

// WithMutualTLS serves ADS over mutual TLS with m: an Envoy without a client certificate from
// m's CA gets no stream, hence no config.
func WithMutualTLS(m *MutualTLS) Option { return func(cp *ControlPlane) { cp.mtls = m } }

// Cache is the snapshot cache, for inspection.
func (cp *ControlPlane) Cache() cache.SnapshotCache { return cp.cache }

// Version is the newest published version, 0 before the first load.
func (cp *ControlPlane) Version() uint64 {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.version
}

// State is the newest published state.
func (cp *ControlPlane) State() snapshot.State {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.state
}

// Publish makes state the new content. If it differs from what is published, the version goes
// up and every known node gets a new snapshot; otherwise nothing happens.
func (cp *ControlPlane) Publish(ctx context.Context, state snapshot.State) (bool, error) {
	if state.Elections == nil {
		state.Elections = []edgeconfig.Election{} // nil and empty mean the same to the edge
	}
	if state.Edge.Regions == nil {
		state.Edge.Regions = map[string]edgesettings.Override{}
	}
	content, err := json.Marshal(state)
	if err != nil {
		return false, err
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.loaded && bytes.Equal(content, cp.content) {
		return false, nil
	}
	// Build everything before committing, so a bad state leaves the last good one live. The
	// probe build checks the state even while no node is connected.
	probe := DefaultRegion
	if regions := cp.builder.RegionNames(); len(regions) > 0 {
		probe = regions[0]
	}
	if _, err := cp.builder.Build("probe", snapshot.Node{ID: "probe", Region: probe}, state, nil); err != nil {
		return false, err
	}
	next, err := cp.versions.Next(ctx)
	if err != nil {
		return false, fmt.Errorf("next version: %w", err)
	}
	version := strconv.FormatUint(next, 10)
	snaps := make(map[string]*cache.Snapshot, len(cp.nodes))
	// Nodes of one region on one port with the same previous versions get the same snapshot:
	// build it once, not once per Envoy of the fleet. (Snapshots are read-only once set.)
	type shape struct {
		region   string
		port     int
		versions [4]string
	}
	built := map[shape]*cache.Snapshot{}
	for id, n := range cp.nodes {
		key := shape{region: n.region, port: n.listenerPort}
		for i, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.ExtensionConfigType} {
			key.versions[i] = n.snap.GetVersion(typ)
		}
		snap, ok := built[key]
		if !ok {
			if snap, err = cp.builder.Build(version, n.snapshotNode(id), state, n.snap); err != nil {
				return false, fmt.Errorf("node %s: %w", id, err)
			}
			built[key] = snap
		}
		snaps[id] = snap
	}
	cp.loaded, cp.version, cp.state, cp.content = true, next, state, content
	now := time.Now()
	cp.published[version] = now
	for v, at := range cp.published {
		// Pushes slower than this are not pushes any more; the map stays small.
		if now.Sub(at) > time.Minute {
			delete(cp.published, v)
		}
	}
	cp.metrics.version.Set(float64(next))
	cp.metrics.elections.Set(float64(len(state.Elections)))
	for id, snap := range snaps {
		cp.nodes[id].snap = snap
		if err := cp.cache.SetSnapshot(ctx, id, snap); err != nil {
			cp.log.Error("set snapshot", "node", id, "version", next, "err", err)
		}
	}
	cp.log.Info("published snapshot", "version", next, "elections", len(state.Elections), "nodes", len(snaps))
	return true, nil
}

func (n *node) snapshotNode(id string) snapshot.Node {
	return snapshot.Node{ID: id, Region: n.region, ListenerPort: n.listenerPort}
}

// Run loads the state every interval and whenever changes fires, until ctx ends. A failed load
// keeps the last good state published.
func (cp *ControlPlane) Run(ctx context.Context, src Source, changes <-chan struct{}, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		state, err := src.Load(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			cp.metrics.reloadErrors.Inc()
			cp.log.Warn("load state; keeping the published one", "err", err)
		default:
			if _, err := cp.Publish(ctx, state); err != nil {
				cp.metrics.reloadErrors.Inc()
				cp.log.Error("state rejected; keeping the published one", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-changes:
		}
	}
}

// Serve answers ADS on lis until ctx ends.
func (cp *ControlPlane) Serve(ctx context.Context, lis net.Listener) error {
	srv := xds.NewServer(ctx, cp.cache, cp.callbacks())
	opts := []grpc.ServerOption{
		// Pings find Envoys that vanished without closing their stream, so the stream gauge and
		// the per-node snapshots do not outlive them.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if cp.mtls != nil {
		opts = append(opts, grpc.Creds(cp.mtls.Credentials()))
	}
	g := grpc.NewServer(opts...)
	discovery.RegisterAggregatedDiscoveryServiceServer(g, srv)
	go func() {
		<-ctx.Done()
		// ADS streams never end on their own, so a graceful stop would wait forever.
		g.Stop()
	}()
	if err := g.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

func (cp *ControlPlane) callbacks() xds.Callbacks {
	return xds.CallbackFuncs{
		StreamOpenFunc:     cp.onOpen,
		StreamRequestFunc:  cp.onRequest,
		StreamResponseFunc: cp.onResponse,
		StreamClosedFunc:   cp.onClosed,
		DeltaStreamOpenFunc: func(context.Context, int64, string) error {
			return errors.New("delta xDS is not served: configure ads_config.api_type GRPC")
		},
	}
}

// onOpen remembers who the stream's client certificate names, for the "envoy connected" line.
func (cp *ControlPlane) onOpen(ctx context.Context, streamID int64, _ string) error {
	if id := peerIdentity(ctx); id != "" {
		cp.mu.Lock()
		cp.peers[streamID] = id
		cp.mu.Unlock()
	}
	return nil
}

// onRequest runs before the request's watch is created, so a snapshot set here answers it.
func (cp *ControlPlane) onRequest(streamID int64, req *discovery.DiscoveryRequest) error {
	n := req.GetNode()
	cp.mu.Lock()
	defer cp.mu.Unlock()
	s, seen := cp.streams[streamID]
	if !seen {
		// Envoy sends its node only on the first request of a stream.
		if n.GetId() == "" {
			return errors.New("node.id is required")
		}
		port, err := ListenerPort(n)
		if err != nil {
			return err
		}
		s = &stream{nodeID: n.GetId(), region: Region(n), connected: time.Now(), sent: map[string]sentResponse{}}
		cp.streams[streamID] = s
		if err := cp.connected(s, streamID, port); err != nil {
			return err
		}
	}
	switch {
	case req.GetErrorDetail() != nil:
		cp.nack(s, req)
	case req.GetResponseNonce() != "":
		cp.ack(s, req)
	}
	return nil
}

// connected accounts a new stream and, for a node not seen yet (or in a new region or port),
// sets the node's snapshot. Called with cp.mu held.
func (cp *ControlPlane) connected(s *stream, streamID int64, port int) error {
	cp.metrics.streams.WithLabelValues(s.region).Inc()
	if id, ok := cp.peers[streamID]; ok {
		delete(cp.peers, streamID)
		cp.log.Info("envoy connected", "node", s.nodeID, "region", s.region, "stream", streamID, "client_cert", id)
	} else {
		cp.log.Info("envoy connected", "node", s.nodeID, "region", s.region, "stream", streamID)
	}
	known, ok := cp.nodes[s.nodeID]
	if !ok {
		known = &node{region: s.region, listenerPort: port}
		cp.nodes[s.nodeID] = known
		cp.metrics.nodes.WithLabelValues(s.region).Inc()
	}
	known.streams++
	if ok && known.region == s.region && known.listenerPort == port && known.snap != nil {
		return nil
	}
	if ok && known.region != s.region {
		cp.metrics.nodes.WithLabelValues(known.region).Dec()
		cp.metrics.nodes.WithLabelValues(s.region).Inc()
		cp.forgetNodeVersions(s.nodeID, known.region)
	}
	known.region, known.listenerPort = s.region, port
	if !cp.loaded {
		// Publish covers this node once the first load succeeds.
		return nil
	}
	snap, err := cp.builder.Build(strconv.FormatUint(cp.version, 10), known.snapshotNode(s.nodeID), cp.state, known.snap)
	if err != nil {
		return fmt.Errorf("build snapshot for %s: %w", s.nodeID, err)
	}
	known.snap = snap
	return cp.cache.SetSnapshot(context.Background(), s.nodeID, snap)
}

// ack records the version a node runs and, for a push that followed a publish, how long the
// way from Publish to the node's ACK took. Called with cp.mu held.
func (cp *ControlPlane) ack(s *stream, req *discovery.DiscoveryRequest) {
	sent, ok := s.sent[req.GetTypeUrl()]
	if !ok || sent.nonce != req.GetResponseNonce() || sent.version != req.GetVersionInfo() {
		return
	}
	typ := shortType(req.GetTypeUrl())
	if v, err := strconv.ParseFloat(sent.version, 64); err == nil {
		cp.metrics.nodeVersion.WithLabelValues(s.nodeID, s.region, typ).Set(v)
	}
	if !sent.publishedAt.IsZero() {
		cp.metrics.pushLatency.WithLabelValues(typ).Observe(time.Since(sent.publishedAt).Seconds())
		// One observation per push, even if Envoy repeats the ACK.
		sent.publishedAt = time.Time{}
		s.sent[req.GetTypeUrl()] = sent
	}
	cp.log.Debug("envoy acknowledged config", "node", s.nodeID, "region", s.region, "type_url", req.GetTypeUrl(),
		"version", sent.version)
}

// nack counts and logs a rejected config. The request then claims the rejected version: the
// cache compares versions only, and would otherwise resend the rejected config at once, in a
// loop, for as long as it is published. Envoy keeps its last good config meanwhile, and no
// other node is affected: each node has its own snapshot.
func (cp *ControlPlane) nack(s *stream, req *discovery.DiscoveryRequest) {
	cp.metrics.nacks.WithLabelValues(req.GetTypeUrl(), s.region).Inc()
	rejected := ""
	if sent, ok := s.sent[req.GetTypeUrl()]; ok && sent.nonce == req.GetResponseNonce() {
		rejected = sent.version
	}
	cp.log.Error("envoy rejected config (NACK)",
		"node", s.nodeID, "region", s.region, "type_url", req.GetTypeUrl(),
		"rejected_version", rejected, "kept_version", req.GetVersionInfo(),
		"nonce", req.GetResponseNonce(), "error_code", req.GetErrorDetail().GetCode(),
		"err", req.GetErrorDetail().GetMessage())
	if rejected != "" {
		req.VersionInfo = rejected
	}
}

func (cp *ControlPlane) onResponse(_ context.Context, streamID int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	s := cp.streams[streamID]
	if s == nil {
		return
	}
	sent := sentResponse{nonce: resp.GetNonce(), version: resp.GetVersionInfo()}
	if at, ok := cp.published[sent.version]; ok && at.After(s.connected) {
		sent.publishedAt = at
	}
	s.sent[resp.GetTypeUrl()] = sent
}

func (cp *ControlPlane) onClosed(streamID int64, _ *core.Node) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	delete(cp.peers, streamID)
	s, ok := cp.streams[streamID]
	if !ok {
		return
	}
	delete(cp.streams, streamID)
	cp.metrics.streams.WithLabelValues(s.region).Dec()
	cp.log.Info("envoy disconnected", "node", s.nodeID, "region", s.region, "stream", streamID)
	if known := cp.nodes[s.nodeID]; known != nil {
		known.streams--
		if known.streams <= 0 {
			// Node ids churn with autoscaling; a node that comes back is rebuilt on its first request.
			delete(cp.nodes, s.nodeID)
			cp.cache.ClearSnapshot(s.nodeID)
			cp.metrics.nodes.WithLabelValues(known.region).Dec()
			cp.forgetNodeVersions(s.nodeID, known.region)
		}
	}
}

// forgetNodeVersions drops a gone node's series, so the version gauge lists live nodes only.
func (cp *ControlPlane) forgetNodeVersions(nodeID, region string) {
	for _, t := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.ExtensionConfigType} {
		cp.metrics.nodeVersion.DeleteLabelValues(nodeID, region, shortType(t))
	}
}

// shortType is the last part of a type URL, as a readable metric label.
func shortType(typeURL string) string {
	switch typeURL {
	case resource.ListenerType:
		return "listener"
	case resource.RouteType:
		return "route"
	case resource.ClusterType:
		return "cluster"
	case resource.ExtensionConfigType:
		return "extension_config"
	}
	return typeURL
}

// ListenerPort is the node metadata field "listener_port" (a number or a string), 0 if absent:
// it lets several edges share one host in development.
func ListenerPort(n *core.Node) (int, error) {
	v, ok := n.GetMetadata().GetFields()["listener_port"]
	if !ok {
		return 0, nil
	}
	var p int
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		p = int(k.NumberValue)
	case *structpb.Value_StringValue:
		var err error
		if p, err = strconv.Atoi(k.StringValue); err != nil {
			return 0, fmt.Errorf("node metadata listener_port %q is not a port", k.StringValue)
		}
	}
	if p < 1 || p > 65535 {
		return 0, fmt.Errorf("node metadata listener_port %v out of range 1-65535", v.AsInterface())
	}
	return p, nil
}

// Region is the node's metadata field "region", else its locality's region, else DefaultRegion.
func Region(n *core.Node) string {
	if v := n.GetMetadata().GetFields()["region"].GetStringValue(); v != "" {
		return v
	}
	if r := n.GetLocality().GetRegion(); r != "" {
		return r
	}
	return DefaultRegion
}

// libraryLogger routes go-control-plane's own messages into slog; its info lines are chatty
// protocol details, so they go to debug.
func libraryLogger(log *slog.Logger) xdslog.Logger {
	return xdslog.LoggerFuncs{
		DebugFunc: func(f string, a ...any) { log.Debug(fmt.Sprintf(f, a...), "component", "go-control-plane") },
		InfoFunc:  func(f string, a ...any) { log.Debug(fmt.Sprintf(f, a...), "component", "go-control-plane") },
		WarnFunc:  func(f string, a ...any) { log.Warn(fmt.Sprintf(f, a...), "component", "go-control-plane") },
		ErrorFunc: func(f string, a ...any) { log.Error(fmt.Sprintf(f, a...), "component", "go-control-plane") },
	}
}

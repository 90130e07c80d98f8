// Package server is the control plane's ADS server: it keeps one snapshot per connected Envoy
// node, built for the node's region from the newest elections, and republishes all of them with
// a new version whenever the elections change.
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
	xds "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/tvvote/voting/filters/votefilter"
	"github.com/tvvote/voting/xds/snapshot"
)

// DefaultRegion is used for a node that says nothing about its region.
const DefaultRegion = "local"

// Source yields the elections the edge must know; elections.Store reads them from PostgreSQL.
type Source interface {
	Load(ctx context.Context) ([]votefilter.Election, error)
}

// ControlPlane owns the snapshot cache and decides what each node gets.
type ControlPlane struct {
	log     *slog.Logger
	builder *snapshot.Builder
	cache   cache.SnapshotCache
	metrics *metrics

	mu sync.Mutex
	// loaded is false until the first successful load: until then nodes get nothing rather than
	// an empty election list that would wipe a restarted control plane's fleet.
	loaded    bool
	version   uint64
	elections []votefilter.Election
	content   []byte // elections as JSON, to notice "nothing changed"
	nodes     map[string]*node
	streams   map[int64]*stream
}

type node struct {
	region  string
	streams int
}

type stream struct {
	nodeID string
	region string
	// sent is the last response per type URL, to know which version a NACK rejects.
	sent map[string]sentResponse
}

type sentResponse struct {
	nonce   string
	version string
}

// New returns a control plane that builds snapshots with builder and registers its metrics
// with reg.
func New(builder *snapshot.Builder, log *slog.Logger, reg prometheus.Registerer) *ControlPlane {
	return &ControlPlane{
		log:     log,
		builder: builder,
		cache:   cache.NewSnapshotCache(true, cache.IDHash{}, libraryLogger(log)),
		metrics: newMetrics(reg),
		nodes:   map[string]*node{},
		streams: map[int64]*stream{},
	}
}

// Cache is the snapshot cache, for inspection.
func (cp *ControlPlane) Cache() cache.SnapshotCache { return cp.cache }

// Version is the newest published version, 0 before the first load.
func (cp *ControlPlane) Version() uint64 {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.version
}

// Publish makes elections the new content. If it differs from what is published, the version
// goes up by one and every known node gets a new snapshot; otherwise nothing happens.
func (cp *ControlPlane) Publish(ctx context.Context, elections []votefilter.Election) (bool, error) {
	if elections == nil {
		elections = []votefilter.Election{} // nil and empty mean the same to the edge
	}
	content, err := json.Marshal(elections)
	if err != nil {
		return false, err
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.loaded && bytes.Equal(content, cp.content) {
		return false, nil
	}
	next := cp.version + 1
	// Build everything before committing, so a bad election set leaves the last good one live.
	// The probe build checks the set even while no node is connected.
	if _, err := cp.builder.Build(strconv.FormatUint(next, 10), DefaultRegion, elections); err != nil {
		return false, err
	}
	snaps := make(map[string]*cache.Snapshot, len(cp.nodes))
	for id, n := range cp.nodes {
		snap, err := cp.builder.Build(strconv.FormatUint(next, 10), n.region, elections)
		if err != nil {
			return false, fmt.Errorf("node %s: %w", id, err)
		}
		snaps[id] = snap
	}
	cp.loaded, cp.version, cp.elections, cp.content = true, next, elections, content
	cp.metrics.version.Set(float64(next))
	cp.metrics.elections.Set(float64(len(elections)))
	for id, snap := range snaps {
		if err := cp.cache.SetSnapshot(ctx, id, snap); err != nil {
			cp.log.Error("set snapshot", "node", id, "version", next, "error", err)
		}
	}
	cp.log.Info("published snapshot", "version", next, "elections", len(elections), "nodes", len(snaps))
	return true, nil
}

// Run loads elections every interval and whenever changes fires, until ctx ends. A failed load
// keeps the last good elections published.
func (cp *ControlPlane) Run(ctx context.Context, src Source, changes <-chan struct{}, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		elections, err := src.Load(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			cp.metrics.reloadErrors.Inc()
			cp.log.Warn("load elections; keeping the published ones", "error", err)
		default:
			if _, err := cp.Publish(ctx, elections); err != nil {
				cp.metrics.reloadErrors.Inc()
				cp.log.Error("elections rejected; keeping the published ones", "error", err)
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
	g := grpc.NewServer(
		// Pings find Envoys that vanished without closing their stream, so the stream gauge and
		// the per-node snapshots do not outlive them.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
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
		StreamRequestFunc:  cp.onRequest,
		StreamResponseFunc: cp.onResponse,
		StreamClosedFunc:   cp.onClosed,
		DeltaStreamOpenFunc: func(context.Context, int64, string) error {
			return errors.New("delta xDS is not served: configure ads_config.api_type GRPC")
		},
	}
}

// onRequest runs before the request's watch is created, so a snapshot set here answers it.
func (cp *ControlPlane) onRequest(streamID int64, req *discovery.DiscoveryRequest) error {
	n := req.GetNode()
	if n.GetId() == "" {
		return errors.New("node.id is required")
	}
	region := Region(n)

	cp.mu.Lock()
	defer cp.mu.Unlock()
	s, seen := cp.streams[streamID]
	if !seen {
		s = &stream{nodeID: n.GetId(), region: region, sent: map[string]sentResponse{}}
		cp.streams[streamID] = s
		if err := cp.connected(s, streamID); err != nil {
			return err
		}
	}
	if req.GetErrorDetail() != nil {
		cp.nack(s, req)
	}
	return nil
}

// connected accounts a new stream and, for a node not seen yet (or in a new region), sets the
// node's snapshot. Called with cp.mu held.
func (cp *ControlPlane) connected(s *stream, streamID int64) error {
	cp.metrics.streams.WithLabelValues(s.region).Inc()
	cp.log.Info("envoy connected", "node", s.nodeID, "region", s.region, "stream", streamID)
	known, ok := cp.nodes[s.nodeID]
	if !ok {
		known = &node{region: s.region}
		cp.nodes[s.nodeID] = known
	}
	known.streams++
	if ok && known.region == s.region {
		return nil
	}
	known.region = s.region
	if !cp.loaded {
		// Publish covers this node once the first load succeeds.
		return nil
	}
	snap, err := cp.builder.Build(strconv.FormatUint(cp.version, 10), s.region, cp.elections)
	if err != nil {
		return fmt.Errorf("build snapshot for %s: %w", s.nodeID, err)
	}
	return cp.cache.SetSnapshot(context.Background(), s.nodeID, snap)
}

// nack counts and logs a rejected config. The request then claims the rejected version: the
// cache compares versions only, and would otherwise resend the rejected config at once, in a
// loop, for as long as it is published. Envoy keeps its last good config meanwhile.
func (cp *ControlPlane) nack(s *stream, req *discovery.DiscoveryRequest) {
	cp.metrics.nacks.WithLabelValues(req.GetTypeUrl()).Inc()
	rejected := ""
	if sent, ok := s.sent[req.GetTypeUrl()]; ok && sent.nonce == req.GetResponseNonce() {
		rejected = sent.version
	}
	cp.log.Error("envoy rejected config (NACK)",
		"node", s.nodeID, "region", s.region, "type_url", req.GetTypeUrl(),
		"rejected_version", rejected, "kept_version", req.GetVersionInfo(),
		"nonce", req.GetResponseNonce(), "error_code", req.GetErrorDetail().GetCode(),
		"error", req.GetErrorDetail().GetMessage())
	if rejected != "" {
		req.VersionInfo = rejected
	}
}

func (cp *ControlPlane) onResponse(_ context.Context, streamID int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if s := cp.streams[streamID]; s != nil {
		s.sent[resp.GetTypeUrl()] = sentResponse{nonce: resp.GetNonce(), version: resp.GetVersionInfo()}
	}
}

func (cp *ControlPlane) onClosed(streamID int64, n *core.Node) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
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
		}
	}
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

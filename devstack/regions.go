package devstack

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tvvote/voting/envoy"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/workers/processor/processorconfig"
	"github.com/tvvote/voting/xds/xdsconfig"
)

// PeerRegion is a further region of a multi-region stack (Options.Regions): its own Envoy,
// Redis, vote queue with its dead-letter queue, and processor, beside the stack's region and
// sharing its control plane, PostgreSQL, results worker and identity provider, as the regions
// of a deployment share the global ones.
type PeerRegion struct {
	Name string
	// Port is the public listener of the region's Envoy, AdminPort its admin interface.
	Port, AdminPort int
	Redis           *Redis
	// QueueURL is the region's vote queue; its dead letters go to QueueURL + "-dlq".
	QueueURL  string
	processor processorconfig.Config
}

// URL is the region's public entry point.
func (r *PeerRegion) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", r.Port) }

// AdminURL is the Envoy admin interface of the region's edge (/stats, /config_dump).
func (r *PeerRegion) AdminURL() string { return fmt.Sprintf("http://127.0.0.1:%d", r.AdminPort) }

// ProcessorMetricsURL is the Prometheus endpoint of the region's processor.
func (r *PeerRegion) ProcessorMetricsURL() string {
	return "http://" + r.processor.MetricsAddr + "/metrics"
}

// InRegion names a component of a peer region: ComponentEnvoy, ComponentProcessor or
// ComponentRedis followed by the region, e.g. "envoy-us-east-1".
func InRegion(component, region string) string { return component + "-" + region }

// peerPorts are the fixed ports of the second region of `make run -regions` (README); later
// regions and tests get free ones.
var peerPorts = struct{ envoy, admin, redis, processorMetrics int }{8090, 9911, 56390, 18013}

// startPeerRedis gives every region after the first its ports and starts its Redis; it runs
// after the engines, before the programs are defined.
func (s *Stack) startPeerRedis(ctx context.Context, names []string) error {
	for i, name := range names {
		r := &PeerRegion{Name: name, QueueURL: s.SQS.QueueURL(peerQueue(name))}
		ports := []*int{&r.Port, &r.AdminPort}
		redisPort := 0
		if i == 0 && s.Ports == DefaultPorts {
			r.Port, r.AdminPort, redisPort = peerPorts.envoy, peerPorts.admin, peerPorts.redis
		} else {
			ports = append(ports, &redisPort)
			for _, p := range ports {
				var err error
				if *p, err = FreePort(); err != nil {
					return err
				}
			}
		}
		var err error
		if r.Redis, err = startRedis(ctx, redisPort, InRegion(ComponentRedis, name)); err != nil {
			return fmt.Errorf("region %s: %w", name, err)
		}
		r.Redis.child.report(s.exits)
		s.Peers = append(s.Peers, r)
	}
	return nil
}

// peerQueue is the vote queue of a peer region.
func peerQueue(region string) string { return "votes-" + region }

// regionStores are the control plane's XDS_REGION_STORES for a multi-region stack: the stack's
// region on its Redis and `votes` queue, each peer on its own, through a LatencyProxy each
// with a delay.
func (s *Stack) regionStores(delay time.Duration) (xdsconfig.RegionStores, error) {
	sqs := func(endpoint, queue string) edgeconfig.SQSConfig {
		return edgeconfig.SQSConfig{QueueURL: endpoint + "/" + AccountID + "/" + queue, Region: "us-east-1",
			Endpoint: endpoint, StaticCredentials: true}
	}
	stores := xdsconfig.RegionStores{{Name: s.Region, Redis: edgeconfig.RedisConfig{Addr: s.Redis.Addr},
		SQS: sqs(s.SQS.Endpoint, "votes")}}
	for _, r := range s.Peers {
		redisAddr, sqsEndpoint := r.Redis.Addr, s.SQS.Endpoint
		if delay > 0 {
			rp, err := StartLatencyProxy(r.Redis.Addr, delay)
			if err != nil {
				return nil, err
			}
			qp, err := StartLatencyProxy(addr(s.SQS.Port), delay)
			if err != nil {
				rp.Close()
				return nil, err
			}
			s.proxies = append(s.proxies, rp, qp)
			redisAddr, sqsEndpoint = rp.Addr, "http://"+qp.Addr
		}
		stores = append(stores, edgeconfig.RegionStore{Name: r.Name, Redis: edgeconfig.RedisConfig{Addr: redisAddr},
			SQS: sqs(sqsEndpoint, peerQueue(r.Name))})
	}
	return stores, nil
}

// definePeerPrograms registers each peer region's processor and Envoy.
func (s *Stack) definePeerPrograms(o Options) error {
	for i, r := range s.Peers {
		metrics := addr(mustFreePort())
		if i == 0 && s.Ports == DefaultPorts {
			metrics = addr(peerPorts.processorMetrics)
		}
		name := InRegion(ComponentProcessor, r.Name)
		var err error
		r.processor, err = defineProgram(s, name, filepath.Join(o.BinDir, "processor"), processorconfig.Config{
			DatabaseURL: s.Postgres.DSN, SQSEndpoint: s.SQS.Endpoint, SQSRegion: "us-east-1", QueueURL: r.QueueURL,
			RedisAddr: r.Redis.Addr, ReconcileRegion: r.Name, MetricsAddr: metrics, TracingOTLPAddr: s.otlpAddr(),
		}, processorconfig.Load)
		if err != nil {
			return fmt.Errorf("processor of %s: %w", r.Name, err)
		}
		s.services[name].ready = httpOK(r.ProcessorMetricsURL())

		nodeID := "edge-" + r.Name + "-" + itoa(r.Port)
		xdsTLS, err := s.PKI.ClientTLS(nodeID)
		if err != nil {
			return err
		}
		boot := filepath.Join(s.logs, fmt.Sprintf("envoy-bootstrap-%d.yaml", r.AdminPort))
		f, err := os.Create(boot)
		if err != nil {
			return err
		}
		err = envoy.RenderBootstrap(f, envoy.BootstrapParams{AdminPort: r.AdminPort, XDSPort: s.Ports.XDS, NodeID: nodeID,
			Region: r.Name, ListenerPort: r.Port, XDSTLS: xdsTLS})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		edge := InRegion(ComponentEnvoy, r.Name)
		s.define(edge, o.EnvoyBin, envoyArgs(boot), s.envoyEnv...)
		url := r.URL() + "/api/v1/results/live/00000000-0000-0000-0000-000000000000"
		s.services[edge].ready = func(ctx context.Context) error { return getStatus(ctx, url, http.StatusNotFound, "ELECTION_NOT_FOUND") }
		s.services[edge].readyTimeout = 60 * time.Second
	}
	return nil
}

// startPeerPrograms starts each peer region's processor, then its Envoy.
func (s *Stack) startPeerPrograms(ctx context.Context) error {
	for _, r := range s.Peers {
		for _, name := range []string{InRegion(ComponentProcessor, r.Name), InRegion(ComponentEnvoy, r.Name)} {
			if err := s.services[name].Start(ctx); err != nil {
				return err
			}
		}
		s.scrapeEdge(&Edge{Region: r.Name, Port: r.Port, AdminPort: r.AdminPort})
	}
	return nil
}

// peerComponents are the fault API's names of the peer regions' components.
func (s *Stack) peerComponents() []string {
	var out []string
	for _, r := range s.Peers {
		for _, c := range []string{ComponentEnvoy, ComponentProcessor, ComponentRedis} {
			out = append(out, InRegion(c, r.Name))
		}
	}
	return out
}

// peerRedis is the child of a peer region's Redis named name, or nil.
func (s *Stack) peerRedis(name string) *child {
	for _, r := range s.Peers {
		if name == InRegion(ComponentRedis, r.Name) && r.Redis != nil {
			return &r.Redis.child
		}
	}
	return nil
}

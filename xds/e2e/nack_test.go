package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	dynmodules "github.com/envoyproxy/go-control-plane/envoy/extensions/dynamic_modules/v3"
	dynmodulesfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_modules/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/edgesettings"
	"github.com/tvvote/voting/xds/elections"
	"github.com/tvvote/voting/xds/server"
	"github.com/tvvote/voting/xds/snapshot"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// An edge that runs a good config and is then sent one its filter refuses NACKs it and keeps
// admitting votes with the last good config; the next good config heals it. The bad config
// cannot come from the control plane itself (it checks every config with the filter's own
// parser before shipping), so this test runs a control plane in-process on the stack's
// database, Redis and queue, and slips the bad config into that edge's snapshot.
func TestNACKedConfigKeepsTheLastGoodOne(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, stack.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	builder, err := snapshot.NewBuilder(snapshot.Settings{
		ListenerPort: 1, // every edge of this test names its own
		ResultsAddr:  "127.0.0.1:" + strconv.Itoa(stack.Ports.Results),
		Filter: edgeconfig.Config{
			JWT:   edgeconfig.JWTConfig{Issuer: stack.Issuer(), Audience: stack.Audience, JWKSURL: stack.IdPURL() + "/.well-known/jwks.json"},
			Redis: edgeconfig.RedisConfig{Addr: stack.Redis.Addr},
			SQS: edgeconfig.SQSConfig{QueueURL: stack.SQS.QueueURL("votes"), Region: "us-east-1", Endpoint: stack.SQS.Endpoint,
				StaticCredentials: true},
			Limits:  edgeconfig.Limits{PerViewer: edgeconfig.Limit{Max: 100, WindowSeconds: 60}, PerIP: edgeconfig.Limit{Max: 1000000, WindowSeconds: 60}},
			Captcha: edgeconfig.CaptchaConfig{Mode: "off"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewJSONHandler(logs, nil))
	cp := server.New(builder, log, reg, server.WithVersions(server.SequenceVersions{Pool: pool}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = cp.Serve(ctx, lis) }()
	els, edge := elections.NewStore(pool), edgesettings.NewStore(pool)
	go cp.Run(ctx, server.SourceFunc(func(ctx context.Context) (snapshot.State, error) {
		es, err := els.Load(ctx)
		if err != nil {
			return snapshot.State{}, err
		}
		set, err := edge.Load(ctx)
		return snapshot.State{Elections: es, Edge: set}, err
	}), elections.Watch(ctx, stack.Postgres.DSN, log), time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("in-process control plane log:\n%s", logs.String())
		}
	})

	tok := adminToken(t)
	e := openElection(t, tok)
	victim, err := stack.StartEdge(ctx, devstack.EdgeOptions{Region: "nack-a", XDSPort: lis.Addr().(*net.TCPAddr).Port})
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Stop()
	bystander, err := stack.StartEdge(ctx, devstack.EdgeOptions{Region: "nack-b", XDSPort: lis.Addr().(*net.TCPAddr).Port})
	if err != nil {
		t.Fatal(err)
	}
	defer bystander.Stop()
	voteAccepted(t, victim, e, 2*time.Second)
	good := dump(t, victim).ecdsVersion

	// A filter config the module refuses, for the victim only.
	snap, err := cp.Cache().GetSnapshot(victim.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	bad := &cache.Snapshot{}
	for typ := range types.UnknownType {
		bad.Resources[typ] = snap.(*cache.Snapshot).Resources[typ]
	}
	cfgAny, _ := anypb.New(wrapperspb.String(`{"region": "nack-a", "elections": "not a list"}`))
	filterAny, _ := anypb.New(&dynmodulesfilter.DynamicModuleFilter{
		DynamicModuleConfig: &dynmodules.DynamicModuleConfig{Name: snapshot.ModuleName, DoNotClose: true},
		FilterName:          edgeconfig.FilterName,
		FilterConfig:        cfgAny,
	})
	bad.Resources[types.ExtensionConfig] = cache.NewResources("999999999", []types.Resource{
		&core.TypedExtensionConfig{Name: snapshot.VoteFilterName, TypedConfig: filterAny}})
	if err := cp.Cache().SetSnapshot(ctx, victim.NodeID, bad); err != nil {
		t.Fatal(err)
	}
	until(t, 5*time.Second, "victim NACKs", func() error {
		if !strings.Contains(logs.String(), `"msg":"envoy rejected config (NACK)","node":"`+victim.NodeID+`"`) {
			return fmt.Errorf("no NACK logged")
		}
		return nil
	})
	if !strings.Contains(logs.String(), `"rejected_version":"999999999"`) || !strings.Contains(logs.String(), `"type_url":"`+resource.ExtensionConfigType+`"`) {
		t.Fatalf("NACK log lacks the rejected version or type:\n%s", logs.String())
	}
	// The data plane stays up with the last good config. Envoy 1.38's config_dump shows the
	// rejected extension config after such a NACK, and its config_reload counter moves too;
	// what runs is told by the control plane's ACKed version and by the votes themselves.
	if n := envoyStat(t, victim, "extension_config_discovery.http_filter.votefilter.config_fail"); n < 1 {
		t.Fatalf("config_fail = %d after the NACK", n)
	}
	if v := sample(t, reg, "xds_node_config_version", map[string]string{"node": victim.NodeID, "type": "extension_config"}); strconv.FormatFloat(v, 'f', -1, 64) != good {
		t.Fatalf("acknowledged version %v, want the last good %s", v, good)
	}
	if n := sample(t, reg, "xds_nacks_total", map[string]string{"region": "nack-a"}); n != 1 {
		t.Fatalf("nacks of nack-a = %v", n)
	}
	for range 3 {
		voteAccepted(t, victim, e, time.Second)
	}

	// The next change reaches both — the bystander was never affected — and heals the victim.
	now := time.Now().UTC()
	later := newElection(t, tok, now.Add(time.Hour), now.Add(2*time.Hour))
	for _, ed := range []*devstack.Edge{victim, bystander} {
		until(t, 3*time.Second, "change at "+ed.Region, func() error {
			fs := dump(t, ed)
			if fs.election(later.ID) == nil {
				return fmt.Errorf("ecds %s without the new election", fs.ecdsVersion)
			}
			return nil
		})
		voteAccepted(t, ed, e, time.Second)
	}
}

// envoyStat reads one counter from an edge's admin /stats.
func envoyStat(t *testing.T, edge *devstack.Edge, name string) int {
	t.Helper()
	var out struct {
		Stats []struct {
			Name  string `json:"name"`
			Value int    `json:"value"`
		} `json:"stats"`
	}
	getJSON(t, edge.AdminURL()+"/stats?format=json&filter="+url.QueryEscape("^"+regexp.QuoteMeta(name)+"$"), &out)
	for _, s := range out.Stats {
		if s.Name == name {
			return s.Value
		}
	}
	return 0
}

// sample reads the value of name whose labels include every one of want, from an in-process
// registry.
func sample(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			matched := 0
			for _, l := range m.GetLabel() {
				if want[l.GetName()] == l.GetValue() {
					matched++
				}
			}
			if matched == len(want) {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

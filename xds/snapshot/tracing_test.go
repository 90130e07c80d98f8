package snapshot_test

import (
	"strings"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	uuidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/tvvote/voting/xds/snapshot"
)

func TestTracingOffLeavesNoTracerNorCollector(t *testing.T) {
	snap := build(t, settings(), "eu-west-1", fixed)
	m := httpManager(t, only[*listener.Listener](t, snap, resource.ListenerType, snapshot.ListenerName))
	if m.GetTracing() != nil || m.GetRequestIdExtension() != nil {
		t.Fatalf("tracing configured without a collector: %v %v", m.GetTracing(), m.GetRequestIdExtension())
	}
	if _, ok := snap.GetResources(resource.ClusterType)[snapshot.TracingCluster]; ok {
		t.Fatal("collector cluster without a collector")
	}
	if strings.Contains(filterJSON(t, snap), `"tracing"`) {
		t.Fatal("the filter is told to trace without a collector")
	}
}

func TestTracingExportsToTheCollectorAndKeepsRequestIDs(t *testing.T) {
	s := settings()
	s.Tracing = snapshot.Tracing{CollectorAddr: "127.0.0.1:4317", SamplingPercent: 2.5}
	snap := build(t, s, "eu-west-1", fixed)
	m := httpManager(t, only[*listener.Listener](t, snap, resource.ListenerType, snapshot.ListenerName))
	tr := m.GetTracing()
	if got := tr.GetRandomSampling().GetValue(); got != 2.5 {
		t.Errorf("random sampling %g, want 2.5", got)
	}
	if got := tr.GetClientSampling(); got == nil || got.GetValue() != 0 {
		t.Errorf("client sampling %v, want 0: clients must not force traces", got)
	}
	if tr.GetProvider().GetName() != "envoy.tracers.opentelemetry" {
		t.Fatalf("provider %q", tr.GetProvider().GetName())
	}
	var otel tracev3.OpenTelemetryConfig
	if err := tr.GetProvider().GetTypedConfig().UnmarshalTo(&otel); err != nil {
		t.Fatal(err)
	}
	if otel.GetGrpcService().GetEnvoyGrpc().GetClusterName() != snapshot.TracingCluster || otel.GetServiceName() != snapshot.TracingServiceName {
		t.Errorf("exporter %v", &otel)
	}
	// The x-request-id is the contract's traceId: Envoy must not pack its trace decision into it.
	var rid uuidv3.UuidRequestIdConfig
	if err := m.GetRequestIdExtension().GetTypedConfig().UnmarshalTo(&rid); err != nil {
		t.Fatal(err)
	}
	if rid.GetPackTraceReason() == nil || rid.GetPackTraceReason().GetValue() {
		t.Errorf("pack_trace_reason %v, want false", rid.GetPackTraceReason())
	}
	c := clusterNamed(t, snap, snapshot.TracingCluster)
	if endpointOf(c) != "127.0.0.1:4317" {
		t.Errorf("collector endpoint %s", endpointOf(c))
	}
	var opts upstreamhttp.HttpProtocolOptions
	if err := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(&opts); err != nil {
		t.Fatal(err)
	}
	if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Error("the collector cluster must speak HTTP/2 (gRPC)")
	}
	// The filter decides for votes at the same rate.
	if !strings.Contains(filterJSON(t, snap), `"tracing":{"samplingPercent":2.5}`) {
		t.Errorf("filter config without the sampling: %s", filterJSON(t, snap))
	}
}

func TestTracingSettingsAreChecked(t *testing.T) {
	for _, tr := range []snapshot.Tracing{{CollectorAddr: "nohost", SamplingPercent: 1}, {CollectorAddr: "127.0.0.1:4317", SamplingPercent: 101}} {
		s := settings()
		s.Tracing = tr
		if _, err := snapshot.NewBuilder(s); err == nil {
			t.Errorf("%+v accepted", tr)
		}
	}
}

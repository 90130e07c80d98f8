package envoy

import (
	"bytes"
	"strings"
	"testing"
)

func TestRenderBootstrap(t *testing.T) {
	var b bytes.Buffer
	err := RenderBootstrap(&b, BootstrapParams{AdminPort: 9901, XDSPort: 18000, NodeID: `edge-1 "eu"`, Region: "eu-west"})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		`id: "edge-1 \"eu\""`, // quoted, so odd ids stay one YAML string
		`region: "eu-west"`,
		"port_value: 9901",
		"port_value: 18000",
		"cluster_name: xds_cluster",
		"transport_api_version: V3",
		"http2_protocol_options",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("bootstrap lacks %q:\n%s", want, out)
		}
	}
}

func TestRenderBootstrapRejectsBadParams(t *testing.T) {
	for name, p := range map[string]BootstrapParams{
		"no node id":    {AdminPort: 9901, XDSPort: 18000, Region: "eu"},
		"no region":     {AdminPort: 9901, XDSPort: 18000, NodeID: "n"},
		"no admin port": {XDSPort: 18000, NodeID: "n", Region: "eu"},
		"bad xds port":  {AdminPort: 9901, XDSPort: 70000, NodeID: "n", Region: "eu"},
	} {
		if err := RenderBootstrap(&bytes.Buffer{}, p); err == nil {
			t.Errorf("%s: rendered", name)
		}
	}
}

func TestRenderBootstrapListenerPortAndRetry(t *testing.T) {
	var b bytes.Buffer
	if err := RenderBootstrap(&b, BootstrapParams{AdminPort: 9902, XDSPort: 18000, NodeID: "edge-2", Region: "us", ListenerPort: 18080}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"listener_port: 18080", "retry_back_off: { base_interval: 0.25s, max_interval: 2s }"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("bootstrap lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := RenderBootstrap(&b, BootstrapParams{AdminPort: 9902, XDSPort: 18000, NodeID: "edge-2", Region: "us"}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "listener_port") {
		t.Errorf("listener_port without one asked for:\n%s", b.String())
	}
	if err := RenderBootstrap(&b, BootstrapParams{AdminPort: 9902, XDSPort: 18000, NodeID: "n", Region: "us", ListenerPort: 70000}); err == nil {
		t.Error("rendered a listener port out of range")
	}
}

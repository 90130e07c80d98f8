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

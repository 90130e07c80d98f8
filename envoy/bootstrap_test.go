package envoy

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"go.yaml.in/yaml/v4"
	"google.golang.org/protobuf/encoding/protojson"
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

// With mutual TLS the xds_cluster carries an UpstreamTlsContext that Envoy's own schema accepts:
// the client certificate, the CA and the control plane's name to match.
func TestRenderBootstrapMutualTLS(t *testing.T) {
	tlsFiles := &XDSTLS{CertFile: "/pki/edge.pem", KeyFile: "/pki/edge-key.pem", CAFile: "/pki/ca.pem", ServerName: "controlplane.voting.internal"}
	var b bytes.Buffer
	if err := RenderBootstrap(&b, BootstrapParams{AdminPort: 9901, XDSPort: 18000, NodeID: "n", Region: "eu", XDSTLS: tlsFiles}); err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var boot bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &boot); err != nil {
		t.Fatalf("not a bootstrap: %v\n%s", err, b.String())
	}
	if err := boot.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	xds := boot.GetStaticResources().GetClusters()[0]
	var up tlsv3.UpstreamTlsContext
	if err := xds.GetTransportSocket().GetTypedConfig().UnmarshalTo(&up); err != nil {
		t.Fatalf("xds_cluster transport socket: %v", err)
	}
	ctx := up.GetCommonTlsContext()
	san := ctx.GetValidationContext().GetMatchTypedSubjectAltNames()
	if xds.GetTransportSocket().GetName() != "envoy.transport_sockets.tls" || up.GetSni() != tlsFiles.ServerName ||
		ctx.GetTlsCertificates()[0].GetCertificateChain().GetFilename() != tlsFiles.CertFile ||
		ctx.GetTlsCertificates()[0].GetPrivateKey().GetFilename() != tlsFiles.KeyFile ||
		ctx.GetValidationContext().GetTrustedCa().GetFilename() != tlsFiles.CAFile ||
		len(san) != 1 || san[0].GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || san[0].GetMatcher().GetExact() != tlsFiles.ServerName ||
		!slices.Equal(ctx.GetAlpnProtocols(), []string{"h2"}) {
		t.Fatalf("tls context %v", &up)
	}

	// An IP is matched as an IP SAN; without TLS there is no transport socket.
	ip := *tlsFiles
	ip.ServerName = "127.0.0.1"
	b.Reset()
	if err := RenderBootstrap(&b, BootstrapParams{AdminPort: 9901, XDSPort: 18000, NodeID: "n", Region: "eu", XDSTLS: &ip}); err != nil ||
		!strings.Contains(b.String(), "san_type: IP_ADDRESS") {
		t.Fatalf("%v\n%s", err, b.String())
	}
	b.Reset()
	if err := RenderBootstrap(&b, BootstrapParams{AdminPort: 9901, XDSPort: 18000, NodeID: "n", Region: "eu"}); err != nil ||
		strings.Contains(b.String(), "transport_socket") {
		t.Fatalf("%v\n%s", err, b.String())
	}
	bad := XDSTLS{CertFile: "edge.pem", KeyFile: "/k", CAFile: "/ca"}
	if err := RenderBootstrap(&b, BootstrapParams{AdminPort: 9901, XDSPort: 18000, NodeID: "n", Region: "eu", XDSTLS: &bad}); err == nil ||
		!strings.Contains(err.Error(), "absolute") || !strings.Contains(err.Error(), "server name") {
		t.Fatalf("bad tls files: %v", err)
	}
}

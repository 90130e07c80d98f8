package snapshot_test

import (
	"strings"
	"testing"
	"time"

	accesslog "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/edgesettings"
	"github.com/tvvote/voting/xds/snapshot"
)

func listenerOf(t *testing.T, b *snapshot.Builder, region string, state snapshot.State) *listener.Listener {
	t.Helper()
	snap, err := b.Build("7", snapshot.Node{ID: "n-" + region, Region: region}, state, nil)
	if err != nil {
		t.Fatal(err)
	}
	return only[*listener.Listener](t, snap, resource.ListenerType, snapshot.ListenerName)
}

// The client address is Envoy's view of the peer, or the X-Forwarded-For entry the configured
// number of trusted hops from the right, per region: never whatever a client writes into
// X-Forwarded-For. A client's x-request-id stays its correlation id.
func TestClientAddressComesFromThePeerOrTheTrustedHops(t *testing.T) {
	b, err := snapshot.NewBuilder(settings())
	if err != nil {
		t.Fatal(err)
	}
	hops, pp := 1, true
	state := snapshot.State{Edge: edgesettings.Set{Regions: map[string]edgesettings.Override{
		"behind-alb": {TrustedHops: &hops},
		"behind-nlb": {ProxyProtocol: &pp},
	}}}
	for region, want := range map[string]struct {
		hops          uint32
		proxyProtocol bool
	}{"direct": {0, false}, "behind-alb": {1, false}, "behind-nlb": {0, true}} {
		l := listenerOf(t, b, region, state)
		m := httpManager(t, l)
		if !m.GetUseRemoteAddress().GetValue() || m.GetXffNumTrustedHops() != want.hops || !m.GetPreserveExternalRequestId() ||
			m.GetInternalAddressConfig() != nil || len(m.GetOriginalIpDetectionExtensions()) != 0 {
			t.Errorf("%s: use_remote_address %v, xff_num_trusted_hops %d, preserve_external_request_id %v, internal %v",
				region, m.GetUseRemoteAddress(), m.GetXffNumTrustedHops(), m.GetPreserveExternalRequestId(), m.GetInternalAddressConfig())
		}
		lf := l.GetListenerFilters()
		if want.proxyProtocol != (len(lf) == 1 && lf[0].GetName() == wellknown.ProxyProtocol) || len(lf) > 1 {
			t.Errorf("%s: listener filters %v", region, lf)
		}
	}

	// The control plane's environment gives the default.
	s := settings()
	s.TrustedHops, s.ProxyProtocol = 2, true
	b, err = snapshot.NewBuilder(s)
	if err != nil {
		t.Fatal(err)
	}
	if d := b.Defaults(); d.TrustedHops != 2 || !d.ProxyProtocol {
		t.Fatalf("defaults %+v", d)
	}
	l := listenerOf(t, b, "direct", snapshot.State{})
	if httpManager(t, l).GetXffNumTrustedHops() != 2 || len(l.GetListenerFilters()) != 1 {
		t.Fatalf("listener with the defaults: %v", l)
	}
	zero := 0
	l = listenerOf(t, b, "direct", snapshot.State{Edge: edgesettings.Set{Global: edgesettings.Override{TrustedHops: &zero}}})
	if httpManager(t, l).GetXffNumTrustedHops() != 0 {
		t.Fatal("an explicit 0 does not override the default")
	}
	s.TrustedHops = edgesettings.MaxTrustedHops + 1
	if _, err := snapshot.NewBuilder(s); err == nil {
		t.Fatal("trusted hops beyond the maximum accepted")
	}
}

// Changing where the client address comes from replaces the listener; elections and limits
// still do not.
func TestClientAddressChangeMovesTheListener(t *testing.T) {
	b, err := snapshot.NewBuilder(settings())
	if err != nil {
		t.Fatal(err)
	}
	n := snapshot.Node{ID: "n", Region: "eu"}
	v1, err := b.Build("1", n, snapshot.State{Elections: fixed}, nil)
	if err != nil {
		t.Fatal(err)
	}
	one := edgeconfig.Limit{Max: 1, WindowSeconds: 60}
	v2, err := b.Build("2", n, snapshot.State{Elections: fixed, Edge: edgesettings.Set{Global: edgesettings.Override{PerIP: &one}}}, v1)
	if err != nil {
		t.Fatal(err)
	}
	if v2.GetVersion(resource.ListenerType) != "1" || v2.GetVersion(resource.ExtensionConfigType) != "2" {
		t.Fatalf("limit change: lds %s ecds %s", v2.GetVersion(resource.ListenerType), v2.GetVersion(resource.ExtensionConfigType))
	}
	hops := 1
	v3, err := b.Build("3", n, snapshot.State{Elections: fixed, Edge: edgesettings.Set{Global: edgesettings.Override{PerIP: &one},
		Regions: map[string]edgesettings.Override{"eu": {TrustedHops: &hops}}}}, v2)
	if err != nil {
		t.Fatal(err)
	}
	if v3.GetVersion(resource.ListenerType) != "3" || v3.GetVersion(resource.ExtensionConfigType) != "2" {
		t.Fatalf("trusted hops change: lds %s ecds %s", v3.GetVersion(resource.ListenerType), v3.GetVersion(resource.ExtensionConfigType))
	}
}

func TestCheckEdgeSettingsRefusesBadTrustedHops(t *testing.T) {
	b, err := snapshot.NewBuilder(settings())
	if err != nil {
		t.Fatal(err)
	}
	for _, hops := range []int{-1, edgesettings.MaxTrustedHops + 1} {
		if err := b.CheckEdgeSettings(edgesettings.Set{}, "eu", edgesettings.Override{TrustedHops: &hops}); err == nil {
			t.Errorf("trustedHops %d accepted", hops)
		}
	}
	hops := edgesettings.MaxTrustedHops
	if err := b.CheckEdgeSettings(edgesettings.Set{}, "eu", edgesettings.Override{TrustedHops: &hops}); err != nil {
		t.Errorf("trustedHops %d refused: %v", hops, err)
	}
}

// Every local reply Envoy makes itself is the contract's ErrorResponse with the code's status;
// the vote filter's replies and the routes' direct responses are left alone.
func TestLocalRepliesAreTheContractsErrors(t *testing.T) {
	s := settings()
	s.AdminAddr = "127.0.0.1:18001"
	l := listenerOf(t, mustBuilder(t, s), "eu", snapshot.State{})
	lrc := httpManager(t, l).GetLocalReplyConfig()
	// A body_format for all replies would rewrite the vote filter's bodies too.
	if lrc.GetBodyFormat() != nil {
		t.Fatalf("a body_format for every local reply: %v", lrc.GetBodyFormat())
	}
	type want struct {
		matches string // the flags, or the status condition of the CEL expression
		code    string
		retry   bool
	}
	wants := []want{
		{"UH,UF,UO,URX,UT,UC,UR", contract.CodeUnavailable, true},
		{"response.code == 404", contract.CodeNotFound, false},
		{"response.code == 413", contract.CodePayloadTooLarge, false},
		{"response.code >= 400 && response.code < 500", contract.CodeInvalidRequest, false},
		{"response.code == 502 || response.code == 503 || response.code == 504", contract.CodeUnavailable, true},
		{"response.code >= 500", contract.CodeInternal, false},
	}
	mappers := lrc.GetMappers()
	if len(mappers) != 2*len(wants) {
		t.Fatalf("%d mappers: %v", len(mappers), mappers)
	}
	for i, m := range mappers {
		w := wants[i/2]
		// Even mappers match replies to requests with an x-request-id, odd ones the rest.
		filter, traceID := m.GetFilter(), "%UNIQUE_ID%"
		if i%2 == 0 {
			and := filter.GetAndFilter().GetFilters()
			if len(and) != 2 || celExpr(t, and[1]) != "'x-request-id' in request.headers" {
				t.Fatalf("mapper %d does not require an x-request-id: %v", i, filter)
			}
			filter, traceID = and[0], "%REQ(X-REQUEST-ID)%"
		}
		var matches string
		if flags := filter.GetResponseFlagFilter().GetFlags(); flags != nil {
			matches = strings.Join(flags, ",")
		} else {
			prefix := "response.code_details != '" + edgeconfig.LocalReplyDetails + "' && response.code_details != 'direct_response' && ("
			expr := celExpr(t, filter)
			if !strings.HasPrefix(expr, prefix) || !strings.HasSuffix(expr, ")") {
				t.Fatalf("mapper %d matches the filter's own replies: %s", i, expr)
			}
			matches = strings.TrimSuffix(strings.TrimPrefix(expr, prefix), ")")
		}
		fields := m.GetBodyFormatOverride().GetJsonFormat().GetFields()
		retry := len(m.GetHeadersToAdd()) == 1 && m.GetHeadersToAdd()[0].GetHeader().GetKey() == "retry-after"
		if matches != w.matches || fields["code"].GetStringValue() != w.code || fields["message"].GetStringValue() == "" ||
			fields["traceId"].GetStringValue() != traceID || len(fields) != 3 ||
			m.GetBodyFormatOverride().GetContentType() != "application/json" ||
			m.GetStatusCode().GetValue() != uint32(contract.Status(w.code)) || retry != w.retry {
			t.Errorf("mapper %d: %v", i, m)
		}
	}
}

func celExpr(t *testing.T, f *accesslog.AccessLogFilter) string {
	t.Helper()
	ext := f.GetExtensionFilter()
	var cel celv3.ExpressionFilter
	if ext.GetName() != "envoy.access_loggers.extension_filters.cel" || ext.GetTypedConfig().UnmarshalTo(&cel) != nil {
		t.Fatalf("not a CEL filter: %v", f)
	}
	return cel.GetExpression()
}

func TestUpstreamRoutesTimeOutAfterTheSetting(t *testing.T) {
	s := settings()
	s.AdminAddr = "127.0.0.1:18001"
	for set, want := range map[time.Duration]time.Duration{0: 15 * time.Second, 2 * time.Second: 2 * time.Second} {
		s.UpstreamTimeout = set
		snap, err := mustBuilder(t, s).Build("7", snapshot.Node{ID: "n", Region: "eu"}, snapshot.State{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		rc := only[*route.RouteConfiguration](t, snap, resource.RouteType, snapshot.RouteName)
		for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
			got, p := r.GetRoute().GetTimeout().AsDuration(), r.GetMatch().GetPrefix()
			switch {
			case r.GetRoute() == nil:
			case p == "/api/v1/results/stream/":
				if got != 0 {
					t.Errorf("stream route timeout %v", got)
				}
			case got != want:
				t.Errorf("%s: timeout %v, want %v", p, got, want)
			}
		}
	}
}

func mustBuilder(t *testing.T, s snapshot.Settings) *snapshot.Builder {
	t.Helper()
	b, err := snapshot.NewBuilder(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

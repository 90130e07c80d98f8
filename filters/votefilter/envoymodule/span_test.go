package envoymodule

import (
	"testing"

	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared/mocks"
	"go.uber.org/mock/gomock"
)

func TestFormatTraceParent(t *testing.T) {
	for _, c := range []struct{ trace, span, want string }{
		{"0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		{"00000000000000000000000000000000", "b7ad6b7169203331", ""}, // invalid all-zero trace id
		{"0af7651916cd43dd8448eb211c80319c", "0000000000000000", ""},
		{"123", "b7ad6b7169203331", ""},                              // another tracer's id format
		{"0af7651916cd43dd8448eb211c80319g", "b7ad6b7169203331", ""}, // not hex
	} {
		if got := formatTraceParent(c.trace, c.span); got != c.want {
			t.Errorf("formatTraceParent(%q, %q) = %q, want %q", c.trace, c.span, got, c.want)
		}
	}
}

// A handle that is not Envoy's (the SDK's mock) has no stream to ask: no trace context, no call
// into Envoy.
func TestTraceParentOfAMockHandleIsEmpty(t *testing.T) {
	if got := traceParent(mocks.NewMockHttpFilterHandle(gomock.NewController(t)), true); got != "" {
		t.Fatalf("traceParent = %q", got)
	}
	if got := traceParent(nil, true); got != "" {
		t.Fatalf("traceParent(nil, true) = %q", got)
	}
}

func TestSampledRate(t *testing.T) {
	if sampled(0) {
		t.Fatal("sampled at 0 %")
	}
	n := 0
	for range 100000 {
		if sampled(1) {
			n++
		}
	}
	if n < 800 || n > 1200 {
		t.Fatalf("%d of 100000 sampled at 1 %%", n)
	}
	for range 1000 {
		if !sampled(100) {
			t.Fatal("unsampled at 100 %")
		}
	}
}

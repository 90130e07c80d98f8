package tracing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestParseTraceParent(t *testing.T) {
	sc, ok := ParseTraceParent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
	if !ok || sc.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || sc.SpanID().String() != "b7ad6b7169203331" {
		t.Fatalf("parsed %v %v", sc, ok)
	}
	for _, bad := range []string{"", "garbage", "00-00000000000000000000000000000000-b7ad6b7169203331-01"} {
		if _, ok := ParseTraceParent(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A request's span continues the caller's trace, is named by the route pattern and records the
// status.
func TestMiddlewareContinuesTheCallersTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/results/{id}", func(w http.ResponseWriter, r *http.Request) {
		if !trace.SpanContextFromContext(r.Context()).IsValid() {
			t.Error("no span in the handler's context")
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	req := httptest.NewRequest(http.MethodGet, "/api/v1/results/e1", nil)
	req.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	Middleware(tp, "test", mux).ServeHTTP(httptest.NewRecorder(), req)
	ended := rec.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans", len(ended))
	}
	s := ended[0]
	if s.Parent().TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || s.Parent().SpanID().String() != "b7ad6b7169203331" {
		t.Errorf("parent %v", s.Parent())
	}
	if s.Name() != "GET /api/v1/results/{id}" {
		t.Errorf("name %q", s.Name())
	}
	if s.Status().Code.String() != "Error" {
		t.Errorf("status %v for a 503", s.Status())
	}
}

func TestSetupWithoutCollectorIsNoop(t *testing.T) {
	p, err := Setup(context.Background(), "svc", "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		if trace.SpanContextFromContext(r.Context()).IsValid() {
			t.Error("a span without a collector")
		}
	})
	Middleware(p, "svc", h).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

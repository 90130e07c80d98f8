// Package tracing sets up OpenTelemetry tracing for our Go services: spans exported over OTLP
// gRPC to a collector (Jaeger locally), and the W3C trace context the edge puts on every queued
// vote. Without a collector address a service does not trace and pays nothing for it.
package tracing

import (
	"context"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Options shape a service's tracer provider.
type Options struct {
	// MaxLinks bounds the links of one span; the SDK's default (128) is below a processor batch.
	MaxLinks int
	// FollowParent records a span only when its caller's (Envoy's) span was sampled, so a
	// service behind the edge keeps the edge's sampling rate instead of tracing every request.
	FollowParent bool
}

// Provider is a service's tracer provider and how to flush it at shutdown.
type Provider struct {
	trace.TracerProvider
	// Shutdown flushes the spans in hand; a no-op without a collector.
	Shutdown func(context.Context) error
}

// Setup exports the spans of service to the OTLP gRPC collector at addr (host:port, plaintext:
// a collector beside the service). An empty addr gives a no-op provider. Exporting happens in
// the background: a collector that is down loses spans, never slows the service.
func Setup(ctx context.Context, service, addr string, o Options) (Provider, error) {
	if addr == "" {
		return Provider{TracerProvider: noop.NewTracerProvider(), Shutdown: func(context.Context) error { return nil }}, nil
	}
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(addr), otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithTimeout(5*time.Second))
	if err != nil {
		return Provider{}, err
	}
	limits := sdktrace.NewSpanLimits()
	if o.MaxLinks > limits.LinkCountLimit {
		limits.LinkCountLimit = o.MaxLinks
	}
	res := resource.NewSchemaless(attribute.String("service.name", service))
	sampler := sdktrace.AlwaysSample()
	if o.FollowParent {
		sampler = sdktrace.ParentBased(sdktrace.NeverSample())
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sampler),
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)),
		sdktrace.WithResource(res),
		sdktrace.WithRawSpanLimits(limits),
	)
	return Provider{TracerProvider: tp, Shutdown: tp.Shutdown}, nil
}

// ParseTraceParent reads a W3C traceparent header value; ok is false for anything else.
func ParseTraceParent(v string) (trace.SpanContext, bool) {
	if v == "" {
		return trace.SpanContext{}, false
	}
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(),
		propagation.MapCarrier{"traceparent": v}))
	return sc, sc.IsValid()
}

// Middleware gives every request a server span named by its route pattern, continuing the
// caller's trace context (Envoy's span) when the request carries one.
func Middleware(tp trace.TracerProvider, service string, next http.Handler) http.Handler {
	if p, ok := tp.(Provider); ok {
		tp = p.TracerProvider
	}
	if _, off := tp.(noop.TracerProvider); off {
		return next
	}
	tracer := tp.Tracer(service)
	prop := propagation.TraceContext{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method),
				attribute.String("url.path", r.URL.Path),
				attribute.String("requestId", r.Header.Get("x-request-id"))))
		defer span.End()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		r = r.WithContext(ctx)
		next.ServeHTTP(rec, r)
		// ServeMux fills the pattern in as it routes; a pattern without a method gets this one.
		switch {
		case strings.Contains(r.Pattern, " "):
			span.SetName(r.Pattern)
		case r.Pattern != "":
			span.SetName(r.Method + " " + r.Pattern)
		}
		span.SetAttributes(attribute.Int("http.response.status_code", rec.status))
		if rec.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(rec.status))
		}
	})
}

// statusRecorder notes the status a handler writes; Unwrap keeps http.ResponseController (and
// so WebSocket hijacking and flushing) working through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

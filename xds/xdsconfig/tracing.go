package xdsconfig

import (
	"fmt"
	"net"
)

// TracingConfig is the edge's tracing: Envoy's OpenTelemetry tracer, exporting to an OTLP
// collector. Without a collector address Envoy does not trace.
type TracingConfig struct {
	// OTLPAddr is host:port of the OTLP gRPC collector every Envoy exports its spans to; empty: no tracing.
	OTLPAddr string `env:"XDS_TRACING_OTLP_ADDR"`
	// Sampling is the percent (0..100) of requests Envoy traces when it starts the trace.
	Sampling float64 `env:"XDS_TRACING_SAMPLING" envDefault:"1"`
}

// Enabled says the edge traces.
func (t TracingConfig) Enabled() bool { return t.OTLPAddr != "" }

func (t TracingConfig) validate() []error {
	var errs []error
	if t.OTLPAddr != "" {
		if _, port, err := net.SplitHostPort(t.OTLPAddr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("XDS_TRACING_OTLP_ADDR=%q must be host:port", t.OTLPAddr))
		}
	}
	if t.Sampling < 0 || t.Sampling > 100 {
		errs = append(errs, fmt.Errorf("XDS_TRACING_SAMPLING=%g must be a percent 0..100", t.Sampling))
	}
	return errs
}

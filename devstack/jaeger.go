package devstack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tvvote/voting/xds/xdsconfig"
)

// defaultJaegerPorts are Jaeger's usual ports, taken under `make run`: OTLP gRPC, OTLP HTTP,
// the UI and HTTP query API, the query gRPC API and the health check.
var defaultJaegerPorts = jaegerPorts{OTLPGRPC: 4317, OTLPHTTP: 4318, UI: 16686, QueryGRPC: 16685, Health: 13133}

type jaegerPorts struct {
	OTLPGRPC, OTLPHTTP, UI, QueryGRPC, Health int
}

// Tracing is Jaeger all-in-one beside the stack (`make tools` builds it into .tools/bin/jaeger
// from the module proxy): an OTLP receiver and the trace UI, spans kept in memory only. Envoy,
// the processor and the results worker export their spans to it.
type Tracing struct {
	// URL is Jaeger's UI and HTTP query API (/api/traces).
	URL string
	// OTLPAddr is host:port of its OTLP gRPC receiver.
	OTLPAddr string
	// Skipped says why tracing is not running; empty when it runs.
	Skipped string

	child  *child
	config string
}

// JaegerURL is the stack's trace UI, or "" when Jaeger is not running.
func (s *Stack) JaegerURL() string {
	if s.Tracing == nil || s.Tracing.Skipped != "" {
		return ""
	}
	return s.Tracing.URL
}

// otlpAddr is where our programs send spans; "" without Jaeger, so they do not trace.
func (s *Stack) otlpAddr() string {
	if s.Tracing == nil || s.Tracing.Skipped != "" {
		return ""
	}
	return s.Tracing.OTLPAddr
}

// edgeTracing is the control plane's tracing settings: Envoy exports to Jaeger at the control
// plane's default sampling rate unless ControlPlaneEnv sets XDS_TRACING_SAMPLING.
func (s *Stack) edgeTracing() xdsconfig.TracingConfig {
	t := xdsconfig.Defaults().Tracing
	t.OTLPAddr = s.otlpAddr()
	return t
}

// TracingLine is one line for people starting the stack: where the traces are, or why not.
func (s *Stack) TracingLine() string {
	switch {
	case s.Tracing == nil:
		return "Traces: not started."
	case s.Tracing.Skipped != "":
		return "Traces: skipped, " + s.Tracing.Skipped + "."
	default:
		return fmt.Sprintf("Traces (Jaeger): %s (services voting-edge, voting-processor, voting-results; OTLP gRPC %s).",
			s.Tracing.URL, s.Tracing.OTLPAddr)
	}
}

// startTracing starts Jaeger before our programs, which are given its OTLP address. Without the
// binary the stack runs untraced; a Jaeger that is built but does not start fails the stack.
func (s *Stack) startTracing(ctx context.Context) error {
	t := &Tracing{}
	s.Tracing = t
	bin, err := toolPath(filepath.Join("bin", "jaeger"))
	if err != nil {
		t.Skipped = "Jaeger is not built (run `make tools`)"
		return nil
	}
	ports := defaultJaegerPorts
	if s.Ports != DefaultPorts {
		for _, p := range []*int{&ports.OTLPGRPC, &ports.OTLPHTTP, &ports.UI, &ports.QueryGRPC, &ports.Health} {
			if *p, err = FreePort(); err != nil {
				return err
			}
		}
	}
	dir := stateDir("jaeger")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	config := filepath.Join(dir, fmt.Sprintf("jaeger-%d.yaml", ports.UI))
	if err := os.WriteFile(config, []byte(jaegerConfig(ports)), 0o644); err != nil {
		return err
	}
	t.config = config
	t.URL = "http://" + addr(ports.UI)
	t.OTLPAddr = addr(ports.OTLPGRPC)
	t.child = &child{
		name:    "jaeger",
		logPath: filepath.Join(s.logs, fmt.Sprintf("jaeger-%d.log", ports.UI)),
		command: func() (*exec.Cmd, error) { return exec.Command(bin, "--config", config), nil },
		// Ready once it takes spans and answers queries: the collector starts its extensions
		// (the query API) before its receivers.
		ready: func(ctx context.Context) error {
			if err := tcpReady(t.OTLPAddr)(ctx); err != nil {
				return err
			}
			return httpOK(t.URL + "/api/services")(ctx)
		},
		readyTimeout: 30 * time.Second,
	}
	if err := t.child.Start(ctx); err != nil {
		return fmt.Errorf("jaeger: %w", err)
	}
	return nil
}

func (s *Stack) stopTracing() {
	if s.Tracing != nil && s.Tracing.child != nil {
		s.Tracing.child.stop(syscall.SIGTERM, 10*time.Second)
		_ = os.Remove(s.Tracing.config)
	}
}

// jaegerConfig is an all-in-one pipeline on our ports: OTLP in, memory storage, the query UI.
// Its own metrics are off (they would need one more port); the health check is on loopback.
func jaegerConfig(p jaegerPorts) string {
	return fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:%[5]d
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:%[3]d
    grpc:
      endpoint: 127.0.0.1:%[4]d
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%[1]d
      http:
        endpoint: 127.0.0.1:%[2]d
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, p.OTLPGRPC, p.OTLPHTTP, p.UI, p.QueryGRPC, p.Health)
}

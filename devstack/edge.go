package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tvvote/voting/envoy"
)

// Ports of the control plane's admin API and metrics and of the processor's metrics for
// `make run`, beside the control plane's ADS port; tests get free ones.
const (
	defaultControlPlaneAdminPort   = 18001
	defaultControlPlaneMetricsPort = 18002
	defaultProcessorMetricsPort    = 18003
)

// controlPlaneAdminAddr is where the control plane serves its admin API (Envoy routes
// /api/v1/admin/ there).
func controlPlaneAdminAddr(p Ports) string {
	if p == DefaultPorts {
		return addr(defaultControlPlaneAdminPort)
	}
	return addr(mustFreePort())
}

// controlPlaneMetricsAddr is where the control plane serves Prometheus /metrics.
func controlPlaneMetricsAddr(p Ports) string {
	if p == DefaultPorts {
		return addr(defaultControlPlaneMetricsPort)
	}
	return addr(mustFreePort())
}

// processorMetricsAddr is where the processor serves /metrics and /healthz; a fixed port lets a
// restart wait for it.
func processorMetricsAddr(p Ports) string {
	if p == DefaultPorts {
		return addr(defaultProcessorMetricsPort)
	}
	return addr(mustFreePort())
}

func mustFreePort() int {
	p, err := FreePort()
	if err != nil {
		panic(fmt.Sprintf("no free port: %v", err))
	}
	return p
}

// ControlPlaneAdminURL is the control plane's admin API, reached directly rather than through
// Envoy.
func (s *Stack) ControlPlaneAdminURL() string {
	return "http://" + s.controlPlane.AdminAddr
}

// ControlPlaneMetricsURL is the control plane's Prometheus endpoint.
func (s *Stack) ControlPlaneMetricsURL() string {
	return "http://" + s.controlPlane.MetricsAddr + "/metrics"
}

// ProcessorMetricsURL is the processor's Prometheus endpoint.
func (s *Stack) ProcessorMetricsURL() string {
	return "http://" + s.processor.MetricsAddr + "/metrics"
}

// Edge is one Envoy of the stack: the stack's own, or another started with StartEdge, attached
// to a control plane as its own node in its own region.
type Edge struct {
	Region    string
	NodeID    string
	Port      int // public listener
	AdminPort int
	proc      *Process
	log       string
	owned     bool // started by StartEdge, so Stop may stop it
}

// URL is the edge's public entry point.
func (e *Edge) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", e.Port) }

// AdminURL is the edge's Envoy admin interface (/config_dump, /stats).
func (e *Edge) AdminURL() string { return fmt.Sprintf("http://127.0.0.1:%d", e.AdminPort) }

// LogPath is the file holding the edge's Envoy output.
func (e *Edge) LogPath() string { return e.log }

// Done is closed when the edge's Envoy has exited.
func (e *Edge) Done() <-chan struct{} { return e.proc.Done() }

// Stop terminates an edge started with StartEdge; the stack's own edge stops with the stack.
func (e *Edge) Stop() {
	if e.owned {
		e.proc.Stop(10 * time.Second)
	}
}

// PrimaryEdge is the stack's own Envoy as an Edge.
func (s *Stack) PrimaryEdge() *Edge {
	return &Edge{Region: s.Region, NodeID: "edge-" + s.Region + "-" + itoa(s.Ports.Envoy), Port: s.Ports.Envoy,
		AdminPort: s.Ports.EnvoyAdmin, proc: s.proc("envoy"), log: s.logPath("envoy")}
}

// EdgeOptions configure StartEdge.
type EdgeOptions struct {
	// Region labels the node; required.
	Region string
	// XDSPort is the control plane to attach to; default the stack's.
	XDSPort int
	// ModuleDir is Envoy's dynamic module search path; default the one of the stack's Envoy.
	// An empty folder makes the node reject the vote filter's config (a NACK).
	ModuleDir string
	// NoWait returns as soon as Envoy's admin answers, without waiting for a working config.
	NoWait bool
	// XDSTLS replaces the client certificate the stack's PKI would issue (Options.XDSMutualTLS),
	// e.g. with one from another CA, to prove it is refused.
	XDSTLS *envoy.XDSTLS
	// PlaintextXDS dials the control plane without TLS, whatever the stack does.
	PlaintextXDS bool
}

// StartEdge starts another Envoy with the stack's Envoy binary, module and environment, on its
// own free ports, with its listener port asked for in the node metadata — so several edges of
// several regions share one control plane, as the fleets of a deployment do. It waits until
// the edge routes to the results worker through a configured vote filter, unless NoWait.
func (s *Stack) StartEdge(ctx context.Context, o EdgeOptions) (*Edge, error) {
	if o.Region == "" {
		return nil, errors.New("edge region is required")
	}
	mk, ok := s.cmds["envoy"]
	if !ok {
		return nil, errors.New("the stack has no envoy")
	}
	primary := mk()
	if o.XDSPort == 0 {
		o.XDSPort = s.Ports.XDS
	}
	e := &Edge{Region: o.Region, owned: true}
	var err error
	if e.Port, err = FreePort(); err != nil {
		return nil, err
	}
	if e.AdminPort, err = FreePort(); err != nil {
		return nil, err
	}
	e.NodeID = "edge-" + o.Region + "-" + itoa(e.Port)
	xdsTLS := o.XDSTLS
	if xdsTLS == nil && !o.PlaintextXDS {
		if xdsTLS, err = s.PKI.ClientTLS(e.NodeID); err != nil {
			return nil, err
		}
	}
	if o.PlaintextXDS {
		xdsTLS = nil
	}
	boot := filepath.Join(s.logs, fmt.Sprintf("envoy-bootstrap-%d.yaml", e.AdminPort))
	f, err := os.Create(boot)
	if err != nil {
		return nil, err
	}
	err = envoy.RenderBootstrap(f, envoy.BootstrapParams{AdminPort: e.AdminPort, XDSPort: o.XDSPort, NodeID: e.NodeID,
		Region: o.Region, ListenerPort: e.Port, XDSTLS: xdsTLS})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(primary.Path, "-c", boot, "--disable-hot-restart", "-l", "info", "--drain-time-s", "1")
	cmd.Env = primary.Env
	if o.ModuleDir != "" {
		cmd.Env = append(cmd.Env, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH="+o.ModuleDir)
	}
	name := "envoy-" + o.Region + "-" + itoa(e.Port)
	out, err := logFile(s.logs, name)
	if err != nil {
		return nil, err
	}
	e.log = filepath.Join(s.logs, name+".log")
	if e.proc, err = startProcess(name, cmd, out); err != nil {
		return nil, err
	}
	ready := func(ctx context.Context) error { return getStatus(ctx, e.AdminURL()+"/ready", 0, "") }
	if !o.NoWait {
		// An unknown election answered 404 by the results worker proves listener, routes, clusters
		// and the vote filter's config all arrived.
		ready = func(ctx context.Context) error {
			return getStatus(ctx, e.URL()+"/api/v1/results/live/00000000-0000-0000-0000-000000000000",
				http.StatusNotFound, "ELECTION_NOT_FOUND")
		}
	}
	if err := waitFor(ctx, e.proc, 60*time.Second, ready); err != nil {
		e.Stop()
		return nil, fmt.Errorf("%w (log: %s)", err, e.log)
	}
	s.scrapeEdge(e)
	return e, nil
}

// getStatus succeeds when url answers (with status and a body containing want, if given).
func getStatus(ctx context.Context, url string, status int, want string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if status != 0 && (resp.StatusCode != status || !strings.Contains(string(body), want)) {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, body)
	}
	return nil
}

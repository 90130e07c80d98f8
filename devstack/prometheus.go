package devstack

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// defaultPrometheusPort is Prometheus's port under `make run`: not Prometheus's usual 9090,
// which the Debian package's own service takes on machines that start it.
const defaultPrometheusPort = 19090

// Monitoring is Debian's Prometheus beside the stack, with Debian's Redis and PostgreSQL
// exporters: it scrapes every component and evaluates the rules of infra/prometheus. Its data
// lives in .state/data/prometheus-<port>/, empty at start and removed at Stop. It is optional:
// without the packages (`make tools` installs them) the stack runs without it.
type Monitoring struct {
	// URL is Prometheus's web UI and HTTP API.
	URL string
	// Skipped says why monitoring is not running; empty when it runs.
	Skipped string

	dir        string
	region     string
	mu         sync.Mutex // guards edges and the Envoy targets file
	edges      []edgeTarget
	components []*child
	release    func()
}

type edgeTarget struct {
	addr, region string
}

// PrometheusURL is the stack's Prometheus, or "" when it is not running.
func (s *Stack) PrometheusURL() string {
	if s.Monitoring == nil {
		return ""
	}
	return s.Monitoring.URL
}

// MonitoringLine is one line for people starting the stack: where Prometheus is, or why it
// is not there.
func (s *Stack) MonitoringLine() string {
	switch {
	case s.Monitoring == nil:
		return "Prometheus: not started."
	case s.Monitoring.Skipped != "":
		return "Prometheus: skipped, " + s.Monitoring.Skipped + "."
	default:
		return fmt.Sprintf("Prometheus: %s (rules from infra/prometheus, dashboards in infra/grafana/dashboards).", s.Monitoring.URL)
	}
}

// startMonitoring starts the exporters and Prometheus once every component runs, with a scrape
// config rendered from the stack's actual ports. A missing package skips it; a Prometheus that
// is installed but does not start fails the stack, as any other component would.
func (s *Stack) startMonitoring(ctx context.Context) error {
	m := &Monitoring{region: s.Region}
	s.Monitoring = m
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		m.Skipped = "the prometheus package is not installed (run `make tools`)"
		return nil
	}
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	port := defaultPrometheusPort
	if s.Ports != DefaultPorts {
		if port, err = FreePort(); err != nil {
			return err
		}
	}
	if m.dir, m.release, err = claimDataDir(fmt.Sprintf("prometheus-%d", port)); err != nil {
		return err
	}
	m.URL = "http://" + addr(port)
	m.edges = []edgeTarget{{addr(s.Ports.EnvoyAdmin), s.Region}}

	jobs := []scrapeJob{
		{Name: "envoy", Path: "/stats/prometheus", FileSD: filepath.Join(m.dir, "envoy-targets.json")},
		// The control plane serves every region and labels its series with the Envoys' regions.
		{Name: "controlplane", Path: "/metrics", Targets: []string{s.controlPlane.MetricsAddr}, Global: true},
		{Name: "processor", Path: "/metrics", Targets: []string{s.processor.MetricsAddr}},
		{Name: "results", Path: "/metrics", Targets: []string{addr(s.Ports.Results)}},
		{Name: "prometheus", Path: "/metrics", Targets: []string{addr(port)}},
	}
	// The exporters are optional on their own: without one, its panels and alerts stay empty.
	if bin, err := exec.LookPath("prometheus-redis-exporter"); err == nil {
		a := addr(mustFreePort())
		m.define("redis-exporter", s.logs, port, func() *exec.Cmd {
			return exec.Command(bin, "-redis.addr", "redis://"+s.Redis.Addr, "-web.listen-address", a,
				"-include-system-metrics")
		}, tcpReady(a))
		jobs = append(jobs, scrapeJob{Name: "redis", Path: "/metrics", Targets: []string{a}})
	}
	if bin, err := exec.LookPath("prometheus-postgres-exporter"); err == nil {
		a := addr(mustFreePort())
		m.define("postgres-exporter", s.logs, port, func() *exec.Cmd {
			cmd := exec.Command(bin, "--web.listen-address="+a)
			cmd.Env = append(os.Environ(), "DATA_SOURCE_NAME="+s.Postgres.DSN)
			return cmd
		}, tcpReady(a))
		jobs = append(jobs, scrapeJob{Name: "postgres", Path: "/metrics", Targets: []string{a}})
	}
	config := filepath.Join(m.dir, "prometheus.yml")
	if err := m.writeEdgeTargets(); err != nil {
		return err
	}
	rules := filepath.Join(root, "infra", "prometheus", "*.rules.yml")
	if err := os.WriteFile(config, []byte(prometheusConfig(jobs, s.Region, rules)), 0o644); err != nil {
		return err
	}
	m.define("prometheus", s.logs, port, func() *exec.Cmd {
		return exec.Command(prom, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(m.dir, "tsdb"),
			"--storage.tsdb.retention.time=1d", "--web.listen-address="+addr(port))
	}, httpOK(m.URL+"/-/ready"))
	for _, c := range m.components {
		if err := c.Start(ctx); err != nil {
			return fmt.Errorf("monitoring: %w", err)
		}
	}
	return nil
}

// define registers one monitoring process; its deaths are not reported to the supervisor, as
// the product runs on without it.
func (m *Monitoring) define(name, logs string, port int, mk func() *exec.Cmd, ready func(context.Context) error) {
	m.components = append(m.components, &child{
		name:         name,
		logPath:      filepath.Join(logs, fmt.Sprintf("%s-%d.log", name, port)),
		command:      func() (*exec.Cmd, error) { return mk(), nil },
		ready:        ready,
		readyTimeout: 30 * time.Second,
	})
}

// scrapeEdge adds an Envoy started with StartEdge to Prometheus's targets, with its region;
// Prometheus watches the targets file, so no reload is needed.
func (s *Stack) scrapeEdge(e *Edge) {
	m := s.Monitoring
	if m == nil || m.Skipped != "" || m.dir == "" {
		return
	}
	m.mu.Lock()
	m.edges = append(m.edges, edgeTarget{addr(e.AdminPort), e.Region})
	m.mu.Unlock()
	_ = m.writeEdgeTargets()
}

// writeEdgeTargets writes the Envoy targets in Prometheus's file_sd format, through a rename so
// that Prometheus never reads half a file.
func (m *Monitoring) writeEdgeTargets() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	type group struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	var groups []group
	for _, e := range m.edges {
		groups = append(groups, group{Targets: []string{e.addr}, Labels: map[string]string{"region": e.region}})
	}
	b, err := json.Marshal(groups)
	if err != nil {
		return err
	}
	path := filepath.Join(m.dir, "envoy-targets.json")
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// stopMonitoring stops Prometheus and the exporters and removes Prometheus's data.
func (s *Stack) stopMonitoring() {
	m := s.Monitoring
	if m == nil {
		return
	}
	for i := len(m.components) - 1; i >= 0; i-- {
		m.components[i].stop(syscall.SIGTERM, 10*time.Second)
	}
	if m.release != nil {
		m.release()
	}
}

type scrapeJob struct {
	Name, Path string
	Targets    []string
	FileSD     string
	Global     bool // not one region's: no region label
}

// prometheusConfig renders the scrape config. Every target is labelled with the stack's
// region, as a deployment labels each region's targets, which the rules aggregate by. A short
// interval lets a test see a vote in Prometheus within seconds.
func prometheusConfig(jobs []scrapeJob, region, rules string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 2s\n")
	fmt.Fprintf(&b, "rule_files:\n  - %q\n", rules)
	b.WriteString("scrape_configs:\n")
	for _, j := range jobs {
		fmt.Fprintf(&b, "  - job_name: %q\n    metrics_path: %q\n", j.Name, j.Path)
		if j.FileSD != "" {
			fmt.Fprintf(&b, "    file_sd_configs:\n      - files: [%q]\n        refresh_interval: 2s\n", j.FileSD)
			continue
		}
		fmt.Fprintf(&b, "    static_configs:\n      - targets: [")
		for i, t := range j.Targets {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q", t)
		}
		b.WriteString("]\n")
		if !j.Global {
			fmt.Fprintf(&b, "        labels: {region: %q}\n", region)
		}
	}
	return b.String()
}

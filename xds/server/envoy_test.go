package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/envoy"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/server"
	"github.com/tvvote/voting/xds/snapshot"
)

const region = "test-region"

var testElection = edgeconfig.Election{
	ID: "11111111-1111-4111-8111-111111111111", Status: "ACTIVE",
	StartDate: time.Now().UTC().Truncate(time.Second), EndDate: time.Now().UTC().Truncate(time.Second).Add(time.Hour),
	CandidateIDs: []string{"aaaaaaaa-0000-4000-8000-000000000001"},
}

// envoyBin is $ENVOY_BIN or .tools/envoy/envoy under the repository root. A missing binary
// fails the test: skipping would hide that the edge was never exercised.
func envoyBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("ENVOY_BIN")
	if bin == "" {
		root, err := devstack.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(root, ".tools", "envoy", "envoy")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("Envoy binary missing (run `make tools` or set ENVOY_BIN): %v", err)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// syncBuffer collects the control plane's log lines across goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type plane struct {
	cp           *server.ControlPlane
	listenerPort int
	reg          *prometheus.Registry
	logs         *syncBuffer
	xdsPort      int
	stop         func() // stops serving ADS and waits for it
}

// startControlPlane serves ADS on a free port in-process, with elections already published.
func startControlPlane(t *testing.T, settings snapshot.Settings, opts ...snapshot.Option) *plane {
	t.Helper()
	b, err := snapshot.NewBuilder(settings, opts...)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	cp := server.New(b, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), reg)
	if _, err := cp.Publish(context.Background(), snapshot.State{Elections: []edgeconfig.Election{testElection}}); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Serve(ctx, lis) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane log:\n%s", logs.String())
		}
	})
	return &plane{cp: cp, listenerPort: settings.ListenerPort, reg: reg, logs: logs, xdsPort: lis.Addr().(*net.TCPAddr).Port, stop: stop}
}

type envoyProc struct {
	cmd       *exec.Cmd
	adminPort int
	nodeID    string
}

// envoyOpts say how to run one Envoy; zero values give the defaults below.
type envoyOpts struct {
	xdsPort int
	// nodeID defaults to edge-test-<test name>.
	nodeID string
	// region defaults to the package's region.
	region string
	// listenerPort, if set, is asked for in the node metadata.
	listenerPort int
	// moduleDir is ENVOY_DYNAMIC_MODULES_SEARCH_PATH; empty means an empty folder, so the
	// vote filter cannot load whatever the working directory.
	moduleDir string
}

// startEnvoy runs the real Envoy with our rendered bootstrap.
func startEnvoy(t *testing.T, xdsPort int) *envoyProc {
	return startEnvoyWith(t, envoyOpts{xdsPort: xdsPort})
}

func startEnvoyWith(t *testing.T, o envoyOpts) *envoyProc {
	t.Helper()
	bin := envoyBin(t)
	dir := t.TempDir()
	adminPort := freePort(t)
	if o.nodeID == "" {
		o.nodeID = "edge-test-" + t.Name()
	}
	if o.region == "" {
		o.region = region
	}
	var boot bytes.Buffer
	if err := envoy.RenderBootstrap(&boot, envoy.BootstrapParams{
		AdminPort: adminPort, XDSPort: o.xdsPort, NodeID: o.nodeID, Region: o.region, ListenerPort: o.listenerPort,
	}); err != nil {
		t.Fatal(err)
	}
	bootPath := filepath.Join(dir, "bootstrap.yaml")
	if err := os.WriteFile(bootPath, boot.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "envoy.log")
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if o.moduleDir == "" {
		o.moduleDir = filepath.Join(dir, "modules")
		if err := os.Mkdir(o.moduleDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-c", bootPath, "--disable-hot-restart", "--log-level", "warning",
		"--concurrency", "1")
	// cgocheck=0: the dynamic-module Go SDK hands Go pointers to Envoy (envoyproxy/envoy#44123).
	cmd.Env = append(os.Environ(), "ENVOY_DYNAMIC_MODULES_SEARCH_PATH="+o.moduleDir, "GODEBUG=cgocheck=0")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		out.Close()
		if t.Failed() {
			log, _ := os.ReadFile(logPath)
			t.Logf("envoy %s log:\n%s", o.nodeID, log)
		}
	})
	e := &envoyProc{cmd: cmd, adminPort: adminPort, nodeID: o.nodeID}
	eventually(t, 20*time.Second, "envoy admin up", func() error {
		_, err := e.admin("/ready")
		return err
	})
	return e
}

func (e *envoyProc) admin(path string) ([]byte, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", e.adminPort, path))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// ldsVersion is the version of the last LDS response Envoy accepted (config_dump's version_info
// only moves when a listener changes), and listeners are the active dynamic listeners.
func (e *envoyProc) ldsVersion() (version string, listeners []string, err error) {
	stats, err := e.admin("/stats?filter=" + url.QueryEscape(`^listener_manager\.lds\.version_text$`))
	if err != nil {
		return "", nil, err
	}
	_, v, _ := strings.Cut(strings.TrimSpace(string(stats)), ": ")
	version = strings.Trim(v, `"`)
	body, err := e.admin("/config_dump?resource=dynamic_listeners")
	if err != nil {
		return "", nil, err
	}
	var dump struct {
		Configs []struct {
			Name        string    `json:"name"`
			ActiveState *struct{} `json:"active_state"`
		} `json:"configs"`
	}
	if err := json.Unmarshal(body, &dump); err != nil {
		return "", nil, err
	}
	for _, l := range dump.Configs {
		if l.ActiveState != nil {
			listeners = append(listeners, l.Name)
		}
	}
	return version, listeners, nil
}

func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metricValue reads one sample from reg; labels is "name=value" or empty.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				if l.GetName()+"="+l.GetValue() == label {
					match = true
				}
			}
			if match {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func getJSONError(t *testing.T, url string) (*http.Response, contract.ErrorResponse) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e contract.ErrorResponse
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("GET %s: %d %q is not an ErrorResponse: %v", url, resp.StatusCode, body, err)
	}
	return resp, e
}

func TestEnvoyServesOurConfigAndKeepsItWithoutControlPlane(t *testing.T) {
	var upstreamRequestID sync.Map
	results := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamRequestID.Store(r.URL.Path, r.Header.Get("x-request-id"))
		w.Header().Set("content-type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer results.Close()

	listenerPort := freePort(t)
	p := startControlPlane(t, snapshot.Settings{
		ListenerPort: listenerPort,
		ResultsAddr:  strings.TrimPrefix(results.URL, "http://"),
		// Every optional cluster, so Envoy proves it accepts them (a TLS cluster with SNI and
		// certificate checks, a DNS one).
		StatusAddr: "127.0.0.1:1",
		AdminAddr:  "127.0.0.1:2",
		Siteverify: snapshot.SiteverifyUpstream{Addr: "challenges.cloudflare.com:443", TLS: true},
	}, snapshot.WithoutVoteFilter())
	e := startEnvoy(t, p.xdsPort)

	eventually(t, 20*time.Second, "listener public at version 1", func() error {
		v, ls, err := e.ldsVersion()
		if err != nil || v != "1" || len(ls) != 1 || ls[0] != snapshot.ListenerName {
			return fmt.Errorf("lds version %q listeners %v err %v", v, ls, err)
		}
		return nil
	})
	public := fmt.Sprintf("http://127.0.0.1:%d", listenerPort)
	eventually(t, 10*time.Second, "public listener answers", func() error {
		resp, err := http.Get(public + "/api/v1/anything")
		if err == nil {
			resp.Body.Close()
		}
		return err
	})

	for _, path := range []string{"/api/v1/anything", "/api/v1/votes", "/"} {
		resp, body := getJSONError(t, public+path)
		if resp.StatusCode != http.StatusNotFound || body.Code != contract.CodeNotFound || body.Message == "" {
			t.Fatalf("GET %s = %d %+v", path, resp.StatusCode, body)
		}
		if ct := resp.Header.Get("content-type"); ct != "application/json" {
			t.Fatalf("GET %s content-type %q", path, ct)
		}
		if len(body.TraceID) != 36 {
			t.Fatalf("GET %s traceId %q is not the generated x-request-id", path, body.TraceID)
		}
	}

	resp, err := http.Get(public + "/api/v1/results/abc")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("results route: %d", resp.StatusCode)
	}
	if id, _ := upstreamRequestID.Load("/api/v1/results/abc"); id == nil || id.(string) == "" {
		t.Fatal("results worker got no x-request-id")
	}
	// An upstream that is down is answered in the contract's shape, not Envoy's plain text.
	results.Close()
	resp, body := getJSONError(t, public+"/api/v1/results/abc")
	if resp.StatusCode != http.StatusServiceUnavailable || body.Code != contract.CodeUnavailable || len(body.TraceID) != 36 ||
		resp.Header.Get("Retry-After") != "1" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("results down: %d %+v %v", resp.StatusCode, body, resp.Header)
	}

	if got := metricValue(t, p.reg, "xds_connected_streams", "region="+region); got != 1 {
		t.Fatalf("connected streams in %s = %v", region, got)
	}
	if got := metricValue(t, p.reg, "xds_nacks_total", ""); got != 0 {
		t.Fatalf("nacks = %v", got)
	}
	clusters, err := e.admin("/config_dump?resource=dynamic_active_clusters")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{snapshot.ResultsCluster, snapshot.StatusCluster, snapshot.AdminCluster, snapshot.SiteverifyCluster} {
		if !strings.Contains(string(clusters), `"name": "`+name+`"`) {
			t.Fatalf("cluster %s not active in Envoy:\n%s", name, clusters)
		}
	}

	// An elections change publishes version 2, but the listener did not change: Envoy is not
	// sent it again (without the vote filter nothing at all changes for this node).
	second := testElection
	second.ID = "22222222-2222-4222-8222-222222222222"
	if _, err := p.cp.Publish(context.Background(), snapshot.State{Elections: []edgeconfig.Election{testElection, second}}); err != nil {
		t.Fatal(err)
	}
	if p.cp.Version() != 2 {
		t.Fatalf("published version %d", p.cp.Version())
	}
	time.Sleep(300 * time.Millisecond)

	// With the control plane gone Envoy keeps serving what it has.
	p.stop()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		resp, body := getJSONError(t, public+"/api/v1/anything")
		if resp.StatusCode != http.StatusNotFound || body.Code != contract.CodeNotFound {
			t.Fatalf("without control plane: %d %+v", resp.StatusCode, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if e.cmd.ProcessState != nil {
		t.Fatal("envoy exited without its control plane")
	}
	if v, ls, err := e.ldsVersion(); err != nil || v != "1" || len(ls) != 1 {
		t.Fatalf("after control plane stop: lds version %q listeners %v err %v", v, ls, err)
	}
}

// Envoy 1.38 parses the dynamic module filter config we send (unknown fields would be refused
// with a different error), fails to find the module in an empty search path and NACKs. The NACK
// is counted and logged with Envoy's error detail, and the rejected version is not resent in a
// loop: only a new version goes out again.
func TestEnvoyNACKIsCountedLoggedAndNotResent(t *testing.T) {
	p := startControlPlane(t, snapshot.Settings{
		ListenerPort: freePort(t),
		ResultsAddr:  "127.0.0.1:1",
		Filter: edgeconfig.Config{
			JWT:     edgeconfig.JWTConfig{Issuer: "https://idp.test/", Audience: "votes", JWKSURL: "http://127.0.0.1:1/jwks"},
			Captcha: edgeconfig.CaptchaConfig{Mode: "pow", PoW: edgeconfig.PoWConfig{SecretFile: "/run/secrets/pow"}},
			Redis:   edgeconfig.RedisConfig{Addr: "127.0.0.1:6379"},
			SQS:     edgeconfig.SQSConfig{QueueURL: "http://127.0.0.1:9324/q/votes", Region: "eu-west-1"},
		},
	})
	startEnvoy(t, p.xdsPort)
	nacks := func() float64 { return metricValue(t, p.reg, "xds_nacks_total", "") }
	eventually(t, 20*time.Second, "listener NACK", func() error {
		if got := nacks(); got < 1 {
			return fmt.Errorf("nacks = %v", got)
		}
		return nil
	})
	logs := p.logs.String()
	for _, want := range []string{`"msg":"envoy rejected config (NACK)"`, "libvotefilter.so", `"node":"edge-test-`, `"rejected_version":"1"`} {
		if !strings.Contains(logs, want) {
			t.Fatalf("NACK log lacks %s:\n%s", want, logs)
		}
	}
	time.Sleep(time.Second)
	if got := nacks(); got != 1 {
		t.Fatalf("rejected config resent: %v NACKs in a second", got)
	}
	// The listener itself was fine; without a filter config it fails closed: Envoy answers 500
	// to everything rather than letting a request past a filter it could not configure.
	eventually(t, 10*time.Second, "listener fails closed", func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/results/x", p.listenerPort))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusInternalServerError {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})

	second := testElection
	second.ID = "22222222-2222-4222-8222-222222222222"
	if _, err := p.cp.Publish(context.Background(), snapshot.State{Elections: []edgeconfig.Election{testElection, second}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "second NACK", func() error {
		if got := nacks(); got != 2 {
			return fmt.Errorf("nacks = %v", got)
		}
		return nil
	})
	if !strings.Contains(p.logs.String(), `"rejected_version":"2"`) {
		t.Fatalf("no NACK of version 2:\n%s", p.logs.String())
	}
}

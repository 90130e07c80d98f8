package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tvvote/voting/schema"
)

// Ports of one local stack; a zero port is replaced by a free one.
type Ports struct {
	Envoy      int // public listener: votes and results
	EnvoyAdmin int
	XDS        int // control plane gRPC (ADS)
	Results    int
	IdP        int
	Postgres   int
	Redis      int
	SQS        int
}

// DefaultPorts are the fixed ports of `make run`, documented in the README.
var DefaultPorts = Ports{Envoy: 8080, EnvoyAdmin: 9901, XDS: 18000, Results: 8082, IdP: 8085,
	Postgres: 55432, Redis: 56379, SQS: 9324}

// Options configure Start.
type Options struct {
	Ports Ports
	// Region is the Envoy node's region label.
	Region string
	// BinDir holds our binaries and libvotefilter.so (`make build`); default <repo>/bin.
	BinDir string
	// EnvoyBin is the Envoy executable; default <repo>/.tools/envoy/envoy (`make tools`).
	EnvoyBin string
	// Audience is the aud the filter requires and the dev IdP mints.
	Audience string
	// CaptchaMode is the edge's captcha check: "pow" (default) or "off".
	CaptchaMode string
	// ControlPlaneEnv adds settings to the control plane's environment (e.g. rate limits).
	ControlPlaneEnv []string
	// EnvoyEnv adds settings to Envoy's environment (e.g. VOTEFILTER_PPROF_ADDR).
	EnvoyEnv []string
}

// Stack is the whole product running locally on loopback.
type Stack struct {
	Ports    Ports
	Region   string
	Audience string
	Postgres *Postgres
	Redis    *Redis
	SQS      *ElasticMQ
	// PoWSecret signs the edge's proof-of-work challenges; fresh for every stack.
	PoWSecret string

	mu    sync.Mutex
	procs map[string]*Process
	cmds  map[string]func() *exec.Cmd
	logs  string
}

// EnvoyURL is the public entry point of the stack.
func (s *Stack) EnvoyURL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.Ports.Envoy) }

// IdPURL is the development identity provider.
func (s *Stack) IdPURL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.Ports.IdP) }

// Issuer is the iss of dev tokens; Auth0 issuers end with a slash, so ours does too.
func (s *Stack) Issuer() string { return s.IdPURL() + "/" }

// Start brings up every component, waits for each to be healthy and returns the running stack.
// On error everything already started is stopped again. Ports left zero are picked free; as
// another process can take a picked port before our server binds it (tests run in parallel),
// a failed start with picked ports is retried with fresh ones.
func Start(ctx context.Context, o Options) (*Stack, error) {
	picked := o.Ports.hasZero()
	var errs []error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := startOnce(ctx, o)
		if err == nil || !picked || ctx.Err() != nil {
			return s, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (p Ports) hasZero() bool {
	return p.Envoy == 0 || p.EnvoyAdmin == 0 || p.XDS == 0 || p.Results == 0 || p.IdP == 0 ||
		p.Postgres == 0 || p.Redis == 0 || p.SQS == 0
}

func startOnce(ctx context.Context, o Options) (_ *Stack, err error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	if o.BinDir == "" {
		o.BinDir = filepath.Join(root, "bin")
	}
	if o.EnvoyBin == "" {
		o.EnvoyBin = filepath.Join(root, ".tools", "envoy", "envoy")
	}
	if o.Region == "" {
		o.Region = "local"
	}
	if o.Audience == "" {
		o.Audience = "https://votes.local/api"
	}
	if o.CaptchaMode == "" {
		o.CaptchaMode = "pow"
	}
	for _, f := range []string{o.EnvoyBin, filepath.Join(o.BinDir, "libvotefilter.so"), filepath.Join(o.BinDir, "controlplane"),
		filepath.Join(o.BinDir, "processor"), filepath.Join(o.BinDir, "results"), filepath.Join(o.BinDir, "devidp")} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("%s is missing: run `make tools build` first", f)
		}
	}
	if err := o.Ports.fill(); err != nil {
		return nil, err
	}
	s := &Stack{Ports: o.Ports, Region: o.Region, Audience: o.Audience, PoWSecret: randomSecret(), procs: map[string]*Process{},
		cmds: map[string]func() *exec.Cmd{}, logs: stateDir("logs")}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()

	if err := s.startEngines(ctx); err != nil {
		return nil, err
	}
	if err := schema.Migrate(ctx, s.Postgres.DSN); err != nil {
		return nil, err
	}

	p := s.Ports
	queueURL := s.SQS.QueueURL("votes")
	s.define("devidp", filepath.Join(o.BinDir, "devidp"), nil,
		"DEVIDP_ADDR="+addr(p.IdP), "DEVIDP_ISSUER="+s.Issuer(), "DEVIDP_AUDIENCE="+o.Audience)
	s.define("results", filepath.Join(o.BinDir, "results"), nil,
		"RESULTS_DATABASE_URL="+s.Postgres.DSN, "RESULTS_LISTEN_ADDR="+addr(p.Results),
		"RESULTS_REDIS_ADDR="+s.Redis.Addr, "RESULTS_JWT_ISSUER="+s.Issuer(), "RESULTS_JWT_AUDIENCE="+o.Audience,
		"RESULTS_JWT_JWKS_URL="+s.IdPURL()+"/.well-known/jwks.json")
	s.define("processor", filepath.Join(o.BinDir, "processor"), nil,
		"PROCESSOR_DATABASE_URL="+s.Postgres.DSN, "PROCESSOR_SQS_ENDPOINT="+s.SQS.Endpoint,
		"PROCESSOR_SQS_REGION=us-east-1", "PROCESSOR_QUEUE_URL="+queueURL, "PROCESSOR_REDIS_ADDR="+s.Redis.Addr,
		"PROCESSOR_METRICS_ADDR=127.0.0.1:0")
	s.define("controlplane", filepath.Join(o.BinDir, "controlplane"), nil, append([]string{
		"XDS_DATABASE_URL=" + s.Postgres.DSN, "XDS_GRPC_ADDR=" + addr(p.XDS),
		"XDS_LISTENER_PORT=" + strconv.Itoa(p.Envoy), "XDS_RESULTS_ADDR=" + addr(p.Results),
		"XDS_JWT_ISSUER=" + s.Issuer(), "XDS_JWT_AUDIENCE=" + o.Audience,
		"XDS_JWT_JWKS_URL=" + s.IdPURL() + "/.well-known/jwks.json",
		"XDS_REDIS_ADDR=" + s.Redis.Addr, "XDS_SQS_QUEUE_URL=" + queueURL, "XDS_SQS_REGION=us-east-1",
		"XDS_SQS_ENDPOINT=" + s.SQS.Endpoint, "XDS_SQS_STATIC_CREDENTIALS=true",
		"XDS_CAPTCHA_MODE=" + o.CaptchaMode, "XDS_POW_SECRET=" + s.PoWSecret,
		"XDS_ADMIN_ADDR=" + controlPlaneAdminAddr(p), "XDS_METRICS_ADDR=" + controlPlaneMetricsAddr(p)}, o.ControlPlaneEnv...)...)
	bootstrap := filepath.Join(s.logs, fmt.Sprintf("envoy-bootstrap-%d.yaml", p.EnvoyAdmin))
	if err := writeBootstrap(bootstrap, p, o.Region); err != nil {
		return nil, err
	}
	s.define("envoy", o.EnvoyBin, []string{"-c", bootstrap, "--disable-hot-restart", "-l", "info",
		"--drain-time-s", "1"},
		append([]string{"ENVOY_DYNAMIC_MODULES_SEARCH_PATH=" + o.BinDir,
			// The dynamic-module Go SDK hands Go pointers to Envoy; Go's cgo pointer check would
			// abort on them (envoyproxy/envoy#44123), so it is off for the Envoy process only.
			"GODEBUG=cgocheck=0"}, o.EnvoyEnv...)...)

	for _, name := range []string{"devidp", "results", "processor", "controlplane"} {
		if err := s.start(name); err != nil {
			return nil, err
		}
	}
	for name, port := range map[string]int{"devidp": p.IdP, "results": p.Results, "controlplane": p.XDS} {
		if err := waitFor(ctx, s.proc(name), 30*time.Second, tcpReady(addr(port))); err != nil {
			return nil, fmt.Errorf("%w (log: %s)", err, s.logPath(name))
		}
	}
	if err := s.start("envoy"); err != nil {
		return nil, err
	}
	if err := s.waitEnvoy(ctx); err != nil {
		return nil, fmt.Errorf("%w (log: %s)", err, s.logPath("envoy"))
	}
	return s, nil
}

func (s *Stack) startEngines(ctx context.Context) error {
	var wg sync.WaitGroup
	var pgErr, redisErr, sqsErr error
	wg.Add(3)
	go func() { defer wg.Done(); s.Postgres, pgErr = StartPostgres(ctx, s.Ports.Postgres) }()
	go func() { defer wg.Done(); s.Redis, redisErr = StartRedis(ctx, s.Ports.Redis) }()
	go func() { defer wg.Done(); s.SQS, sqsErr = StartElasticMQ(ctx, s.Ports.SQS) }()
	wg.Wait()
	return errors.Join(pgErr, redisErr, sqsErr)
}

// waitEnvoy waits until Envoy has its listener from the control plane and routes to the
// results worker: an unknown election answered 404 by the results worker proves both.
func (s *Stack) waitEnvoy(ctx context.Context) error {
	url := s.EnvoyURL() + "/api/v1/results/live/00000000-0000-0000-0000-000000000000"
	return waitFor(ctx, s.proc("envoy"), 60*time.Second, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "ELECTION_NOT_FOUND") {
			return fmt.Errorf("results through envoy: %d %s", resp.StatusCode, body)
		}
		return nil
	})
}

func (s *Stack) define(name, bin string, args []string, env ...string) {
	s.cmds[name] = func() *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		return cmd
	}
}

func (s *Stack) start(name string) error {
	out, err := logFile(s.logs, s.logName(name))
	if err != nil {
		return err
	}
	p, err := startProcess(name, s.cmds[name](), out)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.procs[name] = p
	s.mu.Unlock()
	return nil
}

func (s *Stack) proc(name string) *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[name]
}

func (s *Stack) logName(name string) string { return fmt.Sprintf("%s-%d", name, s.Ports.Envoy) }

func (s *Stack) logPath(name string) string { return filepath.Join(s.logs, s.logName(name)+".log") }

// LogPath is the file holding a component's output.
func (s *Stack) LogPath(name string) string { return s.logPath(name) }

// PIDs are the process ids of every running component, engines included.
func (s *Stack) PIDs() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]int{}
	for name, p := range s.procs {
		m[name] = p.cmd.Process.Pid
	}
	if s.Postgres != nil {
		m["postgres"] = s.Postgres.proc.cmd.Process.Pid
	}
	if s.Redis != nil {
		m["redis"] = s.Redis.proc.cmd.Process.Pid
	}
	if s.SQS != nil {
		m["elasticmq"] = s.SQS.proc.cmd.Process.Pid
	}
	return m
}

// Kill stops a component abruptly (SIGKILL), as a crash would.
func (s *Stack) Kill(name string) { s.proc(name).Kill() }

// Restart starts a killed or stopped component again with the same settings.
func (s *Stack) Restart(name string) error { return s.start(name) }

// Exited reports a component that died on its own, for the supervisor loop of `make run`.
func (s *Stack) Exited() <-chan string {
	ch := make(chan string, len(s.procs))
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, p := range s.procs {
		go func(name string, p *Process) { <-p.Done(); ch <- name }(name, p)
	}
	return ch
}

// Stop terminates every component, ours first, then the engines.
func (s *Stack) Stop() {
	for _, name := range []string{"envoy", "controlplane", "processor", "results", "devidp"} {
		if p := s.proc(name); p != nil {
			p.Stop(10 * time.Second)
		}
	}
	var wg sync.WaitGroup
	for _, stop := range []func(){s.stopSQS, s.stopRedis, s.stopPostgres} {
		wg.Add(1)
		go func() { defer wg.Done(); stop() }()
	}
	wg.Wait()
}

func (s *Stack) stopSQS() {
	if s.SQS != nil {
		s.SQS.Stop()
	}
}

func (s *Stack) stopRedis() {
	if s.Redis != nil {
		s.Redis.Stop()
	}
}

func (s *Stack) stopPostgres() {
	if s.Postgres != nil {
		s.Postgres.Stop()
	}
}

// Token asks the development IdP for an access token.
func (s *Stack) Token(ctx context.Context, subject string, admin bool) (string, error) {
	url := fmt.Sprintf("%s/token?sub=%s&admin=%t", s.IdPURL(), subject, admin)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token: %d %s %v", resp.StatusCode, b, err)
	}
	return string(b), nil
}

func (p *Ports) fill() error {
	for _, f := range []*int{&p.Envoy, &p.EnvoyAdmin, &p.XDS, &p.Results, &p.IdP, &p.Postgres, &p.Redis, &p.SQS} {
		if *f == 0 {
			port, err := FreePort()
			if err != nil {
				return err
			}
			*f = port
		}
	}
	return nil
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func itoa(n int) string { return strconv.Itoa(n) }

func randomSecret() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

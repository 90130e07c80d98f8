package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tvvote/voting/devidp"
	"github.com/tvvote/voting/schema"
	"github.com/tvvote/voting/workers/processor/processorconfig"
	"github.com/tvvote/voting/workers/results/resultsconfig"
	"github.com/tvvote/voting/xds/xdsconfig"
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
	// RedisCluster are the nodes of the edge's Redis Cluster, with Options.RedisCluster.
	RedisCluster [ClusterNodes]int
}

// DefaultPorts are the fixed ports of `make run`, documented in the README.
var DefaultPorts = Ports{Envoy: 8080, EnvoyAdmin: 9901, XDS: 18000, Results: 8082, IdP: 8085,
	Postgres: 55432, Redis: 56379, SQS: 9324,
	RedisCluster: [ClusterNodes]int{56380, 56381, 56382, 56383, 56384, 56385}}

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
	// ControlPlaneEnv adds KEY=VALUE settings to the control plane's environment, over those of
	// the stack (e.g. rate limits).
	ControlPlaneEnv []string
	// Tracing starts Jaeger (devstack/jaeger.go) when it is built, and has Envoy, the processor
	// and the results worker export spans to it.
	Tracing bool
	// EnvoyEnv adds settings to Envoy's environment (e.g. VOTEFILTER_PPROF_ADDR).
	EnvoyEnv []string
	// RedisCluster puts the edge's admission store (the vote filter's and the processor's) on a
	// local Redis Cluster of three primaries with a replica each, the edge waiting for one
	// replica (WAIT) before it answers 200. The results worker keeps the single Redis.
	RedisCluster bool
	// Regions, when more than one, make a multi-region stack: the first is the stack's own
	// (it replaces Region), each other gets its own Envoy, Redis, vote queue with its
	// dead-letter queue and processor (Stack.Peers), and the control plane serves them all
	// with every region's store (XDS_REGION_STORES). Not with RedisCluster.
	Regions []string
	// PeerStoreDelay, with Regions, puts the one-way delay between two regions on the way from
	// the edges to every peer region's Redis and queue (LatencyProxy): what a vote served in the
	// first region for a viewer homed in another pays in a deployment. A peer region's own edge
	// pays it too, so measure through the first region's edge. Benchmarks only.
	PeerStoreDelay time.Duration
	// XDSMutualTLS serves ADS over mutual TLS: a throwaway CA (devstack/pki.go) signs the control
	// plane's certificate and a client certificate for every Envoy.
	XDSMutualTLS bool
}

// Stack is the whole product running locally on loopback.
type Stack struct {
	Ports    Ports
	Region   string
	Audience string
	Postgres *Postgres
	Redis    *Redis
	// RedisCluster is the edge's admission store with Options.RedisCluster, else nil.
	RedisCluster *RedisCluster
	// Peers are the further regions of a multi-region stack (Options.Regions), else nil.
	Peers []*PeerRegion
	SQS   *ElasticMQ
	// PKI is the CA and certificates of ADS with Options.XDSMutualTLS, else nil.
	PKI *PKI
	// Tracing is Jaeger with Options.Tracing (devstack/jaeger.go), else nil.
	Tracing *Tracing
	// Monitoring is Prometheus and its exporters (devstack/prometheus.go), when installed.
	Monitoring *Monitoring
	// PoWSecret signs the edge's proof-of-work challenges; fresh for every stack. The edges read
	// it from PoWSecretFile, the control plane passes them only that path.
	PoWSecret     string
	PoWSecretFile string

	// controlPlane and processor are the configurations those two run with, as they load them.
	controlPlane xdsconfig.Config
	processor    processorconfig.Config

	services map[string]*child // our own binaries; the engines carry theirs
	envoyEnv []string          // what every Envoy of the stack runs with
	proxies  []*LatencyProxy   // between the edges and the peer regions, with PeerStoreDelay
	cmds     map[string]func() *exec.Cmd
	logs     string
	exits    chan string
}

// Names of the components, for the fault API (Kill, Restart, Freeze, Thaw, Running).
const (
	ComponentEnvoy        = "envoy"
	ComponentControlPlane = "controlplane"
	ComponentProcessor    = "processor"
	ComponentResults      = "results"
	ComponentDevIdP       = "devidp"
	ComponentPostgres     = "postgres"
	ComponentRedis        = "redis"
	ComponentElasticMQ    = "elasticmq"
)

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
	if len(o.Regions) > 1 {
		if o.RedisCluster {
			return nil, errors.New("a multi-region stack runs a Redis per region, not a Redis Cluster")
		}
		o.Region = o.Regions[0]
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
	s := &Stack{Ports: o.Ports, Region: o.Region, Audience: o.Audience, PoWSecret: randomSecret(),
		services: map[string]*child{}, cmds: map[string]func() *exec.Cmd{}, logs: stateDir("logs"),
		exits: make(chan string, 16)}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()

	var peers []string
	if len(o.Regions) > 1 {
		peers = o.Regions[1:]
	}
	if err := s.startEngines(ctx, o.RedisCluster, peers); err != nil {
		return nil, err
	}
	if err := s.startPeerRedis(ctx, peers); err != nil {
		return nil, err
	}
	for _, c := range []*child{&s.Postgres.child, &s.Redis.child, &s.SQS.child} {
		c.report(s.exits)
	}
	if s.RedisCluster != nil {
		for _, n := range s.RedisCluster.Nodes {
			n.child.report(s.exits)
		}
	}
	if err := schema.Migrate(ctx, s.Postgres.DSN); err != nil {
		return nil, err
	}
	s.PoWSecretFile = filepath.Join(stateDir("secrets"), fmt.Sprintf("pow-%d", o.Ports.Envoy))
	if err := writeSecret(s.PoWSecretFile, s.PoWSecret); err != nil {
		return nil, err
	}

	if o.XDSMutualTLS {
		if s.PKI, err = NewPKI(filepath.Join(stateDir("pki"), itoa(o.Ports.XDS))); err != nil {
			return nil, err
		}
	}
	if o.Tracing {
		if err := s.startTracing(ctx); err != nil {
			return nil, err
		}
	}
	s.envoyEnv = append([]string{"ENVOY_DYNAMIC_MODULES_SEARCH_PATH=" + o.BinDir,
		// The dynamic-module Go SDK hands Go pointers to Envoy; Go's cgo pointer check would
		// abort on them (envoyproxy/envoy#44123), so it is off for the Envoy process only.
		"GODEBUG=cgocheck=0"}, o.EnvoyEnv...)
	if err := s.definePrograms(o); err != nil {
		return nil, err
	}
	p := s.Ports
	xdsTLS, err := s.PKI.ClientTLS("edge-" + o.Region + "-" + itoa(p.Envoy))
	if err != nil {
		return nil, err
	}
	bootstrap := filepath.Join(s.logs, fmt.Sprintf("envoy-bootstrap-%d.yaml", p.EnvoyAdmin))
	if err := writeBootstrap(bootstrap, p, o.Region, xdsTLS); err != nil {
		return nil, err
	}
	s.define("envoy", o.EnvoyBin, envoyArgs(bootstrap), s.envoyEnv...)
	if err := s.definePeerPrograms(o); err != nil {
		return nil, err
	}

	s.services[ComponentDevIdP].ready = tcpReady(addr(p.IdP))
	s.services[ComponentResults].ready = tcpReady(addr(p.Results))
	s.services[ComponentControlPlane].ready = tcpReady(addr(p.XDS))
	s.services[ComponentProcessor].ready = httpOK(s.ProcessorMetricsURL())
	s.services[ComponentEnvoy].ready = s.envoyRoutes
	s.services[ComponentEnvoy].readyTimeout = 60 * time.Second

	// The identity provider first: the results worker and the control plane fetch its keys as
	// they start. Then those three side by side; Envoy needs the control plane and the results
	// worker.
	if err := s.services[ComponentDevIdP].Start(ctx); err != nil {
		return nil, err
	}
	next := []string{ComponentResults, ComponentProcessor, ComponentControlPlane}
	procs := map[string]*Process{}
	for _, name := range next {
		if procs[name], err = s.services[name].spawn(); err != nil {
			return nil, err
		}
	}
	for _, name := range next {
		if err := s.services[name].awaitReady(ctx, procs[name]); err != nil {
			return nil, err
		}
	}
	if err := s.services[ComponentEnvoy].Start(ctx); err != nil {
		return nil, err
	}
	if err := s.startMonitoring(ctx); err != nil {
		return nil, err
	}
	if err := s.startPeerPrograms(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// definePrograms registers our four binaries, each with the environment rendered from its
// config struct: what this stack runs them with, the rest left to their defaults.
func (s *Stack) definePrograms(o Options) (err error) {
	p := s.Ports
	queueURL := s.SQS.QueueURL("votes")
	jwksURL := s.IdPURL() + "/.well-known/jwks.json"
	bin := func(name string) string { return filepath.Join(o.BinDir, name) }
	if _, err = defineProgram(s, ComponentDevIdP, bin("devidp"),
		devidp.Config{Addr: addr(p.IdP), Issuer: s.Issuer(), Audience: o.Audience}, devidp.LoadConfig); err != nil {
		return fmt.Errorf("devidp: %w", err)
	}
	if _, err = defineProgram(s, ComponentResults, bin("results"), resultsconfig.Config{
		DatabaseURL: s.Postgres.DSN, ListenAddr: addr(p.Results), RedisAddr: s.Redis.Addr,
		JWTIssuer: s.Issuer(), JWTAudience: o.Audience, JWKSURL: jwksURL,
		TracingOTLPAddr: s.otlpAddr(),
	}, resultsconfig.Load); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	edgeRedis, cluster, waitReplicas := s.Redis.Addr, false, 0
	if s.RedisCluster != nil {
		edgeRedis, cluster, waitReplicas = s.RedisCluster.Seeds(), true, 1
	}
	reconcileRegion := ""
	if len(s.Peers) > 0 {
		reconcileRegion = s.Region // each region's processor checks its own store
	}
	if s.processor, err = defineProgram(s, ComponentProcessor, bin("processor"), processorconfig.Config{
		DatabaseURL: s.Postgres.DSN, SQSEndpoint: s.SQS.Endpoint, SQSRegion: "us-east-1", QueueURL: queueURL,
		RedisAddr: edgeRedis, RedisCluster: cluster, MetricsAddr: processorMetricsAddr(p),
		ReconcileRegion: reconcileRegion, TracingOTLPAddr: s.otlpAddr(),
	}, processorconfig.Load); err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	cp := xdsconfig.Config{RedisAddr: edgeRedis, SQSQueueURL: queueURL}
	if len(s.Peers) > 0 {
		stores, err := s.regionStores(o.PeerStoreDelay)
		if err != nil {
			return err
		}
		cp = xdsconfig.Config{RegionStores: stores, JWTHomeRegionClaim: devidp.HomeRegionClaim}
	}
	if s.controlPlane, err = defineProgram(s, ComponentControlPlane, bin("controlplane"), xdsconfig.Config{
		DatabaseURL: s.Postgres.DSN, GRPCAddr: addr(p.XDS), ListenerPort: p.Envoy, ResultsAddr: addr(p.Results),
		JWTIssuer: s.Issuer(), JWTAudience: o.Audience, JWKSURL: jwksURL,
		RedisAddr: cp.RedisAddr, RedisCluster: cluster, RedisWaitReplicas: waitReplicas, RegionStores: cp.RegionStores,
		JWTHomeRegionClaim: cp.JWTHomeRegionClaim,
		SQSQueueURL:        cp.SQSQueueURL, SQSRegion: "us-east-1", SQSEndpoint: s.SQS.Endpoint,
		SQSStaticCredentials: true, CaptchaMode: o.CaptchaMode, PoWSecretFile: s.PoWSecretFile,
		AdminAddr: controlPlaneAdminAddr(p), MetricsAddr: controlPlaneMetricsAddr(p), GRPCTLS: s.PKI.serverTLS(),
		Tracing: s.edgeTracing(),
	}, xdsconfig.Load, o.ControlPlaneEnv...); err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	return nil
}

// httpOK succeeds once url answers 200.
func httpOK(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

func (s *Stack) startEngines(ctx context.Context, cluster bool, peers []string) error {
	var queues []string
	for _, r := range peers {
		queues = append(queues, peerQueue(r))
	}
	var wg sync.WaitGroup
	var pgErr, redisErr, sqsErr, clusterErr error
	wg.Go(func() { s.Postgres, pgErr = StartPostgres(ctx, s.Ports.Postgres) })
	wg.Go(func() { s.Redis, redisErr = StartRedis(ctx, s.Ports.Redis) })
	wg.Go(func() { s.SQS, sqsErr = StartElasticMQWith(ctx, s.Ports.SQS, ElasticMQOptions{Queues: queues}) })
	if cluster {
		wg.Go(func() { s.RedisCluster, clusterErr = StartRedisCluster(ctx, s.Ports.RedisCluster[:]) })
	}
	wg.Wait()
	return errors.Join(pgErr, redisErr, sqsErr, clusterErr)
}

// envoyRoutes succeeds once Envoy has its listener from the control plane and routes to the
// results worker: an unknown election answered 404 by the results worker proves both.
func (s *Stack) envoyRoutes(ctx context.Context) error {
	url := s.EnvoyURL() + "/api/v1/results/live/00000000-0000-0000-0000-000000000000"
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
}

// define registers one of our binaries as a component; a death nobody asked for is reported on
// Exited.
func (s *Stack) define(name, bin string, args []string, env ...string) {
	s.cmds[name] = func() *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		return cmd
	}
	s.services[name] = &child{
		name:         name,
		logPath:      s.logPath(name),
		command:      func() (*exec.Cmd, error) { return s.cmds[name](), nil },
		readyTimeout: 30 * time.Second,
		exits:        s.exits,
	}
}

// proc is a component's current process, or nil.
func (s *Stack) proc(name string) *Process {
	c, err := s.component(name)
	if err != nil {
		return nil
	}
	return c.current()
}

func (s *Stack) logName(name string) string { return fmt.Sprintf("%s-%d", name, s.Ports.Envoy) }

func (s *Stack) logPath(name string) string { return filepath.Join(s.logs, s.logName(name)+".log") }

// LogPath is the file holding a component's output.
func (s *Stack) LogPath(name string) string { return s.logPath(name) }

// Logs are the contents of every file in the stack's log folder (its components', the
// engines', the Envoy bootstraps), by path: what a leak check must search.
func (s *Stack) Logs() (map[string]string, error) {
	paths, err := filepath.Glob(filepath.Join(s.logs, "*"))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil && !os.IsNotExist(err) {
			return nil, err
		}
		out[path] = string(b)
	}
	return out, nil
}

// PIDs are the process ids of every running component, engines included.
func (s *Stack) PIDs() map[string]int {
	m := map[string]int{}
	for _, name := range s.Components() {
		if p := s.proc(name); p != nil && p.alive() {
			m[name] = p.Pid()
		}
	}
	return m
}

// Components are the names of every component, ours and the engines.
func (s *Stack) Components() []string {
	names := []string{ComponentEnvoy, ComponentControlPlane, ComponentProcessor, ComponentResults, ComponentDevIdP,
		ComponentPostgres, ComponentRedis, ComponentElasticMQ}
	if s.RedisCluster != nil {
		for i := range s.RedisCluster.Nodes {
			names = append(names, ComponentRedisNode(i))
		}
	}
	return append(names, s.peerComponents()...)
}

func (s *Stack) component(name string) (*child, error) {
	var c *child
	switch name {
	case ComponentPostgres:
		if s.Postgres != nil {
			c = &s.Postgres.child
		}
	case ComponentRedis:
		if s.Redis != nil {
			c = &s.Redis.child
		}
	case ComponentElasticMQ:
		if s.SQS != nil {
			c = &s.SQS.child
		}
	default:
		c = s.services[name]
		if r := s.peerRedis(name); r != nil {
			c = r
		}
		if s.RedisCluster != nil {
			for i, n := range s.RedisCluster.Nodes {
				if name == ComponentRedisNode(i) {
					c = &n.child
				}
			}
		}
	}
	if c == nil {
		return nil, fmt.Errorf("unknown component %q (one of %s)", name, strings.Join(s.Components(), ", "))
	}
	return c, nil
}

// Kill stops a component's process group with SIGKILL, as a crash would, and returns once it has
// exited. It is an error (ErrNotRunning) for a component that is not running.
func (s *Stack) Kill(name string) error {
	c, err := s.component(name)
	if err != nil {
		return err
	}
	return c.Kill()
}

// Restart starts a killed (or crashed) component again with the same settings, ports and data,
// and returns once it is healthy: Envoy routes to the results worker, the control plane, the
// results worker and the IdP accept connections, the processor serves /metrics, PostgreSQL
// accepts a session, Redis answers PING and ElasticMQ lists its queues; so Envoy comes back
// only once the control plane and the results worker run. Restarting a component that still
// runs, frozen included, is an error (ErrRunning): Kill it first. A component that does not
// become healthy (within 60 s for Envoy and ElasticMQ, 30 s for Redis, 60 s for PostgreSQL, 30 s
// for the others) is killed again and the error names its log, to which every restart appends.
func (s *Stack) Restart(ctx context.Context, name string) error {
	c, err := s.component(name)
	if err != nil {
		return err
	}
	return c.Start(ctx)
}

// Freeze stops a component's process group with SIGSTOP, as a hung process: its sockets stay
// open and nothing answers. Thaw undoes it; Kill and Stop work on a frozen component too.
func (s *Stack) Freeze(name string) error {
	c, err := s.component(name)
	if err != nil {
		return err
	}
	return c.Freeze()
}

// Thaw lets a frozen component run again (SIGCONT).
func (s *Stack) Thaw(name string) error {
	c, err := s.component(name)
	if err != nil {
		return err
	}
	return c.Thaw()
}

// Running reports whether a component's process is alive; a frozen one is.
func (s *Stack) Running(name string) bool {
	c, err := s.component(name)
	return err == nil && c.Running()
}

// State is running, frozen or stopped, for people watching the stack.
func (s *Stack) State(name string) string {
	c, err := s.component(name)
	if err != nil {
		return "unknown"
	}
	return c.state()
}

// Exited delivers the name of every component that dies on its own, for the supervisor loop of
// `make run`; components killed or stopped through the stack are not reported.
func (s *Stack) Exited() <-chan string { return s.exits }

// Stop terminates every component, ours first, then the engines, frozen ones included, and
// removes the engines' data.
func (s *Stack) Stop() {
	s.stopMonitoring()
	var peerServices []string
	for _, r := range s.Peers {
		peerServices = append(peerServices, InRegion(ComponentEnvoy, r.Name), InRegion(ComponentProcessor, r.Name))
	}
	for _, name := range append(peerServices, ComponentEnvoy, ComponentControlPlane, ComponentProcessor, ComponentResults, ComponentDevIdP) {
		if c := s.services[name]; c != nil {
			c.stop(syscall.SIGTERM, 10*time.Second)
		}
	}
	// After our programs, which flush their last spans as they stop.
	s.stopTracing()
	for _, p := range s.proxies {
		_ = p.Close()
	}
	var wg sync.WaitGroup
	for _, stop := range []func(){s.stopSQS, s.stopRedis, s.stopPostgres} {
		wg.Go(stop)
	}
	wg.Wait()
	if s.PoWSecretFile != "" {
		_ = os.Remove(s.PoWSecretFile)
	}
	if s.PKI != nil {
		_ = os.RemoveAll(s.PKI.Dir)
	}
}

// RotatePoWSecret replaces the proof-of-work secret in its file with a fresh one, as an
// operator rotates it: the edges take it within a few seconds, without a restart.
func (s *Stack) RotatePoWSecret() error {
	next := randomSecret()
	if err := writeSecret(s.PoWSecretFile, next); err != nil {
		return err
	}
	s.PoWSecret = next
	return nil
}

// SecretFile writes secret to the file name in the state folder and returns its path: how a
// secret reaches the edges (the control plane passes only the path, e.g. in
// XDS_SITEVERIFY_SECRET_FILE).
func SecretFile(name, secret string) (string, error) {
	path := filepath.Join(stateDir("secrets"), name)
	return path, writeSecret(path, secret)
}

// writeSecret writes a secret file readable by its owner only, through a rename so that a
// reader never sees it half written.
func writeSecret(path, secret string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
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
	if s.RedisCluster != nil {
		s.RedisCluster.Stop()
	}
	for _, r := range s.Peers {
		if r.Redis != nil {
			r.Redis.Stop()
		}
	}
}

func (s *Stack) stopPostgres() {
	if s.Postgres != nil {
		s.Postgres.Stop()
	}
}

// Token asks the development IdP for an access token.
func (s *Stack) Token(ctx context.Context, subject string, admin bool) (string, error) {
	return s.TokenHomed(ctx, subject, admin, "")
}

// TokenHomed is Token with the viewer's home region claimed (devidp.HomeRegionClaim); ""
// claims none.
func (s *Stack) TokenHomed(ctx context.Context, subject string, admin bool, home string) (string, error) {
	u := fmt.Sprintf("%s/token?sub=%s&admin=%t&home_region=%s", s.IdPURL(), url.QueryEscape(subject), admin, url.QueryEscape(home))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
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

// envoyArgs are the arguments of every Envoy of the stack.
func envoyArgs(bootstrap string) []string {
	return []string{"-c", bootstrap, "--disable-hot-restart", "-l", "info", "--drain-time-s", "1"}
}

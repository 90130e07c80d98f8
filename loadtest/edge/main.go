// Command edge benchmarks the vote admission path through the real Envoy with our module
// against the same Envoy binary answering from a direct_response route, in one run:
//
//	go run ./loadtest/edge -duration 10s -connections 64
//
// The admission path runs on a whole local stack (captcha off, rate limits off, so every
// request is a fresh viewer's real vote: RS256 JWT verification, the Redis reservation, an
// acknowledged SQS batch, the Redis confirmation): with ElasticMQ as the queue, on the same two
// cores, and with a sink that acknowledges SendMessageBatch without storing, standing in for a
// remote SQS whose CPU is not ours (-queues picks). -compare-bin measures another build's
// edge the same way in the same run. The processor is stopped so only the edge competes for
// the CPU. It prints Markdown for BENCHMARKS.md, with CPU per vote by process.
//
// In the sink run, two other designs are measured on the same stack, Redis, sink and tokens
// (-peers picks): "conventional", a plain Envoy routing votes to the same admission code as a
// Go net/http service (loadtest/edge/voteservice), and "envoy-jwt", Envoy's own jwt_authn
// verifying the token and the filter's benchmark variant reading the viewer from Envoy's dynamic
// metadata. Our filter is measured again after them, so the drift of the run shows. A last
// table sets direct_response, the peers and our filter side by side.
package main

import (
	"bytes"
	"context"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/xds/xdsconfig"
)

//go:embed direct.yaml.tmpl
var directTemplate string

func main() {
	duration := flag.Duration("duration", 10*time.Second, "length of each measured phase")
	conns := flag.Int("connections", 64, "concurrent connections of the closed-loop phases")
	rateShare := flag.Float64("rate-share", 0.7, "fixed-rate phase as a share of the admission path's maximum")
	profileOut := flag.String("profile", "", "write a CPU profile of the module's Go code during the admission phase here")
	envoyEnv := flag.String("envoy-env", "", "extra KEY=VALUE,... for Envoy's environment (e.g. GOMAXPROCS=8)")
	queues := flag.String("queues", "elasticmq,sink,sink-traced", "admission runs to measure: elasticmq (ElasticMQ on the same cores), sink (edge only), "+
		"sink-traced (edge only, Envoy tracing at the control plane's default sampling into Jaeger)")
	peers := flag.String("peers", peerConventional+","+peerEnvoyJWT, "other designs measured in the sink run on the same stack and tokens: "+
		peerConventional+" (Envoy routing to a Go net/http vote service), "+peerEnvoyJWT+" (Envoy's jwt_authn verifying, the filter reading the viewer from metadata); empty for none")
	compareBin := flag.String("compare-bin", "", "also measure the edge alone with the binaries and libvotefilter.so in this folder (another build, e.g. an earlier commit's make build), side by side")
	compareLabel := flag.String("compare-label", "other build", "how the -compare-bin build is named in the table")
	flag.Parse()
	ctx := context.Background()
	var peerList []string
	for _, p := range strings.Split(*peers, ",") {
		if p == "" {
			continue
		}
		if _, ok := peerTargets[p]; !ok {
			log.Fatalf("-peers: unknown peer %q", p)
		}
		peerList = append(peerList, p)
	}
	if len(peerList) > 0 && !strings.Contains(","+*queues+",", ",sink,") {
		log.Fatal("-peers are measured in the sink run: add sink to -queues, or pass -peers ''")
	}

	direct, err := startEnvoy(ctx, directTemplate, map[string]any{}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer direct.stop()
	directReq := func() *http.Request {
		r, _ := http.NewRequest(http.MethodPost, direct.url+"/api/v1/votes", strings.NewReader(`{"electionId":"x"}`))
		r.Header.Set("Content-Type", "application/json")
		return r
	}
	closedLoop(directReq, *conns, 2*time.Second) // warm up connections and caches
	directPIDs := map[string]int{"envoy": direct.pid}
	before, wrkBefore := cpuTimes(directPIDs), childrenCPU()
	d, err := runWrk(direct.url+"/api/v1/votes", *conns, *duration, "")
	if err != nil {
		log.Fatal(err)
	}
	limit := targetResult{name: "Envoy direct_response (the limit)", max: d, seconds: duration.Seconds(),
		cpu: since(before, cpuTimes(directPIDs))}
	limit.cpu["wrk"] = childrenCPU() - wrkBefore
	// No open-loop phase at a share of direct_response's own maximum: the Go generator cannot
	// send tens of thousands of requests a second on these cores (it measures its own queue);
	// direct_response is measured open-loop at each admission run's rate instead.

	sink, err := startSink()
	if err != nil {
		log.Fatal(err)
	}
	type run struct {
		name    string
		env     []string
		binDir  string
		tracing bool
		peers   []string
	}
	var chain []run
	for _, q := range strings.Split(*queues, ",") {
		switch q {
		case "elasticmq":
			chain = append(chain, run{name: "ElasticMQ on the same cores"})
		case "sink":
			chain = append(chain, run{name: "SQS sink (edge only)", env: []string{"XDS_SQS_ENDPOINT=" + sink.URL}, peers: peerList})
		case "sink-traced":
			// The per-vote cost of tracing as shipped: the default sampling, a span per traced
			// request exported to Jaeger, the trace context read for every vote.
			chain = append(chain, run{name: fmt.Sprintf("SQS sink (edge only), traced %g %%", xdsconfig.Defaults().Tracing.Sampling),
				env: []string{"XDS_SQS_ENDPOINT=" + sink.URL}, tracing: true})
		default:
			log.Fatalf("-queues: unknown run %q", q)
		}
	}
	if *compareBin != "" {
		chain = append(chain, run{name: "SQS sink (edge only), " + *compareLabel, env: []string{"XDS_SQS_ENDPOINT=" + sink.URL},
			binDir: *compareBin})
	}
	fmt.Printf("\n| queue | phase | target | req/s | p50 ms | p99 ms | non-2xx | errors |\n|---|---|---|---|---|---|---|---|\n")
	row := func(queue, phase, target string, r result) {
		fmt.Printf("| %s | %s | %s | %.0f | %.2f | %.2f | %d | %d |\n", queue, phase, target, r.rps(),
			ms(r.pct(0.50)), ms(r.pct(0.99)), r.non2xx, r.errors)
	}
	wrkRow := func(queue, target string, r wrkResult) {
		fmt.Printf("| %s | max (wrk -t2 -c%d) | %s | %.0f | %.2f | %.2f | %d | %d |\n", queue, *conns, target, r.rps,
			ms(r.p50), ms(r.p99), r.non2xx, r.errors)
	}
	wrkRow("-", "Envoy direct_response", d)
	var notes []string
	var fourWay []targetResult
	for i, c := range chain {
		profile := ""
		if i == 0 {
			profile = *profileOut
		}
		ours, dr, others := measureAdmission(ctx, c.binDir, c.env, extraEnv(*envoyEnv), c.tracing, c.peers, *conns, *duration, *rateShare, directReq, profile)
		wrkRow(c.name, "votefilter admission", ours.max)
		row(c.name, fmt.Sprintf("fixed %.0f req/s", ours.rate), "Envoy direct_response", dr)
		row(c.name, fmt.Sprintf("fixed %.0f req/s", ours.rate), "votefilter admission", ours.fixed)
		for _, o := range others {
			wrkRow(c.name, o.name, o.max)
			row(c.name, fmt.Sprintf("fixed %.0f req/s", o.rate), o.name, o.fixed)
		}
		notes = append(notes, fmt.Sprintf("%s: admission/direct_response throughput %.1f %%, admitted votes/s per core %.0f; CPU ms per 1000 votes: %s",
			c.name, 100*ours.max.rps/d.rps, ours.max.rps/2, ours.cpuNote()))
		for _, o := range others {
			notes = append(notes, fmt.Sprintf("%s, %s: votes/s per core %.0f; CPU ms per 1000 votes: %s", c.name, o.name, o.max.rps/2, o.cpuNote()))
		}
		if len(others) > 0 {
			fourWay = append(append([]targetResult{limit}, others...), ours)
		}
	}
	fmt.Println()
	for _, n := range notes {
		fmt.Println("- " + n)
	}
	if fourWay != nil {
		printFourWay(fourWay, *conns, *rateShare)
	}
}

// targetResult is one target's figures: its closed-loop maximum, the CPU of every process over
// that phase, and the open-loop phase at a share of that maximum.
type targetResult struct {
	name    string
	max     wrkResult
	seconds float64 // length of the closed-loop phase
	cpu     map[string]time.Duration
	rate    float64
	fixed   result
}

// perVote is a process's CPU per request of the closed-loop phase, in µs.
func (t targetResult) perVote(d time.Duration) float64 {
	return float64(d.Microseconds()) / (t.max.rps * t.seconds)
}

// serverPerVote is the CPU per request of every process but the load generator, in µs.
func (t targetResult) serverPerVote() float64 {
	var sum time.Duration
	for n, d := range t.cpu {
		if n != "wrk" {
			sum += d
		}
	}
	return t.perVote(sum)
}

// cpuNote lists the processes that used CPU, the busiest first, in µs per vote (= ms per 1000).
func (t targetResult) cpuNote() string {
	names := make([]string, 0, len(t.cpu))
	for n := range t.cpu {
		if t.cpu[n] > 0 {
			names = append(names, n)
		}
	}
	sort.Slice(names, func(i, j int) bool { return t.cpu[names[i]] > t.cpu[names[j]] })
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.0f", n, t.perVote(t.cpu[n])))
	}
	return strings.Join(parts, ", ")
}

// printFourWay is the comparison of the sink run: the limit, the peers and ours, each at its own
// maximum and at a share of it, with the ratios of ours to each.
func printFourWay(ts []targetResult, conns int, share float64) {
	ours := ts[len(ts)-1]
	fmt.Printf("\n| target | max req/s (wrk -t2 -c%d) | non-2xx | ours ÷ target | p50 ms at %.0f %% | p99 ms at %.0f %% | open-loop req/s | CPU µs per vote by process | CPU µs per vote, all but wrk | ours ÷ target, CPU |\n",
		conns, 100*share, 100*share)
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
	for _, t := range ts {
		open := "– | – | –"
		if t.rate > 0 {
			open = fmt.Sprintf("%.2f | %.2f | %.0f", ms(t.fixed.pct(0.50)), ms(t.fixed.pct(0.99)), t.fixed.rps())
		}
		fmt.Printf("| %s | %.0f | %d | %.2f | %s | %s | %.0f | %.2f |\n", t.name, t.max.rps, t.max.non2xx,
			ours.max.rps/t.max.rps, open, t.cpuNote(), t.serverPerVote(), ours.serverPerVote()/t.serverPerVote())
	}
}

// measureAdmission starts a stack (captcha and rate limits off, so every request is a fresh
// viewer's real vote) and measures the admission path closed-loop, then open-loop at a share
// of that maximum beside direct_response at the same rate. Each peer then runs on the same
// stack (Redis, queue) and the same tokens, each target voting in its own election.
func measureAdmission(ctx context.Context, binDir string, env, envoyEnv []string, tracing bool, peers []string, conns int, duration time.Duration,
	share float64, directReq func() *http.Request, profileOut string) (ours targetResult, direct result, others []targetResult) {
	pprofPort, _ := devstack.FreePort()
	s, err := devstack.Start(ctx, devstack.Options{Region: "bench", CaptchaMode: "off", BinDir: binDir, Tracing: tracing,
		ControlPlaneEnv: append([]string{"XDS_RATE_PER_VIEWER=0/1s", "XDS_RATE_PER_IP=0/1s"}, env...),
		EnvoyEnv:        append([]string{fmt.Sprintf("VOTEFILTER_PPROF_ADDR=127.0.0.1:%d", pprofPort)}, envoyEnv...)})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Stop()
	if tracing && s.JaegerURL() == "" {
		log.Fatalf("a traced run needs Jaeger: %s", s.TracingLine())
	}
	// One election per target, so that every target gets every token as a fresh viewer.
	elections := map[string]devstack.Election{}
	keys := []string{"ours"}
	if len(peers) > 0 {
		// Ours is measured again after the peers: the order's drift (the store's files
		// growing, the shared machine) shows as the difference between the two.
		keys = append(append(keys, peers...), oursAgain)
	}
	for _, key := range keys {
		e, err := s.SeedElection(ctx, "Edge benchmark "+key, 24*time.Hour, "Candidate One", "Candidate Two")
		if err == nil {
			err = s.WaitEnvoyKnows(ctx, e.ID)
		}
		if err != nil {
			log.Fatal(err)
		}
		elections[key] = e
	}
	// Only the edge path competes for the CPU.
	if err := s.Kill(devstack.ComponentProcessor); err != nil {
		log.Fatal(err)
	}

	// wrk's phase gets its own slice of fresh viewers; the Go phases take the rest.
	forWrk := int(duration.Seconds() * 7000)
	need := forWrk + int(duration.Seconds()*3500) + 5000
	if len(peers) > 0 {
		// The peers may sustain more than our filter: room for their warm-up and fixed rate.
		need = forWrk + int(duration.Seconds()*4500) + 10000
	}
	log.Printf("minting %d tokens", need)
	tokens, err := mint(s, need)
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "edge-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bodies := map[string]string{}
	for key, e := range elections {
		bodies[key] = fmt.Sprintf(`{"electionId":%q,"candidateId":%q,"captchaToken":"captcha-is-off-in-this-benchmark"}`,
			e.ID, e.Candidates[0].ID)
	}
	tokFile, bodyFile, err := writeFiles(dir, tokens[:forWrk], bodies["ours"])
	if err != nil {
		log.Fatal(err)
	}
	m := measurer{tokens: tokens, forWrk: forWrk, tokFile: tokFile, conns: conns, duration: duration, share: share}

	var profile []byte
	profiling := func() func() {
		if profileOut == "" {
			return func() {}
		}
		done := make(chan struct{})
		go func() { defer close(done); profile = fetchProfile(pprofPort, duration-2*time.Second) }()
		return func() { <-done }
	}
	ours = m.measure("votefilter admission", s.EnvoyURL(), bodies["ours"], bodyFile, s.PIDs(), profiling,
		func(rate float64) { direct = openLoop(directReq, rate, duration) })
	if profileOut != "" && profile != nil {
		os.WriteFile(profileOut, profile, 0o644)
		log.Printf("CPU profile of the module's Go code written to %s (go tool pprof -top %s)", profileOut, profileOut)
	}

	if len(peers) == 0 {
		return ours, direct, nil
	}
	cfg, err := filterConfig(s.PrimaryEdge().AdminURL())
	if err != nil {
		log.Fatal(err)
	}
	if binDir == "" {
		root, _ := devstack.RepoRoot()
		binDir = filepath.Join(root, "bin")
	}
	for _, p := range peers {
		// The stack's own Envoy idles meanwhile; the peer's processes take its place.
		pids := s.PIDs()
		delete(pids, devstack.ComponentEnvoy)
		var stop []func()
		var url string
		switch p {
		case peerConventional:
			front, service, err := startConventional(ctx, cfg)
			if err != nil {
				log.Fatal(err)
			}
			pids["envoy"], pids["voteservice"] = front.pid, service.pid
			stop = []func(){front.stop, service.stop}
			url = front.url
		case peerEnvoyJWT:
			front, err := startEnvoyJWT(ctx, binDir, cfg, envoyEnv)
			if err != nil {
				log.Fatal(err)
			}
			pids["envoy"] = front.pid
			stop = []func(){front.stop}
			url = front.url
		}
		bodyFile := filepath.Join(dir, "body-"+p+".json")
		if err := os.WriteFile(bodyFile, []byte(bodies[p]), 0o644); err != nil {
			log.Fatal(err)
		}
		others = append(others, m.measure(peerTargets[p], url, bodies[p], bodyFile, pids, nil, nil))
		for _, f := range stop {
			f()
		}
	}
	bodyFile = filepath.Join(dir, "body-again.json")
	if err := os.WriteFile(bodyFile, []byte(bodies[oursAgain]), 0o644); err != nil {
		log.Fatal(err)
	}
	others = append(others, m.measure("votefilter admission, again after the peers", s.EnvoyURL(), bodies[oursAgain], bodyFile,
		s.PIDs(), nil, nil))
	return ours, direct, others
}

// oursAgain names the election of the second measurement of our filter, after the peers.
const oursAgain = "ours-again"

// measurer runs the phases of one target; every target takes the same tokens.
type measurer struct {
	tokens   []string
	forWrk   int
	tokFile  string
	conns    int
	duration time.Duration
	share    float64
}

// measure warms the target up, runs wrk against it with the CPU of pids read around that phase,
// then (after between, if any) sends at share of the maximum it reached. during, if set, starts
// something beside the wrk phase and returns the wait for it.
func (m measurer) measure(name, url, body, bodyFile string, pids map[string]int, during func() func(), between func(rate float64)) targetResult {
	var next atomic.Int64
	next.Store(int64(m.forWrk))
	voteReq := func() *http.Request {
		i := next.Add(1) - 1
		if int(i) >= len(m.tokens) {
			return nil
		}
		r, _ := http.NewRequest(http.MethodPost, url+"/api/v1/votes", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+m.tokens[i])
		return r
	}
	closedLoop(voteReq, m.conns, 2*time.Second) // warm up: JIT, pools, JWKS
	before := cpuTimes(pids)
	wrkBefore := childrenCPU()
	wait := func() {}
	if during != nil {
		wait = during()
	}
	root, _ := devstack.RepoRoot()
	v, err := runWrk(url, m.conns, m.duration, filepath.Join(root, "loadtest", "edge", "votes.lua"), m.tokFile, bodyFile)
	if err != nil {
		log.Fatal(err)
	}
	t := targetResult{name: name, max: v, seconds: m.duration.Seconds(), cpu: since(before, cpuTimes(pids))}
	t.cpu["wrk"] = childrenCPU() - wrkBefore
	wait()
	t.rate = v.rps * m.share
	if between != nil {
		between(t.rate)
	}
	t.fixed = openLoop(voteReq, t.rate, m.duration)
	return t
}

type result struct {
	lat            []time.Duration
	non2xx, errors int64
	elapsed        time.Duration
}

func (r result) rps() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[int(p*float64(len(r.lat)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func client(conns int) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, MaxConnsPerHost: conns * 2, IdleConnTimeout: time.Minute,
	}}
}

// collector gathers latencies and failures from many goroutines.
type collector struct {
	mu             sync.Mutex
	lat            []time.Duration
	non2xx, errors atomic.Int64
}

func (c *collector) do(cl *http.Client, req *http.Request, local *[]time.Duration) {
	start := time.Now()
	resp, err := cl.Do(req)
	took := time.Since(start)
	if err != nil {
		c.errors.Add(1)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		c.non2xx.Add(1)
	}
	*local = append(*local, took)
}

func (c *collector) merge(local []time.Duration) {
	c.mu.Lock()
	c.lat = append(c.lat, local...)
	c.mu.Unlock()
}

func (c *collector) result(elapsed time.Duration) result {
	sort.Slice(c.lat, func(i, j int) bool { return c.lat[i] < c.lat[j] })
	return result{lat: c.lat, non2xx: c.non2xx.Load(), errors: c.errors.Load(), elapsed: elapsed}
}

// closedLoop keeps `conns` requests in flight for d: the maximum the target sustains.
func closedLoop(newReq func() *http.Request, conns int, d time.Duration) result {
	cl := client(conns)
	var c collector
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for time.Now().Before(end) {
				req := newReq()
				if req == nil {
					break
				}
				c.do(cl, req, &local)
			}
			c.merge(local)
		}()
	}
	wg.Wait()
	return c.result(time.Since(start))
}

// openLoop sends at a fixed rate for d whatever the latency, so queueing shows in the tail.
func openLoop(newReq func() *http.Request, rate float64, d time.Duration) result {
	cl := client(4096)
	var c collector
	var wg sync.WaitGroup
	inflight := make(chan struct{}, 4096)
	start := time.Now()
	total := int(rate * d.Seconds())
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		req := newReq()
		if req == nil {
			break
		}
		inflight <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			c.do(cl, req, &local)
			c.merge(local)
			<-inflight
		}()
	}
	wg.Wait()
	return c.result(time.Since(start))
}

func mint(s *devstack.Stack, n int) ([]string, error) {
	resp, err := http.Get(fmt.Sprintf("%s/tokens?n=%d", s.IdPURL(), n))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("tokens: %d %v", resp.StatusCode, err)
	}
	return strings.Fields(string(b)), nil
}

// cpuTimes reads user+system CPU of each process from /proc (clock ticks of 10 ms).
func cpuTimes(pids map[string]int) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command name; utime and stime are the 12th and 13th.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		var ut, st int64
		fmt.Sscan(f[11], &ut)
		fmt.Sscan(f[12], &st)
		out[name] = time.Duration(ut+st) * 10 * time.Millisecond
	}
	return out
}

func since(before, after map[string]time.Duration) map[string]time.Duration {
	out := map[string]time.Duration{}
	for n, a := range after {
		out[n] = a - before[n]
	}
	return out
}

func fetchProfile(port int, d time.Duration) []byte {
	time.Sleep(time.Second)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", port, int(d.Seconds())))
	if err != nil {
		log.Printf("profile: %v", err)
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// childrenCPU is the CPU time of this process's finished children (the wrk runs).
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func extraEnv(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

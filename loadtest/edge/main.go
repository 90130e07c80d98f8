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
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/template"
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
	compareBin := flag.String("compare-bin", "", "also measure the edge alone with the binaries and libvotefilter.so in this folder (another build, e.g. an earlier commit's make build), side by side")
	compareLabel := flag.String("compare-label", "other build", "how the -compare-bin build is named in the table")
	flag.Parse()
	ctx := context.Background()

	direct, stopDirect, err := startDirectEnvoy(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer stopDirect()
	directReq := func() *http.Request {
		r, _ := http.NewRequest(http.MethodPost, direct+"/api/v1/votes", strings.NewReader(`{"electionId":"x"}`))
		r.Header.Set("Content-Type", "application/json")
		return r
	}
	closedLoop(directReq, *conns, 2*time.Second) // warm up connections and caches
	d, err := runWrk(direct+"/api/v1/votes", *conns, *duration, "")
	if err != nil {
		log.Fatal(err)
	}

	sink, err := startSink()
	if err != nil {
		log.Fatal(err)
	}
	type run struct {
		name    string
		env     []string
		binDir  string
		tracing bool
	}
	var chain []run
	for _, q := range strings.Split(*queues, ",") {
		switch q {
		case "elasticmq":
			chain = append(chain, run{name: "ElasticMQ on the same cores"})
		case "sink":
			chain = append(chain, run{name: "SQS sink (edge only)", env: []string{"XDS_SQS_ENDPOINT=" + sink.URL}})
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
	for i, c := range chain {
		profile := ""
		if i == 0 {
			profile = *profileOut
		}
		v, fixed, dr, cpu := measureAdmission(ctx, c.binDir, c.env, extraEnv(*envoyEnv), c.tracing, *conns, *duration, *rateShare, directReq, profile)
		wrkRow(c.name, "votefilter admission", v)
		row(c.name, fmt.Sprintf("fixed %.0f req/s", v.rps**rateShare), "Envoy direct_response", dr)
		row(c.name, fmt.Sprintf("fixed %.0f req/s", v.rps**rateShare), "votefilter admission", fixed)
		notes = append(notes, fmt.Sprintf("%s: admission/direct_response throughput %.1f %%, admitted votes/s per core %.0f; CPU ms per 1000 votes: %s",
			c.name, 100*v.rps/d.rps, v.rps/2, cpu))
	}
	fmt.Println()
	for _, n := range notes {
		fmt.Println("- " + n)
	}
}

// measureAdmission starts a stack (captcha and rate limits off, so every request is a fresh
// viewer's real vote) and measures the admission path closed-loop, then open-loop at a share
// of that maximum beside direct_response at the same rate.
func measureAdmission(ctx context.Context, binDir string, env, envoyEnv []string, tracing bool, conns int, duration time.Duration, share float64,
	directReq func() *http.Request, profileOut string) (v wrkResult, fixed, direct result, cpuNote string) {
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
	e, err := s.SeedElection(ctx, "Edge benchmark", 24*time.Hour, "Candidate One", "Candidate Two")
	if err == nil {
		err = s.WaitEnvoyKnows(ctx, e.ID)
	}
	if err != nil {
		log.Fatal(err)
	}
	// Only the edge path competes for the CPU.
	if err := s.Kill(devstack.ComponentProcessor); err != nil {
		log.Fatal(err)
	}

	// wrk's phase gets its own slice of fresh viewers; the Go phases take the rest.
	forWrk := int(duration.Seconds() * 7000)
	need := forWrk + int(duration.Seconds()*3500) + 5000
	log.Printf("minting %d tokens", need)
	tokens, err := mint(s, need)
	if err != nil {
		log.Fatal(err)
	}
	body := fmt.Sprintf(`{"electionId":%q,"candidateId":%q,"captchaToken":"captcha-is-off-in-this-benchmark"}`,
		e.ID, e.Candidates[0].ID)
	dir, err := os.MkdirTemp("", "edge-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	tokFile, bodyFile, err := writeFiles(dir, tokens[:forWrk], body)
	if err != nil {
		log.Fatal(err)
	}
	var next atomic.Int64
	next.Store(int64(forWrk))
	voteReq := func() *http.Request {
		i := next.Add(1) - 1
		if int(i) >= len(tokens) {
			return nil
		}
		r, _ := http.NewRequest(http.MethodPost, s.EnvoyURL()+"/api/v1/votes", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+tokens[i])
		return r
	}
	closedLoop(voteReq, conns, 2*time.Second) // warm up: JIT, pools, JWKS
	pids := s.PIDs()
	before := cpuTimes(pids)
	wrkBefore := childrenCPU()
	var profile []byte
	done := make(chan struct{})
	if profileOut != "" {
		go func() { defer close(done); profile = fetchProfile(pprofPort, duration-2*time.Second) }()
	} else {
		close(done)
	}
	root, _ := devstack.RepoRoot()
	v, err = runWrk(s.EnvoyURL(), conns, duration, filepath.Join(root, "loadtest", "edge", "votes.lua"), tokFile, bodyFile)
	if err != nil {
		log.Fatal(err)
	}
	cpu := since(before, cpuTimes(pids))
	cpu["wrk"] = childrenCPU() - wrkBefore
	<-done
	if profileOut != "" && profile != nil {
		os.WriteFile(profileOut, profile, 0o644)
		log.Printf("CPU profile of the module's Go code written to %s (go tool pprof -top %s)", profileOut, profileOut)
	}
	rate := v.rps * share
	direct = openLoop(directReq, rate, duration)
	fixed = openLoop(voteReq, rate, duration)

	names := make([]string, 0, len(cpu))
	for n := range cpu {
		if cpu[n] > 0 {
			names = append(names, n)
		}
	}
	sort.Slice(names, func(i, j int) bool { return cpu[names[i]] > cpu[names[j]] })
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.0f", n, float64(cpu[n].Milliseconds())*1000/(v.rps*duration.Seconds())))
	}
	return v, fixed, direct, strings.Join(parts, ", ")
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

func startDirectEnvoy(ctx context.Context) (url string, stop func(), err error) {
	root, err := devstack.RepoRoot()
	if err != nil {
		return "", nil, err
	}
	port, _ := devstack.FreePort()
	admin, _ := devstack.FreePort()
	dir, err := os.MkdirTemp("", "edge-bench-")
	if err != nil {
		return "", nil, err
	}
	cfg := filepath.Join(dir, "direct.yaml")
	f, err := os.Create(cfg)
	if err != nil {
		return "", nil, err
	}
	template.Must(template.New("direct").Parse(directTemplate)).Execute(f, map[string]int{"Port": port, "AdminPort": admin})
	f.Close()
	cmd := exec.CommandContext(ctx, filepath.Join(root, ".tools", "envoy", "envoy"), "-c", cfg, "--disable-hot-restart", "-l", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	url = fmt.Sprintf("http://127.0.0.1:%d", port)
	for i := 0; i < 100; i++ {
		if resp, err := http.Get(url + "/"); err == nil {
			resp.Body.Close()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return url, func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) }, nil
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

// Command results benchmarks the results worker through Envoy, in one run:
//
//  1. GET /api/v1/results/{id} with wrk through the stack's Envoy (the control plane's route,
//     vote filter in the chain), against a plain Envoy's direct_response route as baseline.
//  2. WebSocket fan-out: -clients streams through Envoy, then -updates commits written the way
//     the processor writes them (count update + NOTIFY in one transaction); for every client
//     and commit, the lag from COMMIT returning to the client reading the update. Also the
//     worker's and Envoy's memory per connected client.
//  3. Freshness under vote load: background votes through Envoy and sequential probe votes;
//     per probe, edge acknowledgement → visible on a stream and in GET results.
//
// Everything runs on 127.0.0.1 and every loop is bounded in count and time. Prints Markdown
// for BENCHMARKS.md. Run it with `make bench-results`, or:
//
//	go run ./loadtest/results -clients 5000 -updates 10 -duration 10s
//	go run ./loadtest/results -phases freshness -probes 100
package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/template"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
)

//go:embed envoy.yaml.tmpl
var envoyTemplate string

var (
	duration   = flag.Duration("duration", 10*time.Second, "length of each wrk run")
	conns      = flag.Int("connections", 64, "wrk connections")
	clients    = flag.Int("clients", 5000, "WebSocket clients of the fan-out phase")
	updates    = flag.Int("updates", 10, "commits measured in the fan-out phase")
	voteRate   = flag.Int("vote-rate", 200, "background votes per second in the freshness phase")
	probes     = flag.Int("probes", 30, "probe votes in the freshness phase")
	interval   = flag.Duration("stream-interval", streamIntervalFromEnv(), "the worker's RESULTS_STREAM_INTERVAL (inherited from the environment), for the floor printed by the freshness phase")
	phases     = flag.String("phases", "get,fanout,freshness", "phases to run, comma-separated: get, fanout, freshness")
	viewerCaps = 5 // streams per viewer token in the fan-out (the contract's limit)
)

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime)
	run := map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		switch p = strings.TrimSpace(p); p {
		case "get", "fanout", "freshness":
			run[p] = true
		default:
			log.Fatalf("-phases: unknown phase %q (get, fanout, freshness)", p)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute) // hard bound on the whole run
	defer cancel()

	root, err := devstack.RepoRoot()
	check(err)
	bin := filepath.Join(os.TempDir(), fmt.Sprintf("results-bench-%d", os.Getpid()))
	defer os.Remove(bin)
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./workers/results/cmd/results")
	build.Dir, build.Stderr = root, os.Stderr
	check(build.Run())

	s, err := devstack.Start(ctx, devstack.Options{Region: "bench", CaptchaMode: "off",
		ControlPlaneEnv: []string{"XDS_RATE_PER_VIEWER=0/1s", "XDS_RATE_PER_IP=0/1s"}})
	check(err)
	defer s.Stop()
	e, err := s.SeedElection(ctx, "Results benchmark", 2*time.Hour, "Aurora Lights", "Blue Harbour", "Probe Candidate")
	check(err)
	check(s.WaitEnvoyKnows(ctx, e.ID))
	stopWorker := startWorker(ctx, s, bin)
	defer stopWorker()
	envoy, stopEnvoy := startEnvoy(ctx, root, s.Ports.Results)
	defer stopEnvoy()

	fmt.Printf("\n## Results benchmark — %s, %d cores\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), numCPU())

	// 1. GET through Envoy vs Envoy direct_response.
	if run["get"] {
		path := "/api/v1/results/" + e.ID
		viaStack := wrk(ctx, s.EnvoyURL()+path)
		viaDirect := wrk(ctx, envoy.direct+path)
		fmt.Printf("### GET /api/v1/results/{id}, wrk -t2 -c%d -d%s\n\n", *conns, *duration)
		fmt.Println("| target | req/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
		fmt.Printf("| results worker via the stack's Envoy (vote filter in chain) | %.0f | %.2f | %.2f |\n", viaStack.rps, viaStack.p50, viaStack.p99)
		fmt.Printf("| plain Envoy direct_response (same binary) | %.0f | %.2f | %.2f |\n", viaDirect.rps, viaDirect.p50, viaDirect.p99)
		fmt.Printf("\nratio results/direct_response: %.2f of the req/s\n\n", viaStack.rps/viaDirect.rps)
	}

	// 2. Fan-out.
	if run["fanout"] {
		fanout(ctx, s, e.ID, e.Candidates[0].ID, envoy)
	}

	// 3. Freshness under load.
	if run["freshness"] {
		freshness(ctx, s, e.ID, e.Candidates[1].ID, e.Candidates[2].ID)
	}
}

// streamIntervalFromEnv is the interval the worker started here runs with: it inherits this
// process's environment.
func streamIntervalFromEnv() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("RESULTS_STREAM_INTERVAL")); err == nil && d > 0 {
		return d
	}
	return time.Second
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "\nprocessor") + 1
}

// startWorker replaces the stack's results worker with one from this tree that verifies tokens
// and uses Redis (devstack does not pass those settings yet), on the same port.
func startWorker(ctx context.Context, s *devstack.Stack, bin string) (stop func()) {
	check(s.Kill(devstack.ComponentResults))
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "RESULTS_DATABASE_URL="+s.Postgres.DSN,
		"RESULTS_LISTEN_ADDR=127.0.0.1:"+strconv.Itoa(s.Ports.Results), "RESULTS_REDIS_ADDR="+s.Redis.Addr,
		"RESULTS_JWT_ISSUER="+s.Issuer(), "RESULTS_JWT_AUDIENCE="+s.Audience,
		"RESULTS_JWT_JWKS_URL="+s.IdPURL()+"/.well-known/jwks.json")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.Create(s.LogPath("results") + ".bench")
	check(err)
	cmd.Stdout, cmd.Stderr = logf, logf
	check(cmd.Start())
	stop = func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait(); logf.Close() }
	for i := 0; ; i++ {
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", s.Ports.Results)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if i > 200 || ctx.Err() != nil {
			stop()
			log.Fatal("results worker did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return stop
}

type plainEnvoy struct {
	direct, proxy, admin string
}

func startEnvoy(ctx context.Context, root string, resultsPort int) (plainEnvoy, func()) {
	var ports [3]int
	for i := range ports {
		p, err := devstack.FreePort()
		check(err)
		ports[i] = p
	}
	dir, err := os.MkdirTemp("", "results-bench-envoy-")
	check(err)
	cfg := filepath.Join(dir, "envoy.yaml")
	f, err := os.Create(cfg)
	check(err)
	body, _ := json.Marshal(`{"electionId":"00000000-0000-0000-0000-000000000000","electionTitle":"Results benchmark","status":"ACTIVE","totals":[` +
		`{"candidateId":"00000000-0000-0000-0000-000000000001","name":"Aurora Lights","party":"Independent","votes":0,"percentage":0}],"totalVotes":0,"generatedAt":"2026-11-01T20:15:00Z"}`)
	check(template.Must(template.New("envoy").Parse(envoyTemplate)).Execute(f, map[string]any{
		"AdminPort": ports[0], "DirectPort": ports[1], "ProxyPort": ports[2], "ResultsPort": resultsPort, "Body": string(body)}))
	f.Close()
	cmd := exec.CommandContext(ctx, filepath.Join(root, ".tools", "envoy", "envoy"), "-c", cfg, "--disable-hot-restart", "-l", "warn")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	check(cmd.Start())
	e := plainEnvoy{direct: fmt.Sprintf("http://127.0.0.1:%d", ports[1]), proxy: fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
		admin: fmt.Sprintf("http://127.0.0.1:%d", ports[0])}
	for i := 0; i < 100; i++ {
		if resp, err := http.Get(e.direct + "/"); err == nil {
			resp.Body.Close()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return e, func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); os.RemoveAll(dir) }
}

type wrkResult struct{ rps, p50, p99 float64 }

var (
	rpsRe = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	latRe = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
)

func wrk(ctx context.Context, url string) wrkResult {
	log.Printf("wrk %s", url)
	out, err := exec.CommandContext(ctx, "wrk", "-t2", fmt.Sprintf("-c%d", *conns), "-d"+duration.String(), "--latency", url).CombinedOutput()
	if err != nil {
		log.Fatalf("wrk: %v\n%s", err, out)
	}
	if bytes.Contains(out, []byte("Non-2xx")) {
		log.Fatalf("wrk saw errors:\n%s", out)
	}
	var r wrkResult
	if m := rpsRe.FindSubmatch(out); m != nil {
		r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	for _, m := range latRe.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		switch string(m[3]) {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if string(m[1]) == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
	}
	return r
}

func mint(s *devstack.Stack, n int) []string {
	resp, err := http.Get(fmt.Sprintf("%s/tokens?n=%d", s.IdPURL(), n))
	check(err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	check(err)
	if resp.StatusCode != 200 {
		log.Fatalf("tokens: %d %s", resp.StatusCode, b)
	}
	return strings.Fields(string(b))
}

// metric reads one unlabelled series from a Prometheus text page.
func metric(url, name string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return -1
}

func envoyAllocated(admin string) float64 {
	resp, err := http.Get(admin + "/memory")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var m struct {
		Allocated string `json:"allocated"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&m)
	v, _ := strconv.ParseFloat(m.Allocated, 64)
	return v
}

type recv struct {
	total int64
	at    time.Time
}

// fanClient is one stream; it records every VOTE_UPDATE's total and arrival time.
type fanClient struct {
	conn *websocket.Conn
	mu   sync.Mutex
	got  []recv
}

func (c *fanClient) read(ctx context.Context) {
	for {
		_, b, err := c.conn.Read(ctx)
		if err != nil {
			return
		}
		at := time.Now()
		var m struct {
			Type       string `json:"type"`
			TotalVotes int64  `json:"totalVotes"`
		}
		if json.Unmarshal(b, &m) == nil && m.Type == "VOTE_UPDATE" {
			c.mu.Lock()
			if len(c.got) < 1000 {
				c.got = append(c.got, recv{m.TotalVotes, at})
			}
			c.mu.Unlock()
		}
	}
}

func dialAll(ctx context.Context, base, electionID string, tokens []string, n int) ([]*fanClient, int) {
	wsBase := strings.Replace(base, "http://", "ws://", 1) + "/api/v1/results/stream/" + electionID + "?token="
	out := make([]*fanClient, n)
	var failed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 100)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(dctx, wsBase+tokens[i/viewerCaps], nil)
			if err != nil {
				failed.Add(1)
				return
			}
			out[i] = &fanClient{conn: c}
		}()
	}
	wg.Wait()
	ok := out[:0]
	for _, c := range out {
		if c != nil {
			ok = append(ok, c)
		}
	}
	return ok, int(failed.Load())
}

func fanout(ctx context.Context, s *devstack.Stack, electionID, candidateID string, envoy plainEnvoy) {
	workerMetrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", s.Ports.Results)
	tokens := mint(s, (*clients+viewerCaps-1)/viewerCaps+1)

	runtimeGC(workerMetrics)
	rssBefore := metric(workerMetrics, "process_resident_memory_bytes")
	heapBefore := metric(workerMetrics, "go_memstats_heap_inuse_bytes")
	stackBefore := metric(workerMetrics, "go_memstats_stack_inuse_bytes")
	gorBefore := metric(workerMetrics, "go_goroutines")
	envoyBefore := envoyAllocated(envoy.admin)
	log.Printf("dialing %d streams through the plain Envoy with raised circuit breakers", *clients)
	start := time.Now()
	cs, failed := dialAll(ctx, envoy.proxy, electionID, tokens, *clients)
	dialTime := time.Since(start)
	rctx, stopReading := context.WithCancel(ctx)
	var readers sync.WaitGroup
	for _, c := range cs {
		readers.Add(1)
		go func() { defer readers.Done(); c.read(rctx) }()
	}
	time.Sleep(3 * time.Second) // initial messages delivered, memory settled
	runtimeGC(workerMetrics)
	rssAfter := metric(workerMetrics, "process_resident_memory_bytes")
	heapAfter := metric(workerMetrics, "go_memstats_heap_inuse_bytes")
	stackAfter := metric(workerMetrics, "go_memstats_stack_inuse_bytes")
	gorAfter := metric(workerMetrics, "go_goroutines")
	envoyAfter := envoyAllocated(envoy.admin)
	connected := metric(workerMetrics, "voting_results_stream_clients")

	conn, err := pgx.Connect(ctx, s.Postgres.DSN)
	check(err)
	defer conn.Close(context.Background())
	var base int64
	check(conn.QueryRow(ctx, `SELECT COALESCE(sum(votes), 0)::bigint FROM vote_counts WHERE election_id = $1`, electionID).Scan(&base))
	commits := make([]time.Time, *updates)
	for k := range *updates {
		time.Sleep(1500 * time.Millisecond) // > the 1 s throttle: each commit is its own update
		tx, err := conn.Begin(ctx)
		check(err)
		var total int64
		check(tx.QueryRow(ctx, `INSERT INTO vote_counts (election_id, candidate_id, votes) VALUES ($1, $2, 1)
			ON CONFLICT (election_id, candidate_id) DO UPDATE SET votes = vote_counts.votes + 1, updated_at = now()
			RETURNING votes`, electionID, candidateID).Scan(&total))
		// The processor's payload: the delta and the new total.
		payload, err := json.Marshal(contract.CountsChanged{ElectionIDs: []string{electionID},
			Deltas: []contract.CountDelta{{ElectionID: electionID, CandidateID: candidateID, Delta: 1, Votes: total}}})
		check(err)
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, contract.ChannelVoteCounts, string(payload))
		check(err)
		check(tx.Commit(ctx))
		commits[k] = time.Now()
	}
	time.Sleep(3 * time.Second)
	stopReading()
	for _, c := range cs {
		c.conn.CloseNow()
	}
	readers.Wait()
	time.Sleep(2 * time.Second) // let the worker see the closes

	// The stack's Envoy: the control plane's cluster has Envoy's default circuit breakers.
	probeN := min(*clients, 3000)
	log.Printf("dialing %d streams through the stack's Envoy", probeN)
	viaStack, failedStack := dialAll(ctx, s.EnvoyURL(), electionID, tokens, probeN)
	for _, c := range viaStack {
		c.conn.CloseNow()
	}

	var lags []time.Duration
	missed, within := 0, 0
	for _, c := range cs {
		for k, at := range commits {
			want := base + int64(k) + 1
			i := slices.IndexFunc(c.got, func(r recv) bool { return r.total >= want })
			if i < 0 {
				missed++
				continue
			}
			lag := c.got[i].at.Sub(at)
			lags = append(lags, lag)
			if lag <= time.Second {
				within++
			}
		}
	}
	slices.Sort(lags)
	n := len(cs)
	fmt.Printf("### WebSocket fan-out: %d clients, %d commits 1.5 s apart\n\n", *clients, *updates)
	fmt.Printf("- through the stack's Envoy (control plane cluster, default circuit breakers): %d of %d streams opened, %d refused\n",
		len(viaStack), probeN, failedStack)
	fmt.Printf("- through a plain Envoy with the control plane's route + raised circuit breakers: %d of %d opened in %s (%d failed); worker reports %.0f connected\n",
		n, *clients, dialTime.Round(time.Millisecond), failed, connected)
	fmt.Printf("- deliveries: %d of %d (%d missed); within 1 s of COMMIT: %.2f%%\n", len(lags), n**updates, missed, 100*float64(within)/float64(max(1, n**updates)))
	fmt.Printf("- commit → client lag: p50 %s, p95 %s, p99 %s, max %s\n", q(lags, .50), q(lags, .95), q(lags, .99), q(lags, 1))
	if n > 0 {
		fmt.Printf("- results worker memory per client: RSS %.1f KiB (Go heap in use %.1f KiB + goroutine stacks %.1f KiB), goroutines %.2f\n",
			(rssAfter-rssBefore)/float64(n)/1024, (heapAfter-heapBefore)/float64(n)/1024, (stackAfter-stackBefore)/float64(n)/1024,
			(gorAfter-gorBefore)/float64(n))
		fmt.Printf("- Envoy memory per client (allocated, both sides of the proxy): %.1f KiB\n\n", (envoyAfter-envoyBefore)/float64(n)/1024)
	}
}

// runtimeGC makes memory readings comparable: /metrics cannot force a GC, so wait for the
// heap to settle instead.
func runtimeGC(url string) {
	prev := metric(url, "go_memstats_heap_inuse_bytes")
	for range 10 {
		time.Sleep(300 * time.Millisecond)
		cur := metric(url, "go_memstats_heap_inuse_bytes")
		if cur <= prev*1.01 {
			return
		}
		prev = cur
	}
}

func q(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(p * float64(len(d)-1))
	return d[i].Round(100 * time.Microsecond)
}

// freshness casts background votes through Envoy at -vote-rate and, meanwhile, -probes probe
// votes one at a time, each at a random phase of the stream's 1 s cadence.
func freshness(ctx context.Context, s *devstack.Stack, electionID, bgCandidate, probeCandidate string) {
	dur := time.Duration(*probes)*1500*time.Millisecond + 5*time.Second
	bgTokens := mint(s, int(dur.Seconds())**voteRate+100)
	probeTokens := mint(s, *probes+1)
	viewer := mint(s, 1)[0]

	// One stream through the stack's Envoy, tracking the probe candidate's count.
	wsURL := strings.Replace(s.EnvoyURL(), "http://", "ws://", 1) + "/api/v1/results/stream/" + electionID + "?token=" + viewer
	c, _, err := websocket.Dial(ctx, wsURL, nil)
	check(err)
	defer c.CloseNow()
	var streamProbe atomic.Int64
	type seen struct {
		votes int64
		at    time.Time
	}
	var mu sync.Mutex
	var history []seen
	var sentAt, recvAt []time.Time // every broadcast VOTE_UPDATE: the worker's timestamp, our read
	go func() {
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			at := time.Now()
			var m struct {
				Type       string    `json:"type"`
				Timestamp  time.Time `json:"timestamp"`
				Message    string    `json:"message"`
				Candidates []struct {
					CandidateID string `json:"candidateId"`
					Votes       int64  `json:"votes"`
				} `json:"candidates"`
			}
			if json.Unmarshal(b, &m) != nil {
				continue
			}
			if m.Type == "VOTE_UPDATE" && m.Message == "" { // not the greeting with the current counts
				mu.Lock()
				sentAt, recvAt = append(sentAt, m.Timestamp), append(recvAt, at)
				mu.Unlock()
			}
			for _, cu := range m.Candidates {
				if cu.CandidateID == probeCandidate {
					streamProbe.Store(cu.Votes)
					mu.Lock()
					history = append(history, seen{cu.Votes, at})
					mu.Unlock()
				}
			}
		}
	}()
	time.Sleep(time.Second)

	cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 10 * time.Second}
	castVote := func(tok, cand string) (time.Time, string, error) {
		body := fmt.Sprintf(`{"electionId":%q,"candidateId":%q,"captchaToken":"captcha-is-off-in-this-benchmark"}`, electionID, cand)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.EnvoyURL()+"/api/v1/votes", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := cl.Do(req)
		if err != nil {
			return time.Time{}, "", err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		at := time.Now()
		if resp.StatusCode != 200 {
			return time.Time{}, "", fmt.Errorf("vote: %d", resp.StatusCode)
		}
		var r contract.VoteResult
		_ = json.Unmarshal(b, &r)
		return at, r.VoteID, nil
	}

	// Background load: an open loop at -vote-rate, bounded by the tokens and the duration.
	bgCtx, stopBG := context.WithTimeout(ctx, dur)
	defer stopBG()
	var bgSent, bgErr atomic.Int64
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		tick := time.NewTicker(time.Second / time.Duration(*voteRate))
		defer tick.Stop()
		for i := 0; i < len(bgTokens); i++ {
			select {
			case <-bgCtx.Done():
				return
			case <-tick.C:
			}
			bg.Add(1)
			go func() {
				defer bg.Done()
				if _, _, err := castVote(bgTokens[i], bgCandidate); err != nil {
					bgErr.Add(1)
				} else {
					bgSent.Add(1)
				}
			}()
		}
	}()

	resultsURL := s.EnvoyURL() + "/api/v1/results/" + electionID
	probeVotesREST := func() int64 {
		resp, err := cl.Get(resultsURL)
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		var r struct {
			Totals []struct {
				CandidateID string `json:"candidateId"`
				Votes       int64  `json:"votes"`
			} `json:"totals"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&r)
		for _, t := range r.Totals {
			if t.CandidateID == probeCandidate {
				return t.Votes
			}
		}
		return -1
	}
	time.Sleep(2 * time.Second) // load running
	var streamLags, restLags, floors []time.Duration
	probeAcks := map[string]time.Time{}     // vote id → edge acknowledgement
	probeREST := map[string]time.Duration{} // vote id → acknowledgement → GET shows it
	base := streamProbe.Load()
	start := time.Now()
	for i := range *probes {
		time.Sleep(time.Duration(rand.IntN(1000)) * time.Millisecond)
		acked, voteID, err := castVote(probeTokens[i], probeCandidate)
		if err != nil {
			log.Printf("probe %d: %v", i, err)
			continue
		}
		probeAcks[voteID] = acked
		want := base + int64(i) + 1
		deadline := acked.Add(5 * time.Second)
		gotREST := false
		for time.Now().Before(deadline) && (!gotREST || streamProbe.Load() < want) {
			if !gotREST && probeVotesREST() >= want {
				restLags = append(restLags, time.Since(acked))
				probeREST[voteID] = restLags[len(restLags)-1]
				gotREST = true
			}
			time.Sleep(10 * time.Millisecond)
		}
		mu.Lock()
		for _, h := range history {
			if h.votes >= want && h.at.After(acked) {
				streamLags = append(streamLags, h.at.Sub(acked))
				break
			}
		}
		// The earliest any sender keeping one VOTE_UPDATE per interval could have shown this
		// vote: one interval after the last update read before the acknowledgement.
		if i, ok := slices.BinarySearchFunc(recvAt, acked, func(t, target time.Time) int { return t.Compare(target) }); ok || i > 0 {
			if !ok {
				i--
			}
			floors = append(floors, max(0, recvAt[i].Add(*interval).Sub(acked)))
		}
		mu.Unlock()
	}
	elapsed := time.Since(start)
	stopBG()
	bg.Wait()
	slices.Sort(streamLags)
	slices.Sort(restLags)
	fmt.Printf("### Freshness under load: %d probe votes during ~%d background votes/s through Envoy\n\n", *probes, *voteRate)
	fmt.Printf("- background votes accepted: %d (%.0f/s), errors %d\n", bgSent.Load(), float64(bgSent.Load())/elapsed.Seconds(), bgErr.Load())
	fmt.Printf("- edge acknowledgement → GET results through Envoy shows it (%d/%d): p50 %s, p99 %s, max %s\n",
		len(restLags), *probes, q(restLags, .5), q(restLags, .99), q(restLags, 1))
	fmt.Printf("- edge acknowledgement → stream through Envoy shows it (%d/%d): p50 %s, p99 %s, max %s\n",
		len(streamLags), *probes, q(streamLags, .5), q(streamLags, .99), q(streamLags, 1))
	// The part before the results worker: the processor's transaction start is the row's
	// persisted_at (same machine, same clock).
	var toProcessor, fromProcessor []time.Duration
	conn, err := pgx.Connect(ctx, s.Postgres.DSN)
	check(err)
	rows, err := conn.Query(ctx, `SELECT id::text, persisted_at FROM votes WHERE id = ANY($1::uuid[])`, slices.Collect(maps.Keys(probeAcks)))
	check(err)
	for rows.Next() {
		var id string
		var at time.Time
		check(rows.Scan(&id, &at))
		toProcessor = append(toProcessor, at.Sub(probeAcks[id]))
		if rest, ok := probeREST[id]; ok {
			fromProcessor = append(fromProcessor, rest-at.Sub(probeAcks[id]))
		}
	}
	check(rows.Err())
	conn.Close(ctx)
	slices.Sort(toProcessor)
	slices.Sort(fromProcessor)
	fmt.Printf("- of which edge acknowledgement → processor transaction start (votes.persisted_at) (%d/%d): p50 %s, p99 %s, max %s;\n"+
		"  processor transaction start → GET shows it: p50 %s, p99 %s, max %s\n",
		len(toProcessor), *probes, q(toProcessor, .5), q(toProcessor, .99), q(toProcessor, 1),
		q(fromProcessor, .5), q(fromProcessor, .99), q(fromProcessor, 1))
	slices.Sort(floors)
	fmt.Printf("- floor for any sender at one VOTE_UPDATE per %s (last update read before the acknowledgement + %s): p50 %s, p99 %s, max %s\n",
		*interval, *interval, q(floors, .5), q(floors, .99), q(floors, 1))
	mu.Lock()
	var gaps []time.Duration
	for i := 1; i < len(sentAt); i++ {
		gaps = append(gaps, sentAt[i].Sub(sentAt[i-1]))
	}
	mu.Unlock()
	slices.Sort(gaps)
	fmt.Printf("- VOTE_UPDATEs on the stream: %d; gap between consecutive ones (worker timestamps): min %s, p50 %s, max %s\n\n",
		len(gaps)+1, q(gaps, 0), q(gaps, .5), q(gaps, 1))
}

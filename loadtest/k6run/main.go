// Command k6run runs the k6 scenarios of loadtest/k6 on the whole local stack (devstack, with
// the captcha and the rate limits off: every iteration is a fresh viewer's real vote) and
// samples every process's memory while they run: resident set size from /proc, and the Go heap
// of our Go services (their /metrics) and of the vote filter inside Envoy (its pprof endpoint).
// It prints each scenario's figures and thresholds, and for the memory the first and last
// samples and the slope over the second half of the run (a leak shows as a slope that does not
// flatten). Samples go to out/k6/memory-<scenario>.csv.
//
//	go run ./loadtest/k6run -scenarios baseline,peak,sustained,spike
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tvvote/voting/devstack"
)

func main() {
	scenarios := flag.String("scenarios", "baseline,peak,sustained,spike", "scenarios of loadtest/k6 to run, in order")
	scale := flag.String("scale", "0.001", "share of the show's rates this machine runs (0.001 = 1/1000)")
	durations := flag.String("durations", "", "override scenario durations, e.g. sustained=10m,peak=30s")
	tokens := flag.Int("tokens", 20000, "viewers to mint; each votes once in each election")
	elections := flag.Int("elections", 6, "elections to seed, so tokens × elections fresh votes exist")
	interval := flag.Duration("sample", 5*time.Second, "memory sampling interval")
	flag.Parse()

	root, err := devstack.RepoRoot()
	check(err)
	k6 := filepath.Join(root, ".tools", "bin", "k6")
	if _, err := os.Stat(k6); err != nil {
		log.Fatalf("%s missing: run make tools-k6", k6)
	}
	out := filepath.Join(root, "out", "k6")
	check(os.MkdirAll(out, 0o755))
	override := map[string]string{}
	for _, kv := range strings.Split(*durations, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			override[k] = v
		}
	}

	ctx := context.Background()
	pprofPort, err := devstack.FreePort()
	check(err)
	s, err := devstack.Start(ctx, devstack.Options{Region: "k6", CaptchaMode: "off",
		ControlPlaneEnv: []string{"XDS_RATE_PER_VIEWER=0/1s", "XDS_RATE_PER_IP=0/1s"},
		EnvoyEnv:        []string{fmt.Sprintf("VOTEFILTER_PPROF_ADDR=127.0.0.1:%d", pprofPort)}})
	check(err)
	defer s.Stop()
	var ids, cands []string
	for i := range *elections {
		e, err := s.SeedElection(ctx, fmt.Sprintf("k6 election %d", i+1), 3*time.Hour, "Alice", "Bob", "Carol")
		check(err)
		check(s.WaitEnvoyKnows(ctx, e.ID))
		ids = append(ids, e.ID)
		var c []string
		for _, x := range e.Candidates {
			c = append(c, x.ID)
		}
		cands = append(cands, strings.Join(c, ","))
	}
	tokFile := filepath.Join(out, "tokens.txt")
	check(mint(s, *tokens, tokFile))
	defer os.Remove(tokFile)

	heaps := map[string]string{"controlplane": s.ControlPlaneMetricsURL(), "processor": s.ProcessorMetricsURL(),
		"results": fmt.Sprintf("http://127.0.0.1:%d/metrics", s.Ports.Results)}
	var reports []string
	offset := 0 // votes used up by the scenarios before: each vote needs a fresh (viewer, election)
	for _, sc := range strings.Split(*scenarios, ",") {
		args := []string{"run", "--quiet", "--summary-export", filepath.Join(out, sc+"-summary.json"),
			"--summary-trend-stats", "avg,min,med,max,p(90),p(95),p(99)",
			"-e", "BASE_URL=" + s.EnvoyURL(), "-e", "TOKENS=" + tokFile, "-e", "ELECTIONS=" + strings.Join(ids, ","),
			"-e", "CANDIDATES=" + strings.Join(cands, ";"), "-e", "SCALE=" + *scale, "-e", "OFFSET=" + strconv.Itoa(offset)}
		if d, ok := override[sc]; ok {
			args = append(args, "-e", "DURATION="+d)
		}
		args = append(args, filepath.Join(root, "loadtest", "k6", sc+".js"))
		cmd := exec.Command(k6, args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		log.Printf("scenario %s", sc)
		samples := make(chan []sample, 1)
		stop := make(chan struct{})
		go func() { samples <- sampleMemory(s, heaps, pprofPort, *interval, stop) }()
		runErr := cmd.Run() // a failed threshold exits non-zero: reported, not fatal
		close(stop)
		mem := <-samples
		check(writeCSV(filepath.Join(out, "memory-"+sc+".csv"), mem))
		reports = append(reports, report(sc, filepath.Join(out, sc+"-summary.json"), runErr, mem))
		offset += used(filepath.Join(out, sc+"-summary.json"))
	}
	fmt.Println()
	for _, r := range reports {
		fmt.Println(r)
	}
}

type sample struct {
	at    time.Duration
	rss   map[string]float64 // MiB
	heaps map[string]float64 // MiB
}

func sampleMemory(s *devstack.Stack, heaps map[string]string, pprofPort int, every time.Duration, stop <-chan struct{}) []sample {
	start := time.Now()
	var out []sample
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		sm := sample{at: time.Since(start), rss: map[string]float64{}, heaps: map[string]float64{}}
		for name, pid := range s.PIDs() {
			if kb, ok := rssKB(pid); ok {
				sm.rss[name] = kb / 1024
			}
		}
		for name, url := range heaps {
			if b, ok := goHeap(url); ok {
				sm.heaps[name] = b / (1 << 20)
			}
		}
		if b, ok := moduleHeap(pprofPort); ok {
			sm.heaps["envoy (module)"] = b / (1 << 20)
		}
		out = append(out, sm)
		select {
		case <-stop:
			return out
		case <-t.C:
		}
	}
}

// rssKB is VmRSS of a process and its children's (PostgreSQL runs as several processes).
func rssKB(pid int) (float64, bool) {
	total, ok := 0.0, false
	for _, p := range append([]int{pid}, children(pid)...) {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, found := strings.CutPrefix(sc.Text(), "VmRSS:"); found {
				kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
				total, ok = total+kb, true
			}
		}
		f.Close()
	}
	return total, ok
}

func children(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if c, err := strconv.Atoi(f); err == nil {
			out = append(out, c)
			out = append(out, children(c)...)
		}
	}
	return out
}

var heapLine = regexp.MustCompile(`(?m)^go_memstats_heap_alloc_bytes ([0-9.e+]+)$`)

func goHeap(url string) (float64, bool) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := heapLine.FindSubmatch(b)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	return v, err == nil
}

var pprofHeapAlloc = regexp.MustCompile(`# HeapAlloc = (\d+)`)

// moduleHeap is the Go heap of the vote filter inside Envoy, from its pprof endpoint.
func moduleHeap(port int) (float64, bool) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?debug=1", port))
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := pprofHeapAlloc.FindSubmatch(b)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	return v, err == nil
}

func writeCSV(path string, samples []sample) error {
	names := map[string]bool{}
	for _, s := range samples {
		for n := range s.rss {
			names["rss "+n] = true
		}
		for n := range s.heaps {
			names["heap "+n] = true
		}
	}
	cols := make([]string, 0, len(names))
	for n := range names {
		cols = append(cols, n)
	}
	sort.Strings(cols)
	var b strings.Builder
	b.WriteString("seconds," + strings.Join(cols, ",") + "\n")
	for _, s := range samples {
		b.WriteString(strconv.FormatFloat(s.at.Seconds(), 'f', 0, 64))
		for _, c := range cols {
			kind, name, _ := strings.Cut(c, " ")
			v := s.rss[name]
			if kind == "heap" {
				v = s.heaps[name]
			}
			b.WriteString("," + strconv.FormatFloat(v, 'f', 1, 64))
		}
		b.WriteString("\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// slope is the least-squares slope of v over the second half of the samples, in MiB a minute.
func slope(samples []sample, get func(sample) (float64, bool)) float64 {
	var xs, ys []float64
	for _, s := range samples[len(samples)/2:] {
		if v, ok := get(s); ok {
			xs, ys = append(xs, s.at.Minutes()), append(ys, v)
		}
	}
	if len(xs) < 2 {
		return 0
	}
	var mx, my float64
	for i := range xs {
		mx, my = mx+xs[i], my+ys[i]
	}
	mx, my = mx/float64(len(xs)), my/float64(len(ys))
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	if den == 0 {
		return 0
	}
	return num / den
}

func report(name, summaryFile string, runErr error, mem []sample) string {
	var sum struct {
		Metrics map[string]map[string]any `json:"metrics"`
	}
	b, err := os.ReadFile(summaryFile)
	if err == nil {
		err = json.Unmarshal(b, &sum)
	}
	var r strings.Builder
	verdict := "thresholds met"
	if runErr != nil {
		verdict = "THRESHOLDS NOT MET (" + runErr.Error() + ")"
	}
	fmt.Fprintf(&r, "## %s: %s\n", name, verdict)
	if err != nil {
		fmt.Fprintf(&r, "summary unreadable: %v\n", err)
		return r.String()
	}
	num := func(metric, field string) float64 {
		v, _ := sum.Metrics[metric][field].(float64)
		return v
	}
	fmt.Fprintf(&r, "requests %.0f (%.0f/s), dropped iterations %.0f, failed %.3f %% (409: %.0f, 429: %.0f, 503: %.0f, no answer: %.0f; 503 during the ramp: %.0f), checks passed %.3f %%; latency of 2xx p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, max %.1f ms\n",
		num("http_reqs", "count"), num("http_reqs", "rate"), num("dropped_iterations", "count"), 100*num("http_req_failed", "value"),
		num("http_reqs{status:409}", "count"), num("http_reqs{status:429}", "count"), num("http_reqs{status:503}", "count"),
		num("http_reqs{status:0}", "count"), num("vote_503_during_ramp", "count"), 100*num("checks", "value"),
		num("http_req_duration{expected_response:true}", "med"), num("http_req_duration{expected_response:true}", "p(95)"),
		num("http_req_duration{expected_response:true}", "p(99)"), num("http_req_duration{expected_response:true}", "max"))
	if len(mem) < 2 {
		return r.String()
	}
	first, last := mem[0], mem[len(mem)-1]
	var names []string
	for n := range last.rss {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(&r, "| process | RSS start MiB | RSS end MiB | RSS slope, 2nd half, MiB/min | Go heap start MiB | Go heap end MiB | heap slope MiB/min |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, n := range names {
		heapName := n
		if n == "envoy" {
			heapName = "envoy (module)"
		}
		rs := slope(mem, func(s sample) (float64, bool) { v, ok := s.rss[n]; return v, ok })
		h0, h1, hs := "–", "–", "–"
		if _, ok := last.heaps[heapName]; ok {
			h0, h1 = fmt.Sprintf("%.1f", first.heaps[heapName]), fmt.Sprintf("%.1f", last.heaps[heapName])
			hs = fmt.Sprintf("%+.2f", slope(mem, func(s sample) (float64, bool) { v, ok := s.heaps[heapName]; return v, ok }))
		}
		fmt.Fprintf(&r, "| %s | %.1f | %.1f | %+.2f | %s | %s | %s |\n", n, first.rss[n], last.rss[n], rs, h0, h1, hs)
	}
	return r.String()
}

// used is how many votes a run cast: its iterations.
func used(summaryFile string) int {
	var sum struct {
		Metrics map[string]map[string]any `json:"metrics"`
	}
	b, err := os.ReadFile(summaryFile)
	if err != nil || json.Unmarshal(b, &sum) != nil {
		log.Fatalf("cannot read %s to count the votes used", summaryFile)
	}
	n, _ := sum.Metrics["iterations"]["count"].(float64)
	return int(n)
}

func mint(s *devstack.Stack, n int, path string) error {
	resp, err := http.Get(fmt.Sprintf("%s/tokens?n=%d", s.IdPURL(), n))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

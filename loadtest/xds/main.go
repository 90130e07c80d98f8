// Command xds measures config propagation: how long from an admin API call until the vote
// filter of every Envoy runs the new config. It starts the whole stack with two Envoys in two
// regions (devstack), then makes -changes changes, alternating a fleet-wide rate-limit change
// and an election window change, and polls each Envoy's /config_dump (ECDS section) until the
// filter config shows the change.
//
//	go run ./loadtest/xds -changes 100          # or: make bench-xds
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/tvvote/voting/devstack"
)

func main() {
	changes := flag.Int("changes", 100, "number of changes to measure")
	viaEnvoy := flag.Bool("via-envoy", false, "send the admin calls through an Envoy (as operators do) instead of to the control plane's admin address")
	out := flag.String("out", "", "write the raw samples as JSON here (default .state/bench-xds.json)")
	bin := flag.String("bin", "", "folder of the binaries and libvotefilter.so (default bin/, from make build)")
	flag.Parse()
	if err := run(*changes, *viaEnvoy, *out, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "bench-xds:", err)
		os.Exit(1)
	}
}

// sample is one change: the API call's own duration and, per edge, the time from sending the
// call until that edge's filter config showed the change.
type sample struct {
	Kind   string                   `json:"kind"`
	API    time.Duration            `json:"apiNs"`
	Edges  map[string]time.Duration `json:"edgesNs"`
	AllAt  time.Duration            `json:"allNs"`
	Checks int                      `json:"polls"`
}

func run(changes int, viaEnvoy bool, outPath, binDir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := devstack.Start(ctx, devstack.Options{Region: "eu-north", CaptchaMode: "off", BinDir: binDir})
	if err != nil {
		return err
	}
	defer s.Stop()
	south, err := s.StartEdge(ctx, devstack.EdgeOptions{Region: "eu-south"})
	if err != nil {
		return err
	}
	defer south.Stop()
	edges := []*devstack.Edge{s.PrimaryEdge(), south}
	tok, err := s.Token(ctx, "bench-admin", true)
	if err != nil {
		return err
	}
	base := s.ControlPlaneAdminURL()
	if viaEnvoy {
		base = edges[0].URL()
	}
	c := &client{base: base, token: tok}

	// A scheduled election far in the future: its window can be moved as often as we like.
	start := time.Now().UTC().Add(24 * time.Hour).Truncate(time.Second)
	var e struct {
		ID string `json:"id"`
	}
	if err := c.call(http.MethodPost, "/api/v1/admin/elections", map[string]any{"title": "Propagation benchmark",
		"description": "", "startDate": start, "endDate": start.Add(time.Hour)}, &e); err != nil {
		return err
	}
	for _, name := range []string{"Candidate One", "Candidate Two"} {
		if err := c.call(http.MethodPost, "/api/v1/admin/elections/"+e.ID+"/candidates", map[string]any{"name": name, "party": ""}, nil); err != nil {
			return err
		}
	}
	// Let the setup settle everywhere before measuring.
	time.Sleep(time.Second)

	var samples []sample
	for i := range changes {
		var smp sample
		var apply func() error
		var seen func(cfg filterConfig) bool
		if i%2 == 0 {
			max := 1000 + i
			smp.Kind = "limit"
			apply = func() error {
				return c.call(http.MethodPut, "/api/v1/admin/edge-settings", map[string]any{
					"perViewer": map[string]int{"max": max, "windowSeconds": 60}}, nil)
			}
			seen = func(cfg filterConfig) bool { return cfg.Limits.PerViewer.Max == max }
		} else {
			end := start.Add(time.Hour + time.Duration(i)*time.Minute)
			smp.Kind = "election"
			apply = func() error {
				return c.call(http.MethodPut, "/api/v1/admin/elections/"+e.ID, map[string]any{"endDate": end}, nil)
			}
			seen = func(cfg filterConfig) bool {
				for _, x := range cfg.Elections {
					if x.ID == e.ID && x.EndDate.Equal(end) {
						return true
					}
				}
				return false
			}
		}
		smp, err = measure(smp, edges, apply, seen)
		if err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
		samples = append(samples, smp)
	}
	report(samples, edges, viaEnvoy)
	if outPath == "" {
		root, _ := devstack.RepoRoot()
		outPath = filepath.Join(root, ".state", "bench-xds.json")
	}
	b, _ := json.MarshalIndent(samples, "", " ")
	return os.WriteFile(outPath, b, 0o644)
}

// measure sends the change and polls every edge concurrently until its filter shows it.
func measure(smp sample, edges []*devstack.Edge, apply func() error, seen func(filterConfig) bool) (sample, error) {
	smp.Edges = map[string]time.Duration{}
	t0 := time.Now()
	if err := apply(); err != nil {
		return smp, err
	}
	smp.API = time.Since(t0)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, len(edges))
	for _, edge := range edges {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for polls := 1; ; polls++ {
				cfg, err := ecdsConfig(edge)
				if err == nil && seen(cfg) {
					mu.Lock()
					smp.Edges[edge.Region] = time.Since(t0)
					smp.Checks += polls
					mu.Unlock()
					return
				}
				if time.Since(t0) > 10*time.Second {
					errs <- fmt.Errorf("%s never showed the change (last error %v)", edge.Region, err)
					return
				}
				time.Sleep(500 * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return smp, err
	}
	for _, d := range smp.Edges {
		smp.AllAt = max(smp.AllAt, d)
	}
	return smp, nil
}

type filterConfig struct {
	Limits struct {
		PerViewer struct {
			Max int `json:"max"`
		} `json:"perViewer"`
	} `json:"limits"`
	Elections []struct {
		ID      string    `json:"id"`
		EndDate time.Time `json:"endDate"`
	} `json:"elections"`
}

var admin = &http.Client{Timeout: 2 * time.Second}

// ecdsConfig is the vote filter config in the edge's config_dump.
func ecdsConfig(edge *devstack.Edge) (filterConfig, error) {
	var cfg filterConfig
	resp, err := admin.Get(edge.AdminURL() + "/config_dump?resource=ecds_filters")
	if err != nil {
		return cfg, err
	}
	defer resp.Body.Close()
	var dump struct {
		Configs []struct {
			EcdsFilter struct {
				TypedConfig struct {
					FilterConfig struct {
						Value string `json:"value"`
					} `json:"filter_config"`
				} `json:"typed_config"`
			} `json:"ecds_filter"`
		} `json:"configs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil || len(dump.Configs) == 0 {
		return cfg, fmt.Errorf("config_dump: %v", err)
	}
	return cfg, json.Unmarshal([]byte(dump.Configs[0].EcdsFilter.TypedConfig.FilterConfig.Value), &cfg)
}

type client struct {
	base, token string
}

func (c *client) call(method, path string, body, out any) error {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, c.base+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func report(samples []sample, edges []*devstack.Edge, viaEnvoy bool) {
	path := "control plane admin address"
	if viaEnvoy {
		path = "through Envoy"
	}
	fmt.Printf("\nConfig propagation, %d changes (admin calls %s), from sending the call until the filter config shows it:\n\n", len(samples), path)
	fmt.Println("| measured | p50 | p99 | max |")
	fmt.Println("|---|---|---|---|")
	row := func(name string, pick func(sample) time.Duration) {
		ds := make([]time.Duration, len(samples))
		for i, s := range samples {
			ds[i] = pick(s)
		}
		slices.Sort(ds)
		fmt.Printf("| %s | %s | %s | %s |\n", name, ms(pct(ds, 50)), ms(pct(ds, 99)), ms(ds[len(ds)-1]))
	}
	for _, e := range edges {
		row("Envoy "+e.Region, func(s sample) time.Duration { return s.Edges[e.Region] })
	}
	row("every Envoy", func(s sample) time.Duration { return s.AllAt })
	row("admin API call alone", func(s sample) time.Duration { return s.API })
	for _, kind := range []string{"limit", "election"} {
		row("every Envoy, "+kind+" changes", func(s sample) time.Duration {
			if s.Kind != kind {
				return -1
			}
			return s.AllAt
		})
	}
}

// pct is the nearest-rank percentile of sorted ds, ignoring negative (not applicable) entries.
func pct(ds []time.Duration, p int) time.Duration {
	i := 0
	for i < len(ds) && ds[i] < 0 {
		i++
	}
	ds = ds[i:]
	if len(ds) == 0 {
		return 0
	}
	rank := (p*len(ds) + 99) / 100
	return ds[max(rank-1, 0)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

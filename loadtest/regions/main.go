// Command regions measures what a home region costs a vote served in another region: on a
// two-region stack (devstack Options.Regions) whose edges reach the second region's Redis and
// queue through a one-way delay (Options.PeerStoreDelay, the distance between two regions),
// half the viewers are homed in the first region and half in the second, and all vote through
// the first region's edge at a fixed rate. Their latencies, side by side, are the cost of the
// cross-region admission; the run at delay 0 is the mechanism's own cost.
//
//	go run ./loadtest/regions -delays 0,35ms -rate 100 -duration 15s
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
)

var regions = []string{"eu-west-1", "us-east-1"}

type sample struct {
	home   string
	status int
	took   time.Duration
}

func main() {
	delays := flag.String("delays", "0,35ms", "one-way delays to the second region to measure, comma-separated")
	rate := flag.Float64("rate", 100, "votes per second sent to the first region's edge (open loop)")
	duration := flag.Duration("duration", 15*time.Second, "how long each delay is measured")
	flag.Parse()

	fmt.Printf("votes through the %s edge at %.0f/s for %s; viewers homed half in %s, half in %s (token claim)\n\n",
		regions[0], *rate, *duration, regions[0], regions[1])
	fmt.Println("| one-way delay to the home region | viewer's home | votes | 200 | p50 ms | p90 ms | p99 ms | max ms |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|")
	for _, d := range strings.Split(*delays, ",") {
		delay, err := time.ParseDuration(d)
		if err != nil {
			log.Fatalf("delay %q: %v", d, err)
		}
		samples, err := measure(delay, *rate, *duration)
		if err != nil {
			log.Fatal(err)
		}
		for _, home := range regions {
			var lat []time.Duration
			ok := 0
			for _, s := range samples {
				if s.home == home {
					lat = append(lat, s.took)
					if s.status == http.StatusOK {
						ok++
					}
				}
			}
			slices.Sort(lat)
			for _, s := range samples {
				if s.home == home && s.status != http.StatusOK {
					log.Printf("delay %s, home %s: a vote answered %d after %s", delay, home, s.status, s.took)
				}
			}
			where := "same region"
			if home != regions[0] {
				where = "other region"
			}
			fmt.Printf("| %s | %s (%s) | %d | %d | %.1f | %.1f | %.1f | %.1f |\n", delay, home, where, len(lat), ok,
				ms(pct(lat, 50)), ms(pct(lat, 90)), ms(pct(lat, 99)), ms(pct(lat, 100)))
		}
	}
}

func measure(delay time.Duration, rate float64, d time.Duration) ([]sample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := devstack.Start(ctx, devstack.Options{Regions: regions, PeerStoreDelay: delay, CaptchaMode: "off",
		ControlPlaneEnv: []string{"XDS_RATE_PER_VIEWER=0/1s", "XDS_RATE_PER_IP=0/1s"}})
	if err != nil {
		return nil, err
	}
	defer s.Stop()
	e, err := s.SeedElection(ctx, "Regions benchmark", time.Hour, "Alice", "Bob")
	if err != nil {
		return nil, err
	}
	if err := s.WaitEnvoyKnows(ctx, e.ID); err != nil {
		return nil, err
	}
	n := int(rate*d.Seconds()) + 1
	tokens := make([]string, n)
	homes := make([]string, n)
	for i := range tokens {
		homes[i] = regions[i%2]
		if tokens[i], err = s.TokenHomed(ctx, fmt.Sprintf("auth0|regions-bench-%d-%d", time.Now().UnixNano(), i), false,
			homes[i]); err != nil {
			return nil, err
		}
	}
	body, _ := json.Marshal(contract.VoteRequest{ElectionID: e.ID, CandidateID: e.Candidates[0].ID,
		CaptchaToken: strings.Repeat("c", contract.CaptchaTokenMinLength)})
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	// A few votes first, so connection pools to both regions are open before the clock runs.
	for i := range 20 {
		t0 := time.Now()
		st := vote(client, s.EnvoyURL(), tokens[len(tokens)-1-i], body)
		log.Printf("warm-up vote homed in %s: %d in %s", homes[len(tokens)-1-i], st, time.Since(t0))
	}
	log.Printf("measuring")
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := make([]sample, 0, n)
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := range n - 20 {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Go(func() {
			t0 := time.Now()
			status := vote(client, s.EnvoyURL(), tokens[i], body)
			took := time.Since(t0)
			mu.Lock()
			out = append(out, sample{home: homes[i], status: status, took: took})
			mu.Unlock()
		})
	}
	wg.Wait()
	return out, nil
}

func vote(c *http.Client, edge, token string, body []byte) int {
	req, _ := http.NewRequest(http.MethodPost, edge+contract.PathVotes, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

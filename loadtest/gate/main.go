// Command gate-bench measures the edge's admission store through the real gate code
// (dedup.Gate: Reserve then Confirm, one vote each, unique viewers, per-viewer and per-IP limits
// on) against a single Redis primary and a Redis Cluster of three primaries with a replica each,
// side by side in one run on this machine, all started here through devstack:
//
//	go run ./loadtest/gate -duration 10s -workers 64
//
// Targets, in order, each for -duration after a one-second warm-up:
//  1. single: one primary as `make run` runs it (append-only file, fsync before every reply);
//  2. single-everysec: the same engine with the fsync once a second, its single-thread limit;
//  3. cluster: three primaries + three replicas (fsync once a second, durable by replication);
//  4. cluster+wait: the same, each Confirm waiting (WAIT) for one replica, as the edge runs it.
//
// A vote is two gate calls (Reserve, Confirm); votes/s and per-vote latency are printed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

var (
	duration = flag.Duration("duration", 10*time.Second, "measured time per target")
	workers  = flag.Int("workers", 64, "concurrent voters (an Envoy fleet's votes in flight)")
	only     = flag.String("targets", "single,single-everysec,cluster,cluster+wait", "targets to run, comma-separated")
)

type result struct {
	name             string
	votes, errors    int64
	p50, p99, maxLat time.Duration
	elapsed          time.Duration
	// redisCPU is the CPU time of the Redis servers during the measured window: all of them,
	// and the primaries alone.
	redisCPU, primaryCPU time.Duration
}

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // hard bound
	defer cancel()
	want := map[string]bool{}
	for _, t := range strings.Split(*only, ",") {
		want[t] = true
	}
	var results []result
	run := func(name string, conn func() (rueidis.Client, error), opts dedup.Options, primaries, replicas []int) {
		if !want[name] {
			return
		}
		log.Printf("%s: %d workers, %s", name, *workers, *duration)
		results = append(results, measure(ctx, name, dedup.NewGateDialing(conn, opts), primaries, replicas))
	}

	if want["single"] || want["single-everysec"] {
		for _, name := range []string{"single", "single-everysec"} {
			if !want[name] {
				continue
			}
			port, err := devstack.FreePort()
			check(err)
			r, err := devstack.StartRedis(ctx, port)
			check(err)
			if name == "single-everysec" {
				c, err := dedup.NewClient(r.Addr)
				check(err)
				check(c.Do(ctx, c.B().ConfigSet().ParameterValue().ParameterValue("appendfsync", "everysec").Build()).Error())
				c.Close()
			}
			run(name, dedup.Dial(dedup.Endpoint{Addr: r.Addr}), dedup.Options{}, []int{r.PID()}, nil)
			r.Stop()
		}
	}
	if want["cluster"] || want["cluster+wait"] {
		c, err := devstack.StartRedisCluster(ctx, nil)
		check(err)
		conn := dedup.Dial(dedup.Endpoint{Addr: c.Seeds(), Cluster: true})
		prim, err := c.Primaries(ctx)
		check(err)
		var primaries, replicas []int
		for i, n := range c.Nodes {
			if slices.Contains(prim, i) {
				primaries = append(primaries, n.PID())
			} else {
				replicas = append(replicas, n.PID())
			}
		}
		run("cluster", conn, dedup.Options{}, primaries, replicas)
		run("cluster+wait", conn, dedup.Options{WaitReplicas: 1, WaitTimeout: 100 * time.Millisecond}, primaries, replicas)
		c.Stop()
	}

	fmt.Printf("\n## Gate benchmark — %s, %d cores, %d workers, %s per target\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), *workers, *duration)
	fmt.Println("| target | votes/s | gate calls/s | per vote p50 | p99 | max | errors | Redis CPU µs/vote (primaries) | votes/s per primary core |")
	fmt.Println("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range results {
		rate := float64(r.votes) / r.elapsed.Seconds()
		perVote := float64(r.redisCPU.Microseconds()) / float64(max(r.votes, 1))
		perVotePrimary := float64(r.primaryCPU.Microseconds()) / float64(max(r.votes, 1))
		fmt.Printf("| %s | %.0f | %.0f | %s | %s | %s | %d | %.1f (%.1f) | %.0f |\n", r.name, rate, 2*rate,
			ms(r.p50), ms(r.p99), ms(r.maxLat), r.errors, perVote, perVotePrimary, 1e6/max(perVotePrimary, 0.001))
	}
	if len(results) > 1 {
		base := float64(results[0].votes) / results[0].elapsed.Seconds()
		fmt.Println()
		for _, r := range results[1:] {
			fmt.Printf("- %s / %s: %.2f× the votes/s\n", r.name, results[0].name, float64(r.votes)/r.elapsed.Seconds()/base)
		}
	}
}

// measure runs the workers against g: a one-second warm-up, then -duration measured.
func measure(ctx context.Context, name string, g *dedup.Gate, primaries, replicas []int) result {
	var (
		seq        atomic.Int64
		measuring  atomic.Bool
		stop       atomic.Bool
		votes, bad atomic.Int64
		mu         sync.Mutex
		lat        []time.Duration
		wg         sync.WaitGroup
	)
	limits := edgeconfig.Limit{Max: 10, WindowSeconds: 60}
	ipLimit := edgeconfig.Limit{Max: 1_000_000, WindowSeconds: 60}
	for w := range *workers {
		wg.Go(func() {
			local := make([]time.Duration, 0, 4096)
			for !stop.Load() {
				n := seq.Add(1)
				a := dedup.Attempt{ElectionID: "bench-" + name, ViewerID: "viewer-" + strconv.FormatInt(n, 10),
					ClientIP: "10.0." + strconv.Itoa(w%250) + ".1", VoteID: "vote-" + strconv.FormatInt(n, 10),
					AcceptedAt: time.Now(), CandidateID: "c", Owner: "o-" + strconv.FormatInt(n, 10),
					Budget: 2 * time.Second, PerViewer: limits, PerIP: ipLimit}
				start := time.Now()
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				out, err := g.Reserve(cctx, a)
				if err == nil && out.Verdict == dedup.Reserved {
					_, err = g.Confirm(cctx, a)
				} else if err == nil {
					err = fmt.Errorf("verdict %v", out.Verdict)
				}
				cancel()
				if !measuring.Load() {
					continue
				}
				if err != nil {
					bad.Add(1)
					continue
				}
				votes.Add(1)
				local = append(local, time.Since(start))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	time.Sleep(time.Second)
	p0, r0 := cpu(primaries), cpu(replicas)
	measuring.Store(true)
	start := time.Now()
	time.Sleep(*duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	primaryCPU := cpu(primaries) - p0
	redisCPU := primaryCPU + cpu(replicas) - r0
	stop.Store(true)
	wg.Wait()
	slices.Sort(lat)
	q := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	return result{name: name, votes: votes.Load(), errors: bad.Load(), p50: q(.5), p99: q(.99), maxLat: q(1), elapsed: elapsed,
		redisCPU: redisCPU, primaryCPU: primaryCPU}
}

// cpu is the user + system CPU time the processes have used (/proc/<pid>/stat, in clock
// ticks of 10 ms: enough over a window of seconds).
func cpu(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may hold spaces.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(utime+stime) * 10 * time.Millisecond
	}
	return total
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func check(err error) {
	if err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

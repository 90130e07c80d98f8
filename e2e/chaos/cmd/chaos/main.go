// Command chaos runs the chaos suite (package e2e/chaos) on local stacks and prints one
// Markdown table row per scenario, ready for RELIABILITY.md:
//
//	go run ./e2e/chaos/cmd/chaos -n 10000 -clients 64 -scenarios all -down 2s
//
// It exits 1 when any scenario fails, after printing every row.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tvvote/voting/e2e/chaos"
)

func main() {
	cfg := chaos.DefaultConfig()
	flag.IntVar(&cfg.Viewers, "n", cfg.Viewers, "unique viewers per scenario")
	flag.IntVar(&cfg.Clients, "clients", cfg.Clients, "concurrent clients")
	scenarios := flag.String("scenarios", "all", "comma-separated scenarios, or all, subset ("+strings.Join(chaos.Subset, ",")+"), cluster (with -redis-cluster); known: "+strings.Join(chaos.ScenarioNames(), ","))
	flag.BoolVar(&cfg.RedisCluster, "redis-cluster", false, "edge store on a local Redis Cluster (for the cluster scenarios: -scenarios cluster)")
	flag.DurationVar(&cfg.Down, "down", cfg.Down, "how long a killed component stays down")
	flag.DurationVar(&cfg.FreezeFor, "freeze", cfg.FreezeFor, "how long a frozen component stays stopped")
	flag.Float64Var(&cfg.FaultAt, "fault-at", cfg.FaultAt, "share of viewers answered when a single fault strikes")
	flag.Float64Var(&cfg.FaultRate, "fault-rate", cfg.FaultRate, "new viewers per second while a fault lasts (0: no cap)")
	flag.DurationVar(&cfg.GiveUp, "give-up", cfg.GiveUp, "how long one viewer retries before giving up")
	flag.DurationVar(&cfg.RequestTimeout, "request-timeout", cfg.RequestTimeout, "timeout of one HTTP attempt")
	flag.DurationVar(&cfg.LoadTimeout, "load-timeout", cfg.LoadTimeout, "bound of one scenario's load")
	flag.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "bound of the wait for an empty queue")
	flag.BoolVar(&cfg.Revote, "revote", cfg.Revote, "send every accepted vote once more after the load; it must get 409")
	flag.BoolVar(&cfg.SharedStack, "shared-stack", cfg.SharedStack, "one stack for every scenario instead of a fresh one each (faster, less isolated)")
	flag.StringVar(&cfg.BinDir, "bin", cfg.BinDir, "directory of the binaries under test and libvotefilter.so (default: the repository's bin/)")
	flag.StringVar(&cfg.ProblemsDir, "problems", cfg.ProblemsDir, "write every viewer with a problem, attempt by attempt, to DIR/<scenario>.jsonl")
	out := flag.String("out", "", "also write the Markdown report to this file")
	flag.Parse()

	var err error
	if cfg.Scenarios, err = chaos.Select(*scenarios); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	start := time.Now()
	results := chaos.Run(ctx, cfg)
	report := fmt.Sprintf("Run of %s, %s: %d viewers per scenario, %d clients, killed components down %s, Redis frozen %s, faults from %.0f %% answered, give-up %s, request timeout %s.\n\n%s\n%s",
		start.UTC().Format("2006-01-02 15:04 MST"), time.Since(start).Round(time.Second), cfg.Viewers, cfg.Clients, cfg.Down,
		cfg.FreezeFor, 100*cfg.FaultAt, cfg.GiveUp, cfg.RequestTimeout, chaos.Table(results), chaos.Notes(results))
	fmt.Println()
	fmt.Print(report)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	if !chaos.Passed(results) {
		os.Exit(1)
	}
}

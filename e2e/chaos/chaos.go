// Package chaos proves the product's promise under failures: a 200 is always the vote that is
// counted, a 409 only when a vote of that viewer is really queued or stored, nothing
// acknowledged is lost and the counts are exact.
//
// Each scenario seeds its own election with three candidates and drives a retrying load of
// unique viewers through the real Envoy, as viewers' apps do (the same request again on 503,
// 429, any other 5xx, a refused or broken connection or a timeout), while components are
// killed with SIGKILL and restarted, or Redis is frozen with SIGSTOP. After the load, every
// viewer that got a 200 sends its vote once more and must get 409; then, once the queue has
// drained, the answers are checked against PostgreSQL and ElasticMQ. Run builds one Result
// per scenario; Table prints them as Markdown.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/tvvote/voting/devstack"
)

// Config sizes the run; DefaultConfig has the values of the full matrix.
type Config struct {
	// Viewers is the number of unique viewers per scenario.
	Viewers int
	// Clients is the number of concurrent clients; each serves one viewer until a final answer.
	Clients int
	// Scenarios are the names to run, in order (see Scenarios).
	Scenarios []string
	// Down is how long a killed component stays down before its restart.
	Down time.Duration
	// FreezeFor is how long a frozen component stays stopped.
	FreezeFor time.Duration
	// FaultAt is the share of viewers with a final answer when a single fault strikes; several
	// faults strike at evenly spread shares.
	FaultAt float64
	// FaultRate caps new viewers per second while a fault lasts (0: no cap), so that the load
	// outlasts the restarts instead of spending every viewer while a component is down.
	FaultRate float64
	// GiveUp is how long one viewer keeps retrying before it gives up.
	GiveUp time.Duration
	// RequestTimeout bounds one HTTP attempt, as a phone app's timeout does.
	RequestTimeout time.Duration
	// LoadTimeout bounds one scenario's load: viewers not started by then count as given up.
	LoadTimeout time.Duration
	// DrainTimeout bounds the wait for an empty queue; a killed processor hides its in-flight
	// messages for the queue's 30 s visibility timeout.
	DrainTimeout time.Duration
	// Revote sends the vote of every viewer that got a 200 once more after the load.
	Revote bool
	// RedisCluster runs the stacks with the edge's store on a local Redis Cluster (3 primaries,
	// 3 replicas; the edge WAITs for one replica) instead of a single Redis.
	RedisCluster bool
	// SharedStack runs every scenario on one stack instead of a fresh stack each: faster, but
	// a scenario then inherits what the previous one left (a restarted Redis, the DLQ).
	SharedStack bool
	// BinDir holds the binaries under test and libvotefilter.so; default <repo>/bin.
	BinDir string
	// ProblemsDir, when set, receives <scenario>.jsonl: every viewer with a problem, attempt
	// by attempt.
	ProblemsDir string
	Log         *slog.Logger

	// afterScenario, when set, looks at the stack after each scenario's checks (tests).
	afterScenario func(*devstack.Stack)
}

// DefaultConfig is the full matrix: 10,000 viewers per scenario, 64 clients, every scenario.
func DefaultConfig() Config {
	return Config{
		Viewers:        10000,
		Clients:        64,
		Scenarios:      ScenarioNames(),
		Down:           2 * time.Second,
		FreezeFor:      1500 * time.Millisecond,
		FaultAt:        0.3,
		FaultRate:      100,
		GiveUp:         120 * time.Second,
		RequestTimeout: 10 * time.Second,
		LoadTimeout:    15 * time.Minute,
		DrainTimeout:   150 * time.Second,
		Revote:         true,
	}
}

// Fault is one failure injected during the load.
type Fault struct {
	// Kind is "kill" (SIGKILL, down for Config.Down, restart), "freeze" (SIGSTOP for
	// Config.FreezeFor, SIGCONT) or "failover" (SIGKILL of a Redis Cluster primary; its replica
	// takes over, and the node comes back as a replica after Config.Down).
	Kind      string
	Component string
}

func (f Fault) String() string { return f.Kind + " " + f.Component }

// Scenario is a named list of faults, injected one after another during one load.
type Scenario struct {
	Name   string
	Faults []Fault
}

// killable are the components killed one by one, in the order all-faults kills them: devidp
// last, as a restarted IdP may sign with a new key that a restarted Envoy would fetch.
var killable = []string{devstack.ComponentProcessor, devstack.ComponentRedis, devstack.ComponentElasticMQ,
	devstack.ComponentEnvoy, devstack.ComponentControlPlane, devstack.ComponentPostgres, devstack.ComponentResults,
	devstack.ComponentDevIdP}

// Scenarios are every scenario of the full matrix, in the order they run.
func Scenarios() []Scenario {
	out := []Scenario{{Name: "baseline"}}
	var all []Fault
	for _, c := range killable {
		f := Fault{Kind: "kill", Component: c}
		out = append(out, Scenario{Name: "kill-" + c, Faults: []Fault{f}})
		all = append(all, f)
	}
	freeze := Fault{Kind: "freeze", Component: devstack.ComponentRedis}
	out = append(out, Scenario{Name: "freeze-redis", Faults: []Fault{freeze}})
	return append(out, Scenario{Name: "all-faults", Faults: append(all, freeze)})
}

// ClusterPrimary names the fault target "whichever node is a primary when the fault strikes".
const ClusterPrimary = "redis-primary"

// ClusterScenarios run on a stack whose edge store is a Redis Cluster (Config.RedisCluster).
func ClusterScenarios() []Scenario {
	return []Scenario{{Name: "cluster-baseline"},
		{Name: "fail-redis-primary", Faults: []Fault{{Kind: "failover", Component: ClusterPrimary}}}}
}

// ScenarioNames are the names of Scenarios and ClusterScenarios.
func ScenarioNames() []string {
	var names []string
	for _, s := range append(Scenarios(), ClusterScenarios()...) {
		names = append(names, s.Name)
	}
	return names
}

// Subset is the bounded part that runs with the other tests: the faults of the admission path.
var Subset = []string{"baseline", "kill-envoy", "kill-redis", "kill-elasticmq", "freeze-redis"}

// Select resolves a comma-separated list of scenario names; "all" is every scenario and
// "subset" is Subset.
func Select(list string) ([]string, error) {
	var out []string
	for _, name := range strings.Split(list, ",") {
		switch name = strings.TrimSpace(name); name {
		case "":
		case "all":
			for _, s := range Scenarios() {
				out = append(out, s.Name)
			}
		case "cluster":
			for _, s := range ClusterScenarios() {
				out = append(out, s.Name)
			}
		case "subset":
			out = append(out, Subset...)
		default:
			if !slices.Contains(ScenarioNames(), name) {
				return nil, fmt.Errorf("unknown scenario %q (known: %s, all, subset, cluster)", name, strings.Join(ScenarioNames(), ", "))
			}
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no scenario selected")
	}
	return out, nil
}

func scenario(name string) Scenario {
	for _, s := range append(Scenarios(), ClusterScenarios()...) {
		if s.Name == name {
			return s
		}
	}
	return Scenario{Name: name}
}

// Run runs every selected scenario, each on a fresh stack (a stack starts in seconds, and a
// scenario must not inherit the previous one's faults), and returns one Result each, in order.
// A scenario that cannot be run (the stack does not start) is a Result with Err set.
func Run(ctx context.Context, cfg Config) []Result {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var s *devstack.Stack
	defer func() {
		if s != nil {
			s.Stop()
		}
	}()
	var results []Result
	for _, name := range cfg.Scenarios {
		if ctx.Err() != nil {
			results = append(results, Result{Scenario: name, Viewers: cfg.Viewers, Err: ctx.Err()})
			continue
		}
		if s != nil && !cfg.SharedStack {
			s.Stop()
			s = nil
		}
		if s == nil {
			var err error
			if s, err = startStack(ctx, cfg.BinDir, cfg.RedisCluster, cfg.Log); err != nil {
				results = append(results, Result{Scenario: name, Viewers: cfg.Viewers, Err: err})
				continue
			}
		}
		r, healthy := runScenario(ctx, s, scenario(name), cfg)
		if cfg.afterScenario != nil {
			cfg.afterScenario(s)
		}
		cfg.Log.Info("scenario done", "scenario", name, "verdict", r.Verdict(), "failures", strings.Join(r.Failures(), "; "))
		results = append(results, r)
		if !healthy {
			cfg.Log.Warn("stack left unhealthy: the next scenario gets a fresh one", "scenario", name)
			s.Stop()
			s = nil
		}
	}
	return results
}

// startStack is the load-test stack: captcha off and no rate limits, so every request is a
// fresh viewer's real vote and every retry is the viewer's own.
func startStack(ctx context.Context, binDir string, cluster bool, log *slog.Logger) (*devstack.Stack, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := devstack.Start(ctx, devstack.Options{Region: "chaos", CaptchaMode: "off", BinDir: binDir, RedisCluster: cluster,
		ControlPlaneEnv: []string{"XDS_RATE_PER_VIEWER=0/1s", "XDS_RATE_PER_IP=0/1s"}})
	if err != nil {
		return nil, fmt.Errorf("start stack: %w", err)
	}
	log.Info("stack started", "took", time.Since(start).Round(time.Millisecond), "envoy", s.EnvoyURL())
	return s, nil
}

// runScenario runs one scenario on s; healthy says whether every component came back.
func runScenario(ctx context.Context, s *devstack.Stack, sc Scenario, cfg Config) (r Result, healthy bool) {
	log := cfg.Log.With("scenario", sc.Name)
	r = Result{Scenario: sc.Name, Viewers: cfg.Viewers}
	e, err := s.SeedElection(ctx, "Chaos "+sc.Name, 24*time.Hour, "Candidate One", "Candidate Two", "Candidate Three")
	if err == nil {
		err = s.WaitEnvoyKnows(ctx, e.ID)
	}
	if err != nil {
		r.Err = fmt.Errorf("seed election: %w", err)
		return r, false
	}
	q, err := newQueues(ctx, s)
	if err != nil {
		r.Err = err
		return r, false
	}
	dlqBefore, _ := q.depth(ctx, "votes-dlq")

	start := time.Now()
	viewers, err := mintViewers(ctx, s, e, cfg.Viewers)
	if err != nil {
		r.Err = err
		return r, true
	}
	log.Info("viewers minted", "viewers", len(viewers), "took", time.Since(start).Round(time.Millisecond))

	l := newLoader(s.EnvoyURL(), cfg, firstBudget(cfg, sc.Faults))
	loadCtx, cancelLoad := context.WithTimeout(ctx, cfg.LoadTimeout)
	defer cancelLoad()
	faultsDone := make(chan []FaultEvent, 1)
	go func() { faultsDone <- injectFaults(ctx, s, e, sc.Faults, l, cfg, log) }()
	start = time.Now()
	l.run(loadCtx, log, viewers, func(v *viewer) *outcome { return &v.first })
	r.LoadTime = time.Since(start)
	r.Faults = <-faultsDone
	r.Bare503 = int(l.bare503.Load())
	healthy = true
	for _, f := range r.Faults {
		if f.Err != nil {
			healthy = false
		}
	}
	log.Info("load done", "took", r.LoadTime.Round(time.Millisecond))

	if cfg.Revote {
		var again []*viewer
		for _, v := range viewers {
			if v.first.status == 200 {
				again = append(again, v)
			}
		}
		rl := newLoader(s.EnvoyURL(), cfg, len(again))
		revoteCtx, cancel := context.WithTimeout(ctx, cfg.LoadTimeout)
		rl.run(revoteCtx, log, again, func(v *viewer) *outcome { return &v.revote })
		cancel()
		log.Info("revote done", "viewers", len(again))
	}

	start = time.Now()
	r.Drained = q.drain(ctx, s, e.ID, cfg.DrainTimeout, log)
	r.DrainTime = time.Since(start)
	if err := r.check(ctx, s, e, viewers, q, dlqBefore); err != nil {
		r.Err = err
	}
	if cfg.ProblemsDir != "" {
		if err := WriteProblems(cfg.ProblemsDir, r); err != nil {
			log.Warn("problems not written", "err", err)
		}
	}
	return r, healthy
}

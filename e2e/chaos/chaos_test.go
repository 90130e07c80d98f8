package chaos

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tvvote/voting/devstack"
)

// TestChaosSubset runs the faults of the admission path (Subset) with a bounded load; `make
// chaos` runs the full matrix with 10,000 viewers per scenario.
func TestChaosSubset(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite: minutes of load on a whole stack")
	}
	runBounded(t, boundedConfig(t, Subset...), 20*time.Minute)
}

// boundedConfig is the load of the suites in `make test`: 1,500 viewers a scenario, a
// minute's patience per viewer, three minutes of load at most.
func boundedConfig(t *testing.T, scenarios ...string) Config {
	cfg := DefaultConfig()
	cfg.Viewers = 1500
	cfg.Scenarios = scenarios
	cfg.GiveUp = 60 * time.Second
	cfg.LoadTimeout = 3 * time.Minute
	cfg.DrainTimeout = 90 * time.Second
	cfg.ProblemsDir = os.Getenv("CHAOS_PROBLEMS_DIR")
	cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	return cfg
}

// runBounded runs cfg within timeout and fails the test for every broken promise.
func runBounded(t *testing.T, cfg Config, timeout time.Duration) []Result {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	results := Run(ctx, cfg)
	t.Logf("\n%s\n%s", Table(results), Notes(results))
	for _, r := range results {
		if f := r.Failures(); len(f) > 0 {
			t.Errorf("%s: %s", r.Scenario, strings.Join(f, "; "))
		}
	}
	return results
}

// testWriter sends the suite's log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestRetryAfterIsTheAnswersOr250msAtMost2s(t *testing.T) {
	for header, want := range map[string]time.Duration{"": 250 * time.Millisecond, "1": time.Second,
		"5": 2 * time.Second, "0": 250 * time.Millisecond, "soon": 250 * time.Millisecond} {
		h := http.Header{}
		if header != "" {
			h.Set("Retry-After", header)
		}
		if got := retryAfter(h); got != want {
			t.Errorf("Retry-After %q: wait %s, want %s", header, got, want)
		}
	}
}

func TestSelectResolvesAllAndSubset(t *testing.T) {
	all, err := Select("all")
	if err != nil || len(all) != len(Scenarios()) || all[len(all)-1] != "all-faults" {
		t.Fatalf("all = %v, %v", all, err)
	}
	sub, err := Select("subset, kill-processor")
	if err != nil || len(sub) != len(Subset)+1 {
		t.Fatalf("subset = %v, %v", sub, err)
	}
	if _, err := Select("kill-everything"); err == nil {
		t.Fatal("an unknown scenario was accepted")
	}
}

// Every broken promise fails the scenario, and every row has the header's columns.
func TestFailuresAndTable(t *testing.T) {
	ok := Result{Scenario: "baseline", Viewers: 10, OK: 10, Rows: 10, Drained: true}
	if ok.Verdict() != "PASS" {
		t.Fatalf("clean result: %s %v", ok.Verdict(), ok.Failures())
	}
	for name, broken := range map[string]func(*Result){
		"lost 200": func(r *Result) { r.Lost200 = 1 }, "200 ≠ row": func(r *Result) { r.Other200 = 1 },
		"409 no row": func(r *Result) { r.NoRow409 = 1 }, "re-admitted": func(r *Result) { r.Readmitted = 1 },
		"dup rows": func(r *Result) { r.DupRows = 1 }, "dup voteId": func(r *Result) { r.DupVoteIDs = 1 },
		"counts": func(r *Result) { r.CountMismatch = 1 }, "gave up": func(r *Result) { r.GaveUp = 1 },
		"refused": func(r *Result) { r.Refused = 1 }, "not drained": func(r *Result) { r.Drained = false },
	} {
		r := ok
		broken(&r)
		if r.Verdict() != "FAIL" {
			t.Errorf("%s: verdict %s", name, r.Verdict())
		}
	}
	table := Table([]Result{ok, {Scenario: "kill-envoy", Viewers: 10, Err: context.Canceled}})
	lines := strings.Split(strings.TrimSpace(table), "\n")
	for _, l := range lines[1:] {
		if strings.Count(l, "|") != strings.Count(lines[0], "|") {
			t.Errorf("row %q has not the header's %d columns", l, strings.Count(lines[0], "|")-1)
		}
	}
}

// TestRedisClusterFailover runs the vote load on a stack whose edge store is a Redis Cluster:
// votes land on every primary, and when a primary is killed its replica takes over with every
// acknowledged vote kept and no viewer admitted twice, the edge answering 503 with a
// Retry-After (never a 200 it cannot keep) until it has.
func TestRedisClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite: minutes of load on a whole stack")
	}
	cfg := boundedConfig(t, "cluster-baseline", "fail-redis-primary")
	cfg.RedisCluster = true
	cfg.SharedStack = true
	cfg.afterScenario = func(s *devstack.Stack) {
		// Every primary holds admission entries: the viewers' hash tags spread over the slots.
		primaries, err := s.RedisCluster.Primaries(context.Background())
		if err != nil {
			t.Errorf("cluster topology: %v", err)
		}
		for _, i := range primaries {
			switch n, err := s.RedisCluster.KeyCount(context.Background(), i); {
			case err != nil:
				t.Errorf("redis-node-%d: %v", i, err)
			case n == 0:
				t.Errorf("primary redis-node-%d holds no key: the votes did not spread over the cluster", i)
			default:
				t.Logf("primary redis-node-%d holds %d keys", i, n)
			}
		}
	}
	for _, r := range runBounded(t, cfg, 15*time.Minute) {
		for _, e := range r.Faults {
			if e.Kind == "failover" && e.Unavailable503 == 0 {
				t.Errorf("%s: no 503 while a primary was down: the kill struck no traffic", r.Scenario)
			}
		}
	}
}

// Package e2e tests the results worker through the whole product started by devstack: votes go
// through Envoy, the vote filter, SQS and the processor into PostgreSQL, and come back through
// Envoy from the results worker, over HTTP, the WebSocket stream and the live page in a real
// browser.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/contract/openapi"
	"github.com/tvvote/voting/devstack"
)

var (
	stack    *devstack.Stack
	election devstack.Election
	repo     string
	// contracts checks every answer of vote and get, so any answer the public contracts do
	// not allow fails the test that got it.
	contracts *openapi.Contracts
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var err error
	if repo, err = devstack.RepoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	if contracts, err = openapi.Load(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: contracts:", err)
		return 1
	}
	// Build the worker from this tree, so the test never runs a stale bin/results.
	bin := filepath.Join(os.TempDir(), fmt.Sprintf("results-e2e-%d", os.Getpid()))
	defer os.Remove(bin)
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./workers/results/cmd/results")
	build.Dir, build.Stdout, build.Stderr = repo, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: build results worker:", err)
		return 1
	}

	// Captcha is the vote filter's concern and tested there; here votes only need to get in.
	s, err := devstack.Start(ctx, devstack.Options{Region: "e2e-results", CaptchaMode: "off"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: stack:", err)
		return 1
	}
	defer s.Stop()
	stack = s
	election, err = s.SeedElection(ctx, "Song of the Night", time.Hour, "Aurora Lights", "Blue Harbour", "Copper Foxes")
	if err == nil {
		err = s.WaitEnvoyKnows(ctx, election.ID)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: seed:", err)
		return 1
	}
	stop, err := replaceResultsWorker(ctx, bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: results worker:", err)
		return 1
	}
	defer stop()
	return m.Run()
}

// replaceResultsWorker swaps the stack's results worker for one built from this tree with the
// settings devstack does not pass yet (token verification, Redis), on the same port, so Envoy's
// route reaches it unchanged.
func replaceResultsWorker(ctx context.Context, bin string) (stop func(), err error) {
	if err := stack.Kill(devstack.ComponentResults); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(repo, ".state", "logs", fmt.Sprintf("results-e2e-%d.log", stack.Ports.Envoy)))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"RESULTS_DATABASE_URL="+stack.Postgres.DSN,
		"RESULTS_LISTEN_ADDR=127.0.0.1:"+strconv.Itoa(stack.Ports.Results),
		"RESULTS_REDIS_ADDR="+stack.Redis.Addr,
		"RESULTS_JWT_ISSUER="+stack.Issuer(),
		"RESULTS_JWT_AUDIENCE="+stack.Audience,
		"RESULTS_JWT_JWKS_URL="+stack.IdPURL()+"/.well-known/jwks.json",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, killed with us: a crashed test leaves nothing behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	}
	// Ready once Envoy routes to it and it knows the election.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(stack.EnvoyURL() + "/api/v1/results/live/" + election.ID)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return stop, nil
			}
		}
		select {
		case <-done:
			return nil, fmt.Errorf("results worker exited (log: %s)", logf.Name())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("results worker not reachable through envoy: %v (log: %s)", err, logf.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func token(t *testing.T, subject string, admin bool) string {
	t.Helper()
	tok, err := stack.Token(context.Background(), subject, admin)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// vote casts one vote through Envoy as a new viewer and returns when the edge acknowledged it.
func vote(t *testing.T, electionID, candidate string) time.Time {
	t.Helper()
	tok := token(t, uuid.NewString(), false)
	b, _ := json.Marshal(contract.VoteRequest{ElectionID: electionID, CandidateID: candidate, CaptchaToken: "e2e-captcha-token-0123456789"})
	req, _ := http.NewRequest(http.MethodPost, stack.EnvoyURL()+"/api/v1/votes", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := contracts.Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("vote: %d %s", resp.StatusCode, body)
	}
	return time.Now()
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, path string, header map[string]string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, stack.EnvoyURL()+path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := contracts.Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

// readResults reads an election's results through Envoy.
func readResults(t *testing.T, electionID string) contract.ElectionResults {
	t.Helper()
	r := get(t, "/api/v1/results/"+electionID, nil)
	var res contract.ElectionResults
	if err := json.Unmarshal(r.body, &res); err != nil || r.status != http.StatusOK {
		t.Fatalf("results: %d %s %v", r.status, r.body, err)
	}
	return res
}

func votesOf(res contract.ElectionResults) map[string]int64 {
	out := map[string]int64{}
	for _, c := range res.Totals {
		out[c.CandidateID] = c.Votes
	}
	return out
}

package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// needStack skips unless `make tools build` has run.
func needStack(t *testing.T) {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{".tools/envoy/envoy", "bin/libvotefilter.so", "bin/controlplane", "bin/processor",
		"bin/results", "bin/devidp"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Skipf("tool missing: %v", err)
		}
	}
	needTool(t, lookPath("redis-server"))
	needTool(t, lookPath("java"))
	needTool(t, func() error { _, err := postgresBin("postgres"); return err })
}

// The stack answers again after its edge and its processor are killed and restarted; a kill
// through the stack is not reported as a death, one from outside is.
func TestStackKillAndRestartEnvoyAndProcessor(t *testing.T) {
	needStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{Region: "faults", CaptchaMode: "off"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	e, err := s.SeedElection(ctx, t.Name(), time.Hour, "Aurora Lights", "Blue Harbour")
	if err == nil {
		err = s.WaitEnvoyKnows(ctx, e.ID)
	}
	if err != nil {
		t.Fatal(err)
	}
	// A clean start logs no error (the results worker used to start before the identity
	// provider and log a failed key fetch).
	if lines := errorLines(t, s); len(lines) > 0 {
		t.Errorf("a clean start logged errors:\n%s", strings.Join(lines, "\n"))
	}
	if got := s.Components(); len(got) != 8 || len(s.PIDs()) != 8 {
		t.Fatalf("components %v, running %v", got, s.PIDs())
	}

	// Envoy: down means no answer at all; after Restart votes are admitted and persisted.
	if err := s.Kill(ComponentEnvoy); err != nil {
		t.Fatal(err)
	}
	if s.Running(ComponentEnvoy) {
		t.Fatal("envoy still running after Kill")
	}
	if err := s.Kill(ComponentEnvoy); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("second Kill: %v, want ErrNotRunning", err)
	}
	if _, err := castVote(ctx, s, e, uuid.NewString()); err == nil {
		t.Fatal("a vote was answered with Envoy killed")
	}
	if err := s.Restart(ctx, ComponentEnvoy); err != nil {
		t.Fatal(err)
	}
	viewer := uuid.NewString()
	if status, err := castVote(ctx, s, e, viewer); err != nil || status != http.StatusOK {
		t.Fatalf("vote after Envoy's restart: %d %v", status, err)
	}
	waitRow(ctx, t, s, e, viewer, 30*time.Second)
	if err := s.Restart(ctx, ComponentEnvoy); !errors.Is(err, ErrRunning) {
		t.Fatalf("Restart of a running Envoy: %v, want ErrRunning", err)
	}
	if log, _ := os.ReadFile(s.LogPath(ComponentEnvoy)); !strings.Contains(string(log), "--- devstack: restart ") {
		t.Fatal("Envoy's log lost its first run or has no restart mark")
	}

	// Processor: votes are admitted while it is down (they wait in the queue) and persisted
	// once it is back.
	if err := s.Kill(ComponentProcessor); err != nil {
		t.Fatal(err)
	}
	queued := uuid.NewString()
	if status, err := castVote(ctx, s, e, queued); err != nil || status != http.StatusOK {
		t.Fatalf("vote with the processor down: %d %v", status, err)
	}
	if err := s.Restart(ctx, ComponentProcessor); err != nil {
		t.Fatal(err)
	}
	// The killed processor's long polls may still be pending in ElasticMQ, which (as SQS can)
	// then hands the vote to a receiver that is gone: it is back after the 30 s visibility
	// timeout.
	waitRow(ctx, t, s, e, queued, 45*time.Second)

	// Frozen is alive but hung; thawed it works again.
	if err := s.Freeze(ComponentProcessor); err != nil {
		t.Fatal(err)
	}
	if !s.Running(ComponentProcessor) || s.State(ComponentProcessor) != "frozen" {
		t.Fatalf("frozen processor: running %v, state %s", s.Running(ComponentProcessor), s.State(ComponentProcessor))
	}
	if err := s.Thaw(ComponentProcessor); err != nil {
		t.Fatal(err)
	}
	if err := httpOK(s.ProcessorMetricsURL())(ctx); err != nil {
		t.Fatalf("thawed processor: %v", err)
	}

	select {
	case name := <-s.Exited():
		t.Fatalf("%s reported as dead on its own after a Kill through the stack", name)
	default:
	}

	// The control endpoint does the same over HTTP; a death from outside is reported.
	ctl := httptest.NewServer(s.ControlHandler())
	defer ctl.Close()
	addr := strings.TrimPrefix(ctl.URL, "http://")
	if out, err := Control(ctx, addr, "components", ""); err != nil || !strings.Contains(out, "elasticmq") {
		t.Fatalf("components: %q %v", out, err)
	}
	if _, err := Control(ctx, addr, "kill", ComponentDevIdP); err != nil {
		t.Fatal(err)
	}
	if out, err := Control(ctx, addr, "restart", ComponentDevIdP); err != nil || !strings.Contains(out, "running") {
		t.Fatalf("restart over HTTP: %q %v", out, err)
	}
	if _, err := Control(ctx, addr, "kill", "nosuch"); err == nil {
		t.Fatal("kill of an unknown component succeeded")
	}
	if err := syscall.Kill(-s.PIDs()[ComponentDevIdP], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case name := <-s.Exited():
		if name != ComponentDevIdP {
			t.Fatalf("%s reported dead, want devidp", name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a devidp killed from outside was not reported")
	}

	// Stop ends frozen components too, engines included.
	for _, name := range []string{ComponentEnvoy, ComponentRedis, ComponentPostgres} {
		if err := s.Freeze(name); err != nil {
			t.Fatal(err)
		}
	}
	pids := s.PIDs()
	began := time.Now()
	s.Stop()
	for name, pid := range pids {
		if !groupGone(pid) {
			t.Errorf("%s (pid %d) survived Stop", name, pid)
		}
	}
	t.Logf("Stop with three frozen components took %s", time.Since(began).Round(time.Millisecond))
}

func castVote(ctx context.Context, s *Stack, e Election, viewer string) (int, error) {
	tok, err := s.Token(ctx, viewer, false)
	if err != nil {
		return 0, err
	}
	body := fmt.Sprintf(`{"electionId":%q,"candidateId":%q,"captchaToken":"captcha-is-off-in-this-test"}`,
		e.ID, e.Candidates[0].ID)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.EnvoyURL()+"/api/v1/votes", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func waitRow(ctx context.Context, t *testing.T, s *Stack, e Election, viewer string, timeout time.Duration) {
	t.Helper()
	conn, err := pgx.Connect(ctx, s.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(timeout)
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM votes WHERE election_id = $1 AND user_id = $2`,
			e.ID, viewer).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("vote of %s not persisted (%d rows)", viewer, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// errorLines are the error lines of our programs' logs (JSON or text, level ERROR; libraries
// log through the default text logger) and Envoy's.
func errorLines(t *testing.T, s *Stack) []string {
	t.Helper()
	var out []string
	for _, name := range []string{ComponentDevIdP, ComponentResults, ComponentProcessor, ComponentControlPlane, ComponentEnvoy} {
		b, err := os.ReadFile(s.LogPath(name))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, " ERROR ") || strings.Contains(line, "][error][") {
				out = append(out, name+": "+line)
			}
		}
	}
	return out
}

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Browser test prerequisites, installed by `make tools-browser`.
const chromiumPath = "/usr/bin/chromium"

type pageRow struct {
	ID    string  `json:"id"`
	Name  string  `json:"name"`
	Votes int64   `json:"votes"`
	Pct   float64 `json:"pct"`
	Width string  `json:"width"`
}

type pageState struct {
	URL    string    `json:"url"`
	Title  string    `json:"title"`
	Status string    `json:"status"`
	Conn   string    `json:"conn"`
	Total  int64     `json:"total"`
	Rows   []pageRow `json:"rows"`
	Ms     int64     `json:"ms"`
}

// TestLivePageInBrowser opens the on-air page through Envoy in headless chromium, casts votes
// through the whole stack and checks that the bars and counts follow without a reload, then
// closes the election and checks the page says so. Screenshots go to e2e/out/.
func TestLivePageInBrowser(t *testing.T) {
	dir := filepath.Join(repo, "workers", "results", "e2e")
	// Missing tools fail the test (never skip): CI installs them with `make tools-browser`.
	for _, need := range []string{chromiumPath, filepath.Join(dir, "node_modules", "playwright-core", "package.json")} {
		if _, err := os.Stat(need); err != nil {
			t.Fatalf("%s is missing: run `make tools-browser`", need)
		}
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is missing: run `make tools-browser`")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// An election of its own: this test closes it at the end.
	election, err := stack.SeedElection(ctx, "Live Page Final", time.Hour, "Aurora Lights", "Blue Harbour", "Copper Foxes")
	if err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitEnvoyKnows(ctx, election.ID); err != nil {
		t.Fatal(err)
	}
	pageURL := fmt.Sprintf("%s/api/v1/results/page/%s?token=%s", stack.EnvoyURL(), election.ID, token(t, uuid.NewString(), false))
	cmd := exec.CommandContext(ctx, node, "live_page.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PAGE_URL="+pageURL, "OUT_DIR="+filepath.Join(dir, "out"),
		fmt.Sprintf("CANDIDATES=%d", len(election.Candidates)))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil && !t.Failed() {
			t.Errorf("browser script: %v\n%s", err, stderr.String())
		}
	}()
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	step := func(prefix string) pageState {
		t.Helper()
		for lines.Scan() {
			line := lines.Text()
			if rest, ok := strings.CutPrefix(line, "FAIL "); ok {
				t.Fatalf("browser: %s\n%s", rest, stderr.String())
			}
			if rest, ok := strings.CutPrefix(line, prefix+" "); ok {
				var s pageState
				if err := json.Unmarshal([]byte(rest), &s); err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				return s
			}
			t.Log("browser:", line)
		}
		_, _ = io.Copy(io.Discard, stdout)
		t.Fatalf("browser script ended before %s: %v\n%s", prefix, lines.Err(), stderr.String())
		return pageState{}
	}

	before := step("READY")
	if before.Title != election.Title || before.Status != "ACTIVE" || len(before.Rows) != len(election.Candidates) {
		t.Fatalf("page before votes: %+v", before)
	}
	// What the API says is what the page must show.
	api := votesOf(readResults(t, election.ID))
	for _, r := range before.Rows {
		if r.Votes > api[r.ID] {
			t.Fatalf("page shows %d votes for %s, the API %d", r.Votes, r.Name, api[r.ID])
		}
	}

	// Cast votes through Envoy: 3 for the first candidate, 1 for the second.
	plan := map[string]int{election.Candidates[0].ID: 3, election.Candidates[1].ID: 1}
	for cand, n := range plan {
		for range n {
			vote(t, election.ID, cand)
		}
	}
	// Expected counts = the API's once the processor committed them (other tests vote too,
	// so the baseline is read, not assumed).
	want := map[string]int64{}
	deadline := time.Now().Add(20 * time.Second)
	for {
		api = votesOf(readResults(t, election.ID))
		ok := true
		for _, r := range before.Rows {
			if api[r.ID] < r.Votes+int64(plan[r.ID]) {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("votes not counted: page had %+v, API has %v", before.Rows, api)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, r := range before.Rows {
		want[r.ID] = api[r.ID]
	}
	b, _ := json.Marshal(want)
	fmt.Fprintf(stdin, "VOTED %s\n", b)

	after := step("UPDATED")
	// The page may already show them; at most it waits for the stream's 1 s throttle.
	t.Logf("page showed the counted votes %d ms after the API did", after.Ms)
	var total int64
	for _, r := range after.Rows {
		total += r.Votes
		var old pageRow
		for _, o := range before.Rows {
			if o.ID == r.ID {
				old = o
			}
		}
		if plan[r.ID] > 0 && r.Width == old.Width {
			t.Errorf("bar of %s did not change (%s)", r.Name, r.Width)
		}
	}
	if after.Total != total || after.Conn != "live" {
		t.Fatalf("page after votes: %+v", after)
	}

	// Close the election as the control plane does: status in PostgreSQL plus a notification.
	conn, err := pgx.Connect(ctx, stack.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `UPDATE elections SET status = 'CLOSED', updated_at = now() WHERE id = $1`, election.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_notify('elections_changed', $1)`, election.ID); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(stdin, "CLOSED")
	if closed := step("DONE"); closed.Status != "CLOSED" {
		t.Fatalf("page after close: %+v", closed)
	}
	for _, f := range []string{"live-results.png", "live-results-closed.png"} {
		b, err := os.ReadFile(filepath.Join(dir, "out", f))
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Fatalf("screenshot %s: %v", f, err)
		}
	}
}

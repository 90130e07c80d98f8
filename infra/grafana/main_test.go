package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/filters/votefilter/captcha"
)

// The committed dashboards are what the generator writes: a change to the generator without
// `go run ./infra/grafana` (or a hand edit of the JSON) fails here.
func TestCommittedDashboardsAreTheGeneratorsOutput(t *testing.T) {
	files, err := render()
	if err != nil {
		t.Fatal(err)
	}
	committed, _ := filepath.Glob(filepath.Join("dashboards", "*.json"))
	if len(committed) != len(files) {
		t.Errorf("dashboards/ holds %d files, the generator writes %d: run go run ./infra/grafana", len(committed), len(files))
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join("dashboards", name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("dashboards/%s differs from the generator's output (%v): run go run ./infra/grafana", name, err)
		}
	}
}

// panelQuery is one target of one panel of a committed dashboard.
type panelQuery struct {
	dashboard, panel, expr string
}

func committedQueries(t *testing.T) []panelQuery {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join("dashboards", "*.json"))
	var out []panelQuery
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Title  string
			Panels []struct {
				Title   string
				Targets []struct{ Expr string }
			}
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for _, p := range d.Panels {
			for _, q := range p.Targets {
				out = append(out, panelQuery{d.Title, p.Title, q.Expr})
			}
		}
	}
	if len(out) < 30 {
		t.Fatalf("only %d panel queries in the committed dashboards", len(out))
	}
	return out
}

// No dead panel: on a live stack with a little load, every panel's query parses and returns at
// least one series from Prometheus, and the rules the panels read are loaded and healthy.
func TestEveryPanelQueryReturnsSeriesOnALiveStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack")
	}
	queries := committedQueries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := devstack.Start(ctx, devstack.Options{Region: "dash-region"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	if s.PrometheusURL() == "" {
		t.Fatalf("%s: the dashboards need Prometheus (make tools installs it)", s.MonitoringLine())
	}
	e, err := s.SeedElection(ctx, "Dashboard election", time.Hour, "Alice Example", "Bob Example")
	if err == nil {
		err = s.WaitEnvoyKnows(ctx, e.ID)
	}
	if err != nil {
		t.Fatal(err)
	}
	load(t, s, e)

	// Each query gets until the deadline to return series: rates need two scrapes after the
	// load, the reconciliation gauges a round of the processor.
	deadline := time.Now().Add(90 * time.Second)
	pending := queries
	for len(pending) > 0 && time.Now().Before(deadline) {
		var next []panelQuery
		for _, q := range pending {
			n, err := series(s, q.expr)
			if err != nil {
				t.Errorf("%s / %s: %s: %v", q.dashboard, q.panel, q.expr, err)
				continue
			}
			if n == 0 {
				next = append(next, q)
			}
		}
		pending = next
		if len(pending) > 0 {
			time.Sleep(2 * time.Second)
		}
	}
	for _, q := range pending {
		t.Errorf("dead panel %s / %s: no series for %s", q.dashboard, q.panel, q.expr)
	}

	// The region variable of every dashboard lists the stack's region (asked once the panels
	// have series, so Prometheus has scraped).
	var regions []string
	promGet(t, s, "/api/v1/label/region/values?match[]=up", &regions)
	if !slices.Contains(regions, s.Region) {
		t.Errorf("label_values(up, region) = %v, want %s among them", regions, s.Region)
	}

	var rules struct {
		Groups []struct {
			File  string
			Rules []struct{ Name, Health, LastError string }
		}
	}
	promGet(t, s, "/api/v1/rules", &rules)
	count := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			count++
			if r.Health != "ok" {
				t.Errorf("rule %s in %s: health %q %s", r.Name, g.File, r.Health, r.LastError)
			}
		}
	}
	if count == 0 {
		t.Error("Prometheus loaded no rules from infra/prometheus")
	}
}

// load puts a little traffic through Envoy: accepted votes, a duplicate, a failed captcha,
// and results reads, as viewers and the on-air screen would.
func load(t *testing.T, s *devstack.Stack, e devstack.Election) {
	t.Helper()
	ctx := context.Background()
	for i := range 4 {
		tok, err := s.Token(ctx, uuid.NewString(), false)
		if err != nil {
			t.Fatal(err)
		}
		body := contract.VoteRequest{ElectionID: e.ID, CandidateID: e.Candidates[i%2].ID, CaptchaToken: solved(t, s)}
		if code := post(t, s, tok, body); code != http.StatusOK {
			t.Fatalf("vote %d: %d", i, code)
		}
		if i == 0 {
			body.CaptchaToken = solved(t, s)
			if code := post(t, s, tok, body); code != http.StatusConflict {
				t.Fatalf("second vote: %d, want 409", code)
			}
		}
	}
	tok, _ := s.Token(ctx, uuid.NewString(), false)
	if code := post(t, s, tok, contract.VoteRequest{ElectionID: e.ID, CandidateID: e.Candidates[0].ID,
		CaptchaToken: strings.Repeat("f", 40)}); code != http.StatusForbidden {
		t.Fatalf("forged captcha: %d, want 403", code)
	}
	for range 5 {
		for _, path := range []string{"/api/v1/results/", "/api/v1/results/live/"} {
			resp, err := http.Get(s.EnvoyURL() + path + e.ID)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}

func solved(t *testing.T, s *devstack.Stack) string {
	t.Helper()
	resp, err := http.Get(s.EnvoyURL() + "/api/v1/votes/challenge")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c captcha.Challenge
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return captcha.Solve(c.Challenge, c.Difficulty)
}

func post(t *testing.T, s *devstack.Stack, token string, v contract.VoteRequest) int {
	t.Helper()
	b, _ := json.Marshal(v)
	req, _ := http.NewRequest(http.MethodPost, s.EnvoyURL()+"/api/v1/votes", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// series runs expr as Grafana would over all regions and returns how many series it gave; a
// query Prometheus refuses is an error.
func series(s *devstack.Stack, expr string) (int, error) {
	expr = strings.NewReplacer(`$region`, `.*`, `$__rate_interval`, `1m`).Replace(expr)
	resp, err := http.Get(s.PrometheusURL() + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status, Error string
		Data          struct{ Result []json.RawMessage }
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("Prometheus refused it: %s", r.Error)
	}
	return len(r.Data.Result), nil
}

func promGet(t *testing.T, s *devstack.Stack, path string, into any) {
	t.Helper()
	resp, err := http.Get(s.PrometheusURL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   json.RawMessage
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
		t.Fatalf("%s: %s %v", path, r.Status, err)
	}
	if err := json.Unmarshal(r.Data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/filters/votefilter/captcha"
)

// The printed lines run from any folder: every command they name is an absolute path that
// exists. (They used to say bin/devstack, which only works from the repository's root.)
func TestHowToNamesCommandsByAbsolutePath(t *testing.T) {
	s := &devstack.Stack{Ports: devstack.DefaultPorts}
	var b strings.Builder
	printHowTo(&b, s, devstack.Election{ID: "e", Title: "t", Candidates: []devstack.Candidate{{ID: "c", Name: "n"}}})
	out := b.String()
	cmds := regexp.MustCompile(`\$\((\S+) captcha\)`).FindAllStringSubmatch(out, -1)
	if len(cmds) != 1 {
		t.Fatalf("no captcha command in:\n%s", out)
	}
	if path := cmds[0][1]; !filepath.IsAbs(path) {
		t.Errorf("captcha command %q is relative", path)
	} else if _, err := os.Stat(path); err != nil {
		t.Errorf("captcha command %q: %v", path, err)
	}
	if strings.Contains(out, " bin/devstack") {
		t.Errorf("a printed line names bin/devstack relatively:\n%s", out)
	}
}

// `devstack demo` gives a running stack a fresh open election that the edge admits votes for,
// so a closed or cancelled demo needs no restart.
func TestDemoSeedsAFreshOpenElection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := devstack.Start(ctx, devstack.Options{Region: "demo-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	srv := httptest.NewServer(controlMux(s))
	defer srv.Close()
	var ids, candidates []string
	for range 2 {
		resp, err := http.Post(srv.URL+"/demo", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST /demo: %d %s", resp.StatusCode, b.String())
		}
		m := regexp.MustCompile(`"electionId":"([0-9a-f-]{36})","candidateId":"([0-9a-f-]{36})"`).FindStringSubmatch(b.String())
		if m == nil {
			t.Fatalf("no vote line in:\n%s", b.String())
		}
		ids, candidates = append(ids, m[1]), append(candidates, m[2])
	}
	if ids[0] == ids[1] {
		t.Fatalf("two demos share election %s", ids[0])
	}
	// The edge admits a vote in the new election, as the printed line casts it.
	tok, err := s.Token(ctx, demoViewer, false)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(s.EnvoyURL() + "/api/v1/votes/challenge")
	if err != nil {
		t.Fatal(err)
	}
	var c captcha.Challenge
	err = json.NewDecoder(resp.Body).Decode(&c)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	body := `{"electionId":"` + ids[1] + `","candidateId":"` + candidates[1] + `","captchaToken":"` +
		captcha.Solve(c.Challenge, c.Difficulty) + `"}`
	req, _ := http.NewRequest(http.MethodPost, s.EnvoyURL()+"/api/v1/votes", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("vote in the fresh demo election: %d, want 200", resp.StatusCode)
	}
}

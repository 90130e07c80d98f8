package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/filters/votefilter/captcha"
)

// challenge fetches a proof-of-work challenge from the edge.
func challenge(t *testing.T) captcha.Challenge {
	t.Helper()
	resp, err := http.Get(stack.EnvoyURL() + "/api/v1/votes/challenge")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c captcha.Challenge
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("challenge: %d %v", resp.StatusCode, err)
	}
	return c
}

// signedWith reports whether the edge signed c with secret.
func signedWith(t *testing.T, c captcha.Challenge, secret string) bool {
	t.Helper()
	p, err := captcha.NewPoW(captcha.StaticKey(secret), c.Difficulty, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Verify(captcha.Solve(c.Challenge, c.Difficulty), time.Now())
	return err == nil
}

func voteWith(t *testing.T, e devstack.Election, solved string) reply {
	t.Helper()
	return vote(t, token(t, uuid.NewString()), "", contract.VoteRequest{ElectionID: e.ID, CandidateID: e.Candidates[0].ID,
		CaptchaToken: solved})
}

// The proof-of-work secret is rotated by replacing its file: the edge signs with the new secret
// within seconds, without Envoy or the control plane restarting, and a challenge issued just
// before the rotation is still good until it expires.
func TestPoWSecretRotatesWithoutRestart(t *testing.T) {
	e := ownElection(t)
	pids := stack.PIDs()
	before := challenge(t)
	old := stack.PoWSecret
	if !signedWith(t, before, old) {
		t.Fatal("the edge does not sign with the stack's secret")
	}
	if err := stack.RotatePoWSecret(); err != nil {
		t.Fatal(err)
	}
	next := stack.PoWSecret
	start := time.Now()
	var after captcha.Challenge
	for {
		if after = challenge(t); signedWith(t, after, next) {
			break
		}
		if !signedWith(t, after, old) {
			t.Fatal("a challenge signed with neither secret")
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the edge still signs with the old secret 10 s after the rotation")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("new secret in use %v after the rotation", time.Since(start).Round(time.Millisecond))
	if r := voteWith(t, e, captcha.Solve(before.Challenge, before.Difficulty)); r.status != http.StatusOK {
		t.Fatalf("challenge issued before the rotation: %d %s", r.status, r.body)
	}
	if r := voteWith(t, e, captcha.Solve(after.Challenge, after.Difficulty)); r.status != http.StatusOK {
		t.Fatalf("challenge issued after the rotation: %d %s", r.status, r.body)
	}
	for _, name := range []string{devstack.ComponentEnvoy, devstack.ComponentControlPlane} {
		if now := stack.PIDs()[name]; now != pids[name] {
			t.Fatalf("%s restarted (pid %d → %d)", name, pids[name], now)
		}
	}
	noSecretAnywhere(t, old, next)
}

// Neither Envoy's /config_dump nor any log holds the proof-of-work secret: the filter config
// names the file it is in.
func TestPoWSecretIsInNoConfigDumpOrLog(t *testing.T) {
	// A vote and a refused captcha first, so the logs have something to say.
	if r := vote(t, token(t, uuid.NewString()), "", ballot(t, 0)); r.status != http.StatusOK {
		t.Fatalf("vote: %d %s", r.status, r.body)
	}
	noSecretAnywhere(t, stack.PoWSecret)
	ecds := get(t, fmt.Sprintf("http://127.0.0.1:%d/config_dump?resource=ecds_filters", stack.Ports.EnvoyAdmin))
	if !strings.Contains(ecds, stack.PoWSecretFile) {
		t.Fatalf("the filter config does not name the secret file %s:\n%s", stack.PoWSecretFile, ecds)
	}
}

// noSecretAnywhere fails if any secret shows in the edge's config dumps or in any log of the
// stack.
func noSecretAnywhere(t *testing.T, secrets ...string) {
	t.Helper()
	admin := fmt.Sprintf("http://127.0.0.1:%d", stack.Ports.EnvoyAdmin)
	sources := map[string]string{
		"/config_dump":                       get(t, admin+"/config_dump?include_eds"),
		"/config_dump?resource=ecds_filters": get(t, admin+"/config_dump?resource=ecds_filters"),
	}
	logs, err := stack.Logs()
	if err != nil || len(logs) == 0 {
		t.Fatalf("no logs: %v", err)
	}
	maps.Copy(sources, logs)
	if len(sources["/config_dump"]) < 1000 || !strings.Contains(sources["/config_dump"], "votefilter") {
		t.Fatalf("config dump too small to prove anything: %s", sources["/config_dump"])
	}
	for where, text := range sources {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s holds the secret", where)
			}
		}
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

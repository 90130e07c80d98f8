package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/tvvote/voting/devidp"
	"github.com/tvvote/voting/devstack"
)

//go:embed proxy.yaml.tmpl
var proxyTemplate string

//go:embed jwtauthn.yaml.tmpl
var jwtAuthnTemplate string

// staticEnvoy is an Envoy of the benchmark's own, from a static config.
type staticEnvoy struct {
	url  string
	pid  int
	stop func()
}

// startEnvoy renders tmpl with params (plus Port and AdminPort) and starts the stack's Envoy
// binary on it, returning once it answers.
func startEnvoy(ctx context.Context, name, tmpl string, params map[string]any) (*staticEnvoy, error) {
	root, err := devstack.RepoRoot()
	if err != nil {
		return nil, err
	}
	port, _ := devstack.FreePort()
	admin, _ := devstack.FreePort()
	dir, err := os.MkdirTemp("", "edge-bench-")
	if err != nil {
		return nil, err
	}
	if params == nil {
		params = map[string]any{}
	}
	params["Port"], params["AdminPort"] = port, admin
	cfg := filepath.Join(dir, name+".yaml")
	f, err := os.Create(cfg)
	if err != nil {
		return nil, err
	}
	err = template.Must(template.New(name).Parse(tmpl)).Execute(f, params)
	f.Close()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, ".tools", "envoy", "envoy"), "-c", cfg, "--disable-hot-restart", "-l", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	e := &staticEnvoy{url: fmt.Sprintf("http://127.0.0.1:%d", port), pid: cmd.Process.Pid,
		stop: func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) }}
	for i := 0; i < 100; i++ {
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", admin)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return e, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.stop()
	return nil, fmt.Errorf("%s envoy did not get ready", name)
}

// filterConfig is the vote filter's config as the stack's Envoy runs it (its ECDS resource in
// /config_dump): what the conventional service is given, so both admit with the same settings.
func filterConfig(adminURL string) ([]byte, error) {
	resp, err := http.Get(adminURL + "/config_dump")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var dump any
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		return nil, err
	}
	var found []byte
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		case string:
			if strings.HasPrefix(x, "{") && strings.Contains(x, `"elections"`) && strings.Contains(x, `"jwt"`) {
				found = []byte(x)
			}
		}
	}
	walk(dump)
	if found == nil {
		return nil, fmt.Errorf("no vote filter config in %s/config_dump", adminURL)
	}
	return found, nil
}

// conventional runs the comparison design beside a stack: the Go admission service with the
// stack's filter config, and an Envoy in front of it. It returns the front's URL and the two
// processes for the CPU accounting.
func conventional(ctx context.Context, s *devstack.Stack) (url string, pids map[string]int, stop func(), err error) {
	cfg, err := filterConfig(fmt.Sprintf("http://127.0.0.1:%d", s.Ports.EnvoyAdmin))
	if err != nil {
		return "", nil, nil, err
	}
	dir, err := os.MkdirTemp("", "conventional-")
	if err != nil {
		return "", nil, nil, err
	}
	cfgFile := filepath.Join(dir, "filter.json")
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		return "", nil, nil, err
	}
	root, _ := devstack.RepoRoot()
	bin := filepath.Join(dir, "conventional")
	build := exec.Command("go", "build", "-o", bin, "./loadtest/conventional")
	build.Dir, build.Stderr = root, os.Stderr
	if err := build.Run(); err != nil {
		return "", nil, nil, err
	}
	port, _ := devstack.FreePort()
	svc := exec.CommandContext(ctx, bin, "-config", cfgFile, "-listen", fmt.Sprintf("127.0.0.1:%d", port))
	// A Go service runs with one P per core; the module's larger GOMAXPROCS is for Envoy's
	// worker threads entering Go, which a standalone service does not have.
	svc.Env = append(os.Environ(), "GOMAXPROCS=2")
	svc.Stderr = io.Discard // one JSON line per vote: the module's log goes to Envoy's log file
	if err := svc.Start(); err != nil {
		return "", nil, nil, err
	}
	front, err := startEnvoy(ctx, "proxy", proxyTemplate, map[string]any{"UpstreamPort": port})
	if err != nil {
		svc.Process.Kill()
		return "", nil, nil, err
	}
	stop = func() { front.stop(); svc.Process.Kill(); svc.Wait(); os.RemoveAll(dir) }
	return front.url, map[string]int{"envoy (front)": front.pid, "conventional": svc.Process.Pid}, stop, nil
}

// jwtAuthn measures Envoy's jwt_authn filter verifying fresh viewers' RS256 tokens in front of
// a direct_response, closed loop, with its CPU per request.
func jwtAuthn(ctx context.Context, conns int, d time.Duration) (wrkResult, float64, error) {
	const issuer, audience = "https://idp.bench/", "https://votes.bench/api"
	p, err := devidp.New(issuer, audience)
	if err != nil {
		return wrkResult{}, 0, err
	}
	// Enough fresh viewers for the measured and the warm-up seconds at jwt_authn's ~13,000 a second.
	tokens, err := p.MintMany(int((d.Seconds()+2)*16000), time.Hour)
	if err != nil {
		return wrkResult{}, 0, err
	}
	e, err := startEnvoy(ctx, "jwtauthn", jwtAuthnTemplate, map[string]any{"Issuer": issuer, "Audience": audience,
		"JWKS": string(p.JWKS())})
	if err != nil {
		return wrkResult{}, 0, err
	}
	defer e.stop()
	dir, err := os.MkdirTemp("", "jwt-bench-")
	if err != nil {
		return wrkResult{}, 0, err
	}
	defer os.RemoveAll(dir)
	tokFile, bodyFile, err := writeFiles(dir, tokens, `{"electionId":"x"}`)
	if err != nil {
		return wrkResult{}, 0, err
	}
	root, _ := devstack.RepoRoot()
	script := filepath.Join(root, "loadtest", "edge", "votes.lua")
	if _, err := runWrk(e.url, conns, 2*time.Second, script, tokFile, bodyFile); err != nil { // warm up
		return wrkResult{}, 0, err
	}
	before := cpuTimes(map[string]int{"envoy": e.pid})
	r, err := runWrk(e.url, conns, d, script, tokFile, bodyFile)
	if err != nil {
		return wrkResult{}, 0, err
	}
	cpu := since(before, cpuTimes(map[string]int{"envoy": e.pid}))["envoy"]
	if r.non2xx > 0 {
		log.Printf("jwt_authn: %d answers were not 2xx: tokens refused?", r.non2xx)
	}
	return r, float64(cpu.Microseconds()) / (r.rps * d.Seconds()), nil
}

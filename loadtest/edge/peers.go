package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

// The peers measured beside our filter on the same stack (same Redis, same SQS sink, same
// tokens): how else the admission could be built.
const (
	peerConventional = "conventional"
	peerEnvoyJWT     = "envoy-jwt"
)

var (
	//go:embed conventional.yaml.tmpl
	conventionalTemplate string
	//go:embed envoyjwt.yaml.tmpl
	envoyJWTTemplate string
)

// peerTargets names every peer as the tables print it.
// What the Envoy in front of the jwt_authn peer must name: envoymodule's benchmark variant and
// the metadata it reads (peers_test.go checks they match). The benchmark does not import
// envoymodule: its runtime settings are for living inside Envoy, not for the load generator.
const (
	verifiedClaimsFilterName = "votefilter_verified_claims"
	verifiedSubjectNamespace = "votefilter.verified"
	verifiedSubjectKey       = "sub"
)

var peerTargets = map[string]string{
	peerConventional: "conventional: Envoy → Go net/http vote service",
	peerEnvoyJWT:     "Envoy jwt_authn + votefilter (viewer from metadata)",
}

// process is a program the benchmark started; stop ends it and removes its files.
type process struct {
	url  string
	pid  int
	stop func()
}

// startEnvoy runs the stack's Envoy binary on a config rendered from tmpl (data gets Port and
// AdminPort) and waits until its listener answers.
func startEnvoy(ctx context.Context, tmpl string, data map[string]any, env []string) (*process, error) {
	root, err := devstack.RepoRoot()
	if err != nil {
		return nil, err
	}
	port, _ := devstack.FreePort()
	admin, _ := devstack.FreePort()
	data["Port"], data["AdminPort"] = port, admin
	dir, err := os.MkdirTemp("", "edge-bench-")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "envoy.yaml")
	f, err := os.Create(cfg)
	if err != nil {
		return nil, err
	}
	err = template.Must(template.New("envoy").Parse(tmpl)).Execute(f, data)
	f.Close()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, ".tools", "envoy", "envoy"), "-c", cfg, "--disable-hot-restart", "-l", "warn")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{url: fmt.Sprintf("http://127.0.0.1:%d", port), pid: cmd.Process.Pid,
		stop: func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) }}
	for i := 0; i < 100; i++ {
		if resp, err := http.Get(p.url + "/"); err == nil {
			resp.Body.Close()
			return p, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("envoy on %s did not answer", p.url)
}

// startConventional builds and starts the vote service on the filter's own config, and a plain
// Envoy routing votes to it.
func startConventional(ctx context.Context, filterConfig []byte) (envoy, service *process, err error) {
	root, err := devstack.RepoRoot()
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "edge-bench-voteservice-")
	if err != nil {
		return nil, nil, err
	}
	bin, cfg := filepath.Join(dir, "voteservice"), filepath.Join(dir, "edge.json")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./loadtest/edge/voteservice")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("build voteservice: %v: %s", err, out)
	}
	if err := os.WriteFile(cfg, filterConfig, 0o600); err != nil {
		return nil, nil, err
	}
	port, _ := devstack.FreePort()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.CommandContext(ctx, bin, "-config", cfg, "-addr", addr)
	// A standalone Go service runs with one P per core; the module's larger GOMAXPROCS
	// (edgeruntime) is for Envoy's worker threads entering Go, which this service has none of.
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(runtime.NumCPU()))
	// Its per-vote log lines go where the filter's go in the stack: a file, not the terminal.
	logFile, err := os.Create(filepath.Join(dir, "voteservice.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	service = &process{url: "http://" + addr, pid: cmd.Process.Pid,
		stop: func() { cmd.Process.Kill(); cmd.Wait(); logFile.Close(); os.RemoveAll(dir) }}
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i == 100 {
			service.stop()
			return nil, nil, fmt.Errorf("voteservice on %s did not start", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	envoy, err = startEnvoy(ctx, conventionalTemplate, map[string]any{"ServicePort": port}, nil)
	if err != nil {
		service.stop()
		return nil, nil, err
	}
	return envoy, service, nil
}

// startEnvoyJWT starts an Envoy whose jwt_authn verifies the token in front of the vote
// filter's variant that trusts it, loading libvotefilter.so from binDir.
func startEnvoyJWT(ctx context.Context, binDir string, filterConfig []byte, envoyEnv []string) (*process, error) {
	cfg, err := edgeconfig.Parse(filterConfig)
	if err != nil {
		return nil, err
	}
	jwks, err := get(cfg.JWT.JWKSURL)
	if err != nil {
		return nil, err
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	leeway := cfg.JWT.LeewaySeconds
	return startEnvoy(ctx, envoyJWTTemplate, map[string]any{
		"Issuer": q(cfg.JWT.Issuer), "Audience": q(cfg.JWT.Audience), "JWKS": q(string(jwks)), "LeewaySeconds": leeway,
		"SubjectHeader": q("x-votefilter-verified-sub"), "Namespace": q(verifiedSubjectNamespace),
		"Key": q(verifiedSubjectKey), "FilterName": q(verifiedClaimsFilterName),
		"FilterConfig": q(string(filterConfig)),
	}, append([]string{"ENVOY_DYNAMIC_MODULES_SEARCH_PATH=" + binDir, "GODEBUG=cgocheck=0"}, envoyEnv...))
}

// filterConfig is the vote filter's configuration as the stack's Envoy runs it (from its
// admin /config_dump): the peers run on exactly the same elections, store and queue.
func filterConfig(adminURL string) ([]byte, error) {
	b, err := get(adminURL + "/config_dump")
	if err != nil {
		return nil, err
	}
	var dump any
	if err := json.Unmarshal(b, &dump); err != nil {
		return nil, err
	}
	var found string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["filter_name"] == edgeconfig.FilterName {
				if fc, ok := v["filter_config"].(map[string]any); ok {
					if s, ok := fc["value"].(string); ok {
						found = s
					}
				}
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(dump)
	if found == "" {
		return nil, errors.New("no votefilter config in Envoy's config_dump")
	}
	return []byte(found), nil
}

func get(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, err
}

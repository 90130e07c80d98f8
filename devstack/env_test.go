package devstack

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/tvvote/voting/devidp"
	"github.com/tvvote/voting/envvars"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/workers/processor/processorconfig"
	"github.com/tvvote/voting/workers/results/resultsconfig"
	"github.com/tvvote/voting/xds/xdsconfig"
)

// program is one binary's configuration: a zero struct of it, and its loader.
type program struct {
	prefix string
	config any
	load   func(func(string) (string, bool)) error
}

func loader[C any](load func(func(string) (string, bool)) (C, error)) func(func(string) (string, bool)) error {
	return func(lookup func(string) (string, bool)) error { _, err := load(lookup); return err }
}

// programs are the config structs of every binary.
var programs = []program{
	{"XDS_", &xdsconfig.Config{}, loader(xdsconfig.Load)},
	{"XDS_", &xdsconfig.AdminClient{}, loader(xdsconfig.LoadAdminClient)},
	{"PROCESSOR_", &processorconfig.Config{}, loader(processorconfig.Load)},
	{"RESULTS_", &resultsconfig.Config{}, loader(resultsconfig.Load)},
	{"DEVIDP_", &devidp.Config{}, loader(devidp.LoadConfig)},
}

func mapLookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// The README documents every variable of every binary with its default, and names no variable
// that no binary reads, unless its binary refuses it by name (a setting that is gone).
func TestEveryVariableIsDocumented(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	documented := func(parts ...string) bool {
		for _, l := range lines {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(l, p)
			}
			if all {
				return true
			}
		}
		return false
	}
	known := map[string]bool{}
	for _, p := range programs {
		params, err := env.GetFieldParams(p.config)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range params {
			known[f.Key] = true
			name := "`" + f.Key + "`"
			switch {
			case !documented(name):
				t.Errorf("README.md does not document %s (%T)", f.Key, p.config)
			case f.HasDefaultValue && !documented(name, "`"+f.DefaultValue+"`"):
				t.Errorf("README.md does not give %s its default `%s`", f.Key, f.DefaultValue)
			}
		}
	}
	for _, name := range regexp.MustCompile(`\b(XDS|PROCESSOR|RESULTS|DEVIDP)_[A-Z0-9_]*[A-Z0-9]\b`).FindAllString(string(b), -1) {
		if !known[name] && !refused(t, name) {
			t.Errorf("README.md names %s, which no binary reads or refuses", name)
		}
	}
}

// refused reports whether the binary of name's prefix refuses name: set, it adds a problem
// that names it.
func refused(t *testing.T, name string) bool {
	t.Helper()
	for _, p := range programs {
		if !strings.HasPrefix(name, p.prefix) {
			continue
		}
		without := problems(p.load(mapLookup(nil)))
		for problem := range problems(p.load(mapLookup(map[string]string{name: "set"}))) {
			if !without[problem] && regexp.MustCompile(`\b`+name+`\b`).MatchString(problem) {
				return true
			}
		}
	}
	return false
}

func problems(err error) map[string]bool {
	m := map[string]bool{}
	var inv *envvars.Invalid
	if errors.As(err, &inv) {
		for _, p := range inv.Problems {
			m[p.Error()] = true
		}
	}
	return m
}

// What devstack writes into a binary's environment is what that binary loads: every field
// type survives the trip through the tags, and what is left out keeps the binary's default.
func TestRenderedConfigsLoadBack(t *testing.T) {
	cp := xdsconfig.Config{
		DatabaseURL: "postgres://u:p@127.0.0.1:5432/votes?sslmode=disable", GRPCAddr: "127.0.0.1:1", ListenerPort: 8081,
		ResultsAddr: "127.0.0.1:2", AdminAddr: "0.0.0.0:3", JWTIssuer: "http://127.0.0.1:4/", JWTAudience: "aud",
		JWKSURL: "http://127.0.0.1:4/.well-known/jwks.json", RedisAddr: "127.0.0.1:5,127.0.0.1:8", RedisCluster: true,
		RedisWaitReplicas: 1, SQSQueueURL: "http://127.0.0.1:6/0/votes", SQSRegion: "us-east-1", SQSEndpoint: "http://127.0.0.1:6", SQSStaticCredentials: true, CaptchaMode: "siteverify",
		PoWSecretFile: "/run/pow", PerViewer: edgeconfig.Limit{Max: 0, WindowSeconds: 1}, PerIP: edgeconfig.Limit{Max: 7, WindowSeconds: 30},
		UpstreamTimeout: 90 * time.Second, TrustedHops: 1,
		Siteverify: xdsconfig.SiteverifyConfig{Addr: "captcha.test:443", Path: "/siteverify", SecretFile: "/run/sv", TLS: true,
			MinScore: 0.5, TimeoutMs: 1500},
		GRPCTLS: xdsconfig.GRPCTLSConfig{CertFile: "/pki/cp.pem", KeyFile: "/pki/cp-key.pem", ClientCAFile: "/pki/ca.pem"},
	}
	cp.Tracing = xdsconfig.TracingConfig{OTLPAddr: "127.0.0.1:4317", Sampling: 12.5}
	want := cp
	want.ListenerAddress, want.PoWDifficulty, want.RedisWaitTimeout = "127.0.0.1", 16, 100*time.Millisecond // the defaults
	want.StatusAddr, want.AdminUpstreamAddr, want.Siteverify.Host = "127.0.0.1:2", "127.0.0.1:3", "captcha.test"
	roundTrip(t, cp, want, xdsconfig.Load)

	proc := processorconfig.Config{DatabaseURL: "postgres://db", QueueURL: "http://127.0.0.1:6/0/votes",
		SQSEndpoint: "http://127.0.0.1:6", MetricsAddr: "127.0.0.1:7", RedisAddr: "127.0.0.1:5,127.0.0.1:8", RedisCluster: true, Receivers: 3, ReceiveMaxMessages: 5,
		BatchMaxWait: 1500 * time.Microsecond, DedupTTL: 90 * time.Minute}
	wantProc := processorconfig.Defaults()
	wantProc.DatabaseURL, wantProc.QueueURL, wantProc.SQSEndpoint, wantProc.MetricsAddr = proc.DatabaseURL, proc.QueueURL, proc.SQSEndpoint, proc.MetricsAddr
	wantProc.Receivers, wantProc.ReceiveMaxMessages, wantProc.BatchMaxWait, wantProc.DedupTTL = 3, 5, proc.BatchMaxWait, proc.DedupTTL
	wantProc.RedisAddr, wantProc.RedisCluster = proc.RedisAddr, true
	roundTrip(t, proc, wantProc, processorconfig.Load)

	res := resultsconfig.Config{DatabaseURL: "postgres://db", JWTIssuer: "https://tenant/", JWTAudience: "aud",
		StreamOrigins: []string{"tv.example.com", "*.studio.example"}}
	wantRes := resultsconfig.Defaults()
	wantRes.DatabaseURL, wantRes.JWTIssuer, wantRes.JWTAudience, wantRes.StreamOrigins = res.DatabaseURL, res.JWTIssuer, res.JWTAudience, res.StreamOrigins
	wantRes.JWKSURL = "https://tenant/.well-known/jwks.json"
	roundTrip(t, res, wantRes, resultsconfig.Load)

	roundTrip(t, devidp.Config{Addr: "127.0.0.1:9"},
		devidp.Config{Addr: "127.0.0.1:9", Issuer: "http://127.0.0.1:9/", Audience: "https://votes.local/api"}, devidp.LoadConfig)
}

func roundTrip[C any](t *testing.T, cfg, want C, load func(func(string) (string, bool)) (C, error)) {
	t.Helper()
	pairs, err := envvars.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range pairs {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	got, err := load(mapLookup(m))
	if err != nil {
		t.Fatalf("%T from %q: %v", cfg, pairs, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%T from %q:\n got %+v\nwant %+v", cfg, pairs, got, want)
	}
}

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/snapshot"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func required() map[string]string {
	return map[string]string{
		"XDS_DATABASE_URL":    "postgres://localhost/votes",
		"XDS_JWT_ISSUER":      "https://idp.test/",
		"XDS_JWT_AUDIENCE":    "votes",
		"XDS_JWT_JWKS_URL":    "http://127.0.0.1:9000/jwks.json",
		"XDS_REDIS_ADDR":      "127.0.0.1:6379",
		"XDS_SQS_QUEUE_URL":   "http://127.0.0.1:9324/000000000000/votes",
		"XDS_SQS_REGION":      "eu-west-1",
		"XDS_POW_SECRET_FILE": "/run/secrets/pow",
	}
}

func TestRateLimitsAndCaptchaMode(t *testing.T) {
	m := required()
	m["XDS_RATE_PER_VIEWER"] = "3/30s"
	m["XDS_CAPTCHA_MODE"] = "off"
	delete(m, "XDS_POW_SECRET_FILE")
	c, err := loadConfig(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if c.PerViewer != (edgeconfig.Limit{Max: 3, WindowSeconds: 30}) || c.PerIP != (edgeconfig.Limit{Max: 600, WindowSeconds: 60}) || c.CaptchaMode != "off" {
		t.Fatalf("limits/captcha: %+v", c)
	}
	m["XDS_RATE_PER_IP"] = "many"
	if _, err := loadConfig(env(m)); err == nil || !strings.Contains(err.Error(), "XDS_RATE_PER_IP") {
		t.Fatalf("bad limit accepted: %v", err)
	}
	m["XDS_CAPTCHA_MODE"] = "pow"
	delete(m, "XDS_RATE_PER_IP")
	if _, err := loadConfig(env(m)); err == nil || !strings.Contains(err.Error(), "XDS_POW_SECRET_FILE") {
		t.Fatalf("pow without secret accepted: %v", err)
	}
}

// Secrets are never taken from the environment, where they would travel in the filter config;
// the control plane passes a path, the edge reads the file.
func TestSecretsAreFilesOnly(t *testing.T) {
	m := required()
	c, err := loadConfig(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if pow := snapshotSettings(c).Filter.Captcha.PoW; pow.SecretFile != "/run/secrets/pow" {
		t.Fatalf("pow config %+v", pow)
	}
	// A secret set the old way is refused, and the message does not repeat it.
	for name, value := range map[string]string{"XDS_POW_SECRET": "0123456789abcdef-test", "XDS_SITEVERIFY_SECRET": "site-secret-0123"} {
		m := required()
		m[name] = value
		_, err := loadConfig(env(m))
		if err == nil || !strings.Contains(err.Error(), name+"_FILE") || strings.Contains(err.Error(), value) {
			t.Errorf("%s set: %v", name, err)
		}
	}
	m["XDS_POW_SECRET_FILE"] = "run/secrets/pow"
	if _, err := loadConfig(env(m)); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("relative secret file accepted: %v", err)
	}
}

func TestClientAddressAndUpstreamTimeout(t *testing.T) {
	m := required()
	c, err := loadConfig(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if s := snapshotSettings(c); s.TrustedHops != 0 || s.ProxyProtocol || s.UpstreamTimeout != 15*time.Second {
		t.Fatalf("defaults: %+v", s)
	}
	m["XDS_TRUSTED_HOPS"] = "1"
	m["XDS_PROXY_PROTOCOL"] = "true"
	m["XDS_UPSTREAM_TIMEOUT"] = "2s"
	if c, err = loadConfig(env(m)); err != nil {
		t.Fatal(err)
	}
	if s := snapshotSettings(c); s.TrustedHops != 1 || !s.ProxyProtocol || s.UpstreamTimeout != 2*time.Second {
		t.Fatalf("overrides: %+v", s)
	}
	for name, bad := range map[string]string{"XDS_TRUSTED_HOPS": "6", "XDS_PROXY_PROTOCOL": "maybe", "XDS_UPSTREAM_TIMEOUT": "1h"} {
		m := required()
		m[name] = bad
		if _, err := loadConfig(env(m)); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s accepted: %v", name, bad, err)
		}
	}
	m = required()
	m["XDS_TRUSTED_HOPS"] = "-1"
	if _, err := loadConfig(env(m)); err == nil {
		t.Error("negative trusted hops accepted")
	}
}

func TestDefaults(t *testing.T) {
	c, err := loadConfig(env(required()))
	if err != nil {
		t.Fatal(err)
	}
	if c.GRPCAddr != "127.0.0.1:18000" || c.ListenerPort != 8080 || c.ResultsAddr != "127.0.0.1:8082" || c.MetricsAddr != "" || c.SQSStaticCredentials {
		t.Fatalf("defaults: %+v", c)
	}
	s := snapshotSettings(c)
	if s.Filter.SQS.QueueURL != "http://127.0.0.1:9324/000000000000/votes" || s.Filter.JWT.JWKSURL != "http://127.0.0.1:9000/jwks.json" || s.ListenerPort != 8080 {
		t.Fatalf("settings: %+v", s)
	}
}

func TestOverrides(t *testing.T) {
	m := required()
	m["XDS_LISTENER_PORT"] = "10000"
	m["XDS_SQS_STATIC_CREDENTIALS"] = "true"
	m["XDS_SQS_ENDPOINT"] = "http://127.0.0.1:9324"
	m["XDS_METRICS_ADDR"] = "127.0.0.1:9102"
	c, err := loadConfig(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if c.ListenerPort != 10000 || !c.SQSStaticCredentials || c.SQSEndpoint != "http://127.0.0.1:9324" || c.MetricsAddr != "127.0.0.1:9102" {
		t.Fatalf("overrides: %+v", c)
	}
}

func TestEveryProblemIsNamed(t *testing.T) {
	_, err := loadConfig(env(map[string]string{
		"XDS_LISTENER_PORT":          "eighty",
		"XDS_RESULTS_ADDR":           "no-port",
		"XDS_SQS_STATIC_CREDENTIALS": "maybe",
	}))
	if err == nil {
		t.Fatal("accepted an empty environment")
	}
	for _, name := range []string{"XDS_DATABASE_URL", "XDS_JWT_ISSUER", "XDS_JWT_AUDIENCE", "XDS_JWT_JWKS_URL",
		"XDS_REDIS_ADDR", "XDS_SQS_QUEUE_URL", "XDS_SQS_REGION", "XDS_LISTENER_PORT", "XDS_RESULTS_ADDR", "XDS_SQS_STATIC_CREDENTIALS"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s:\n%v", name, err)
		}
	}
}

func TestAdminStatusAndSiteverify(t *testing.T) {
	m := required()
	c, err := loadConfig(env(m))
	if err != nil {
		t.Fatal(err)
	}
	s := snapshotSettings(c)
	if c.AdminAddr != "127.0.0.1:18001" || s.AdminAddr != "127.0.0.1:18001" || s.StatusAddr != c.ResultsAddr || s.Siteverify.Addr != "" {
		t.Fatalf("defaults: admin %q/%q status %q siteverify %+v", c.AdminAddr, s.AdminAddr, s.StatusAddr, s.Siteverify)
	}

	m["XDS_ADMIN_ADDR"] = "0.0.0.0:9000"
	m["XDS_STATUS_ADDR"] = "status.internal:8082"
	m["XDS_SITEVERIFY_ADDR"] = "challenges.cloudflare.com:443"
	m["XDS_SITEVERIFY_PATH"] = "/turnstile/v0/siteverify"
	m["XDS_SITEVERIFY_SECRET_FILE"] = "/run/secrets/siteverify"
	m["XDS_SITEVERIFY_TLS"] = "true"
	m["XDS_CAPTCHA_MODE"] = "siteverify"
	c, err = loadConfig(env(m))
	if err != nil {
		t.Fatal(err)
	}
	s = snapshotSettings(c)
	if s.AdminAddr != "127.0.0.1:9000" || s.StatusAddr != "status.internal:8082" {
		t.Fatalf("admin upstream %q status %q", s.AdminAddr, s.StatusAddr)
	}
	sv := s.Filter.Captcha.Siteverify
	if !s.Siteverify.TLS || s.Siteverify.SNI != "challenges.cloudflare.com" || sv.Cluster != "captcha_siteverify" ||
		sv.Host != "challenges.cloudflare.com" || sv.Path != "/turnstile/v0/siteverify" || sv.SecretFile != "/run/secrets/siteverify" || s.Filter.Captcha.Mode != "siteverify" {
		t.Fatalf("siteverify: %+v %+v", s.Siteverify, sv)
	}

	delete(m, "XDS_SITEVERIFY_SECRET_FILE")
	m["XDS_SITEVERIFY_TLS"] = "perhaps"
	_, err = loadConfig(env(m))
	for _, name := range []string{"XDS_SITEVERIFY_SECRET_FILE", "XDS_SITEVERIFY_TLS"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
	m = required()
	m["XDS_CAPTCHA_MODE"] = "siteverify"
	if _, err := loadConfig(env(m)); err == nil || !strings.Contains(err.Error(), "XDS_SITEVERIFY_ADDR") {
		t.Errorf("siteverify without a service accepted: %v", err)
	}
	m["XDS_CAPTCHA_MODE"] = "recaptcha"
	if _, err := loadConfig(env(m)); err == nil || !strings.Contains(err.Error(), "XDS_CAPTCHA_MODE") {
		t.Errorf("unknown captcha mode accepted: %v", err)
	}
}

// The environment's limits follow edgeconfig.Limit.Validate, the rule the admin API and the
// filter apply: a two-day window, for one, is refused here as it is there.
func TestLimitsFollowTheOneRule(t *testing.T) {
	for v, ok := range map[string]bool{"5/60s": true, "0/1s": true, "0/0s": true, "5/24h": true,
		"5/48h": false, "5/0s": false, "-1/60s": false, "5/1500ms": false} {
		m := required()
		m["XDS_RATE_PER_VIEWER"] = v
		if _, err := loadConfig(env(m)); (err == nil) != ok {
			t.Errorf("XDS_RATE_PER_VIEWER=%s: %v, want ok %v", v, err, ok)
		}
	}
}

// ADS over mutual TLS takes its three files together, as absolute paths, or none of them.
func TestGRPCMutualTLSFiles(t *testing.T) {
	files := map[string]string{"XDS_GRPC_TLS_CERT_FILE": "/pki/cp.pem", "XDS_GRPC_TLS_KEY_FILE": "/pki/cp-key.pem",
		"XDS_GRPC_CLIENT_CA_FILE": "/pki/ca.pem"}
	m := required()
	for k, v := range files {
		m[k] = v
	}
	c, err := loadConfig(env(m))
	if err != nil || !c.GRPCTLS.Enabled() || c.GRPCTLS.ClientCAFile != "/pki/ca.pem" {
		t.Fatalf("%+v %v", c.GRPCTLS, err)
	}
	if c, err := loadConfig(env(required())); err != nil || c.GRPCTLS.Enabled() {
		t.Fatalf("without files: %+v %v", c.GRPCTLS, err)
	}
	for name := range files {
		m := required()
		for k, v := range files {
			m[k] = v
		}
		delete(m, name)
		if _, err := loadConfig(env(m)); err == nil || !strings.Contains(err.Error(), name+" is required") {
			t.Errorf("without %s: %v", name, err)
		}
		m[name] = "pki/relative.pem"
		if _, err := loadConfig(env(m)); err == nil || !strings.Contains(err.Error(), name+`="pki/relative.pem" must be an absolute path`) {
			t.Errorf("relative %s: %v", name, err)
		}
	}
}

// A multi-region fleet names every region's store and queue in XDS_REGION_STORES: each edge
// gets its own region's as its store and the others' as peers, and an edge of a region not
// listed gets nothing.
func TestRegionStoresGiveEachEdgeItsOwnStoreAndItsPeers(t *testing.T) {
	m := required()
	delete(m, "XDS_REDIS_ADDR")
	delete(m, "XDS_SQS_QUEUE_URL")
	m["XDS_REGION_STORES"] = `[{"name":"eu-west-1","redis":{"addr":"eu.cache:6379","waitReplicas":1},
		"sqs":{"queueUrl":"https://sqs.eu-west-1.amazonaws.com/1/votes","region":"eu-west-1"}},
		{"name":"us-east-1","redis":{"addr":"us-a:6379,us-b:6379","cluster":true},
		"sqs":{"queueUrl":"https://sqs.us-east-1.amazonaws.com/1/votes","region":"us-east-1"}}]`
	c, err := loadConfig(env(m))
	if err != nil {
		t.Fatal(err)
	}
	b, err := snapshot.NewBuilder(snapshotSettings(c))
	if err != nil {
		t.Fatal(err)
	}
	eu := b.FilterConfig("eu-west-1", snapshot.State{}, "1")
	if eu.Redis.Addr != "eu.cache:6379" || eu.Redis.WaitReplicas != 1 || eu.SQS.Region != "eu-west-1" ||
		len(eu.PeerRegions) != 1 || eu.PeerRegions[0].Name != "us-east-1" || !eu.PeerRegions[0].Redis.Cluster {
		t.Fatalf("eu edge: redis %+v sqs %+v peers %+v", eu.Redis, eu.SQS, eu.PeerRegions)
	}
	us := b.FilterConfig("us-east-1", snapshot.State{}, "1")
	if us.Redis.Addr != "us-a:6379,us-b:6379" || len(us.PeerRegions) != 1 || us.PeerRegions[0].Name != "eu-west-1" {
		t.Fatalf("us edge: redis %+v peers %+v", us.Redis, us.PeerRegions)
	}
	if _, err := b.Build("1", snapshot.Node{ID: "n", Region: "ap-south-1"}, snapshot.State{}, nil); err == nil {
		t.Fatal("an edge of a region without a store was configured")
	}

	for name, bad := range map[string]string{
		"not JSON":        `eu-west-1=redis:6379`,
		"unknown field":   `[{"name":"eu","redis":{"addr":"a:1"},"sqs":{"queueUrl":"q","region":"r"},"queue":"x"}]`,
		"twice":           `[{"name":"eu","redis":{"addr":"a:1"},"sqs":{"queueUrl":"q","region":"r"}},{"name":"eu","redis":{"addr":"b:1"},"sqs":{"queueUrl":"q","region":"r"}}]`,
		"no queue":        `[{"name":"eu","redis":{"addr":"a:1"},"sqs":{}}]`,
		"bad redis":       `[{"name":"eu","redis":{"addr":"a"},"sqs":{"queueUrl":"q","region":"r"}}]`,
		"bad region name": `[{"name":"*","redis":{"addr":"a:1"},"sqs":{"queueUrl":"q","region":"r"}}]`,
	} {
		m["XDS_REGION_STORES"] = bad
		if _, err := loadConfig(env(m)); err == nil || !strings.Contains(err.Error(), "XDS_REGION_STORES") {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
	// One source of truth: the single-store variables beside the list are refused.
	m = required()
	m["XDS_REGION_STORES"] = `[{"name":"eu","redis":{"addr":"a:1"},"sqs":{"queueUrl":"q","region":"r"}}]`
	if _, err := loadConfig(env(m)); err == nil || !strings.Contains(err.Error(), "leave XDS_REDIS_ADDR") {
		t.Fatalf("XDS_REDIS_ADDR beside XDS_REGION_STORES accepted: %v", err)
	}
}

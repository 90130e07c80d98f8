// Package xdsconfig is the control plane's configuration: the XDS_* environment variables, their
// defaults (in the tags) and their checks. The control plane loads it at start; devstack fills
// it for the control plane it runs. It links nothing of the edge's runtime.
package xdsconfig

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/tvvote/voting/envvars"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/edgesettings"
)

// Config is everything the control plane reads from its environment.
type Config struct {
	// DatabaseURL is the PostgreSQL DSN of the elections (required).
	DatabaseURL string `env:"XDS_DATABASE_URL"`
	// GRPCAddr is where ADS is served.
	GRPCAddr string `env:"XDS_GRPC_ADDR" envDefault:"127.0.0.1:18000"`
	// GRPCTLS serves ADS over mutual TLS; without its three files, in plaintext.
	GRPCTLS GRPCTLSConfig
	// ListenerAddress is the IP Envoy's public listener binds (0.0.0.0 in a deployment).
	ListenerAddress string `env:"XDS_LISTENER_ADDRESS" envDefault:"127.0.0.1"`
	// ListenerPort is the public listener's port; a node may name its own in its metadata.
	ListenerPort int `env:"XDS_LISTENER_PORT" envDefault:"8080"`
	// ResultsAddr is host:port of the results worker.
	ResultsAddr string `env:"XDS_RESULTS_ADDR" envDefault:"127.0.0.1:8082"`
	// StatusAddr is host:port of the vote-status endpoint the filter asks without a Redis key; empty: ResultsAddr.
	StatusAddr string `env:"XDS_STATUS_ADDR"`
	// AdminAddr is where the admin API listens.
	AdminAddr string `env:"XDS_ADMIN_ADDR" envDefault:"127.0.0.1:18001"`
	// AdminUpstreamAddr is how Envoy reaches the admin API; empty: AdminAddr, 127.0.0.1 for an unspecified host.
	AdminUpstreamAddr string `env:"XDS_ADMIN_UPSTREAM_ADDR"`
	// Siteverify locates a siteverify-compatible captcha service; without its address there is none.
	Siteverify SiteverifyConfig
	// MetricsAddr serves Prometheus /metrics; empty: not served.
	MetricsAddr string `env:"XDS_METRICS_ADDR"`
	// JWTIssuer is the iss viewer tokens must carry at the edge (required; Auth0: https://TENANT/).
	JWTIssuer string `env:"XDS_JWT_ISSUER"`
	// JWTAudience is the aud viewer tokens must carry at the edge (required; the API identifier).
	JWTAudience string `env:"XDS_JWT_AUDIENCE"`
	// JWKSURL is where the edge and the admin API fetch the token keys (required).
	JWKSURL string `env:"XDS_JWT_JWKS_URL"`
	// JWTHomeRegionClaim names a token claim with the viewer's home region in a multi-region fleet; without it (or the claim), the home is hashed from the viewer id.
	JWTHomeRegionClaim string `env:"XDS_JWT_HOME_REGION_CLAIM"`
	// RedisAddr is host:port of the edge's dedup Redis (required); with RedisCluster, seed nodes, comma-separated, or the configuration endpoint.
	RedisAddr string `env:"XDS_REDIS_ADDR"`
	// RedisCluster says RedisAddr is a Redis Cluster (ElastiCache in cluster mode).
	RedisCluster bool `env:"XDS_REDIS_CLUSTER"`
	// RedisTLS encrypts the edge's connections to Redis (ElastiCache encryption in transit).
	RedisTLS bool `env:"XDS_REDIS_TLS"`
	// RedisAuthFile is the absolute path, on the Envoy hosts, of the Redis AUTH token; only the path travels in the filter config.
	RedisAuthFile string `env:"XDS_REDIS_AUTH_FILE"`
	// RedisWaitReplicas holds each 200 until this many replicas have the vote's final entry (Redis WAIT), so a failover keeps it; 0: no wait.
	RedisWaitReplicas int `env:"XDS_REDIS_WAIT_REPLICAS"`
	// RedisWaitTimeout bounds that wait; a vote whose replicas lag is answered all the same, and counted.
	RedisWaitTimeout time.Duration `env:"XDS_REDIS_WAIT_TIMEOUT" envDefault:"100ms"`
	// RegionStores are every region's store and queue in a multi-region fleet, as JSON (regions.go); empty: XDS_REDIS_* and XDS_SQS_* serve every edge.
	RegionStores RegionStores `env:"XDS_REGION_STORES"`
	// SQSQueueURL is the vote queue (required).
	SQSQueueURL string `env:"XDS_SQS_QUEUE_URL"`
	// SQSRegion is the vote queue's AWS region (required).
	SQSRegion string `env:"XDS_SQS_REGION"`
	// SQSEndpoint overrides the SQS endpoint, for ElasticMQ; empty: AWS.
	SQSEndpoint string `env:"XDS_SQS_ENDPOINT"`
	// CaptchaMode is the edge's default captcha check: pow, siteverify or off.
	CaptchaMode string `env:"XDS_CAPTCHA_MODE" envDefault:"pow"`
	// PoWSecretFile is the absolute path, on every Envoy host, of the proof-of-work secret (required for pow).
	PoWSecretFile string `env:"XDS_POW_SECRET_FILE"`
	// PoWDifficulty is the leading zero bits of work a challenge requires (1..32).
	PoWDifficulty int `env:"XDS_POW_DIFFICULTY" envDefault:"16"`
	// PerViewer is the default per-viewer rate limit, "max/window" ("0/1s" disables it).
	PerViewer edgeconfig.Limit `env:"XDS_RATE_PER_VIEWER" envDefault:"10/60s"`
	// PerIP is the default per-client-IP rate limit, "max/window" ("0/1s" disables it).
	PerIP edgeconfig.Limit `env:"XDS_RATE_PER_IP" envDefault:"600/60s"`
	// SQSStaticCredentials makes the edge sign with dummy credentials, for ElasticMQ.
	SQSStaticCredentials bool `env:"XDS_SQS_STATIC_CREDENTIALS"`
	// TrustedHops is the default count of proxies whose X-Forwarded-For entry is trusted (0: the peer; 1 behind an ALB).
	TrustedHops int `env:"XDS_TRUSTED_HOPS"`
	// ProxyProtocol is the default for requiring the PROXY protocol on the public listener (behind an NLB sending it).
	ProxyProtocol bool `env:"XDS_PROXY_PROTOCOL"`
	// UpstreamTimeout bounds Envoy's wait for the results worker and the admin API before a 503 (100ms..5m).
	UpstreamTimeout time.Duration `env:"XDS_UPSTREAM_TIMEOUT" envDefault:"15s"`
	// Tracing is Envoy's OpenTelemetry tracer (tracing.go); off without a collector.
	Tracing TracingConfig
}

// GRPCTLSConfig is the control plane's side of ADS over mutual TLS: all three files or none.
// The files are read again when they change, so a rotation needs no restart.
type GRPCTLSConfig struct {
	// CertFile is the absolute path of the server certificate chain (PEM).
	CertFile string `env:"XDS_GRPC_TLS_CERT_FILE"`
	// KeyFile is the absolute path of that certificate's private key (PEM).
	KeyFile string `env:"XDS_GRPC_TLS_KEY_FILE"`
	// ClientCAFile is the absolute path of the CA bundle (PEM) Envoys' client certificates must chain to.
	ClientCAFile string `env:"XDS_GRPC_CLIENT_CA_FILE"`
}

// Enabled says ADS is served over mutual TLS.
func (t GRPCTLSConfig) Enabled() bool {
	return t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != ""
}

// validate checks that the three files come together, as absolute paths.
func (t GRPCTLSConfig) validate() []error {
	if !t.Enabled() {
		return nil
	}
	var errs []error
	for _, f := range []struct{ name, v string }{{"XDS_GRPC_TLS_CERT_FILE", t.CertFile},
		{"XDS_GRPC_TLS_KEY_FILE", t.KeyFile}, {"XDS_GRPC_CLIENT_CA_FILE", t.ClientCAFile}} {
		switch {
		case f.v == "":
			errs = append(errs, fmt.Errorf("%s is required for ADS over mutual TLS: set XDS_GRPC_TLS_CERT_FILE, XDS_GRPC_TLS_KEY_FILE and XDS_GRPC_CLIENT_CA_FILE together, or none", f.name))
		case !filepath.IsAbs(f.v):
			errs = append(errs, fmt.Errorf("%s=%q must be an absolute path", f.name, f.v))
		}
	}
	return errs
}

// SiteverifyConfig is the captcha service of siteverify mode.
type SiteverifyConfig struct {
	// Addr is host:port of the service; empty: none, and the other XDS_SITEVERIFY_* are not read.
	Addr string `env:"XDS_SITEVERIFY_ADDR"`
	// Host is the :authority sent and the TLS name checked; empty: the host of Addr.
	Host string `env:"XDS_SITEVERIFY_HOST"`
	// Path is the siteverify path, e.g. /turnstile/v0/siteverify (required with Addr).
	Path string `env:"XDS_SITEVERIFY_PATH"`
	// SecretFile is the absolute path, on every Envoy host, of the site secret (required with Addr).
	SecretFile string `env:"XDS_SITEVERIFY_SECRET_FILE"`
	// TLS makes Envoy call the service over TLS.
	TLS bool `env:"XDS_SITEVERIFY_TLS"`
	// CAFile verifies the service's certificate; empty: Debian's CA bundle.
	CAFile string `env:"XDS_SITEVERIFY_CA_FILE"`
	// MinScore is the score a score-based answer (reCAPTCHA v3) must reach, 0..1.
	MinScore float64 `env:"XDS_SITEVERIFY_MIN_SCORE"`
	// TimeoutMs bounds the call, 1..60000 ms.
	TimeoutMs int `env:"XDS_SITEVERIFY_TIMEOUT_MS"`
}

// parsers read the rate limits, by the one rule of a limit (edgeconfig.ParseLimit).
var parsers = envvars.Parsers{
	reflect.TypeFor[edgeconfig.Limit](): func(v string) (any, error) { return edgeconfig.ParseLimit(v) },
	reflect.TypeFor[RegionStores]():     func(v string) (any, error) { return ParseRegionStores(v) },
}

// refusedSecrets were read once. A secret in the environment would travel in the filter
// config, which Envoy's admin /config_dump shows, so they are refused by name.
var refusedSecrets = []string{"XDS_POW_SECRET", "XDS_SITEVERIFY_SECRET"}

// Load reads the control plane's configuration through lookup (os.LookupEnv, or a map in tests;
// an empty variable is unset) and reports every problem in one error.
func Load(lookup func(string) (string, bool)) (Config, error) {
	read := lookup
	// Without a siteverify service its other settings are not read, nor checked.
	if v, _ := lookup("XDS_SITEVERIFY_ADDR"); v == "" {
		read = func(name string) (string, bool) {
			if strings.HasPrefix(name, "XDS_SITEVERIFY_") {
				return "", false
			}
			return lookup(name)
		}
	}
	c, problems := envvars.Parse[Config](read, parsers)
	for _, name := range refusedSecrets {
		if v, _ := lookup(name); v != "" {
			problems = append(problems, fmt.Errorf("%s is not read: put the secret in a file on every Envoy host and set %s_FILE", name, name))
		}
	}
	if c.StatusAddr == "" {
		c.StatusAddr = c.ResultsAddr
	}
	if c.AdminUpstreamAddr == "" {
		c.AdminUpstreamAddr = upstreamOf(c.AdminAddr)
	}
	if sv := &c.Siteverify; sv.Addr != "" && sv.Host == "" {
		sv.Host, _, _ = net.SplitHostPort(sv.Addr)
	}
	if err := envvars.Check("control plane", append(problems, c.Validate())...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Defaults is the configuration of an empty environment, before Load's checks.
func Defaults() Config { return envvars.Defaults[Config](parsers) }

// Validate reports every setting the control plane cannot run with, in one error.
func (c Config) Validate() error {
	var errs []error
	required := func(name, v string) {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
	}
	hostPort := func(name, v string) {
		if v == "" {
			return
		}
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("%s=%q must be host:port", name, v))
		}
	}
	required("XDS_DATABASE_URL", c.DatabaseURL)
	hostPort("XDS_GRPC_ADDR", c.GRPCAddr)
	if c.ListenerPort < 1 || c.ListenerPort > 65535 {
		errs = append(errs, fmt.Errorf("XDS_LISTENER_PORT=%d must be a port 1-65535", c.ListenerPort))
	}
	if c.ListenerAddress != "" && net.ParseIP(c.ListenerAddress) == nil {
		errs = append(errs, fmt.Errorf("XDS_LISTENER_ADDRESS=%q must be an IP address", c.ListenerAddress))
	}
	hostPort("XDS_RESULTS_ADDR", c.ResultsAddr)
	hostPort("XDS_STATUS_ADDR", c.StatusAddr)
	hostPort("XDS_METRICS_ADDR", c.MetricsAddr)
	hostPort("XDS_ADMIN_ADDR", c.AdminAddr)
	hostPort("XDS_ADMIN_UPSTREAM_ADDR", c.AdminUpstreamAddr)
	required("XDS_JWT_ISSUER", c.JWTIssuer)
	required("XDS_JWT_AUDIENCE", c.JWTAudience)
	required("XDS_JWT_JWKS_URL", c.JWKSURL)
	if len(c.RegionStores) > 0 {
		errs = append(errs, c.RegionStores.validate()...)
		if c.RedisAddr != "" || c.SQSQueueURL != "" {
			errs = append(errs, errors.New("XDS_REGION_STORES names every region's store and queue: leave XDS_REDIS_ADDR and XDS_SQS_QUEUE_URL unset"))
		}
	} else {
		required("XDS_REDIS_ADDR", c.RedisAddr)
		required("XDS_SQS_QUEUE_URL", c.SQSQueueURL)
		required("XDS_SQS_REGION", c.SQSRegion)
	}
	if c.RedisCluster {
		for _, seed := range strings.Split(c.RedisAddr, ",") {
			hostPort("XDS_REDIS_ADDR", strings.TrimSpace(seed))
		}
	} else {
		hostPort("XDS_REDIS_ADDR", c.RedisAddr)
	}
	if c.RedisAuthFile != "" && !filepath.IsAbs(c.RedisAuthFile) {
		errs = append(errs, fmt.Errorf("XDS_REDIS_AUTH_FILE=%q must be an absolute path", c.RedisAuthFile))
	}
	if c.RedisWaitReplicas < 0 || c.RedisWaitReplicas > 5 {
		errs = append(errs, fmt.Errorf("XDS_REDIS_WAIT_REPLICAS=%d must be 0..5", c.RedisWaitReplicas))
	}
	if c.RedisWaitTimeout < time.Millisecond || c.RedisWaitTimeout > 5*time.Second {
		errs = append(errs, fmt.Errorf("XDS_REDIS_WAIT_TIMEOUT=%s must be a duration of 1ms..5s", c.RedisWaitTimeout))
	}
	if c.CaptchaMode == edgeconfig.CaptchaPoW {
		required("XDS_POW_SECRET_FILE", c.PoWSecretFile)
	}
	if c.PoWSecretFile != "" && !filepath.IsAbs(c.PoWSecretFile) {
		errs = append(errs, fmt.Errorf("XDS_POW_SECRET_FILE=%q must be an absolute path", c.PoWSecretFile))
	}
	if c.PoWDifficulty < 1 || c.PoWDifficulty > 32 {
		errs = append(errs, fmt.Errorf("XDS_POW_DIFFICULTY=%d must be 1..32", c.PoWDifficulty))
	}
	// Limits set in code rather than parsed get the same one rule.
	for name, l := range map[string]edgeconfig.Limit{"XDS_RATE_PER_VIEWER": c.PerViewer, "XDS_RATE_PER_IP": c.PerIP} {
		if err := l.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %v", name, l, err))
		}
	}
	if c.TrustedHops < 0 || c.TrustedHops > edgesettings.MaxTrustedHops {
		errs = append(errs, fmt.Errorf("XDS_TRUSTED_HOPS=%d must be 0..%d", c.TrustedHops, edgesettings.MaxTrustedHops))
	}
	if c.UpstreamTimeout < 100*time.Millisecond || c.UpstreamTimeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("XDS_UPSTREAM_TIMEOUT=%s must be a duration of 100ms..5m", c.UpstreamTimeout))
	}
	errs = append(errs, c.Siteverify.validate()...)
	errs = append(errs, c.Tracing.validate()...)
	errs = append(errs, c.GRPCTLS.validate()...)
	switch c.CaptchaMode {
	case edgeconfig.CaptchaPoW, edgeconfig.CaptchaOff:
	case edgeconfig.CaptchaSiteverify:
		if c.Siteverify.Addr == "" {
			errs = append(errs, errors.New("XDS_CAPTCHA_MODE=siteverify needs XDS_SITEVERIFY_ADDR"))
		}
	default:
		errs = append(errs, fmt.Errorf("XDS_CAPTCHA_MODE=%q must be pow, siteverify or off", c.CaptchaMode))
	}
	return envvars.Check("control plane", errs...)
}

// validate checks the siteverify settings; without an address there is nothing to check.
func (sv SiteverifyConfig) validate() []error {
	if sv.Addr == "" {
		return nil
	}
	var errs []error
	if _, port, err := net.SplitHostPort(sv.Addr); err != nil || port == "" {
		errs = append(errs, fmt.Errorf("XDS_SITEVERIFY_ADDR=%q must be host:port", sv.Addr))
	}
	if sv.Path == "" || sv.Path[0] != '/' {
		errs = append(errs, errors.New("XDS_SITEVERIFY_PATH (e.g. /turnstile/v0/siteverify) is required with XDS_SITEVERIFY_ADDR"))
	}
	if !filepath.IsAbs(sv.SecretFile) {
		errs = append(errs, errors.New("XDS_SITEVERIFY_SECRET_FILE (an absolute path on the Envoy hosts) is required with XDS_SITEVERIFY_ADDR"))
	}
	if sv.MinScore < 0 || sv.MinScore > 1 {
		errs = append(errs, fmt.Errorf("XDS_SITEVERIFY_MIN_SCORE=%g must be 0..1", sv.MinScore))
	}
	// 0 is unset.
	if sv.TimeoutMs < 0 || sv.TimeoutMs > 60000 {
		errs = append(errs, fmt.Errorf("XDS_SITEVERIFY_TIMEOUT_MS=%d must be 1..60000", sv.TimeoutMs))
	}
	return errs
}

// upstreamOf is a listen address as a peer dials it: an unspecified host means this host.
func upstreamOf(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// AdminClient is the environment of `controlplane edge-settings`, the admin API's client.
type AdminClient struct {
	// URL is the admin API's base URL: Envoy's public listener, or the control plane's XDS_ADMIN_ADDR.
	URL string `env:"XDS_ADMIN_URL" envDefault:"http://127.0.0.1:8080"`
	// Token is a bearer token with the admin:elections permission (or the -token flag).
	Token string `env:"XDS_ADMIN_TOKEN"`
}

// LoadAdminClient reads the edge-settings client's environment; its flags take precedence.
func LoadAdminClient(lookup func(string) (string, bool)) (AdminClient, error) {
	c, problems := envvars.Parse[AdminClient](lookup, nil)
	return c, envvars.Check("edge-settings", problems...)
}

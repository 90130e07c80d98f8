package main

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/edgesettings"
	"github.com/tvvote/voting/xds/snapshot"
)

// Config is everything the control plane reads from its environment. Defaults live in
// loadConfig and nowhere else.
type Config struct {
	// DatabaseURL is the PostgreSQL DSN of the elections (XDS_DATABASE_URL, required).
	DatabaseURL string
	// GRPCAddr is where ADS is served (XDS_GRPC_ADDR).
	GRPCAddr string
	// ListenerAddress is the IP Envoy's public listener binds (XDS_LISTENER_ADDRESS, default
	// 127.0.0.1; 0.0.0.0 in a deployment).
	ListenerAddress string
	// ListenerPort is the port of Envoy's public listener (XDS_LISTENER_PORT); a node may name
	// its own in its metadata (listener_port), for several edges on one host.
	ListenerPort int
	// ResultsAddr is host:port of the results worker (XDS_RESULTS_ADDR).
	ResultsAddr string
	// StatusAddr is host:port of the vote-status endpoint the filter asks when Redis has no key
	// (XDS_STATUS_ADDR, default XDS_RESULTS_ADDR): the results worker answers it.
	StatusAddr string
	// AdminAddr is where the admin API listens (XDS_ADMIN_ADDR, default 127.0.0.1:18001).
	AdminAddr string
	// AdminUpstreamAddr is how Envoy reaches the admin API (XDS_ADMIN_UPSTREAM_ADDR, default
	// XDS_ADMIN_ADDR, with 127.0.0.1 for an unspecified host).
	AdminUpstreamAddr string
	// Siteverify locates a siteverify-compatible captcha service (XDS_SITEVERIFY_ADDR host:port,
	// XDS_SITEVERIFY_HOST default the host of the address, XDS_SITEVERIFY_PATH,
	// XDS_SITEVERIFY_SECRET_FILE, XDS_SITEVERIFY_TLS, XDS_SITEVERIFY_CA_FILE,
	// XDS_SITEVERIFY_MIN_SCORE, XDS_SITEVERIFY_TIMEOUT_MS); empty address: none.
	Siteverify SiteverifyConfig
	// MetricsAddr serves Prometheus /metrics; empty disables it (XDS_METRICS_ADDR).
	MetricsAddr string
	// JWTIssuer, JWTAudience and JWKSURL say how the edge verifies viewer tokens
	// (XDS_JWT_ISSUER, XDS_JWT_AUDIENCE, XDS_JWT_JWKS_URL, required).
	JWTIssuer   string
	JWTAudience string
	JWKSURL     string
	// RedisAddr is host:port of the edge's dedup Redis (XDS_REDIS_ADDR, required).
	RedisAddr string
	// SQSQueueURL and SQSRegion locate the vote queue (XDS_SQS_QUEUE_URL, XDS_SQS_REGION, required).
	SQSQueueURL string
	SQSRegion   string
	// SQSEndpoint overrides the SQS endpoint, for ElasticMQ (XDS_SQS_ENDPOINT).
	SQSEndpoint string
	// CaptchaMode is the edge's captcha check: pow, siteverify or off (XDS_CAPTCHA_MODE,
	// default pow).
	CaptchaMode string
	// PoWSecretFile is the path, on every Envoy host, of the file holding the secret that signs
	// proof-of-work challenges (XDS_POW_SECRET_FILE, required for pow). The control plane never
	// reads it: only the path travels in the filter config.
	PoWSecretFile string
	// PoWDifficulty is the leading zero bits of work required (XDS_POW_DIFFICULTY, default 16).
	PoWDifficulty int
	// PerViewer and PerIP are the edge's rate limits as "max/window", e.g. "5/60s"
	// (XDS_RATE_PER_VIEWER default 10/60s, XDS_RATE_PER_IP default 600/60s; "0/1s" disables).
	PerViewer edgeconfig.Limit
	PerIP     edgeconfig.Limit
	// SQSStaticCredentials makes the edge use dummy credentials, for ElasticMQ (XDS_SQS_STATIC_CREDENTIALS).
	SQSStaticCredentials bool
	// TrustedHops is the default number of proxies in front of the edge whose X-Forwarded-For
	// entries are trusted for the client address (XDS_TRUSTED_HOPS, default 0: the connection's
	// peer; 1 behind an ALB); the live edge settings override it per region.
	TrustedHops int
	// ProxyProtocol is the default for requiring the PROXY protocol on the public listener
	// (XDS_PROXY_PROTOCOL, default false; true behind an NLB that sends it).
	ProxyProtocol bool
	// UpstreamTimeout bounds how long Envoy waits for the results worker and the admin API
	// before it answers 503 (XDS_UPSTREAM_TIMEOUT, default 15s).
	UpstreamTimeout time.Duration
}

// SiteverifyConfig is the captcha service of siteverify mode.
type SiteverifyConfig struct {
	Addr       string
	Host       string
	Path       string
	SecretFile string
	TLS        bool
	CAFile     string
	MinScore   float64
	TimeoutMs  int
}

// loadConfig reads the environment through getenv and reports every problem at once.
func loadConfig(getenv func(string) string) (Config, error) {
	c := Config{
		GRPCAddr:        "127.0.0.1:18000",
		AdminAddr:       "127.0.0.1:18001",
		ListenerPort:    8080,
		ResultsAddr:     "127.0.0.1:8082",
		CaptchaMode:     "pow",
		PoWDifficulty:   16,
		PerViewer:       edgeconfig.Limit{Max: 10, WindowSeconds: 60},
		PerIP:           edgeconfig.Limit{Max: 600, WindowSeconds: 60},
		UpstreamTimeout: 15 * time.Second,
	}
	var errs []error
	str := func(name string, dst *string, required bool) {
		if v := getenv(name); v != "" {
			*dst = v
		} else if required {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
	}
	addr := func(name string, dst *string, required bool) {
		str(name, dst, required)
		if *dst == "" {
			return
		}
		if _, port, err := net.SplitHostPort(*dst); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("%s=%q must be host:port", name, *dst))
		}
	}
	str("XDS_DATABASE_URL", &c.DatabaseURL, true)
	addr("XDS_GRPC_ADDR", &c.GRPCAddr, false)
	if v := getenv("XDS_LISTENER_PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("XDS_LISTENER_PORT=%q must be a port 1-65535", v))
		}
		c.ListenerPort = p
	}
	str("XDS_LISTENER_ADDRESS", &c.ListenerAddress, false)
	if c.ListenerAddress != "" && net.ParseIP(c.ListenerAddress) == nil {
		errs = append(errs, fmt.Errorf("XDS_LISTENER_ADDRESS=%q must be an IP address", c.ListenerAddress))
	}
	addr("XDS_RESULTS_ADDR", &c.ResultsAddr, false)
	c.StatusAddr = c.ResultsAddr
	addr("XDS_STATUS_ADDR", &c.StatusAddr, false)
	addr("XDS_METRICS_ADDR", &c.MetricsAddr, false)
	addr("XDS_ADMIN_ADDR", &c.AdminAddr, false)
	c.AdminUpstreamAddr = upstreamOf(c.AdminAddr)
	addr("XDS_ADMIN_UPSTREAM_ADDR", &c.AdminUpstreamAddr, false)
	str("XDS_JWT_ISSUER", &c.JWTIssuer, true)
	str("XDS_JWT_AUDIENCE", &c.JWTAudience, true)
	str("XDS_JWT_JWKS_URL", &c.JWKSURL, true)
	addr("XDS_REDIS_ADDR", &c.RedisAddr, true)
	str("XDS_SQS_QUEUE_URL", &c.SQSQueueURL, true)
	str("XDS_SQS_REGION", &c.SQSRegion, true)
	str("XDS_SQS_ENDPOINT", &c.SQSEndpoint, false)
	if v := getenv("XDS_SQS_STATIC_CREDENTIALS"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("XDS_SQS_STATIC_CREDENTIALS=%q must be true or false", v))
		}
		c.SQSStaticCredentials = b
	}
	str("XDS_CAPTCHA_MODE", &c.CaptchaMode, false)
	// Secrets reach the edge as files only: a secret in the environment would travel in the
	// filter config, which Envoy's /config_dump shows.
	for _, name := range []string{"XDS_POW_SECRET", "XDS_SITEVERIFY_SECRET"} {
		if getenv(name) != "" {
			errs = append(errs, fmt.Errorf("%s is not read: put the secret in a file on every Envoy host and set %s_FILE", name, name))
		}
	}
	str("XDS_POW_SECRET_FILE", &c.PoWSecretFile, c.CaptchaMode == "pow")
	if c.PoWSecretFile != "" && !filepath.IsAbs(c.PoWSecretFile) {
		errs = append(errs, fmt.Errorf("XDS_POW_SECRET_FILE=%q must be an absolute path", c.PoWSecretFile))
	}
	if v := getenv("XDS_POW_DIFFICULTY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 32 {
			errs = append(errs, fmt.Errorf("XDS_POW_DIFFICULTY=%q must be 1..32", v))
		}
		c.PoWDifficulty = n
	}
	errs = append(errs, c.loadSiteverify(getenv, addr)...)
	if v := getenv("XDS_TRUSTED_HOPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > edgesettings.MaxTrustedHops {
			errs = append(errs, fmt.Errorf("XDS_TRUSTED_HOPS=%q must be 0..%d", v, edgesettings.MaxTrustedHops))
		}
		c.TrustedHops = n
	}
	if v := getenv("XDS_PROXY_PROTOCOL"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("XDS_PROXY_PROTOCOL=%q must be true or false", v))
		}
		c.ProxyProtocol = b
	}
	if v := getenv("XDS_UPSTREAM_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 100*time.Millisecond || d > 5*time.Minute {
			errs = append(errs, fmt.Errorf("XDS_UPSTREAM_TIMEOUT=%q must be a duration of 100ms..5m", v))
		}
		c.UpstreamTimeout = d
	}
	for name, dst := range map[string]*edgeconfig.Limit{"XDS_RATE_PER_VIEWER": &c.PerViewer, "XDS_RATE_PER_IP": &c.PerIP} {
		if v := getenv(name); v != "" {
			l, err := parseLimit(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", name, v, err))
			}
			*dst = l
		}
	}
	switch c.CaptchaMode {
	case edgeconfig.CaptchaPoW, edgeconfig.CaptchaOff:
	case edgeconfig.CaptchaSiteverify:
		if c.Siteverify.Addr == "" {
			errs = append(errs, errors.New("XDS_CAPTCHA_MODE=siteverify needs XDS_SITEVERIFY_ADDR"))
		}
	default:
		errs = append(errs, fmt.Errorf("XDS_CAPTCHA_MODE=%q must be pow, siteverify or off", c.CaptchaMode))
	}
	if len(errs) > 0 {
		// One line, so the JSON log shows every problem readably.
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		return Config{}, fmt.Errorf("invalid control plane config: %s", strings.Join(msgs, "; "))
	}
	return c, nil
}

// loadSiteverify reads the XDS_SITEVERIFY_* variables; addr is loadConfig's host:port reader.
func (c *Config) loadSiteverify(getenv func(string) string, addr func(string, *string, bool)) []error {
	var errs []error
	sv := &c.Siteverify
	addr("XDS_SITEVERIFY_ADDR", &sv.Addr, false)
	if sv.Addr == "" {
		return nil
	}
	sv.Host, _, _ = net.SplitHostPort(sv.Addr)
	for name, dst := range map[string]*string{"XDS_SITEVERIFY_HOST": &sv.Host, "XDS_SITEVERIFY_PATH": &sv.Path,
		"XDS_SITEVERIFY_SECRET_FILE": &sv.SecretFile, "XDS_SITEVERIFY_CA_FILE": &sv.CAFile} {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	if sv.Path == "" || sv.Path[0] != '/' {
		errs = append(errs, errors.New("XDS_SITEVERIFY_PATH (e.g. /turnstile/v0/siteverify) is required with XDS_SITEVERIFY_ADDR"))
	}
	if !filepath.IsAbs(sv.SecretFile) {
		errs = append(errs, errors.New("XDS_SITEVERIFY_SECRET_FILE (an absolute path on the Envoy hosts) is required with XDS_SITEVERIFY_ADDR"))
	}
	if v := getenv("XDS_SITEVERIFY_TLS"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("XDS_SITEVERIFY_TLS=%q must be true or false", v))
		}
		sv.TLS = b
	}
	if v := getenv("XDS_SITEVERIFY_MIN_SCORE"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1 {
			errs = append(errs, fmt.Errorf("XDS_SITEVERIFY_MIN_SCORE=%q must be 0..1", v))
		}
		sv.MinScore = f
	}
	if v := getenv("XDS_SITEVERIFY_TIMEOUT_MS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 60000 {
			errs = append(errs, fmt.Errorf("XDS_SITEVERIFY_TIMEOUT_MS=%q must be 1..60000", v))
		}
		sv.TimeoutMs = n
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

// snapshotSettings is the node-independent part of every snapshot.
func (c Config) snapshotSettings() snapshot.Settings {
	s := snapshot.Settings{
		ListenerAddress: c.ListenerAddress,
		ListenerPort:    c.ListenerPort,
		ResultsAddr:     c.ResultsAddr,
		StatusAddr:      c.StatusAddr,
		AdminAddr:       c.AdminUpstreamAddr,
		UpstreamTimeout: c.UpstreamTimeout,
		TrustedHops:     c.TrustedHops,
		ProxyProtocol:   c.ProxyProtocol,
		Filter: edgeconfig.Config{
			JWT:    edgeconfig.JWTConfig{Issuer: c.JWTIssuer, Audience: c.JWTAudience, JWKSURL: c.JWKSURL},
			Redis:  edgeconfig.RedisConfig{Addr: c.RedisAddr},
			Limits: edgeconfig.Limits{PerViewer: c.PerViewer, PerIP: c.PerIP},
			Captcha: edgeconfig.CaptchaConfig{
				Mode: c.CaptchaMode,
				PoW:  edgeconfig.PoWConfig{SecretFile: c.PoWSecretFile, Difficulty: c.PoWDifficulty},
			},
			SQS: edgeconfig.SQSConfig{
				QueueURL:          c.SQSQueueURL,
				Region:            c.SQSRegion,
				Endpoint:          c.SQSEndpoint,
				StaticCredentials: c.SQSStaticCredentials,
			},
		},
	}
	if sv := c.Siteverify; sv.Addr != "" {
		s.Siteverify = snapshot.SiteverifyUpstream{Addr: sv.Addr, TLS: sv.TLS, SNI: sv.Host, CAFile: sv.CAFile}
		s.Filter.Captcha.Siteverify = edgeconfig.SiteverifyConfig{Cluster: snapshot.SiteverifyCluster, Host: sv.Host,
			Path: sv.Path, SecretFile: sv.SecretFile, MinScore: sv.MinScore, TimeoutMs: sv.TimeoutMs}
	}
	return s
}

// parseLimit reads "max/window", e.g. "5/60s".
func parseLimit(v string) (edgeconfig.Limit, error) {
	maxS, winS, ok := strings.Cut(v, "/")
	if !ok {
		return edgeconfig.Limit{}, fmt.Errorf("want max/window, e.g. 5/60s")
	}
	n, err := strconv.Atoi(maxS)
	if err != nil {
		return edgeconfig.Limit{}, fmt.Errorf("max %q is not a count", maxS)
	}
	d, err := time.ParseDuration(winS)
	if err != nil || d%time.Second != 0 {
		return edgeconfig.Limit{}, fmt.Errorf("window %q is not a duration of whole seconds", winS)
	}
	l := edgeconfig.Limit{Max: n, WindowSeconds: int(d / time.Second)}
	return l, l.Validate()
}

package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/tvvote/voting/filters/votefilter"
	"github.com/tvvote/voting/xds/snapshot"
)

// Config is everything the control plane reads from its environment. Defaults live in
// loadConfig and nowhere else.
type Config struct {
	// DatabaseURL is the PostgreSQL DSN of the elections (XDS_DATABASE_URL, required).
	DatabaseURL string
	// GRPCAddr is where ADS is served (XDS_GRPC_ADDR).
	GRPCAddr string
	// ListenerPort is the port of Envoy's public listener (XDS_LISTENER_PORT).
	ListenerPort int
	// ResultsAddr is host:port of the results worker (XDS_RESULTS_ADDR).
	ResultsAddr string
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
	// PoWSecret signs proof-of-work challenges, ≥ 16 bytes (XDS_POW_SECRET, required for pow).
	PoWSecret string
	// PoWDifficulty is the leading zero bits of work required (XDS_POW_DIFFICULTY, default 16).
	PoWDifficulty int
	// PerViewer and PerIP are the edge's rate limits as "max/window", e.g. "5/60s"
	// (XDS_RATE_PER_VIEWER default 10/60s, XDS_RATE_PER_IP default 600/60s; "0/1s" disables).
	PerViewer votefilter.Limit
	PerIP     votefilter.Limit
	// SQSStaticCredentials makes the edge use dummy credentials, for ElasticMQ (XDS_SQS_STATIC_CREDENTIALS).
	SQSStaticCredentials bool
}

// loadConfig reads the environment through getenv and reports every problem at once.
func loadConfig(getenv func(string) string) (Config, error) {
	c := Config{
		GRPCAddr:      "127.0.0.1:18000",
		ListenerPort:  8080,
		ResultsAddr:   "127.0.0.1:8082",
		CaptchaMode:   "pow",
		PoWDifficulty: 16,
		PerViewer:     votefilter.Limit{Max: 10, WindowSeconds: 60},
		PerIP:         votefilter.Limit{Max: 600, WindowSeconds: 60},
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
	addr("XDS_RESULTS_ADDR", &c.ResultsAddr, false)
	addr("XDS_METRICS_ADDR", &c.MetricsAddr, false)
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
	str("XDS_POW_SECRET", &c.PoWSecret, c.CaptchaMode == "pow")
	if v := getenv("XDS_POW_DIFFICULTY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 32 {
			errs = append(errs, fmt.Errorf("XDS_POW_DIFFICULTY=%q must be 1..32", v))
		}
		c.PoWDifficulty = n
	}
	for name, dst := range map[string]*votefilter.Limit{"XDS_RATE_PER_VIEWER": &c.PerViewer, "XDS_RATE_PER_IP": &c.PerIP} {
		if v := getenv(name); v != "" {
			l, err := parseLimit(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", name, v, err))
			}
			*dst = l
		}
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

// snapshotSettings is the node-independent part of every snapshot.
func (c Config) snapshotSettings() snapshot.Settings {
	return snapshot.Settings{
		ListenerPort: c.ListenerPort,
		ResultsAddr:  c.ResultsAddr,
		Filter: votefilter.Config{
			JWT:    votefilter.JWTConfig{Issuer: c.JWTIssuer, Audience: c.JWTAudience, JWKSURL: c.JWKSURL},
			Redis:  votefilter.RedisConfig{Addr: c.RedisAddr},
			Limits: votefilter.Limits{PerViewer: c.PerViewer, PerIP: c.PerIP},
			Captcha: votefilter.CaptchaConfig{
				Mode: c.CaptchaMode,
				PoW:  votefilter.PoWConfig{Secret: c.PoWSecret, Difficulty: c.PoWDifficulty},
			},
			SQS: votefilter.SQSConfig{
				QueueURL:          c.SQSQueueURL,
				Region:            c.SQSRegion,
				Endpoint:          c.SQSEndpoint,
				StaticCredentials: c.SQSStaticCredentials,
			},
		},
	}
}

// parseLimit reads "max/window", e.g. "5/60s".
func parseLimit(v string) (votefilter.Limit, error) {
	maxS, winS, ok := strings.Cut(v, "/")
	if !ok {
		return votefilter.Limit{}, fmt.Errorf("want max/window, e.g. 5/60s")
	}
	n, err := strconv.Atoi(maxS)
	if err != nil || n < 0 {
		return votefilter.Limit{}, fmt.Errorf("max %q is not a count", maxS)
	}
	d, err := time.ParseDuration(winS)
	if err != nil || d < time.Second {
		return votefilter.Limit{}, fmt.Errorf("window %q must be a duration of at least 1s", winS)
	}
	return votefilter.Limit{Max: n, WindowSeconds: int(d / time.Second)}, nil
}

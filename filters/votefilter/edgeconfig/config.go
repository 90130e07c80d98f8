// Package edgeconfig is what the control plane sends every Envoy and the vote filter runs: the
// filter's configuration (elections and their windows, limits, captcha, where Redis, SQS and
// the JWKS are), with its one parser and validation. It depends on nothing but contract, so
// the control plane links none of the filter's runtime (Redis, SQS, captcha code).
package edgeconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tvvote/voting/contract"
)

// FilterName is the name the filter is registered under in the dynamic module.
const FilterName = "votefilter"

// LocalReplyDetails are the response code details of every reply the filter sends itself, so
// Envoy's local reply mapping (xds/snapshot) can tell them from Envoy's own and leave them be.
const LocalReplyDetails = "votefilter"

// Config is the filter's configuration, delivered by the control plane as JSON in the
// dynamic_modules filter_config. Every field is validated by Parse.
type Config struct {
	// Region names the Envoy fleet; it is stamped on every queued vote.
	Region string `json:"region"`
	// JWT says how viewer tokens are verified.
	JWT JWTConfig `json:"jwt"`
	// Redis is the dedup store.
	Redis RedisConfig `json:"redis"`
	// SQS is the vote queue.
	SQS SQSConfig `json:"sqs"`
	// PeerRegions are the other regions of a multi-region fleet, with their stores. Every viewer
	// has one home region among Region and these (filters/votefilter/homeregion), whose store
	// admits the viewer's vote and whose queue carries it, whichever region's edge the viewer
	// reaches: one store decides for a viewer, so the fleet admits a viewer once. Empty: this
	// region's store and queue take every vote.
	PeerRegions []RegionStore `json:"peerRegions,omitempty"`
	// Elections are the elections this edge knows, with their candidates and windows.
	Elections []Election `json:"elections"`
	// EnqueueTimeoutMs bounds the Redis + SQS work of one vote; on expiry the viewer gets 503.
	EnqueueTimeoutMs int `json:"enqueueTimeoutMs"`
	// MaxBodyBytes rejects larger vote bodies with 413 before they are parsed.
	MaxBodyBytes int `json:"maxBodyBytes"`
	// Limits are the per-viewer and per-client-IP rate limits on vote attempts.
	Limits Limits `json:"limits"`
	// Captcha says how a vote proves it comes from a person.
	Captcha CaptchaConfig `json:"captcha"`
	// StatusCluster is the Envoy cluster asked for a viewer's vote status when Redis has no
	// key (it answers from PostgreSQL); empty disables the fallback.
	StatusCluster string `json:"statusCluster,omitempty"`
	// Version is the control plane's config version, reported in stats and logs.
	Version string `json:"version,omitempty"`
	// Tracing is set when Envoy traces (its OpenTelemetry tracer); nil: the filter does not
	// touch spans at all.
	Tracing *TracingConfig `json:"tracing,omitempty"`
}

// TracingConfig is the filter's part of the edge's tracing.
type TracingConfig struct {
	// SamplingPercent of votes are traced (0..100): the filter decides for a vote's span, as
	// only a decision it knows lets it put the trace context on the vote's message for
	// exactly the traces that are exported.
	SamplingPercent float64 `json:"samplingPercent"`
}

// Limits are fixed-window rate limits; a Max of 0 disables a limit.
type Limits struct {
	// PerViewer limits vote attempts by one viewer (token sub).
	PerViewer Limit `json:"perViewer"`
	// PerIP limits vote attempts from one client address.
	PerIP Limit `json:"perIp"`
}

// Limit is Max attempts per WindowSeconds; Max 0 disables it.
type Limit struct {
	Max           int `json:"max"`
	WindowSeconds int `json:"windowSeconds"`
}

// MaxWindowSeconds bounds a limit's window: a longer one is almost certainly a typo.
const MaxWindowSeconds = 86400

// Validate is the one check of a limit, wherever it comes from (the control plane's
// environment, the admin API and its table, the filter config): max ≥ 0 and a window of at
// most a day, of at least a second when the limit is on (a disabled limit, max 0, needs none).
func (l Limit) Validate() error {
	if l.Max < 0 {
		return fmt.Errorf("max %d must not be negative (0 disables the limit)", l.Max)
	}
	if l.WindowSeconds < 0 || l.WindowSeconds > MaxWindowSeconds {
		return fmt.Errorf("windowSeconds %d must be 0..%d", l.WindowSeconds, MaxWindowSeconds)
	}
	if l.Max > 0 && l.WindowSeconds == 0 {
		return fmt.Errorf("windowSeconds must be at least 1 when max is %d", l.Max)
	}
	return nil
}

// Window is the limit's window as a duration.
func (l Limit) Window() time.Duration { return time.Duration(l.WindowSeconds) * time.Second }

// String is the limit as people write it, "max/window": 5/60s.
func (l Limit) String() string { return fmt.Sprintf("%d/%ds", l.Max, l.WindowSeconds) }

// ParseLimit reads "max/window" (5/60s; 0/1s disables), as the control plane's environment and
// its edge-settings command take a limit, and applies Validate.
func ParseLimit(v string) (Limit, error) {
	maxS, winS, ok := strings.Cut(v, "/")
	if !ok {
		return Limit{}, fmt.Errorf("want max/window, e.g. 5/60s")
	}
	n, err := strconv.Atoi(maxS)
	if err != nil {
		return Limit{}, fmt.Errorf("max %q is not a count", maxS)
	}
	d, err := time.ParseDuration(winS)
	if err != nil || d%time.Second != 0 {
		return Limit{}, fmt.Errorf("window %q is not a duration of whole seconds", winS)
	}
	l := Limit{Max: n, WindowSeconds: int(d / time.Second)}
	return l, l.Validate()
}

// Captcha modes.
const (
	CaptchaPoW        = "pow"        // self-hosted proof of work
	CaptchaSiteverify = "siteverify" // reCAPTCHA / Turnstile / hCaptcha, through siteverify
	CaptchaOff        = "off"        // load tests only; logged loudly
)

// CaptchaModes are the captcha modes the filter knows.
var CaptchaModes = []string{CaptchaPoW, CaptchaSiteverify, CaptchaOff}

// CaptchaConfig selects and configures the captcha check.
type CaptchaConfig struct {
	// Mode is "pow" (self-hosted proof of work), "siteverify" (reCAPTCHA / Turnstile /
	// hCaptcha) or "off" (load tests only; logged loudly).
	Mode string `json:"mode"`
	// PoW configures the proof-of-work mode.
	PoW PoWConfig `json:"pow,omitempty"`
	// Siteverify configures the third-party mode.
	Siteverify SiteverifyConfig `json:"siteverify,omitempty"`
}

// PoWConfig configures the self-hosted proof of work.
type PoWConfig struct {
	// SecretFile is the path, on the Envoy host, of the file holding the secret that signs
	// challenges (at least 16 bytes; every edge of the fleet shares it). The config names the
	// file rather than carrying the secret, so Envoy's /config_dump never shows it; the module
	// reads the file again every second, so replacing it rotates the secret.
	SecretFile string `json:"secretFile"`
	// Difficulty is the number of leading zero bits the work must reach.
	Difficulty int `json:"difficulty"`
	// TTLSeconds is how long a challenge may be solved and used.
	TTLSeconds int `json:"ttlSeconds"`
}

// SiteverifyConfig configures a siteverify-compatible captcha service, called through an
// Envoy cluster (Envoy's own HTTP client, not Go's).
type SiteverifyConfig struct {
	// Cluster is the Envoy cluster of the service.
	Cluster string `json:"cluster"`
	// Host is the :authority sent, e.g. "challenges.cloudflare.com".
	Host string `json:"host"`
	// Path is the siteverify path, e.g. "/turnstile/v0/siteverify".
	Path string `json:"path"`
	// SecretFile is the path, on the Envoy host, of the file holding the site secret; read and
	// followed like PoWConfig.SecretFile.
	SecretFile string `json:"secretFile"`
	// MinScore applies to score-based answers (reCAPTCHA v3).
	MinScore float64 `json:"minScore,omitempty"`
	// TimeoutMs bounds the call.
	TimeoutMs int `json:"timeoutMs,omitempty"`
}

// JWTConfig points at the identity provider (an Auth0 tenant in production).
type JWTConfig struct {
	// Issuer must equal the token's iss claim, e.g. "https://tenant.eu.auth0.com/".
	Issuer string `json:"issuer"`
	// Audience must be one of the token's aud values (the Auth0 API identifier).
	Audience string `json:"audience"`
	// JWKSURL serves the issuer's signing keys.
	JWKSURL string `json:"jwksUrl"`
	// LeewaySeconds tolerates clock skew on exp and nbf.
	LeewaySeconds int `json:"leewaySeconds"`
	// PermissionsClaim names the claim listing the token's permissions (Auth0 RBAC:
	// "permissions").
	PermissionsClaim string `json:"permissionsClaim,omitempty"`
	// AdminPermission is the permission that admin routes require.
	AdminPermission string `json:"adminPermission,omitempty"`
	// HomeRegionClaim names a string claim holding the viewer's home region in a multi-region
	// fleet (package homeregion); a token without it, or naming no region of the fleet, gets
	// the home hashed from its subject.
	HomeRegionClaim string `json:"homeRegionClaim,omitempty"`
}

// RedisConfig locates the dedup store.
type RedisConfig struct {
	// Addr is host:port of the Redis server (or a redis:// URL); with Cluster, the cluster's
	// seed nodes, comma-separated, or its configuration endpoint.
	Addr string `json:"addr"`
	// Cluster says Addr is a Redis Cluster (ElastiCache in cluster mode).
	Cluster bool `json:"cluster,omitempty"`
	// TLS encrypts the connections to the store (ElastiCache encryption in transit).
	TLS bool `json:"tls,omitempty"`
	// AuthTokenFile is the absolute path, on every Envoy host, of the file holding the store's
	// AUTH token; the token itself never travels in the config, which /config_dump shows. It is
	// re-read like the other secrets, and a new token is used from the next connection on.
	AuthTokenFile string `json:"authTokenFile,omitempty"`
	// WaitReplicas, when > 0, holds a vote's 200 until that many replicas have its final
	// entry (Redis WAIT), so a failover cannot forget a confirmed viewer; WaitTimeoutMs bounds
	// the wait (default 100).
	WaitReplicas  int `json:"waitReplicas,omitempty"`
	WaitTimeoutMs int `json:"waitTimeoutMs,omitempty"`
	// DedupTTLSeconds is how long a vote's dedup key lives; it must outlast the election.
	DedupTTLSeconds int `json:"dedupTtlSeconds"`
	// PendingTTLSeconds is how long a reservation whose outcome nobody learned (its edge
	// crashed, its send ended in doubt) holds the viewer: a retry of the same vote takes it
	// over as soon as its attempt's deadline passed, a vote for another candidate waits at most
	// this long. It must exceed enqueueTimeoutMs. Default 30.
	PendingTTLSeconds int `json:"pendingTtlSeconds,omitempty"`
}

// RegionStore is one region's admission store and vote queue.
type RegionStore struct {
	// Name is the region's name, as its edges' Region.
	Name  string      `json:"name"`
	Redis RedisConfig `json:"redis"`
	SQS   SQSConfig   `json:"sqs"`
}

// SQSConfig locates the vote queue.
type SQSConfig struct {
	// QueueURL is the votes queue.
	QueueURL string `json:"queueUrl"`
	// Region is the AWS region of the queue.
	Region string `json:"region"`
	// Endpoint overrides the SQS endpoint (ElasticMQ locally); empty means AWS.
	Endpoint string `json:"endpoint,omitempty"`
	// StaticCredentials uses fixed dummy credentials, for ElasticMQ only.
	StaticCredentials bool `json:"staticCredentials,omitempty"`
}

// Election is what the edge needs to know of one election.
type Election struct {
	// ID is the election uuid.
	ID string `json:"id"`
	// Status is the election's state (DRAFT, SCHEDULED, ACTIVE, CLOSED, CANCELLED).
	Status string `json:"status"`
	// StartDate and EndDate bound the voting window; the edge checks them itself so a slow
	// config push cannot keep a window open.
	StartDate time.Time `json:"startDate"`
	EndDate   time.Time `json:"endDate"`
	// CandidateIDs are the candidates one may vote for.
	CandidateIDs []string `json:"candidateIds"`
}

// Parse decodes and validates a JSON configuration and fills defaults.
func Parse(raw []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("votefilter config: %w", err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("votefilter config: %w", err)
	}
	return &c, nil
}

func (c *Config) validate() error {
	var errs []error
	if c.Region == "" {
		errs = append(errs, errors.New("region is required"))
	}
	if c.JWT.Issuer == "" || c.JWT.Audience == "" || c.JWT.JWKSURL == "" {
		errs = append(errs, errors.New("jwt.issuer, jwt.audience and jwt.jwksUrl are required"))
	}
	seen := make(map[string]bool, len(c.Elections))
	for i, e := range c.Elections {
		if !contract.IsUUID(e.ID) {
			errs = append(errs, fmt.Errorf("elections[%d].id %q is not a uuid", i, e.ID))
		}
		if id := strings.ToLower(e.ID); seen[id] {
			errs = append(errs, fmt.Errorf("elections[%d].id %q appears twice", i, e.ID))
		} else {
			seen[id] = true
		}
		for j, cand := range e.CandidateIDs {
			if !contract.IsUUID(cand) {
				errs = append(errs, fmt.Errorf("elections[%d].candidateIds[%d] %q is not a uuid", i, j, cand))
			}
		}
		if !e.EndDate.After(e.StartDate) {
			errs = append(errs, fmt.Errorf("elections[%d]: endDate must be after startDate", i))
		}
	}
	if c.EnqueueTimeoutMs < 0 || c.MaxBodyBytes < 0 || c.JWT.LeewaySeconds < 0 {
		errs = append(errs, errors.New("enqueueTimeoutMs, maxBodyBytes and jwt.leewaySeconds must not be negative"))
	}
	if c.EnqueueTimeoutMs == 0 {
		c.EnqueueTimeoutMs = 2000
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 4096
	}
	errs = append(errs, c.Redis.check("redis", c.EnqueueTimeoutMs)...)
	errs = append(errs, c.SQS.check("sqs")...)
	names := map[string]bool{c.Region: true}
	for i := range c.PeerRegions {
		p := &c.PeerRegions[i]
		field := fmt.Sprintf("peerRegions[%d]", i)
		if p.Name == "" || names[p.Name] {
			errs = append(errs, fmt.Errorf("%s.name %q must be set and differ from region and the other peers", field, p.Name))
		}
		names[p.Name] = true
		errs = append(errs, p.Redis.check(field+".redis", c.EnqueueTimeoutMs)...)
		errs = append(errs, p.SQS.check(field+".sqs")...)
	}
	if t := c.Tracing; t != nil && (t.SamplingPercent < 0 || t.SamplingPercent > 100) {
		errs = append(errs, fmt.Errorf("tracing.samplingPercent %g must be 0..100", t.SamplingPercent))
	}
	if c.JWT.LeewaySeconds == 0 {
		c.JWT.LeewaySeconds = 30
	}
	if c.JWT.PermissionsClaim == "" {
		c.JWT.PermissionsClaim = "permissions"
	}
	if c.JWT.AdminPermission == "" {
		c.JWT.AdminPermission = contract.PermAdmin
	}
	for name, l := range map[string]Limit{"limits.perViewer": c.Limits.PerViewer, "limits.perIp": c.Limits.PerIP} {
		if err := l.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	switch c.Captcha.Mode {
	case CaptchaOff:
	case "", CaptchaPoW:
		c.Captcha.Mode = CaptchaPoW
		if !filepath.IsAbs(c.Captcha.PoW.SecretFile) {
			errs = append(errs, errors.New("captcha.pow.secretFile must be an absolute path"))
		}
		if c.Captcha.PoW.Difficulty == 0 {
			c.Captcha.PoW.Difficulty = 16
		}
		if c.Captcha.PoW.Difficulty < 1 || c.Captcha.PoW.Difficulty > 32 {
			errs = append(errs, errors.New("captcha.pow.difficulty must be 1..32"))
		}
		if c.Captcha.PoW.TTLSeconds < 0 {
			errs = append(errs, errors.New("captcha.pow.ttlSeconds must not be negative"))
		}
		if c.Captcha.PoW.TTLSeconds == 0 {
			c.Captcha.PoW.TTLSeconds = 300
		}
	case CaptchaSiteverify:
		sv := &c.Captcha.Siteverify
		if sv.Cluster == "" || sv.Host == "" || sv.Path == "" || !filepath.IsAbs(sv.SecretFile) {
			errs = append(errs, errors.New("captcha.siteverify needs cluster, host, path and secretFile (an absolute path)"))
		}
		if sv.TimeoutMs < 0 || sv.MinScore < 0 || sv.MinScore > 1 {
			errs = append(errs, errors.New("captcha.siteverify: timeoutMs must not be negative, minScore must be 0..1"))
		}
		if sv.TimeoutMs == 0 {
			sv.TimeoutMs = 1000
		}
	default:
		errs = append(errs, fmt.Errorf("captcha.mode %q is not one of pow, siteverify, off", c.Captcha.Mode))
	}
	return errors.Join(errs...)
}

// check validates a store's settings under field and fills their defaults.
func (r *RedisConfig) check(field string, enqueueTimeoutMs int) []error {
	var errs []error
	if r.Addr == "" {
		errs = append(errs, fmt.Errorf("%s.addr is required", field))
	}
	if r.DedupTTLSeconds < 0 || r.PendingTTLSeconds < 0 {
		errs = append(errs, fmt.Errorf("%s.dedupTtlSeconds and %[1]s.pendingTtlSeconds must not be negative", field))
	}
	if r.DedupTTLSeconds == 0 {
		r.DedupTTLSeconds = 7 * 24 * 3600
	}
	if r.PendingTTLSeconds == 0 {
		r.PendingTTLSeconds = 30
	}
	if r.WaitReplicas < 0 || r.WaitReplicas > 5 || r.WaitTimeoutMs < 0 || r.WaitTimeoutMs > 5000 {
		errs = append(errs, fmt.Errorf("%s.waitReplicas must be 0..5 and %[1]s.waitTimeoutMs 0..5000", field))
	}
	if r.WaitTimeoutMs == 0 {
		r.WaitTimeoutMs = 100
	}
	if r.AuthTokenFile != "" && !filepath.IsAbs(r.AuthTokenFile) {
		errs = append(errs, fmt.Errorf("%s.authTokenFile %q must be an absolute path", field, r.AuthTokenFile))
	}
	// A reservation must outlive its own attempt, or a slow send could lose the viewer to a
	// second attempt while SQS still takes the first.
	if r.PendingTTLSeconds*1000 < enqueueTimeoutMs+1000 {
		errs = append(errs, fmt.Errorf("%s.pendingTtlSeconds must exceed enqueueTimeoutMs by at least a second", field))
	}
	return errs
}

// check validates a queue's settings under field.
func (q *SQSConfig) check(field string) []error {
	if q.QueueURL == "" || q.Region == "" {
		return []error{fmt.Errorf("%s.queueUrl and %[1]s.region are required", field)}
	}
	return nil
}

// RegionNames are the names of every region of the fleet, this one's first.
func (c *Config) RegionNames() []string {
	out := []string{c.Region}
	for _, p := range c.PeerRegions {
		out = append(out, p.Name)
	}
	return out
}

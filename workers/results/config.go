package results

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Config is the results worker's environment. LoadConfig is the one place that knows the
// variable names and defaults.
type Config struct {
	DatabaseURL string        // RESULTS_DATABASE_URL, required
	ListenAddr  string        // RESULTS_LISTEN_ADDR
	DBTimeout   time.Duration // RESULTS_DB_TIMEOUT: per-request database deadline

	// RedisAddr (RESULTS_REDIS_ADDR) is optional. With it, every count change is published to
	// election:results:{id} (the contract's cache key, shared by all replicas), the per-viewer
	// stream limit holds across replicas, and a cold start can still answer from Redis while
	// PostgreSQL is unreachable.
	RedisAddr string

	// JWT settings for the stream's token and the statistics endpoint. Issuer and audience are
	// both set or both empty; empty disables those two endpoints (they answer 503), so a
	// worker started without an identity provider still serves the public results.
	JWTIssuer   string // RESULTS_JWT_ISSUER, e.g. https://TENANT/ (Auth0 issuers end with /)
	JWTAudience string // RESULTS_JWT_AUDIENCE, the API identifier
	JWKSURL     string // RESULTS_JWT_JWKS_URL, default <issuer>.well-known/jwks.json

	// PollInterval (RESULTS_POLL_INTERVAL) is the safety net behind LISTEN/NOTIFY: every
	// tracked election is re-read this often, which also catches status changes nobody
	// announced.
	PollInterval time.Duration
	// StreamInterval (RESULTS_STREAM_INTERVAL) is the minimum gap between two VOTE_UPDATE
	// messages of one election.
	StreamInterval time.Duration
	// HeartbeatInterval (RESULTS_HEARTBEAT_INTERVAL) is how often every stream gets a HEARTBEAT,
	// so clients and proxies see the connection alive between updates.
	HeartbeatInterval time.Duration
	// MaxStreamsPerViewer (RESULTS_MAX_STREAMS_PER_VIEWER): the contract allows 5.
	MaxStreamsPerViewer int
	// MaxStreams (RESULTS_MAX_STREAMS) caps the WebSockets of this process, so a flood ends in
	// 503s instead of exhausting file descriptors or memory.
	MaxStreams int
	// StreamOrigins (RESULTS_STREAM_ORIGINS, comma-separated host patterns) are the browser
	// origins allowed to open a stream. The default "*" is safe because the stream is
	// authorised by a bearer token in the URL, never by cookies, so a foreign page gains nothing
	// by opening one.
	StreamOrigins []string
}

// Defaults. 8082 is the port in the results contract's servers list.
const (
	DefaultListenAddr          = "127.0.0.1:8082"
	DefaultDBTimeout           = 2 * time.Second
	DefaultPollInterval        = time.Second
	DefaultStreamInterval      = time.Second
	DefaultHeartbeatInterval   = 15 * time.Second
	DefaultMaxStreamsPerViewer = 5
	DefaultMaxStreams          = 50000
)

// LoadConfig reads RESULTS_* through lookup (os.LookupEnv in main, a map in tests), applies
// defaults and validates.
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	get := func(name, def string) string {
		if v, ok := lookup(name); ok && v != "" {
			return v
		}
		return def
	}
	var errs []error
	durVar := func(name string, def time.Duration) time.Duration {
		s := get(name, def.String())
		d, err := time.ParseDuration(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a duration (e.g. 2s, 500ms)", name, s))
		}
		return d
	}
	intVar := func(name string, def int) int {
		s := get(name, strconv.Itoa(def))
		n, err := strconv.Atoi(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not an integer", name, s))
		}
		return n
	}
	cfg := Config{
		DatabaseURL:         get("RESULTS_DATABASE_URL", ""),
		ListenAddr:          get("RESULTS_LISTEN_ADDR", DefaultListenAddr),
		DBTimeout:           durVar("RESULTS_DB_TIMEOUT", DefaultDBTimeout),
		RedisAddr:           get("RESULTS_REDIS_ADDR", ""),
		JWTIssuer:           get("RESULTS_JWT_ISSUER", ""),
		JWTAudience:         get("RESULTS_JWT_AUDIENCE", ""),
		JWKSURL:             get("RESULTS_JWT_JWKS_URL", ""),
		PollInterval:        durVar("RESULTS_POLL_INTERVAL", DefaultPollInterval),
		StreamInterval:      durVar("RESULTS_STREAM_INTERVAL", DefaultStreamInterval),
		HeartbeatInterval:   durVar("RESULTS_HEARTBEAT_INTERVAL", DefaultHeartbeatInterval),
		MaxStreamsPerViewer: intVar("RESULTS_MAX_STREAMS_PER_VIEWER", DefaultMaxStreamsPerViewer),
		MaxStreams:          intVar("RESULTS_MAX_STREAMS", DefaultMaxStreams),
	}
	for _, o := range strings.Split(get("RESULTS_STREAM_ORIGINS", "*"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.StreamOrigins = append(cfg.StreamOrigins, o)
		}
	}
	if cfg.JWKSURL == "" && cfg.JWTIssuer != "" {
		cfg.JWKSURL = strings.TrimSuffix(cfg.JWTIssuer, "/") + "/.well-known/jwks.json"
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// AuthEnabled reports whether tokens can be verified (stream and statistics endpoints).
func (c Config) AuthEnabled() bool { return c.JWTIssuer != "" }

// Validate fails fast on settings the server cannot start with.
func (c Config) Validate() error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("RESULTS_DATABASE_URL is required"))
	}
	if c.ListenAddr == "" {
		errs = append(errs, errors.New("RESULTS_LISTEN_ADDR must not be empty"))
	}
	if c.DBTimeout <= 0 {
		errs = append(errs, fmt.Errorf("RESULTS_DB_TIMEOUT must be positive, got %s", c.DBTimeout))
	}
	if (c.JWTIssuer == "") != (c.JWTAudience == "") {
		errs = append(errs, errors.New("RESULTS_JWT_ISSUER and RESULTS_JWT_AUDIENCE must be set together"))
	}
	for name, d := range map[string]time.Duration{"RESULTS_POLL_INTERVAL": c.PollInterval,
		"RESULTS_STREAM_INTERVAL": c.StreamInterval, "RESULTS_HEARTBEAT_INTERVAL": c.HeartbeatInterval} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	if c.MaxStreamsPerViewer < 1 {
		errs = append(errs, fmt.Errorf("RESULTS_MAX_STREAMS_PER_VIEWER must be at least 1, got %d", c.MaxStreamsPerViewer))
	}
	if c.MaxStreams < 1 {
		errs = append(errs, fmt.Errorf("RESULTS_MAX_STREAMS must be at least 1, got %d", c.MaxStreams))
	}
	return errors.Join(errs...)
}

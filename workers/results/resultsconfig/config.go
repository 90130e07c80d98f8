// Package resultsconfig is the results worker's configuration: the RESULTS_* environment
// variables, their defaults (in the tags) and their checks. It is a package of its own, beside
// results (which calls it Config), so devstack can fill it for the worker it runs while the
// worker's tests run on devstack.
package resultsconfig

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"time"

	"github.com/tvvote/voting/envvars"
)

// Config is the results worker's environment.
type Config struct {
	// DatabaseURL is the PostgreSQL DSN of the votes and counts (required).
	DatabaseURL string `env:"RESULTS_DATABASE_URL"`
	// ListenAddr is where the worker serves HTTP; 8082 is the port in the results contract's servers list.
	ListenAddr string `env:"RESULTS_LISTEN_ADDR" envDefault:"127.0.0.1:8082"`
	// DBTimeout is the database deadline of one request.
	DBTimeout time.Duration `env:"RESULTS_DB_TIMEOUT" envDefault:"2s"`
	// RedisAddr shares counts and stream limits across replicas and serves a cold start without PostgreSQL; empty: none.
	RedisAddr string `env:"RESULTS_REDIS_ADDR"`
	// JWTIssuer is the iss of stream and statistics tokens, e.g. https://TENANT/; empty with JWTAudience: those answer 503.
	JWTIssuer string `env:"RESULTS_JWT_ISSUER"`
	// JWTAudience is the aud of stream and statistics tokens, the API identifier; set with JWTIssuer or not at all.
	JWTAudience string `env:"RESULTS_JWT_AUDIENCE"`
	// JWKSURL is where the token keys are fetched; empty: <issuer>/.well-known/jwks.json.
	JWKSURL string `env:"RESULTS_JWT_JWKS_URL"`
	// PollInterval re-reads every tracked election, the safety net behind LISTEN/NOTIFY and for unannounced status changes.
	PollInterval time.Duration `env:"RESULTS_POLL_INTERVAL" envDefault:"1s"`
	// StreamInterval is the minimum gap between two VOTE_UPDATE messages of one election.
	StreamInterval time.Duration `env:"RESULTS_STREAM_INTERVAL" envDefault:"1s"`
	// HeartbeatInterval is how often every stream gets a HEARTBEAT, so clients and proxies see it alive.
	HeartbeatInterval time.Duration `env:"RESULTS_HEARTBEAT_INTERVAL" envDefault:"15s"`
	// MaxStreamsPerViewer caps one viewer's WebSockets; the contract allows 5.
	MaxStreamsPerViewer int `env:"RESULTS_MAX_STREAMS_PER_VIEWER" envDefault:"5"`
	// MaxStreams caps this process's WebSockets, so a flood ends in 503s rather than exhausted descriptors.
	MaxStreams int `env:"RESULTS_MAX_STREAMS" envDefault:"50000"`
	// StreamOrigins are the browser origins (comma-separated host patterns) that may open a stream; "*" is safe, the token is in the URL.
	StreamOrigins []string `env:"RESULTS_STREAM_ORIGINS" envDefault:"*"`
	// TracingOTLPAddr is host:port of the OTLP gRPC collector HTTP request spans go to; empty: no tracing.
	TracingOTLPAddr string `env:"RESULTS_TRACING_OTLP_ADDR"`
}

// parsers read the list of stream origins leniently: spaces around an origin and empty items
// are dropped, so "a.example, b.example" reads as two origins.
var parsers = envvars.Parsers{
	reflect.TypeFor[[]string](): func(v string) (any, error) {
		var out []string
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				out = append(out, o)
			}
		}
		return out, nil
	},
}

// Load reads RESULTS_* through lookup (os.LookupEnv, or a map in tests; an empty variable is
// unset) and reports every problem in one error.
func Load(lookup func(string) (string, bool)) (Config, error) {
	c, problems := envvars.Parse[Config](lookup, parsers)
	if c.JWKSURL == "" && c.JWTIssuer != "" {
		c.JWKSURL = strings.TrimSuffix(c.JWTIssuer, "/") + "/.well-known/jwks.json"
	}
	if err := envvars.Check("results worker", append(problems, c.Validate())...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Defaults is the configuration of an empty environment: every tag's default.
func Defaults() Config { return envvars.Defaults[Config](parsers) }

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
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"RESULTS_POLL_INTERVAL", c.PollInterval}, {"RESULTS_STREAM_INTERVAL", c.StreamInterval},
		{"RESULTS_HEARTBEAT_INTERVAL", c.HeartbeatInterval},
	} {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", d.name, d.d))
		}
	}
	if c.MaxStreamsPerViewer < 1 {
		errs = append(errs, fmt.Errorf("RESULTS_MAX_STREAMS_PER_VIEWER must be at least 1, got %d", c.MaxStreamsPerViewer))
	}
	if c.TracingOTLPAddr != "" {
		if _, port, err := net.SplitHostPort(c.TracingOTLPAddr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("RESULTS_TRACING_OTLP_ADDR=%q must be host:port", c.TracingOTLPAddr))
		}
	}
	if c.MaxStreams < 1 {
		errs = append(errs, fmt.Errorf("RESULTS_MAX_STREAMS must be at least 1, got %d", c.MaxStreams))
	}
	return envvars.Check("results worker", errs...)
}

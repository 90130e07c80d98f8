// Package processorconfig is the processor's configuration: the PROCESSOR_* environment
// variables, their defaults (in the tags) and their checks. It is a package of its own, beside
// processor (which calls it Config), so devstack can fill it for the processor it runs while the
// processor's tests run on devstack.
package processorconfig

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/tvvote/voting/envvars"
)

// Config is everything the processor needs from its environment.
type Config struct {
	// DatabaseURL is the PostgreSQL DSN the votes are stored in (required).
	DatabaseURL string `env:"PROCESSOR_DATABASE_URL"`
	// SQSEndpoint overrides the AWS endpoint (ElasticMQ locally); empty: AWS SQS.
	SQSEndpoint string `env:"PROCESSOR_SQS_ENDPOINT"`
	// SQSRegion is the queue's AWS region.
	SQSRegion string `env:"PROCESSOR_SQS_REGION" envDefault:"us-east-1"`
	// QueueURL is the vote queue (required).
	QueueURL string `env:"PROCESSOR_QUEUE_URL"`
	// DLQURL is the dead-letter queue, for its depth gauge and replay-dlq; empty: the queue's RedrivePolicy.
	DLQURL string `env:"PROCESSOR_DLQ_URL"`
	// MetricsAddr serves /metrics and /healthz.
	MetricsAddr string `env:"PROCESSOR_METRICS_ADDR" envDefault:"127.0.0.1:9091"`
	// Receivers long-poll the queue side by side; receivers × 10 / receive latency bounds the intake.
	Receivers int `env:"PROCESSOR_RECEIVERS" envDefault:"16"`
	// ReceiveMaxMessages is MaxNumberOfMessages per ReceiveMessage (SQS allows 1..10).
	ReceiveMaxMessages int32 `env:"PROCESSOR_RECEIVE_MAX_MESSAGES" envDefault:"10"`
	// WaitTime is the long-poll WaitTimeSeconds (0s..20s); 20 s, the maximum, means fewer billed empty receives.
	WaitTime time.Duration `env:"PROCESSOR_WAIT_TIME" envDefault:"20s"`
	// VisibilityTimeout overrides the queue's on receive; 0 keeps the queue's (read at start, it paces extensions).
	VisibilityTimeout time.Duration `env:"PROCESSOR_VISIBILITY_TIMEOUT"`
	// BatchMaxMessages closes a transaction batch at this many messages: bigger amortises COMMIT and the count rows.
	BatchMaxMessages int `env:"PROCESSOR_BATCH_MAX_MESSAGES" envDefault:"1000"`
	// BatchMaxWait closes a batch after this long, whichever comes first: what a quiet period adds to live results.
	BatchMaxWait time.Duration `env:"PROCESSOR_BATCH_MAX_WAIT" envDefault:"50ms"`
	// Writers is the number of batch transactions in flight at once, one connection each.
	Writers int `env:"PROCESSOR_WRITERS" envDefault:"2"`
	// Deleters is the number of DeleteMessageBatch calls in flight, off the writers' path: size them as receivers.
	Deleters int `env:"PROCESSOR_DELETERS" envDefault:"16"`
	// PoisonRetryDelay is a poison message's visibility, so it reaches the DLQ in maxReceiveCount × this; 0 keeps it.
	PoisonRetryDelay time.Duration `env:"PROCESSOR_POISON_RETRY_DELAY" envDefault:"5s"`
	// BackoffMin is the shortest jittered pause after a failed receive or transaction.
	BackoffMin time.Duration `env:"PROCESSOR_BACKOFF_MIN" envDefault:"200ms"`
	// BackoffMax is the longest jittered pause after a failed receive or transaction.
	BackoffMax time.Duration `env:"PROCESSOR_BACKOFF_MAX" envDefault:"30s"`
	// DBTimeout bounds one batch transaction, so a hung database cannot pin a writer forever.
	DBTimeout time.Duration `env:"PROCESSOR_DB_TIMEOUT" envDefault:"10s"`
	// ShutdownTimeout bounds SIGTERM's wait for the batches in hand; after it they are rolled back and released.
	ShutdownTimeout time.Duration `env:"PROCESSOR_SHUTDOWN_TIMEOUT" envDefault:"25s"`
	// QueueStatsInterval paces the queue and DLQ depth gauges (GetQueueAttributes).
	QueueStatsInterval time.Duration `env:"PROCESSOR_QUEUE_STATS_INTERVAL" envDefault:"15s"`
	// RedisAddr is the edge's admission store (host:port or redis:// URL), told of stored votes; empty: neither that nor the gap gauge.
	RedisAddr string `env:"PROCESSOR_REDIS_ADDR"`
	// RedisCluster says RedisAddr is a Redis Cluster: seed nodes, comma-separated, or the configuration endpoint.
	RedisCluster bool `env:"PROCESSOR_REDIS_CLUSTER"`
	// DedupTTL is the life of the final dedup keys the processor writes; keep it the edge's redis.dedupTtlSeconds.
	DedupTTL time.Duration `env:"PROCESSOR_DEDUP_TTL" envDefault:"168h"`
	// ReconcileInterval paces the reconciliation gauge.
	ReconcileInterval time.Duration `env:"PROCESSOR_RECONCILE_INTERVAL" envDefault:"10s"`
	// ReconcileClosedWindow keeps closed elections reconciled this long after their end, while the queue drains.
	ReconcileClosedWindow time.Duration `env:"PROCESSOR_RECONCILE_CLOSED_WINDOW" envDefault:"24h"`
	// ReconcileRegion compares the counter with that region's stored votes only (one Redis per region); empty: all.
	ReconcileRegion string `env:"PROCESSOR_RECONCILE_REGION"`
	// TracingOTLPAddr is host:port of the OTLP gRPC collector batch spans go to; empty: no tracing.
	TracingOTLPAddr string `env:"PROCESSOR_TRACING_OTLP_ADDR"`
}

// Load reads the processor's configuration through lookup (os.LookupEnv, or a map in tests; an
// empty variable is unset) and reports every problem in one error.
func Load(lookup func(string) (string, bool)) (Config, error) {
	c, problems := envvars.Parse[Config](lookup, nil)
	// The skeleton's PROCESSOR_BATCH_SIZE meant "messages per receive"; silently ignoring it
	// would hide a stale deployment setting, so name its replacements instead.
	if _, ok := lookup("PROCESSOR_BATCH_SIZE"); ok {
		problems = append(problems, errors.New("PROCESSOR_BATCH_SIZE is gone: use PROCESSOR_RECEIVE_MAX_MESSAGES "+
			"(messages per ReceiveMessage) and PROCESSOR_BATCH_MAX_MESSAGES (messages per transaction)"))
	}
	if err := envvars.Check("processor", append(problems, c.Validate())...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// LoadReplay reads only what replay-dlq needs (the queues), so an operator can run it without
// database credentials.
func LoadReplay(lookup func(string) (string, bool)) (Config, error) {
	// The queue settings are strings, which always parse; the rest is not replay-dlq's business.
	full, _ := envvars.Parse[Config](lookup, nil)
	c := Config{SQSEndpoint: full.SQSEndpoint, SQSRegion: full.SQSRegion, QueueURL: full.QueueURL, DLQURL: full.DLQURL}
	if err := envvars.Check("replay-dlq", c.validateQueue()...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Defaults is the configuration of an empty environment: every tag's default.
func Defaults() Config { return envvars.Defaults[Config](nil) }

// Validate rejects configurations SQS or the processor cannot run with, at start rather than
// at the first receive.
func (c Config) Validate() error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("PROCESSOR_DATABASE_URL is required"))
	}
	errs = append(errs, c.validateQueue()...)
	if c.MetricsAddr == "" {
		errs = append(errs, errors.New("PROCESSOR_METRICS_ADDR must not be empty"))
	}
	if c.Receivers < 1 || c.Receivers > 256 {
		errs = append(errs, fmt.Errorf("PROCESSOR_RECEIVERS must be 1..256, got %d", c.Receivers))
	}
	if c.ReceiveMaxMessages < 1 || c.ReceiveMaxMessages > 10 {
		errs = append(errs, fmt.Errorf("PROCESSOR_RECEIVE_MAX_MESSAGES must be 1..10 (SQS limit), got %d", c.ReceiveMaxMessages))
	}
	if c.WaitTime < 0 || c.WaitTime > 20*time.Second || c.WaitTime%time.Second != 0 {
		errs = append(errs, fmt.Errorf("PROCESSOR_WAIT_TIME must be whole seconds in 0s..20s (SQS limit), got %s", c.WaitTime))
	}
	if c.VisibilityTimeout < 0 || c.VisibilityTimeout > 12*time.Hour || c.VisibilityTimeout%time.Second != 0 {
		errs = append(errs, fmt.Errorf("PROCESSOR_VISIBILITY_TIMEOUT must be whole seconds in 0s..12h, got %s", c.VisibilityTimeout))
	}
	// 10000 keeps one notification split and one statement's arrays reasonable; beyond it the
	// hot vote_counts rows are held longer for no gain in rows per second.
	if c.BatchMaxMessages < 1 || c.BatchMaxMessages > 10000 {
		errs = append(errs, fmt.Errorf("PROCESSOR_BATCH_MAX_MESSAGES must be 1..10000, got %d", c.BatchMaxMessages))
	}
	if c.BatchMaxWait < 0 || c.BatchMaxWait > 5*time.Second {
		errs = append(errs, fmt.Errorf("PROCESSOR_BATCH_MAX_WAIT must be in 0s..5s (it delays live results), got %s", c.BatchMaxWait))
	}
	if c.Writers < 1 || c.Writers > 64 {
		errs = append(errs, fmt.Errorf("PROCESSOR_WRITERS must be 1..64, got %d", c.Writers))
	}
	if c.Deleters < 1 || c.Deleters > 256 {
		errs = append(errs, fmt.Errorf("PROCESSOR_DELETERS must be 1..256, got %d", c.Deleters))
	}
	if c.PoisonRetryDelay < 0 || c.PoisonRetryDelay > 12*time.Hour || c.PoisonRetryDelay%time.Second != 0 {
		errs = append(errs, fmt.Errorf("PROCESSOR_POISON_RETRY_DELAY must be whole seconds in 0s..12h, got %s", c.PoisonRetryDelay))
	}
	if c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("need 0 < PROCESSOR_BACKOFF_MIN (%s) <= PROCESSOR_BACKOFF_MAX (%s)", c.BackoffMin, c.BackoffMax))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"PROCESSOR_DB_TIMEOUT", c.DBTimeout}, {"PROCESSOR_SHUTDOWN_TIMEOUT", c.ShutdownTimeout},
		{"PROCESSOR_QUEUE_STATS_INTERVAL", c.QueueStatsInterval}, {"PROCESSOR_RECONCILE_INTERVAL", c.ReconcileInterval},
		{"PROCESSOR_DEDUP_TTL", c.DedupTTL},
	} {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", d.name, d.d))
		}
	}
	if c.ReconcileClosedWindow < 0 {
		errs = append(errs, fmt.Errorf("PROCESSOR_RECONCILE_CLOSED_WINDOW must not be negative, got %s", c.ReconcileClosedWindow))
	}
	if c.RedisCluster && c.RedisAddr == "" {
		errs = append(errs, errors.New("PROCESSOR_REDIS_CLUSTER needs PROCESSOR_REDIS_ADDR"))
	}
	if c.RedisAddr != "" && strings.Contains(c.RedisAddr, "://") {
		if u, err := url.Parse(c.RedisAddr); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			errs = append(errs, fmt.Errorf("PROCESSOR_REDIS_ADDR %q is neither host:port nor a redis:// or rediss:// URL", redactURL(c.RedisAddr)))
		}
	}
	if c.TracingOTLPAddr != "" {
		if _, port, err := net.SplitHostPort(c.TracingOTLPAddr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("PROCESSOR_TRACING_OTLP_ADDR=%q must be host:port", c.TracingOTLPAddr))
		}
	}
	return envvars.Check("processor", errs...)
}

// validateQueue checks the settings that both the processor and replay-dlq need.
func (c Config) validateQueue() []error {
	var errs []error
	if c.QueueURL == "" {
		errs = append(errs, errors.New("PROCESSOR_QUEUE_URL is required"))
	} else if !absoluteURL(c.QueueURL) {
		errs = append(errs, fmt.Errorf("PROCESSOR_QUEUE_URL %q is not an absolute URL", c.QueueURL))
	}
	if c.DLQURL != "" && !absoluteURL(c.DLQURL) {
		errs = append(errs, fmt.Errorf("PROCESSOR_DLQ_URL %q is not an absolute URL", c.DLQURL))
	}
	if c.SQSEndpoint != "" && !absoluteURL(c.SQSEndpoint) {
		errs = append(errs, fmt.Errorf("PROCESSOR_SQS_ENDPOINT %q is not an absolute URL", c.SQSEndpoint))
	}
	if c.SQSRegion == "" {
		errs = append(errs, errors.New("PROCESSOR_SQS_REGION must not be empty"))
	}
	return errs
}

func absoluteURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme != "" && u.Host != ""
}

// redactURL drops a password from a URL before it goes into an error message or a log.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable>"
	}
	return u.Redacted()
}

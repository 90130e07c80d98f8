package processor

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// Config is everything the processor needs from its environment. LoadConfig is the only place
// that knows the variable names and defaults, so the README, main and tests cannot drift apart.
type Config struct {
	DatabaseURL string // PROCESSOR_DATABASE_URL, required
	// SQSEndpoint overrides the AWS endpoint (ElasticMQ locally). Empty means real AWS SQS.
	SQSEndpoint string
	SQSRegion   string
	QueueURL    string
	MetricsAddr string
	// Receivers is the number of goroutines long-polling the queue concurrently.
	Receivers int
	// BatchSize is MaxNumberOfMessages per ReceiveMessage (SQS allows 1..10).
	BatchSize int32
	// WaitTime is the long-poll WaitTimeSeconds (SQS allows 0..20 s).
	WaitTime time.Duration
	// VisibilityTimeout overrides the queue's visibility timeout on receive; 0 keeps the
	// queue's own setting.
	VisibilityTimeout time.Duration
	// BackoffMin and BackoffMax bound the jittered pause after a failed receive or transaction.
	BackoffMin time.Duration
	BackoffMax time.Duration
	// DBTimeout bounds one batch transaction, so a hung database cannot pin a receiver forever.
	DBTimeout time.Duration
}

// Defaults. WaitTime 20 s is the SQS maximum: fewer empty receives, which SQS bills for.
const (
	DefaultSQSRegion   = "us-east-1"
	DefaultMetricsAddr = "127.0.0.1:9091"
	DefaultReceivers   = 4
	DefaultBatchSize   = 10
	DefaultWaitTime    = 20 * time.Second
	DefaultBackoffMin  = 200 * time.Millisecond
	DefaultBackoffMax  = 30 * time.Second
	DefaultDBTimeout   = 10 * time.Second
)

// LoadConfig reads the PROCESSOR_* variables through lookup (os.LookupEnv in main, a map in
// tests), applies defaults and validates the result.
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	get := func(name, def string) string {
		if v, ok := lookup(name); ok && v != "" {
			return v
		}
		return def
	}
	var errs []error
	intVar := func(name string, def int) int {
		s := get(name, strconv.Itoa(def))
		n, err := strconv.Atoi(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not an integer", name, s))
		}
		return n
	}
	durVar := func(name string, def time.Duration) time.Duration {
		s := get(name, def.String())
		d, err := time.ParseDuration(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a duration (e.g. 20s, 500ms)", name, s))
		}
		return d
	}
	cfg := Config{
		DatabaseURL:       get("PROCESSOR_DATABASE_URL", ""),
		SQSEndpoint:       get("PROCESSOR_SQS_ENDPOINT", ""),
		SQSRegion:         get("PROCESSOR_SQS_REGION", DefaultSQSRegion),
		QueueURL:          get("PROCESSOR_QUEUE_URL", ""),
		MetricsAddr:       get("PROCESSOR_METRICS_ADDR", DefaultMetricsAddr),
		Receivers:         intVar("PROCESSOR_RECEIVERS", DefaultReceivers),
		BatchSize:         int32(intVar("PROCESSOR_BATCH_SIZE", DefaultBatchSize)),
		WaitTime:          durVar("PROCESSOR_WAIT_TIME", DefaultWaitTime),
		VisibilityTimeout: durVar("PROCESSOR_VISIBILITY_TIMEOUT", 0),
		BackoffMin:        durVar("PROCESSOR_BACKOFF_MIN", DefaultBackoffMin),
		BackoffMax:        durVar("PROCESSOR_BACKOFF_MAX", DefaultBackoffMax),
		DBTimeout:         durVar("PROCESSOR_DB_TIMEOUT", DefaultDBTimeout),
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate rejects configurations SQS or the processor cannot run with, at start rather than
// at the first receive.
func (c Config) Validate() error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("PROCESSOR_DATABASE_URL is required"))
	}
	if c.QueueURL == "" {
		errs = append(errs, errors.New("PROCESSOR_QUEUE_URL is required"))
	} else if u, err := url.Parse(c.QueueURL); err != nil || u.Scheme == "" || u.Host == "" {
		errs = append(errs, fmt.Errorf("PROCESSOR_QUEUE_URL %q is not an absolute URL", c.QueueURL))
	}
	if c.SQSEndpoint != "" {
		if u, err := url.Parse(c.SQSEndpoint); err != nil || u.Scheme == "" || u.Host == "" {
			errs = append(errs, fmt.Errorf("PROCESSOR_SQS_ENDPOINT %q is not an absolute URL", c.SQSEndpoint))
		}
	}
	if c.SQSRegion == "" {
		errs = append(errs, errors.New("PROCESSOR_SQS_REGION must not be empty"))
	}
	if c.MetricsAddr == "" {
		errs = append(errs, errors.New("PROCESSOR_METRICS_ADDR must not be empty"))
	}
	if c.Receivers < 1 || c.Receivers > 256 {
		errs = append(errs, fmt.Errorf("PROCESSOR_RECEIVERS must be 1..256, got %d", c.Receivers))
	}
	if c.BatchSize < 1 || c.BatchSize > 10 {
		errs = append(errs, fmt.Errorf("PROCESSOR_BATCH_SIZE must be 1..10 (SQS limit), got %d", c.BatchSize))
	}
	if c.WaitTime < 0 || c.WaitTime > 20*time.Second || c.WaitTime%time.Second != 0 {
		errs = append(errs, fmt.Errorf("PROCESSOR_WAIT_TIME must be whole seconds in 0s..20s (SQS limit), got %s", c.WaitTime))
	}
	if c.VisibilityTimeout < 0 || c.VisibilityTimeout > 12*time.Hour || c.VisibilityTimeout%time.Second != 0 {
		errs = append(errs, fmt.Errorf("PROCESSOR_VISIBILITY_TIMEOUT must be whole seconds in 0s..12h, got %s", c.VisibilityTimeout))
	}
	if c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("need 0 < PROCESSOR_BACKOFF_MIN (%s) <= PROCESSOR_BACKOFF_MAX (%s)", c.BackoffMin, c.BackoffMax))
	}
	if c.DBTimeout <= 0 {
		errs = append(errs, fmt.Errorf("PROCESSOR_DB_TIMEOUT must be positive, got %s", c.DBTimeout))
	}
	return errors.Join(errs...)
}

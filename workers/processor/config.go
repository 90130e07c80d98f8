package processor

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config is everything the processor needs from its environment. LoadConfig is the only place
// that knows the variable names and defaults, so the README, main and tests cannot drift apart.
type Config struct {
	DatabaseURL string // PROCESSOR_DATABASE_URL, required
	// SQSEndpoint overrides the AWS endpoint (ElasticMQ locally). Empty means real AWS SQS.
	SQSEndpoint string // PROCESSOR_SQS_ENDPOINT
	SQSRegion   string // PROCESSOR_SQS_REGION
	QueueURL    string // PROCESSOR_QUEUE_URL, required
	// DLQURL is the dead-letter queue, for the depth gauge and replay-dlq. Empty: found from
	// the queue's RedrivePolicy.
	DLQURL      string // PROCESSOR_DLQ_URL
	MetricsAddr string // PROCESSOR_METRICS_ADDR

	// Receivers is the number of goroutines long-polling the queue concurrently. One receive
	// brings at most 10 messages, so receivers × 10 / (receive latency) bounds the intake.
	Receivers int // PROCESSOR_RECEIVERS
	// ReceiveMaxMessages is MaxNumberOfMessages per ReceiveMessage (SQS allows 1..10).
	ReceiveMaxMessages int32 // PROCESSOR_RECEIVE_MAX_MESSAGES
	// WaitTime is the long-poll WaitTimeSeconds (SQS allows 0..20 s).
	WaitTime time.Duration // PROCESSOR_WAIT_TIME
	// VisibilityTimeout overrides the queue's visibility timeout on receive; 0 keeps the
	// queue's own setting (read once at start, it also paces visibility extensions).
	VisibilityTimeout time.Duration // PROCESSOR_VISIBILITY_TIMEOUT

	// BatchMaxMessages and BatchMaxWait close a transaction batch: whichever comes first.
	// Bigger batches amortise BEGIN/COMMIT and the hot vote_counts rows; the wait bounds the
	// latency a quiet period adds to the live results.
	BatchMaxMessages int           // PROCESSOR_BATCH_MAX_MESSAGES
	BatchMaxWait     time.Duration // PROCESSOR_BATCH_MAX_WAIT
	// Writers is the number of batch transactions in flight at once (one connection each).
	Writers int // PROCESSOR_WRITERS
	// Deleters is the number of DeleteMessageBatch calls in flight at once; deletes run after
	// the commit and off the writers' path, so the next transaction does not wait for them.
	// A delete takes 10 messages like a receive, so size both alike: rate × SQS latency / 10
	// (50k votes/s at 15 ms → 75 of each, over all replicas).
	Deleters int // PROCESSOR_DELETERS
	// PoisonRetryDelay is the visibility given to a poison message so it reaches the DLQ after
	// maxReceiveCount × this delay instead of × the full visibility timeout. 0 keeps the
	// message's current visibility.
	PoisonRetryDelay time.Duration // PROCESSOR_POISON_RETRY_DELAY

	// BackoffMin and BackoffMax bound the jittered pause after a failed receive or transaction.
	BackoffMin time.Duration // PROCESSOR_BACKOFF_MIN
	BackoffMax time.Duration // PROCESSOR_BACKOFF_MAX
	// DBTimeout bounds one batch transaction, so a hung database cannot pin a writer forever.
	DBTimeout time.Duration // PROCESSOR_DB_TIMEOUT
	// ShutdownTimeout bounds how long SIGTERM waits for the batches in hand; after it they are
	// abandoned (rolled back and made visible again at once).
	ShutdownTimeout time.Duration // PROCESSOR_SHUTDOWN_TIMEOUT
	// QueueStatsInterval paces the queue and DLQ depth gauges (GetQueueAttributes).
	QueueStatsInterval time.Duration // PROCESSOR_QUEUE_STATS_INTERVAL

	// RedisAddr is the edge's admission store (package dedup): host:port, or a redis:// /
	// rediss:// URL (password, TLS). The processor makes every stored vote final there and
	// reads the per-election accepted counters for the reconciliation gauge. Empty disables
	// both (a development setup without an edge).
	RedisAddr string // PROCESSOR_REDIS_ADDR
	// DedupTTL is the life of a final dedup key the processor writes; keep it equal to the
	// edge's redis.dedupTtlSeconds.
	DedupTTL time.Duration // PROCESSOR_DEDUP_TTL
	// ReconcileInterval paces the reconciliation gauge.
	ReconcileInterval time.Duration // PROCESSOR_RECONCILE_INTERVAL
	// ReconcileClosedWindow keeps closed elections in the reconciliation this long after their
	// end date, so votes still draining from the queue after the close are watched too.
	ReconcileClosedWindow time.Duration // PROCESSOR_RECONCILE_CLOSED_WINDOW
	// ReconcileRegion, when set, compares the counter with the votes persisted from that region
	// (vote_stats) instead of all votes: with one Redis per region each region's counter only
	// sees its own edge.
	ReconcileRegion string // PROCESSOR_RECONCILE_REGION

	// TestExitAfterCommit makes the process SIGKILL itself right after its first committed
	// batch, before any delete: the crash window the exactly-once tests must survive. Set only
	// by tests (PROCESSOR_TEST_EXIT_AFTER_COMMIT=1); never in a deployment.
	TestExitAfterCommit bool // PROCESSOR_TEST_EXIT_AFTER_COMMIT
}

// Defaults. WaitTime 20 s is the SQS maximum: fewer empty receives, which SQS bills for.
const (
	DefaultSQSRegion             = "us-east-1"
	DefaultMetricsAddr           = "127.0.0.1:9091"
	DefaultReceivers             = 16
	DefaultReceiveMaxMessages    = 10
	DefaultWaitTime              = 20 * time.Second
	DefaultBatchMaxMessages      = 1000
	DefaultBatchMaxWait          = 50 * time.Millisecond
	DefaultWriters               = 2
	DefaultDeleters              = 16
	DefaultPoisonRetryDelay      = 5 * time.Second
	DefaultBackoffMin            = 200 * time.Millisecond
	DefaultBackoffMax            = 30 * time.Second
	DefaultDBTimeout             = 10 * time.Second
	DefaultShutdownTimeout       = 25 * time.Second
	DefaultQueueStatsInterval    = 15 * time.Second
	DefaultDedupTTL              = 7 * 24 * time.Hour
	DefaultReconcileInterval     = 10 * time.Second
	DefaultReconcileClosedWindow = 24 * time.Hour
)

// LoadConfig reads the PROCESSOR_* variables through lookup (os.LookupEnv in main, a map in
// tests), applies defaults and validates the result.
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	l := loader{lookup: lookup}
	cfg := Config{
		DatabaseURL:           l.str("PROCESSOR_DATABASE_URL", ""),
		SQSEndpoint:           l.str("PROCESSOR_SQS_ENDPOINT", ""),
		SQSRegion:             l.str("PROCESSOR_SQS_REGION", DefaultSQSRegion),
		QueueURL:              l.str("PROCESSOR_QUEUE_URL", ""),
		DLQURL:                l.str("PROCESSOR_DLQ_URL", ""),
		MetricsAddr:           l.str("PROCESSOR_METRICS_ADDR", DefaultMetricsAddr),
		Receivers:             l.int("PROCESSOR_RECEIVERS", DefaultReceivers),
		ReceiveMaxMessages:    int32(l.int("PROCESSOR_RECEIVE_MAX_MESSAGES", DefaultReceiveMaxMessages)),
		WaitTime:              l.dur("PROCESSOR_WAIT_TIME", DefaultWaitTime),
		VisibilityTimeout:     l.dur("PROCESSOR_VISIBILITY_TIMEOUT", 0),
		BatchMaxMessages:      l.int("PROCESSOR_BATCH_MAX_MESSAGES", DefaultBatchMaxMessages),
		BatchMaxWait:          l.dur("PROCESSOR_BATCH_MAX_WAIT", DefaultBatchMaxWait),
		Writers:               l.int("PROCESSOR_WRITERS", DefaultWriters),
		Deleters:              l.int("PROCESSOR_DELETERS", DefaultDeleters),
		PoisonRetryDelay:      l.dur("PROCESSOR_POISON_RETRY_DELAY", DefaultPoisonRetryDelay),
		BackoffMin:            l.dur("PROCESSOR_BACKOFF_MIN", DefaultBackoffMin),
		BackoffMax:            l.dur("PROCESSOR_BACKOFF_MAX", DefaultBackoffMax),
		DBTimeout:             l.dur("PROCESSOR_DB_TIMEOUT", DefaultDBTimeout),
		ShutdownTimeout:       l.dur("PROCESSOR_SHUTDOWN_TIMEOUT", DefaultShutdownTimeout),
		QueueStatsInterval:    l.dur("PROCESSOR_QUEUE_STATS_INTERVAL", DefaultQueueStatsInterval),
		RedisAddr:             l.str("PROCESSOR_REDIS_ADDR", ""),
		DedupTTL:              l.dur("PROCESSOR_DEDUP_TTL", DefaultDedupTTL),
		ReconcileInterval:     l.dur("PROCESSOR_RECONCILE_INTERVAL", DefaultReconcileInterval),
		ReconcileClosedWindow: l.dur("PROCESSOR_RECONCILE_CLOSED_WINDOW", DefaultReconcileClosedWindow),
		ReconcileRegion:       l.str("PROCESSOR_RECONCILE_REGION", ""),
		TestExitAfterCommit:   l.str("PROCESSOR_TEST_EXIT_AFTER_COMMIT", "") == "1",
	}
	// The skeleton's PROCESSOR_BATCH_SIZE meant "messages per receive"; silently ignoring it
	// would hide a stale deployment setting, so name its replacements instead.
	if _, ok := lookup("PROCESSOR_BATCH_SIZE"); ok {
		l.errs = append(l.errs, errors.New("PROCESSOR_BATCH_SIZE is gone: use PROCESSOR_RECEIVE_MAX_MESSAGES "+
			"(messages per ReceiveMessage) and PROCESSOR_BATCH_MAX_MESSAGES (messages per transaction)"))
	}
	if len(l.errs) > 0 {
		return Config{}, errors.Join(l.errs...)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// loader reads typed variables and collects every parse error, so one start reports them all.
type loader struct {
	lookup func(string) (string, bool)
	errs   []error
}

func (l *loader) str(name, def string) string {
	if v, ok := l.lookup(name); ok && v != "" {
		return v
	}
	return def
}

func (l *loader) int(name string, def int) int {
	s := l.str(name, strconv.Itoa(def))
	n, err := strconv.Atoi(s)
	if err != nil {
		l.errs = append(l.errs, fmt.Errorf("%s: %q is not an integer", name, s))
	}
	return n
}

func (l *loader) dur(name string, def time.Duration) time.Duration {
	s := l.str(name, def.String())
	d, err := time.ParseDuration(s)
	if err != nil {
		l.errs = append(l.errs, fmt.Errorf("%s: %q is not a duration (e.g. 20s, 500ms)", name, s))
	}
	return d
}

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
	for name, d := range map[string]time.Duration{
		"PROCESSOR_DB_TIMEOUT": c.DBTimeout, "PROCESSOR_SHUTDOWN_TIMEOUT": c.ShutdownTimeout,
		"PROCESSOR_QUEUE_STATS_INTERVAL": c.QueueStatsInterval, "PROCESSOR_RECONCILE_INTERVAL": c.ReconcileInterval,
		"PROCESSOR_DEDUP_TTL": c.DedupTTL,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	if c.ReconcileClosedWindow < 0 {
		errs = append(errs, fmt.Errorf("PROCESSOR_RECONCILE_CLOSED_WINDOW must not be negative, got %s", c.ReconcileClosedWindow))
	}
	if c.RedisAddr != "" && strings.Contains(c.RedisAddr, "://") {
		if u, err := url.Parse(c.RedisAddr); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			errs = append(errs, fmt.Errorf("PROCESSOR_REDIS_ADDR %q is neither host:port nor a redis:// or rediss:// URL", redactURL(c.RedisAddr)))
		}
	}
	return errors.Join(errs...)
}

// withDefaults fills the zero values that would make no sense (no receiver, a zero timeout)
// for a Config built in code rather than by LoadConfig. Zero stays meaningful where it is a
// valid setting: WaitTime (short polling), BatchMaxWait, VisibilityTimeout, PoisonRetryDelay.
func (c Config) withDefaults() Config {
	setInt := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setInt(&c.Receivers, DefaultReceivers)
	setInt(&c.BatchMaxMessages, DefaultBatchMaxMessages)
	setInt(&c.Writers, DefaultWriters)
	setInt(&c.Deleters, DefaultDeleters)
	if c.ReceiveMaxMessages <= 0 {
		c.ReceiveMaxMessages = DefaultReceiveMaxMessages
	}
	setDur(&c.BackoffMin, DefaultBackoffMin)
	setDur(&c.BackoffMax, max(DefaultBackoffMax, c.BackoffMin))
	setDur(&c.DBTimeout, DefaultDBTimeout)
	setDur(&c.ShutdownTimeout, DefaultShutdownTimeout)
	setDur(&c.QueueStatsInterval, DefaultQueueStatsInterval)
	setDur(&c.ReconcileInterval, DefaultReconcileInterval)
	setDur(&c.DedupTTL, DefaultDedupTTL)
	return c
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

// LoadReplayConfig reads only what replay-dlq needs (the queues), so an operator can run it
// without database credentials.
func LoadReplayConfig(lookup func(string) (string, bool)) (Config, error) {
	l := loader{lookup: lookup}
	cfg := Config{
		SQSEndpoint: l.str("PROCESSOR_SQS_ENDPOINT", ""),
		SQSRegion:   l.str("PROCESSOR_SQS_REGION", DefaultSQSRegion),
		QueueURL:    l.str("PROCESSOR_QUEUE_URL", ""),
		DLQURL:      l.str("PROCESSOR_DLQ_URL", ""),
	}
	if errs := cfg.validateQueue(); len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
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

package processor

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the processor's Prometheus series. Each Metrics has its own registry so tests can
// build several processors in one binary without duplicate-registration panics.
//
// Where the time goes: SQSSeconds{op="receive"} (non-empty receives only), CommitSeconds
// (BEGIN..COMMIT per transaction) and SQSSeconds{op="delete"}; BatchFillSeconds near
// BatchMaxWait with small BatchSize means the writers starve (SQS-bound), full batches with
// short fills mean the database is the limit.
type Metrics struct {
	Registry      *prometheus.Registry
	Received      prometheus.Counter
	Persisted     prometheus.Counter
	Duplicates    prometheus.Counter
	Conflicts     prometheus.Counter
	EdgeRecords   *prometheus.CounterVec
	Poison        *prometheus.CounterVec
	BatchFailures prometheus.Counter
	ReceiveErrors prometheus.Counter
	DeleteErrors  prometheus.Counter
	// CommitSeconds is one batch transaction, BEGIN to COMMIT.
	CommitSeconds prometheus.Histogram
	// BatchSize is messages per processed batch (before de-duplication and poison).
	BatchSize prometheus.Histogram
	// BatchFillSeconds is the time a writer spent collecting one batch.
	BatchFillSeconds prometheus.Histogram
	// SQSSeconds is the latency of SQS calls by operation.
	SQSSeconds *prometheus.HistogramVec
	// QueueWait is the time from SentTimestamp to receipt, per message.
	QueueWait prometheus.Histogram
	// VoteLatency is acceptedAt at the edge to commit here, per persisted vote: the part of
	// "live results within a second" that the queue and the processor own.
	VoteLatency prometheus.Histogram
	// OldestMessageAge stands in for ApproximateAgeOfOldestMessage (see receiverAges).
	OldestMessageAge prometheus.Gauge
	// QueueMessages is the queue's depth by state (visible, in_flight).
	QueueMessages *prometheus.GaugeVec
	// DLQMessages is the dead-letter queue's depth; exported once the DLQ is known.
	DLQMessages prometheus.Gauge
	dlqKnown    atomic.Bool
	// VisibilityExtensions counts messages whose visibility was extended because their batch
	// was slow or the database was down.
	VisibilityExtensions prometheus.Counter
	// DatabaseUp is 0 while batches fail and receiving is paused, 1 otherwise.
	DatabaseUp prometheus.Gauge
}

// Poison reasons (label values of voting_processor_poison_messages_total).
const (
	poisonInvalid          = "invalid"
	poisonUnknownCandidate = "unknown_candidate"
	poisonRejected         = "rejected_by_database"
)

// Results of making a stored vote final in the edge store (label values of
// voting_processor_edge_records_total).
const (
	recordNow     = "now"
	recordAlready = "already"
	recordOther   = "other"
	recordError   = "error"
)

// SQS operations (label values of voting_processor_sqs_request_seconds).
const (
	opReceive          = "receive"
	opDelete           = "delete"
	opChangeVisibility = "change_visibility"
)

// NewMetrics creates and registers the processor's metrics plus the Go and process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	latency := prometheus.ExponentialBuckets(0.0005, 2, 16) // 0.5 ms .. ~16 s
	m := &Metrics{
		Registry: reg,
		Received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_processor_messages_received_total",
			Help: "SQS messages received and handed to a batch.",
		}),
		Persisted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_processor_votes_persisted_total",
			Help: "Votes inserted into PostgreSQL and counted (committed).",
		}),
		Duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_processor_duplicates_dropped_total",
			Help: "Valid messages not inserted because the vote or the (election, user) pair was already stored.",
		}),
		Conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_processor_vote_conflicts_total",
			Help: "Votes dropped because their viewer already has another vote stored. Each is a vote the edge may have answered 200 that is not counted: alert on any.",
		}),
		EdgeRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voting_processor_edge_records_total",
			Help: "Stored votes made final in the edge store, by result: now (the edge had not confirmed), already (it had), other (the store names another vote), error.",
		}, []string{"result"}),
		Poison: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voting_processor_poison_messages_total",
			Help: "Messages handed back for dead-lettering, by reason. Counted on every receive (up to maxReceiveCount per message).",
		}, []string{"reason"}),
		BatchFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_processor_batch_failures_total",
			Help: "Batch transactions that failed; the batch is held and retried, nothing is deleted.",
		}),
		ReceiveErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_processor_receive_errors_total",
			Help: "Failed SQS ReceiveMessage calls.",
		}),
		DeleteErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_processor_delete_errors_total",
			Help: "Messages committed but not deleted from SQS; they come back and are dropped as duplicates.",
		}),
		CommitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "voting_processor_batch_commit_seconds",
			Help:    "Time from BEGIN to COMMIT of one batch transaction.",
			Buckets: latency,
		}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "voting_processor_batch_size_messages",
			Help:    "Messages per batch transaction.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000},
		}),
		BatchFillSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "voting_processor_batch_fill_seconds",
			Help:    "Time a writer spent collecting one batch (first message to dispatch).",
			Buckets: latency,
		}),
		SQSSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "voting_processor_sqs_request_seconds",
			Help:    "SQS call latency by operation; receive counts only calls that returned messages.",
			Buckets: latency,
		}, []string{"op"}),
		QueueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "voting_processor_queue_wait_seconds",
			Help:    "Time a message spent in SQS, SentTimestamp to receipt.",
			Buckets: latency,
		}),
		VoteLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "voting_processor_vote_latency_seconds",
			Help:    "Edge acceptedAt to commit, per persisted vote.",
			Buckets: latency,
		}),
		OldestMessageAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voting_processor_oldest_message_age_seconds",
			Help: "Now minus the SentTimestamp of the oldest message in the receivers' latest receives (stand-in for ApproximateAgeOfOldestMessage); 0 when the queue is drained.",
		}),
		QueueMessages: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "voting_processor_queue_messages",
			Help: "Approximate messages in the vote queue by state.",
		}, []string{"state"}),
		DLQMessages: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voting_processor_dlq_messages",
			Help: "Approximate messages (visible + in flight) in the dead-letter queue.",
		}),
		VisibilityExtensions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_processor_visibility_extensions_total",
			Help: "Messages whose visibility timeout was extended while held.",
		}),
		DatabaseUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voting_processor_database_up",
			Help: "1 while batches commit; 0 while they fail and receiving is paused.",
		}),
	}
	for _, r := range []string{poisonInvalid, poisonUnknownCandidate, poisonRejected} {
		m.Poison.WithLabelValues(r) // export zero series so alerts can use rate() from the start
	}
	for _, r := range []string{recordNow, recordAlready, recordOther, recordError} {
		m.EdgeRecords.WithLabelValues(r)
	}
	for _, op := range []string{opReceive, opDelete, opChangeVisibility} {
		m.SQSSeconds.WithLabelValues(op)
	}
	reg.MustRegister(m.Received, m.Persisted, m.Duplicates, m.Conflicts, m.EdgeRecords, m.Poison, m.BatchFailures,
		m.ReceiveErrors, m.DeleteErrors, m.CommitSeconds, m.BatchSize, m.BatchFillSeconds,
		m.SQSSeconds, m.QueueWait, m.VoteLatency, m.OldestMessageAge, m.QueueMessages,
		m.VisibilityExtensions, m.DatabaseUp,
		optional{m.DLQMessages, &m.dlqKnown},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// optional exports c only once on is set, so a series is absent rather than a misleading 0
// while its source is unknown (an "unchecked" collector: it describes nothing up front).
type optional struct {
	c  prometheus.Collector
	on *atomic.Bool
}

func (o optional) Describe(chan<- *prometheus.Desc) {}

func (o optional) Collect(ch chan<- prometheus.Metric) {
	if o.on.Load() {
		o.c.Collect(ch)
	}
}

// Pinger is what /healthz checks (a *pgxpool.Pool).
type Pinger interface {
	Ping(ctx context.Context) error
}

// AdminHandler serves /metrics and /healthz. /healthz fails when PostgreSQL is unreachable,
// because then the processor cannot make progress.
func AdminHandler(m *Metrics, db Pinger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := db.Ping(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("database unreachable\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

package processor

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the processor's Prometheus series. Each Metrics has its own registry so tests can
// build several processors in one binary without duplicate-registration panics.
type Metrics struct {
	Registry      *prometheus.Registry
	Received      prometheus.Counter
	Persisted     prometheus.Counter
	Duplicates    prometheus.Counter
	Poison        *prometheus.CounterVec
	BatchFailures prometheus.Counter
	ReceiveErrors prometheus.Counter
	DeleteErrors  prometheus.Counter
	CommitSeconds prometheus.Histogram
}

// Poison reasons (label values of voting_processor_poison_messages_total).
const (
	poisonInvalid          = "invalid"
	poisonUnknownCandidate = "unknown_candidate"
)

// NewMetrics creates and registers the processor's metrics plus the Go and process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		Received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_processor_messages_received_total",
			Help: "SQS messages received.",
		}),
		Persisted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_processor_votes_persisted_total",
			Help: "Votes inserted into PostgreSQL and counted.",
		}),
		Duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_processor_duplicates_dropped_total",
			Help: "Valid messages not inserted because the vote or the (election, user) pair was already stored.",
		}),
		Poison: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voting_processor_poison_messages_total",
			Help: "Messages left in the queue for dead-lettering, by reason. Counted on every receive.",
		}, []string{"reason"}),
		BatchFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_processor_batch_failures_total",
			Help: "Batch transactions that failed; their messages are retried after the visibility timeout.",
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
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1 ms .. ~8 s
		}),
	}
	for _, r := range []string{poisonInvalid, poisonUnknownCandidate} {
		m.Poison.WithLabelValues(r) // export zero series so alerts can use rate() from the start
	}
	reg.MustRegister(m.Received, m.Persisted, m.Duplicates, m.Poison, m.BatchFailures,
		m.ReceiveErrors, m.DeleteErrors, m.CommitSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
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

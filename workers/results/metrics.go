package results

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the worker's Prometheus series, on a registry of their own so that tests can run
// several servers in one process.
type metrics struct {
	registry *prometheus.Registry

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec

	cacheLookups *prometheus.CounterVec
	redisWrites  *prometheus.CounterVec

	notifications   *prometheus.CounterVec
	listenerUp      prometheus.Gauge
	refreshes       *prometheus.CounterVec
	refreshDuration *prometheus.HistogramVec
	snapshots       prometheus.Counter
	deltas          *prometheus.CounterVec
	tracked         prometheus.Gauge
	countLag        prometheus.Histogram

	streams       prometheus.Gauge
	streamOpens   *prometheus.CounterVec
	dropped       *prometheus.CounterVec
	broadcasts    *prometheus.CounterVec
	broadcastLag  prometheus.Histogram
	updateAge     prometheus.Histogram
	limiterErrors prometheus.Counter
}

// lagBuckets resolve the 1 s freshness budget finely: 1 ms … ~16 s.
var lagBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voting_results_http_requests_total",
			Help: "HTTP requests by endpoint (route pattern) and status code; stream upgrades count as 101.",
		}, []string{"endpoint", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "voting_results_http_request_duration_seconds",
			Help:    "HTTP request latency by endpoint (route pattern); for the stream, until the upgrade.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. ~4 s
		}, []string{"endpoint"}),
		cacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voting_results_cache_lookups_total",
			Help: "Count lookups by tier (memory, redis) and result (hit, miss, wait = joined a load in flight, overflow = too many elections tracked, error).",
		}, []string{"tier", "result"}),
		redisWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voting_results_redis_writes_total",
			Help: "Snapshots written to Redis (election:results:{id}) by result.",
		}, []string{"result"}),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voting_results_notifications_total",
			Help: "PostgreSQL notifications received by channel.",
		}, []string{"channel"}),
		listenerUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voting_results_notify_listener_up",
			Help: "1 while the LISTEN connection is established; at 0 counts refresh only by polling.",
		}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voting_results_refreshes_total",
			Help: "Re-reads of tracked elections by trigger (notify, poll) and result.",
		}, []string{"trigger", "result"}),
		refreshDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "voting_results_refresh_duration_seconds",
			Help:    "Duration of one refresh query by trigger.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"trigger"}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_results_snapshots_total",
			Help: "New snapshots (something changed) applied from deltas and re-reads.",
		}),
		deltas: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voting_results_deltas_total",
			Help: "Count deltas of the processor's notifications, for tracked elections, by result (applied; stale = the count was already held; unknown = candidate not held, election re-read).",
		}, []string{"result"}),
		tracked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voting_results_tracked_elections",
			Help: "Elections held in memory.",
		}),
		countLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "voting_results_count_lag_seconds",
			Help:    "From the processor transaction that changed a count (vote_counts.updated_at) to this worker holding it.",
			Buckets: lagBuckets,
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voting_results_stream_clients",
			Help: "Connected WebSocket stream clients.",
		}),
		streamOpens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voting_results_stream_opens_total",
			Help: "Stream connection attempts by result (accepted, unauthorized, limited, full, not_found, error).",
		}, []string{"result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voting_results_stream_dropped_total",
			Help: "Stream clients disconnected by the server, by reason (slow = fell behind, write = write failed or timed out, ping = no pong).",
		}, []string{"reason"}),
		broadcasts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voting_results_broadcasts_total",
			Help: "Messages fanned out to an election's clients, by type.",
		}, []string{"type"}),
		broadcastLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "voting_results_broadcast_lag_seconds",
			Help:    "Per client: from this worker learning of a change to the message written to the client's socket (includes the 1 s throttle).",
			Buckets: lagBuckets,
		}),
		updateAge: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "voting_results_update_age_seconds",
			Help:    "Per VOTE_UPDATE: from the processor transaction of its newest count to the broadcast.",
			Buckets: lagBuckets,
		}),
		limiterErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_results_stream_limiter_errors_total",
			Help: "Redis errors of the per-viewer stream limit (the local limit applies meanwhile).",
		}),
	}
	m.registry.MustRegister(m.requests, m.latency, m.cacheLookups, m.redisWrites, m.notifications, m.listenerUp,
		m.refreshes, m.refreshDuration, m.snapshots, m.deltas, m.tracked, m.countLag, m.streams, m.streamOpens, m.dropped,
		m.broadcasts, m.broadcastLag, m.updateAge, m.limiterErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

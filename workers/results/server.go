package results

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tvvote/voting/contract"
)

// Server holds the HTTP handlers. Routes are registered in one place (Handler) so the
// WebSocket stream and statistics endpoints can join them later.
type Server struct {
	store     Store
	log       *slog.Logger
	dbTimeout time.Duration
	now       func() time.Time

	registry *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewServer builds a Server with its own Prometheus registry (so tests can build several).
func NewServer(store Store, log *slog.Logger, dbTimeout time.Duration) *Server {
	s := &Server{
		store:     store,
		log:       log,
		dbTimeout: dbTimeout,
		now:       time.Now,
		registry:  prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voting_results_http_requests_total",
			Help: "HTTP requests by endpoint (route pattern) and status code.",
		}, []string{"endpoint", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "voting_results_http_request_duration_seconds",
			Help:    "HTTP request latency by endpoint (route pattern).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. ~4 s
		}, []string{"endpoint"}),
	}
	s.registry.MustRegister(s.requests, s.latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return s
}

// Route patterns; also the "endpoint" label of the metrics.
const (
	routeResults = "GET /api/v1/results/{electionId}"
	routeLive    = "GET /api/v1/results/live/{electionId}"
	routeHealth  = "GET /healthz"
	routeMetrics = "GET /metrics"
)

// Handler is the worker's whole HTTP surface.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(routeResults, s.instrument(routeResults, s.handleResults))
	mux.Handle(routeLive, s.instrument(routeLive, s.handleLive))
	mux.Handle(routeHealth, s.instrument(routeHealth, s.handleHealth))
	mux.Handle(routeMetrics, promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	// Unknown paths get the contract's error body instead of the mux's plain-text 404.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, contract.CodeNotFound, "no such resource")
	})
	return mux
}

func (s *Server) handleResults(w http.ResponseWriter, r *http.Request) {
	id, ok := canonicalUUID(r.PathValue("electionId"))
	if !ok {
		s.writeError(w, r, contract.CodeInvalidElectionID, "electionId must be a UUID")
		return
	}
	withPct := true
	if v := r.URL.Query().Get("includePercentages"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.writeError(w, r, contract.CodeInvalidRequest, "includePercentages must be true or false")
			return
		}
		withPct = b
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.dbTimeout)
	defer cancel()
	ec, err := s.store.ElectionCounts(ctx, id)
	if err == nil && !publiclyVisible(ec.Status) {
		err = ErrNotFound
	}
	if err != nil {
		s.storeError(w, r, id, err)
		return
	}
	etag := resultsETag(ec, withPct)
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", cacheControl(ec.Status))
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	s.writeJSON(w, http.StatusOK, buildResults(ec, withPct, s.now()))
}

func (s *Server) handleLive(w http.ResponseWriter, r *http.Request) {
	id, ok := canonicalUUID(r.PathValue("electionId"))
	if !ok {
		s.writeError(w, r, contract.CodeInvalidElectionID, "electionId must be a UUID")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.dbTimeout)
	defer cancel()
	lt, err := s.store.LiveTotal(ctx, id)
	if err == nil && !publiclyVisible(lt.Status) {
		err = ErrNotFound
	}
	if err != nil {
		s.storeError(w, r, id, err)
		return
	}
	w.Header().Set("Cache-Control", liveCacheControl)
	s.writeJSON(w, http.StatusOK, liveCount(lt))
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.dbTimeout)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.store.Ping(ctx); err != nil {
		s.log.Warn("health check failed", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("database unreachable\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) storeError(w http.ResponseWriter, r *http.Request, electionID string, err error) {
	if errors.Is(err, ErrNotFound) {
		s.writeError(w, r, contract.CodeElectionNotFound, "election "+electionID+" not found")
		return
	}
	s.log.Error("store failed", "electionId", electionID, "err", err, "requestId", r.Header.Get("X-Request-Id"))
	s.writeError(w, r, contract.CodeUnavailable, "results are temporarily unavailable, retry shortly")
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, code, msg string) {
	// Errors must not be cached by Envoy or browsers: a 503 is transient and a 404 may become
	// a 200 once the election is published.
	w.Header().Set("Cache-Control", "no-store")
	if code == contract.CodeUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	s.writeJSON(w, contract.Status(code), contract.ErrorResponse{
		Code: code, Message: msg, TraceID: traceID(r.Header.Get("X-Request-Id")),
	})
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(body); err != nil {
		s.log.Debug("write response", "err", err) // client went away; nothing else to do
	}
}

// instrument counts requests and observes latency under the route pattern, not the raw path,
// so election ids do not explode the label cardinality.
func (s *Server) instrument(endpoint string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h(rec, r)
		s.latency.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
		s.requests.WithLabelValues(endpoint, strconv.Itoa(rec.status)).Inc()
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer (flush, hijack for the
// future WebSocket stream).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

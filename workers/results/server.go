package results

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/contract"
)

// Server holds the HTTP handlers. Routes are registered in one place (Handler).
type Server struct {
	store      Store
	stats      StatisticsStore // nil: the statistics endpoint answers 503
	voteStatus VoteStatusStore // nil: the internal vote-status endpoint answers 503
	hub        *Hub            // nil: no stream
	auth       *auth.Verifier  // nil: no stream, no statistics
	limits     *streamLimits
	origins    []string
	log        *slog.Logger
	dbTimeout  time.Duration
	now        func() time.Time
	metrics    *metrics

	maxStreams  int
	streamSlots atomic.Int64
}

// Option configures a Server beyond its Store.
type Option func(*Server)

// WithStatistics serves the statistics endpoint from st.
func WithStatistics(st StatisticsStore) Option { return func(s *Server) { s.stats = st } }

// WithAuth verifies the stream's and the statistics endpoint's tokens with a.
func WithAuth(a *auth.Verifier) Option { return func(s *Server) { s.auth = a } }

// WithStreams enables the WebSocket stream, fed by hub, limited per viewer by limits and in
// total by maxStreams, open to the browser origins matching origins.
func WithStreams(hub *Hub, limits *streamLimits, maxStreams int, origins []string) Option {
	return func(s *Server) { s.hub, s.limits, s.maxStreams, s.origins = hub, limits, maxStreams, origins }
}

// withMetrics shares one registry between the server and the hub, cache and limits it uses.
func withMetrics(m *metrics) Option { return func(s *Server) { s.metrics = m } }

// NewServer builds a Server with its own Prometheus registry (so tests can build several).
func NewServer(store Store, log *slog.Logger, dbTimeout time.Duration, opts ...Option) *Server {
	s := &Server{store: store, log: log, dbTimeout: dbTimeout, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if s.metrics == nil {
		s.metrics = newMetrics()
	}
	return s
}

// Route patterns; also the "endpoint" label of the metrics.
const (
	routeResults    = "GET /api/v1/results/{electionId}"
	routeLive       = "GET /api/v1/results/live/{electionId}"
	routeStream     = "GET /api/v1/results/stream/{electionId}"
	routeStatistics = "GET /api/v1/results/statistics/{electionId}"
	routePage       = "GET /api/v1/results/page/{electionId}"
	routePageAsset  = "GET /api/v1/results/page/assets/{file}"
	routeHealth     = "GET /healthz"
	routeMetrics    = "GET /metrics"
)

// Handler is the worker's whole HTTP surface.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(routeResults, s.instrument(routeResults, s.handleResults))
	mux.Handle(routeLive, s.instrument(routeLive, s.handleLive))
	mux.Handle(routeStream, s.instrument(routeStream, s.handleStream))
	mux.Handle(routeStatistics, s.instrument(routeStatistics, s.handleStatistics))
	mux.Handle(routePage, s.instrument(routePage, s.handlePage))
	mux.Handle(routePageAsset, s.instrument(routePageAsset, s.handlePageAsset))
	mux.Handle(routeVoteStatus, s.instrument(routeVoteStatus, s.handleVoteStatus))
	mux.Handle(routeHealth, s.instrument(routeHealth, s.handleHealth))
	mux.Handle(routeMetrics, promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	// Unknown paths get the contract's error body instead of the mux's plain-text 404, and
	// known paths with another method a 405 in the same shape.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, contract.CodeNotFound, "no such resource")
	})
	return methodNotAllowed(mux, s)
}

// methodNotAllowed rewrites the mux's plain-text 405 into the contract's ErrorResponse.
func methodNotAllowed(mux *http.ServeMux, s *Server) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "/" && r.Method != http.MethodGet && r.Method != http.MethodHead {
			probe := r.Clone(r.Context())
			probe.Method = http.MethodGet
			if _, p := mux.Handler(probe); p != "" && p != "/" {
				w.Header().Set("Allow", "GET, HEAD")
				s.writeError(w, r, contract.CodeMethodNotAllowed, "only GET is supported here")
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) handleResults(w http.ResponseWriter, r *http.Request) {
	id, ok := contract.CanonicalUUID(r.PathValue("electionId"))
	if !ok {
		s.writeError(w, r, contract.CodeInvalidElectionID, "electionId must be a UUID")
		return
	}
	withPct, ok := boolParam(r.URL.Query(), "includePercentages", true)
	if !ok {
		s.writeError(w, r, contract.CodeInvalidRequest, "includePercentages must be true or false")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.dbTimeout)
	defer cancel()
	ec, err := s.store.ElectionCounts(ctx, id)
	if err != nil {
		s.storeError(w, r, id, err)
		return
	}
	if s.refuseResults(w, r, id, ec.Status) {
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
	id, ok := contract.CanonicalUUID(r.PathValue("electionId"))
	if !ok {
		s.writeError(w, r, contract.CodeInvalidElectionID, "electionId must be a UUID")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.dbTimeout)
	defer cancel()
	lt, err := s.store.LiveTotal(ctx, id)
	if err != nil {
		s.storeError(w, r, id, err)
		return
	}
	if s.refuseResults(w, r, id, lt.Status) {
		return
	}
	w.Header().Set("Cache-Control", liveCacheControl)
	s.writeJSON(w, http.StatusOK, liveCount(lt))
}

func (s *Server) handleStatistics(w http.ResponseWriter, r *http.Request) {
	id, ok := contract.CanonicalUUID(r.PathValue("electionId"))
	if !ok {
		s.writeError(w, r, contract.CodeInvalidElectionID, "electionId must be a UUID")
		return
	}
	if s.auth == nil || s.stats == nil {
		s.writeError(w, r, contract.CodeUnavailable, "statistics are not enabled on this server")
		return
	}
	raw, ok := auth.BearerToken(r.Header.Get("Authorization"))
	if !ok {
		s.unauthorized(w, r, "an Authorization: Bearer token is required")
		return
	}
	actx, cancel := context.WithTimeout(r.Context(), authTimeout)
	p, err := s.auth.Verify(actx, raw)
	cancel()
	if err != nil {
		s.authError(w, r, err)
		return
	}
	if !p.Can(contract.PermAdmin, contract.PermReadStatistics) {
		s.writeError(w, r, contract.CodeForbidden, "statistics need the admin:elections or read:statistics permission")
		return
	}
	var flags [2]bool
	for i, name := range []string{"includeHourly", "includeRegional"} {
		if flags[i], ok = boolParam(r.URL.Query(), name, false); !ok {
			s.writeError(w, r, contract.CodeInvalidRequest, name+" must be true or false")
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.dbTimeout)
	defer cancel()
	d, err := s.stats.Statistics(ctx, id, flags[1])
	if err != nil {
		s.storeError(w, r, id, err)
		return
	}
	// Per-viewer data behind a token: no shared cache may keep it.
	w.Header().Set("Cache-Control", "private, no-store")
	s.writeJSON(w, http.StatusOK, buildStatistics(d, flags[0], flags[1], s.now()))
	s.log.Info("statistics aggregation served", "requestId", r.Header.Get("X-Request-Id"), "electionId", id,
		"actor", p.Subject, "hourly", flags[0], "regional", flags[1])
}

// boolParam reads an optional boolean query parameter: def when absent; when present, exactly
// "true" or "false", as the contract's booleans are written (ok=false for anything else: an
// empty value, "1", the parameter twice), so that no request is answered on a guess.
func boolParam(q url.Values, name string, def bool) (v, ok bool) {
	vs, present := q[name]
	switch {
	case !present:
		return def, true
	case len(vs) == 1 && vs[0] == "true":
		return true, true
	case len(vs) == 1 && vs[0] == "false":
		return false, true
	}
	return false, false
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

// refuseResults answers for an election whose results are not public (resultsRefusal) and
// reports whether it did.
func (s *Server) refuseResults(w http.ResponseWriter, r *http.Request, electionID, status string) bool {
	switch resultsRefusal(status) {
	case "":
		return false
	case contract.CodeElectionNotOpen:
		s.writeError(w, r, contract.CodeElectionNotOpen, "voting in election "+electionID+" has not opened yet: results exist once it opens")
	default:
		// The same answer as for an id that never existed: a draft must not be told apart.
		s.storeError(w, r, electionID, ErrNotFound)
	}
	return true
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
		Code: code, Message: msg, TraceID: contract.TraceID(r.Header.Get("X-Request-Id")),
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
// so election ids do not explode the label cardinality. A WebSocket upgrade is recorded at the
// handshake: its handler returns only when the stream ends.
func (s *Server) instrument(endpoint string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		record := func(code int) {
			s.metrics.latency.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
			s.metrics.requests.WithLabelValues(endpoint, strconv.Itoa(code)).Inc()
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK, onUpgrade: func() { record(http.StatusSwitchingProtocols) }}
		h(rec, r.WithContext(withRequestID(r.Context(), r.Header.Get("X-Request-Id"))))
		if rec.status != http.StatusSwitchingProtocols {
			record(rec.status)
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status    int
	onUpgrade func()
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	if code == http.StatusSwitchingProtocols && r.onUpgrade != nil {
		r.onUpgrade()
	}
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController and the WebSocket library reach the underlying writer
// (flush, hijack).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

type requestIDKey struct{}

// withRequestID carries the request's correlation id to the hub, which logs the cache miss a
// request caused under it.
func withRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

package results

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tvvote/voting/auth"
)

// jwksRefresh is how often the signing keys are re-fetched (Auth0 rotates rarely; an unknown
// kid triggers an early fetch anyway).
const jwksRefresh = 10 * time.Minute

// Worker is the whole results worker: HTTP handlers, the in-memory hub fed by PostgreSQL
// notifications, the optional Redis copy and the stream limits.
type Worker struct {
	Server *Server
	Hub    *Hub

	cfg    Config
	cache  *redisCache
	limits *streamLimits
}

// NewWorker wires a worker from its configuration. pool is the query pool; rdb may be nil
// (no RESULTS_REDIS_ADDR). Nothing runs until Run.
func NewWorker(ctx context.Context, cfg Config, pool *pgxpool.Pool, rdb *redis.Client, log *slog.Logger) *Worker {
	m := newMetrics()
	var cache *redisCache
	if rdb != nil {
		cache = newRedisCache(rdb, log, m)
	}
	store := PGStore{Pool: pool}
	hub := newHub(store, cache, log, m, HubOptions{DBTimeout: cfg.DBTimeout, PollInterval: cfg.PollInterval,
		StreamInterval: cfg.StreamInterval, HeartbeatInterval: cfg.HeartbeatInterval})
	limits := newStreamLimits(cfg.MaxStreamsPerViewer, rdb, log, m)
	opts := []Option{withMetrics(m), WithStatistics(store), WithVoteStatus(store), WithStreams(hub, limits, cfg.MaxStreams, cfg.StreamOrigins)}
	if cfg.AuthEnabled() {
		opts = append(opts, WithAuth(auth.NewVerifier(auth.NewJWKS(ctx, cfg.JWKSURL, jwksRefresh), cfg.JWTIssuer, cfg.JWTAudience, auth.DefaultLeeway)))
	} else {
		log.Warn("RESULTS_JWT_ISSUER/RESULTS_JWT_AUDIENCE not set: the stream and statistics endpoints answer 503")
	}
	return &Worker{Server: NewServer(hub, log, cfg.DBTimeout, opts...), Hub: hub, cfg: cfg, cache: cache, limits: limits}
}

// Handler is the worker's HTTP surface.
func (w *Worker) Handler() http.Handler { return w.Server.Handler() }

// Run keeps the hub fresh (LISTEN on dsn plus polling), writes Redis and refreshes stream
// leases until ctx ends.
func (w *Worker) Run(ctx context.Context, dsn string) {
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	if w.cache != nil {
		run(w.cache.run)
	}
	run(w.limits.run)
	run(func(ctx context.Context) { w.Hub.Run(ctx, dsn) })
	wg.Wait()
}

// Shutdown closes every stream with "going away"; call it once the listener stopped accepting.
func (w *Worker) Shutdown() { w.Hub.Shutdown() }

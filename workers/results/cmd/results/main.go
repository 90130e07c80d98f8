// Command results serves election results, live counts, the WebSocket stream, statistics and
// the on-air live results page over HTTP. Configuration comes from RESULTS_* environment
// variables (resultsconfig.Config).
package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tvvote/voting/tracing"
	"github.com/tvvote/voting/workers/results"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "results")
	if err := run(log); err != nil {
		log.Error("results worker stopped", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	cfg, err := results.LoadConfig(os.LookupEnv)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	// pgxpool connects lazily, so the worker starts (and reports unhealthy on /healthz) even
	// while PostgreSQL is still coming up.
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	var rdb *redis.Client
	if cfg.RedisAddr != "" {
		// Redis is optional and only ever an accelerator: short timeouts, no retries that
		// would hold up a refresh.
		rdb = redis.NewClient(&redis.Options{Addr: cfg.RedisAddr, DialTimeout: 500 * time.Millisecond,
			ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, MaxRetries: 1})
		defer rdb.Close()
	}

	worker := results.NewWorker(ctx, cfg, pool, rdb, log)
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); worker.Run(runCtx, cfg.DatabaseURL) }()
	defer func() { stopRun(); <-runDone }()

	tp, err := tracing.Setup(ctx, "voting-results", cfg.TracingOTLPAddr, tracing.Options{FollowParent: true})
	if err != nil {
		return err
	}
	defer func() {
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.Shutdown(flushCtx)
	}()
	srv := &http.Server{
		Addr:              cfg.ListenAddr,
		Handler:           tracing.Middleware(tp, "voting-results", worker.Handler()),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	// Shutdown does not touch hijacked (WebSocket) connections: close them with "going away"
	// so that clients reconnect to another replica at once.
	srv.RegisterOnShutdown(worker.Shutdown)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("results worker listening", "addr", cfg.ListenAddr, "redis", cfg.RedisAddr != "", "auth", cfg.AuthEnabled())

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutdown requested; draining connections")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("results worker stopped cleanly")
	return nil
}

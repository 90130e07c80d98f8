// Command processor persists queued votes from SQS into PostgreSQL. Configuration comes from
// PROCESSOR_* environment variables (see processor.LoadConfig).
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

	"github.com/tvvote/voting/workers/processor"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil)).With("service", "processor")
	if err := run(log); err != nil {
		log.Error("processor stopped", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	cfg, err := processor.LoadConfig(os.LookupEnv)
	if err != nil {
		return err
	}
	// SIGTERM (Kubernetes, make run) and SIGINT (Ctrl-C) stop receiving; the batch in hand is
	// finished before Run returns.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return err
	}
	// One connection per receiver plus one for /healthz, so receivers never queue for the pool.
	poolCfg.MaxConns = max(poolCfg.MaxConns, int32(cfg.Receivers)+1)
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	queue, err := processor.NewSQSClient(ctx, cfg)
	if err != nil {
		return err
	}
	metrics := processor.NewMetrics()
	admin := &http.Server{
		Addr:              cfg.MetricsAddr,
		Handler:           processor.AdminHandler(metrics, pool),
		ReadHeaderTimeout: 5 * time.Second,
	}
	adminErr := make(chan error, 1)
	go func() { adminErr <- admin.ListenAndServe() }()

	log.Info("processor started", "queueUrl", cfg.QueueURL, "receivers", cfg.Receivers,
		"batchSize", cfg.BatchSize, "waitTime", cfg.WaitTime.String(), "metricsAddr", cfg.MetricsAddr)
	runCtx, cancelRun := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		processor.New(cfg, queue, pool, log, metrics).Run(runCtx)
		close(done)
	}()

	var result error
	select {
	case <-ctx.Done():
		log.Info("shutdown requested; finishing in-flight batches")
	case err := <-adminErr:
		// Without /healthz and /metrics the processor is invisible to its supervisor: stop.
		result = err
	}
	cancelRun()
	<-done
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := admin.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("metrics server shutdown", "err", err)
	}
	log.Info("processor stopped cleanly")
	return result
}

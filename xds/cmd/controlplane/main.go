// Command controlplane serves the edge Envoys their config over ADS, built from the elections
// in PostgreSQL. Configuration comes from XDS_* environment variables (see Config).
package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tvvote/voting/xds/elections"
	"github.com/tvvote/voting/xds/server"
	"github.com/tvvote/voting/xds/snapshot"
)

// reloadInterval bounds how stale the edge's elections can be when no NOTIFY arrives.
const reloadInterval = time.Second

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		log.Error(err.Error())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("control plane stopped", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	builder, err := snapshot.NewBuilder(cfg.snapshotSettings())
	if err != nil {
		return err
	}
	// The pool connects lazily, so a database that is still starting does not stop the control
	// plane: Run retries every reloadInterval and nodes wait for the first good load.
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cp := server.New(builder, log, reg)

	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return err
	}
	if cfg.MetricsAddr != "" {
		// Listen here rather than in the goroutine so a taken port fails the start.
		mlis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := ms.Serve(mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "error", err)
			}
		}()
		defer ms.Close()
	}

	go cp.Run(ctx, elections.NewStore(pool), elections.Watch(ctx, cfg.DatabaseURL, log), reloadInterval)
	log.Info("control plane serving ADS", "addr", lis.Addr().String(), "metrics", cfg.MetricsAddr,
		"listener_port", cfg.ListenerPort, "results", cfg.ResultsAddr)
	return cp.Serve(ctx, lis)
}

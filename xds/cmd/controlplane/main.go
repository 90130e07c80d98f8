// Command controlplane serves the edge Envoys their config over ADS, built from the elections
// and edge settings in PostgreSQL; serves the admin API (elections, candidates, live edge
// settings, audit trail); and opens and closes voting windows on schedule. Configuration comes
// from XDS_* environment variables (see xdsconfig.Config).
//
// `controlplane edge-settings …` is a small client of the admin API for SREs (see cli.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/xds/admin"
	"github.com/tvvote/voting/xds/edgesettings"
	"github.com/tvvote/voting/xds/elections"
	"github.com/tvvote/voting/xds/server"
	"github.com/tvvote/voting/xds/snapshot"
	"github.com/tvvote/voting/xds/xdsconfig"
)

// reloadInterval bounds how stale the edge's config can be when no NOTIFY arrives.
const reloadInterval = time.Second

// schedulerMaxSleep bounds how late the scheduler notices a window that was moved by someone
// it did not hear about (another control plane, a missed NOTIFY).
const schedulerMaxSleep = time.Second

func main() {
	if len(os.Args) > 1 && os.Args[1] == "edge-settings" {
		os.Exit(edgeSettingsCLI(context.Background(), os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "controlplane")
	if len(os.Args) > 1 && os.Args[1] == "migrate" {
		os.Exit(migrate(log))
	}
	cfg, err := xdsconfig.Load(os.LookupEnv)
	if err != nil {
		log.Error(err.Error())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("control plane stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg xdsconfig.Config, log *slog.Logger) error {
	builder, err := snapshot.NewBuilder(snapshotSettings(cfg))
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
	opts := []server.Option{server.WithVersions(server.SequenceVersions{Pool: pool})}
	if t := cfg.GRPCTLS; t.Enabled() {
		mtls, err := server.NewMutualTLS(t.CertFile, t.KeyFile, t.ClientCAFile, log)
		if err != nil {
			return err
		}
		opts = append(opts, server.WithMutualTLS(mtls))
	}
	cp := server.New(builder, log, reg, opts...)
	els := elections.NewStore(pool)
	edge := edgesettings.NewStore(pool)

	// Listen on every address before serving any, so a taken port fails the start.
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return err
	}
	alis, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	api := admin.New(els, edge, pool, builder, auth.NewVerifier(auth.NewJWKS(ctx, cfg.JWKSURL, time.Hour), cfg.JWTIssuer, cfg.JWTAudience, auth.DefaultLeeway), log, reg)
	var servers sync.WaitGroup
	defer servers.Wait()
	// Runs before the Wait above: an early return must stop the servers it started.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	serveHTTP(ctx, &servers, log, "admin API", alis, api.Handler())
	if cfg.MetricsAddr != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		serveHTTP(ctx, &servers, log, "metrics", mlis, mux)
	}

	source := server.SourceFunc(func(ctx context.Context) (snapshot.State, error) {
		es, err := els.Load(ctx)
		if err != nil {
			return snapshot.State{}, err
		}
		set, err := edge.Load(ctx)
		if err != nil {
			return snapshot.State{}, err
		}
		return snapshot.State{Elections: es, Edge: set}, nil
	})
	go cp.Run(ctx, source, elections.Watch(ctx, cfg.DatabaseURL, log), reloadInterval)
	// The scheduler listens on its own connection: a change may move the next window.
	go els.RunScheduler(ctx, log, elections.Watch(ctx, cfg.DatabaseURL, log), schedulerMaxSleep)
	log.Info("control plane serving ADS", "addr", lis.Addr().String(), "admin", alis.Addr().String(),
		"metrics", cfg.MetricsAddr, "listener_port", cfg.ListenerPort, "results", cfg.ResultsAddr,
		"status", cfg.StatusAddr, "siteverify", cfg.Siteverify.Addr, "captcha_mode", cfg.CaptchaMode,
		"mutual_tls", cfg.GRPCTLS.Enabled(), "trusted_hops", cfg.TrustedHops, "proxy_protocol", cfg.ProxyProtocol, "upstream_timeout", cfg.UpstreamTimeout.String())
	return cp.Serve(ctx, lis)
}

// serveHTTP serves h on lis until ctx ends; wg is done once the server has shut down and
// released its port, so a run that returned can be started again on the same addresses.
func serveHTTP(ctx context.Context, wg *sync.WaitGroup, log *slog.Logger, what string, lis net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(what+" server", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
}

// Command processor persists queued votes from SQS into PostgreSQL. Configuration comes from
// PROCESSOR_* environment variables (processorconfig.Config).
//
//	processor                  run the pipeline until SIGTERM/SIGINT
//	processor replay-dlq [-max N] [-from DLQ_URL] [-to QUEUE_URL]
//	                           move dead-lettered messages back to the queue and report them
//	                           (needs only PROCESSOR_QUEUE_URL / _DLQ_URL / _SQS_*)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/tracing"
	"github.com/tvvote/voting/workers/processor"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "processor")
	var err error
	if len(os.Args) > 1 && os.Args[1] == "replay-dlq" {
		err = replay(log, os.Args[2:])
	} else if len(os.Args) > 1 {
		err = fmt.Errorf("unknown command %q (want no argument, or replay-dlq)", os.Args[1])
	} else {
		err = run(log)
	}
	if err != nil {
		log.Error("processor stopped", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	cfg, err := processor.LoadConfig(os.LookupEnv)
	if err != nil {
		return err
	}
	// SIGTERM (Kubernetes, make run) and SIGINT (Ctrl-C) stop receiving; the batches in hand
	// are finished (or abandoned after PROCESSOR_SHUTDOWN_TIMEOUT) before Run returns.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return err
	}
	// One connection per writer plus the reconciler and /healthz, so writers never queue for
	// the pool.
	poolCfg.MaxConns = max(poolCfg.MaxConns, int32(cfg.Writers)+2)
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
	var (
		reconciler *processor.Reconciler
		edge       processor.EdgeStore
	)
	if cfg.RedisAddr != "" {
		dial := dedup.NewClient
		if cfg.RedisCluster {
			dial = dedup.NewClusterClient
		}
		rdb, err := dial(cfg.RedisAddr)
		if err != nil {
			return err
		}
		defer rdb.Close()
		reconciler = processor.NewReconciler(cfg, rdb, pool, log, metrics)
		edge = processor.NewEdgeStore(rdb, cfg.DedupTTL)
	}
	admin := &http.Server{
		Addr:              cfg.MetricsAddr,
		Handler:           processor.AdminHandler(metrics, pool),
		ReadHeaderTimeout: 5 * time.Second,
	}
	adminErr := make(chan error, 1)
	go func() { adminErr <- admin.ListenAndServe() }()

	log.Info("processor started", "queueUrl", cfg.QueueURL, "receivers", cfg.Receivers, "writers", cfg.Writers,
		"batchMaxMessages", cfg.BatchMaxMessages, "batchMaxWait", cfg.BatchMaxWait.String(),
		"waitTime", cfg.WaitTime.String(), "metricsAddr", cfg.MetricsAddr, "reconciliation", reconciler != nil)
	tp, err := tracing.Setup(ctx, "voting-processor", cfg.TracingOTLPAddr, tracing.Options{MaxLinks: cfg.BatchMaxMessages})
	if err != nil {
		return err
	}
	// Flushed after the pipeline stopped, so the last batches' spans are sent.
	defer func() {
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.Shutdown(flushCtx)
	}()
	runCtx, cancelRun := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		p := processor.New(cfg, queue, pool, log, metrics)
		if edge != nil {
			p.WithEdgeStore(edge)
		}
		p.TraceWith(tp)
		p.Run(runCtx)
		close(done)
	}()
	if reconciler != nil {
		go reconciler.Run(runCtx)
	}

	var result error
	select {
	case <-ctx.Done():
		log.Info("shutdown requested")
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

// replay moves DLQ messages back to the queue. Each moved message is one JSON line on stdout,
// followed by a summary line; logs go to stderr so the report can be piped.
func replay(log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("replay-dlq", flag.ContinueOnError)
	limit := fs.Int("max", 0, "move at most this many messages (0: as many as the DLQ holds at start)")
	from := fs.String("from", "", "DLQ URL (default PROCESSOR_DLQ_URL, else the queue's redrive policy)")
	to := fs.String("to", "", "destination queue URL (default PROCESSOR_QUEUE_URL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := processor.LoadReplayConfig(os.LookupEnv)
	if err != nil {
		return err
	}
	if *to != "" {
		cfg.QueueURL = *to
	}
	if *from != "" {
		cfg.DLQURL = *from
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	q, err := processor.NewSQSClient(ctx, cfg)
	if err != nil {
		return err
	}
	dlq, err := processor.ResolveDLQ(ctx, q, cfg)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	log.Info("replaying DLQ", "from", dlq, "to", cfg.QueueURL, "max", *limit)
	rep, err := processor.ReplayDLQ(ctx, q, dlq, cfg.QueueURL, *limit, func(m processor.ReplayedMessage) {
		_ = enc.Encode(struct {
			Moved processor.ReplayedMessage `json:"moved"`
		}{m})
	})
	_ = enc.Encode(struct {
		Summary processor.ReplayReport `json:"summary"`
	}{rep})
	if err != nil {
		return err
	}
	if rep.Failed > 0 {
		return fmt.Errorf("%d messages could not be sent back and stay in the DLQ", rep.Failed)
	}
	return nil
}

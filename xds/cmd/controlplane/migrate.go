package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tvvote/voting/schema"
)

// migrate applies the schema's migrations to XDS_DATABASE_URL and exits: the deployment runs
// it once, as a one-off task of the control plane's image, before a new version starts. The
// migrations are idempotent (goose records what was applied), so running it twice is safe.
func migrate(log *slog.Logger) int {
	dsn := os.Getenv("XDS_DATABASE_URL")
	if dsn == "" {
		log.Error("migrate: XDS_DATABASE_URL is required")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	start := time.Now()
	if err := schema.Migrate(ctx, dsn); err != nil {
		log.Error("migrate failed", "err", err)
		return 1
	}
	log.Info("schema migrated", "took", time.Since(start).Round(time.Millisecond).String())
	return 0
}

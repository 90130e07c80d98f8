// Command devidp runs the development-only identity provider (see package devidp). Its
// DEVIDP_* environment variables are devidp.Config.
package main

import (
	"log/slog"
	"net/http"
	"os"

	"github.com/tvvote/voting/devidp"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "devidp")
	cfg, err := devidp.LoadConfig(os.LookupEnv)
	if err != nil {
		log.Error(err.Error())
		os.Exit(2)
	}
	p, err := devidp.New(cfg.Issuer, cfg.Audience)
	if err != nil {
		log.Error("key generation failed", "err", err)
		os.Exit(1)
	}
	log.Warn("DEVELOPMENT identity provider: never use in production", "addr", cfg.Addr, "issuer", p.Issuer, "audience", p.Audience)
	if err := http.ListenAndServe(cfg.Addr, p.Handler()); err != nil {
		log.Error("serve failed", "err", err)
		os.Exit(1)
	}
}

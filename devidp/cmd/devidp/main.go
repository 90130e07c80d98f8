// Command devidp runs the development-only identity provider (see package devidp).
//
//	DEVIDP_ADDR      listen address            (default 127.0.0.1:8085)
//	DEVIDP_ISSUER    iss of minted tokens       (default http://<DEVIDP_ADDR>/)
//	DEVIDP_AUDIENCE  aud of minted tokens       (default https://votes.local/api)
package main

import (
	"log/slog"
	"net/http"
	"os"

	"github.com/tvvote/voting/devidp"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "devidp")
	addr := env("DEVIDP_ADDR", "127.0.0.1:8085")
	p, err := devidp.New(env("DEVIDP_ISSUER", "http://"+addr+"/"), env("DEVIDP_AUDIENCE", "https://votes.local/api"))
	if err != nil {
		log.Error("key generation failed", "error", err)
		os.Exit(1)
	}
	log.Warn("DEVELOPMENT identity provider: never use in production", "addr", addr, "issuer", p.Issuer, "audience", p.Audience)
	if err := http.ListenAndServe(addr, p.Handler()); err != nil {
		log.Error("serve failed", "error", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

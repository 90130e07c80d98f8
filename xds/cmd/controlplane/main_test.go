package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/schema"
)

// The binary's wiring: database, reload loop, ADS listener, admin API and /metrics, then a clean
// stop; and versions keep increasing across a restart, since they come from PostgreSQL.
func TestRunServesMetricsAfterFirstLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	free := func() int {
		p, err := devstack.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	pg, err := devstack.StartPostgres(ctx, free())
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Stop()
	if err := schema.Migrate(ctx, pg.DSN); err != nil {
		t.Fatal(err)
	}
	m := required()
	m["XDS_DATABASE_URL"] = pg.DSN
	m["XDS_GRPC_ADDR"] = fmt.Sprintf("127.0.0.1:%d", free())
	m["XDS_METRICS_ADDR"] = fmt.Sprintf("127.0.0.1:%d", free())
	m["XDS_ADMIN_ADDR"] = fmt.Sprintf("127.0.0.1:%d", free())
	cfg, err := loadConfig(env(m))
	if err != nil {
		t.Fatal(err)
	}

	for _, want := range []string{"1", "2"} {
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- run(runCtx, cfg, slog.New(slog.NewJSONHandler(io.Discard, nil))) }()

		deadline := time.Now().Add(15 * time.Second)
		for {
			body := ""
			if resp, err := http.Get("http://" + cfg.MetricsAddr + "/metrics"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body = string(b)
			}
			if strings.Contains(body, "\nxds_snapshot_version "+want+"\n") {
				break
			}
			select {
			case err := <-done:
				t.Fatalf("run %s ended before serving: %v", want, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("no snapshot version %s in /metrics:\n%s", want, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The admin API answers, and refuses an anonymous caller with the contract's error.
		resp, err := http.Get("http://" + cfg.AdminAddr + "/api/v1/admin/elections")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("anonymous admin call: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		stop()
		if err := <-done; err != nil {
			t.Fatalf("run: %v", err)
		}
	}
}

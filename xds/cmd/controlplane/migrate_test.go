package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tvvote/voting/devstack/stacktest"
)

// `controlplane migrate` brings an empty database to the current schema, and a second run
// finds nothing to do.
func TestMigrateCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg := stacktest.BarePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	t.Setenv("XDS_DATABASE_URL", "")
	if code := migrate(log); code != 2 {
		t.Fatalf("without XDS_DATABASE_URL: exit %d, want 2", code)
	}
	t.Setenv("XDS_DATABASE_URL", pg.DSN)
	for run := 1; run <= 2; run++ {
		if code := migrate(log); code != 0 {
			t.Fatalf("run %d: exit %d", run, code)
		}
	}
	conn, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tables int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables
		WHERE table_name IN ('elections', 'candidates', 'votes', 'vote_counts')`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 4 {
		t.Fatalf("%d of the 4 core tables exist after migrate", tables)
	}
}
